"""``ringbook journal`` and the journal as a feed source: import, check, info, verify, cat, export."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ringbook.engine import check
from ringbook.engine.cli import main
from ringbook.engine.feeds import journal as feeds_journal
from ringbook.engine.feeds import kalshi, lobster, synthetic
from ringbook.engine.journal import JournalReader, JournalWriter, list_segments
from ringbook.kernels import journal as jk
from ringbook.kernels.events import EVENT_DTYPE, Instruments

PROJECT = Path(__file__).resolve().parents[1]
BASE_NS = 1_723_161_253_937_085_768


def run_cli(capsys, *args):
    status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def data_lines(path):
    import gzip
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return [line.rstrip(b"\r") for line in data.split(b"\n") if line.strip()]


# ---------------------------------------------------------------- import and the journal as a source

def test_binance_import_keeps_messages_and_receive_times(tmp_path, capsys):
    capture = synthetic.write_binance_capture(tmp_path / "capture.gz", diffs=200, seed=5)
    status, out, _ = run_cli(capsys, "journal", "import", "--format", "binance", capture, "--out", tmp_path / "j")
    assert status == 0 and "imported" in out
    lines = data_lines(capture)
    with JournalReader(tmp_path / "j") as reader:
        records = list(reader)
        assert reader.header().metadata["source"] == {"format": "binance", "file": "capture", "prefix": True}
    assert len(records) == len(lines)
    for record, line in zip(records, lines):
        ns, message = line.split(b" ", 1)
        assert record.receive_ns == int(ns) and bytes(record.payload) == message


def test_check_on_a_journal_equals_check_on_the_file_binance(tmp_path, capsys):
    capture = synthetic.write_binance_capture(tmp_path / "capture.gz", diffs=300, seed=3)
    feeds_journal.import_capture("binance", capture, tmp_path / "j")
    direct = check.check_binance(capture).to_dict()
    status, out, _ = run_cli(capsys, "check", "--format", "journal", tmp_path / "j", "--json")
    through = json.loads(out)
    assert status == 0 and through.pop("file") == str(tmp_path / "j")
    direct.pop("file")
    assert through == direct and direct["checked"] > 250


@pytest.mark.parametrize("header", [False, True])
def test_check_on_a_journal_equals_check_on_the_file_lobster(tmp_path, capsys, header):
    messages, orderbook = synthetic.write_lobster(tmp_path, messages=400, levels=5, seed=7, header=header)
    feeds_journal.import_capture("lobster", messages, tmp_path / "j")
    direct = check.check_lobster(messages, orderbook).to_dict()
    status, out, _ = run_cli(capsys, "check", "--format", "journal", tmp_path / "j", "--orderbook", orderbook,
                             "--json")
    through = json.loads(out)
    through.pop("file"), direct.pop("file")
    assert through == direct and direct["checked"] == 400
    feed = feeds_journal.read_feed(tmp_path / "j")
    assert (feed.events == lobster.read_messages(messages).events).all()
    # receive time: the row's seconds after midnight in New York on the file's date
    with JournalReader(tmp_path / "j") as reader:
        first = next(iter(reader))
    seconds = data_lines(messages)[1 if header else 0].split(b",")[0].decode()
    import datetime
    midnight = lobster.midnight_ns(datetime.date(2012, 6, 21))
    from decimal import Decimal
    assert first.receive_ns == midnight + int(Decimal(seconds) * 10**9)


def test_check_names_a_stream_when_there_are_several(tmp_path, capsys):
    capture = synthetic.write_binance_capture(tmp_path / "capture.gz", diffs=50, seed=1)
    feeds_journal.import_capture("binance", capture, tmp_path / "j", stream="one")
    feeds_journal.import_capture("binance", capture, tmp_path / "j", stream="two")
    status, _, err = run_cli(capsys, "check", "--format", "journal", tmp_path / "j")
    assert status == 2 and "name one" in err
    status, out, _ = run_cli(capsys, "check", "--format", "journal", tmp_path / "j", "--stream", "two", "--json")
    assert status == 0 and json.loads(out)["checked"] > 0


def test_shared_binance_and_lobster_through_a_journal(tmp_path, shared_data):
    capture = shared_data / "binance" / "spot_btcusdt_20240808.gz"
    feeds_journal.import_capture("binance", capture, tmp_path / "b")
    direct = check.check_binance(capture).to_dict()
    through = check.check_journal(tmp_path / "b").to_dict()
    assert {**through, "file": None} == {**direct, "file": None}
    messages = shared_data / "lobster" / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
    orderbook = shared_data / "lobster" / "AMZN_2012-06-21_34200000_57600000_orderbook_1.csv"
    feeds_journal.import_capture("lobster", messages, tmp_path / "l")
    direct = check.check_lobster(messages, orderbook).to_dict()
    through = check.check_journal(tmp_path / "l", orderbook).to_dict()
    assert {**through, "file": None} == {**direct, "file": None} and direct["mismatches"] == 0


def test_shared_kalshi_through_a_journal(tmp_path, shared_data):
    for name in ("kalshi_ticker.jsonl", "kalshi_trade.jsonl"):
        path = shared_data / "kalshi" / name
        root = tmp_path / name
        feeds_journal.import_capture("kalshi", path, root)
        feed = feeds_journal.read_feed(root)
        assert (feed.events == kalshi.read_messages(path).events).all() and len(feed.events)
        with JournalReader(root) as reader:
            assert all(record.receive_ns > 1_600_000_000 * 10**9 for record in reader)  # from "ts"


# ---------------------------------------------------------------- info, verify, cat

def _raw_journal(root, count=100, json_messages=True):
    with JournalWriter(root, "feed", segment_bytes=4096) as writer:
        for i in range(count):
            message = json.dumps({"e": "trade", "p": f"{i}.10", "q": 1.5}).encode() if json_messages else b"x,y"
            writer.append(message, receive_ns=BASE_NS + i * 1_000_000)
        writer.append((7).to_bytes(8, "little"), kind=jk.RECORD_DROPS, receive_ns=BASE_NS + count * 1_000_000)


def test_info_and_verify(tmp_path, capsys):
    _raw_journal(tmp_path / "j")
    status, out, _ = run_cli(capsys, "journal", "info", tmp_path / "j", "--json")
    facts = json.loads(out)["streams"]["feed"]
    assert status == 0 and facts["records"] == 101 and facts["first_sequence"] == 0
    assert facts["last_sequence"] == 100 and facts["segments"] > 1
    assert facts["first_time"] == "2024-08-08T23:54:13.937085768Z"
    status, out, _ = run_cli(capsys, "journal", "verify", tmp_path / "j", "--json")
    report = json.loads(out)
    assert status == 0 and report["ok"]
    assert {k: report[k] for k in ("records", "bad_records", "torn_bytes", "gaps")} == \
        {"records": 101, "bad_records": 0, "torn_bytes": 0, "gaps": 0}
    assert report["segments"] == facts["segments"]


def test_verify_exit_statuses(tmp_path, capsys):
    _raw_journal(tmp_path / "j")
    segments = [path for _, path in list_segments(tmp_path / "j")["feed"]]
    damaged = bytearray(segments[0].read_bytes())
    damaged[-30] ^= 1  # the last record of a segment that is not the last: corrupt, not torn
    segments[0].write_bytes(bytes(damaged))
    status, out, _ = run_cli(capsys, "journal", "verify", tmp_path / "j", "--json")
    report = json.loads(out)
    assert status == 1 and report["bad_records"] == 0 and report["torn_bytes"] > 0
    status, out, _ = run_cli(capsys, "journal", "verify", tmp_path / "j")
    assert status == 1 and "torn tail" in out and str(segments[0]) in out
    # a segment removed from the middle: a gap
    segments[2].unlink()
    status, out, _ = run_cli(capsys, "journal", "verify", tmp_path / "j", "--json")
    assert status == 1 and json.loads(out)["gaps"] == 1
    status, _, err = run_cli(capsys, "journal", "verify", tmp_path / "missing")
    assert status == 2 and "missing" in err
    (tmp_path / "bad" / "2024-01-01").mkdir(parents=True)
    (tmp_path / "bad" / "2024-01-01" / "s.0.rbj").write_bytes(b"not a journal at all, no" * 4)
    status, out, _ = run_cli(capsys, "journal", "verify", tmp_path / "bad", "--json")
    assert status == 2 and "not a journal segment" in json.loads(out)["errors"][0]


def test_cat_from_to_by_sequence_and_time(tmp_path, capsys):
    _raw_journal(tmp_path / "j")
    status, out, _ = run_cli(capsys, "journal", "cat", tmp_path / "j", "--from", 10, "--to", 13)
    lines = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and [line["seq"] for line in lines] == [10, 11, 12]
    status, out, _ = run_cli(capsys, "journal", "cat", tmp_path / "j", "--from", "2024-08-08T23:54:14.0Z",
                             "--to", "2024-08-08T23:54:14.003Z")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [63, 64, 65]
    status, out, _ = run_cli(capsys, "journal", "cat", tmp_path / "j", "--from", 100)
    assert json.loads(out) == {"ts": "2024-08-08T23:54:14.037085768Z", "seq": 100, "stream": "feed",
                               "kind": "drops", "data": 7}


# ---------------------------------------------------------------- export

def test_jsonl_export_keeps_messages_exactly(tmp_path, capsys):
    _raw_journal(tmp_path / "j")
    out_path = tmp_path / "out.jsonl"
    status, _, _ = run_cli(capsys, "journal", "export", tmp_path / "j", "--format", "jsonl", "--out", out_path)
    lines = out_path.read_text().splitlines()
    assert status == 0 and len(lines) == 101
    first = json.loads(lines[0])
    assert first == {"ts": "2024-08-08T23:54:13.937085768Z", "seq": 0, "stream": "feed",
                     "data": {"e": "trade", "p": "0.10", "q": 1.5}}
    assert lines[0].endswith(',"data":{"e": "trade", "p": "0.10", "q": 1.5}}')  # the bytes as received
    assert not list(tmp_path.glob(".out.jsonl.partial*"))


def _event_journal(root, count=300):
    instruments = Instruments()
    instruments.intern("BTCUSDT", price_scale=2, size_scale=8, tick=1)
    events = np.zeros(count, EVENT_DTYPE)
    events["price"] = 6_000_012 + np.arange(count)  # 60000.12 ...
    events["quantity"] = 150_000_000  # 1.5
    events["kind"] = 1
    with JournalWriter(root, "events", payload=EVENT_DTYPE, instruments=instruments,
                       segment_bytes=8192) as writer:
        writer.append_many(events, receive_ns=BASE_NS + np.arange(count))
    return events


def test_jsonl_export_of_events_has_exact_decimals(tmp_path):
    from ringbook.engine.journal_cli import export
    _event_journal(tmp_path / "j")
    assert export(tmp_path / "j", tmp_path / "e.jsonl", "jsonl") == 300
    first = json.loads((tmp_path / "e.jsonl").read_text().splitlines()[1])
    assert first["data"]["price"] == "60000.13" and first["data"]["quantity"] == "1.50000000"
    assert first["data"]["kind"] == 1 and first["seq"] == 1


def test_parquet_export_types_scales_and_row_groups(tmp_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is needed")
    events = _event_journal(tmp_path / "j")
    out_path = tmp_path / "e.parquet"
    status, _, _ = run_cli(capsys, "journal", "export", tmp_path / "j", "--format", "parquet", "--out", out_path,
                           "--decimal-strings")
    assert status == 0
    file = pq.ParquetFile(out_path)
    segments = len(list_segments(tmp_path / "j")["events"])
    assert file.metadata.num_row_groups == segments > 1
    table = file.read()
    assert table.column("price").to_pylist() == events["price"].tolist()
    assert str(table.schema.field("price").type) == "int64"
    assert table.schema.field("price").metadata[b"scale"] == b"2"
    assert str(table.schema.field("receive_time").type) == "timestamp[ns, tz=UTC]"
    assert table.column("price_decimal").to_pylist()[:2] == ["60000.12", "60000.13"]
    assert table.column("seq").to_pylist() == list(range(300))


def test_parquet_export_of_raw_messages(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is needed")
    from ringbook.engine.journal_cli import export
    _raw_journal(tmp_path / "j")
    assert export(tmp_path / "j", tmp_path / "r.parquet", "parquet") == 101
    table = pq.read_table(tmp_path / "r.parquet")
    assert json.loads(table.column("payload")[3].as_py()) == {"e": "trade", "p": "3.10", "q": 1.5}
    assert table.column("kind").to_pylist()[-1] == jk.RECORD_DROPS


@pytest.mark.slow
def test_a_killed_export_leaves_no_file_under_the_final_name(tmp_path):
    root = tmp_path / "j"
    with JournalWriter(root, "feed") as writer:
        rows = np.frombuffer(b'{"e":"trade","p":"1.00"}' * 1, np.uint8)
        writer.append_many(np.tile(rows, (300_000, 1)), receive_ns=BASE_NS + np.arange(300_000))
    out_path = tmp_path / "big.jsonl"
    child = subprocess.Popen([sys.executable, "-m", "ringbook.engine.cli", "journal", "export", str(root),
                              "--format", "jsonl", "--out", str(out_path)], cwd=PROJECT,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".big.jsonl.partial*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert list(tmp_path.glob(".big.jsonl.partial*")), "the export finished before it could be killed"
    assert not out_path.exists()
