"""Following a journal while the engine writes it (engine.replay.follow): the same result as a
replay of the whole journal, segments deleted as they are done, damage reported."""

import json
import shutil
import signal
import threading

import numpy as np
import pytest

from ringbook.engine.engine import Engine
from ringbook.engine.journal import index_path, list_segments, open_segment
from ringbook.engine.replay import follow, replay
from ringbook.kernels import journal as jk

SEGMENT_BYTES = 256 << 10


def run_engine(out, **options):
    options.setdefault("mlock", False)
    with Engine(out=str(out), segment_bytes=SEGMENT_BYTES, checkpoint_every=200, **options) as engine:
        engine.start()
        return engine.wait(timeout=120)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A short synthetic run whose raw journal spans many small segments."""
    out = tmp_path_factory.mktemp("follow") / "journal"
    report = run_engine(out, events=60_000, seed=5)
    assert len(list_segments(out, "raw")["raw"]) >= 5
    return out, report


def comparable(report):
    return {key: report[key] for key in ("records", "packets", "events", "gaps", "gap_detail", "drops", "resets",
                                         "checkpoints", "errors", "ok")}


def test_following_a_finished_journal_equals_its_replay_and_deletes_it(small_run, tmp_path):
    out, run_report = small_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    raw_segments = list_segments(out, "raw")["raw"]
    followed, book, _ = follow(copy, done=lambda: True, delete=True)
    replayed, replayed_book, _ = replay(out)
    assert comparable(followed) == comparable(replayed)
    assert followed["ok"] and followed["verify"]["ok"]
    assert followed["events"] == run_report["events"] and followed["packets"] == run_report["messages"]
    checkpoints = followed["checkpoints"]
    assert checkpoints["total"] == checkpoints["matched"] == run_report["checkpoints"] > 20
    assert followed["verify"]["streams"]["raw"]["segments"] == len(raw_segments)
    assert followed["verify"]["streams"]["raw"]["records"] == replayed["verify"]["streams"]["raw"]["records"]
    assert followed["follow"]["segments"] == followed["follow"]["deleted"] == len(raw_segments)
    assert followed["follow"]["bytes"] == sum(path.stat().st_size for _, path in raw_segments)
    assert np.array_equal(book.quantities, replayed_book.quantities)
    # the raw stream is gone, its index files too; the engine stream is kept
    assert "raw" not in list_segments(copy)
    assert not list(copy.rglob("raw.*.rbi"))
    assert list_segments(copy, "engine")["engine"]


def test_following_a_live_run_keeps_the_journal_bounded(tmp_path):
    out = tmp_path / "journal"
    ended = threading.Event()
    outcome = {}

    def follower():
        try:
            outcome["report"] = follow(out, done=ended.is_set, delete=True, max_sleep_s=0.02)[0]
        except BaseException as error:  # seen by the test below
            outcome["error"] = error

    thread = threading.Thread(target=follower)
    thread.start()
    try:
        run_report = run_engine(out, events=120_000, rate=150_000, seed=9)
    finally:
        ended.set()
        thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert report["ok"] and report["verify"]["ok"], report["verify"]
    assert report["events"] == run_report["events"] and report["packets"] == run_report["messages"]
    checkpoints = report["checkpoints"]
    assert checkpoints["total"] == checkpoints["matched"] == run_report["checkpoints"] > 20
    assert checkpoints["mismatched"] == checkpoints["beyond_end"] == 0
    facts = report["follow"]
    assert facts["segments"] == facts["deleted"] >= 5
    assert facts["segments_while_running"] >= 3  # it followed, not only read after the end
    assert facts["peak_raw_bytes"] < facts["bytes"]  # never the whole journal on disk at once
    assert "raw" not in list_segments(out)


def record_offsets(path):
    """Offsets of the records of a clean segment."""
    mapped, scan = open_segment(path, use_index=False, save_index=False)
    offsets, offset = [], scan.header.header_bytes
    while offset < scan.valid_end:
        offsets.append(offset)
        offset += int(jk.record_size(int(jk.record_header(mapped.buffer, offset)[0])))
    mapped.close()
    return offsets


@pytest.mark.parametrize("where", ["payload", "length"])
def test_a_damaged_sealed_segment_is_reported_and_kept(small_run, tmp_path, where):
    out, _ = small_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    segments = list_segments(copy, "raw")["raw"]
    damaged = segments[len(segments) // 2][1]
    offsets = record_offsets(damaged)
    record = offsets[len(offsets) // 2]
    data = bytearray(damaged.read_bytes())
    if where == "payload":
        data[record + jk.RECORD_HEADER_BYTES + 3] ^= 0x40
    else:  # a length that points far past the end of the segment
        data[record + jk.LENGTH_OFFSET + 3] ^= 0x7F
    damaged.write_bytes(bytes(data))
    index_path(damaged).unlink()
    report, _, _ = follow(copy, done=lambda: True, delete=True)
    assert not report["verify"]["ok"] and not report["ok"]
    assert [item["path"] for item in report["verify"]["corrupt"]] == [str(damaged)]
    assert report["verify"]["corrupt"][0]["offset"] == record
    assert report["follow"]["kept"] == [str(damaged)] and damaged.exists()
    assert report["follow"]["deleted"] == len(segments) - 1
    assert report["follow"]["segments"] == len(segments)


def test_replay_follow_command_stops_when_the_run_ends(tmp_path, capsys):
    from ringbook.engine.cli import main
    from ringbook.engine.journal import has_writer
    out = tmp_path / "journal"
    status = {}
    thread = threading.Thread(target=lambda: status.setdefault(
        "code", main(["replay", str(out), "--follow", "--delete", "--json"])))
    thread.start()  # before the run: it waits for the run's journal to appear
    try:
        with Engine(out=str(out), segment_bytes=SEGMENT_BYTES, checkpoint_every=200, mlock=False,
                    events=80_000, rate=150_000, seed=2) as engine:
            engine.start()
            assert has_writer(out, "raw") and has_writer(out, "engine")
            run_report = engine.wait(timeout=120)
        assert not has_writer(out, "raw")
    finally:
        thread.join(60)
    assert not thread.is_alive() and status["code"] == 0
    report = json.loads(capsys.readouterr().out)
    assert report["events"] == run_report["events"]
    assert report["checkpoints"]["matched"] == report["checkpoints"]["total"] == run_report["checkpoints"]
    assert report["follow"]["segments_while_running"] >= 2 and report["follow"]["deleted"] >= 4
    assert "raw" not in list_segments(out)


def test_no_writer_without_a_lock_file_or_its_holder(tmp_path):
    from ringbook.engine.journal import JournalWriter, has_writer
    assert not has_writer(tmp_path, "raw")
    writer = JournalWriter(tmp_path, "raw")
    assert has_writer(tmp_path, "raw") and not has_writer(tmp_path, "other")
    writer.close()
    assert (tmp_path / ".raw.lock").exists() and not has_writer(tmp_path, "raw")


def test_a_writer_killed_with_sigkill_holds_no_lock(tmp_path):
    from ringbook.engine.journal import has_writer
    from tests.test_journal_crash import start_writer
    child, _ = start_writer(tmp_path)
    try:
        assert has_writer(tmp_path, "s")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert not has_writer(tmp_path, "s")
