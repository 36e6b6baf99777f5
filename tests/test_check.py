"""`ringbook check`: zero mismatches on real data, agreement with the reference, exit status,
JSON, and the line of the first mismatch or malformed line in a corrupted copy."""

import gzip
import json

import numba
import numpy as np
import pytest

from ringbook.engine import check, cli
from ringbook.engine.feeds import binance, synthetic
from ringbook.engine.feeds.source import Feed, FeedError
from ringbook.kernels.book import new_book
from ringbook.kernels.events import KIND_L2_SET, KIND_TRADE, Instruments, empty_events
from tests import naive
from tests.llvm_ir import allocation_calls, function_body
from tests.test_feeds_binance import MESSAGES as BINANCE_MESSAGES, write_capture

AAPL = "lobster/AAPL_2012-06-21_34200000_57600000_{}_10.csv"
AMZN = "lobster/AMZN_2012-06-21_34200000_57600000_{}_1.csv"
CAPTURE = "binance/spot_btcusdt_20240808.gz"


def synthetic_lobster(directory, levels=5, header=False):
    """A consistent LOBSTER pair of 400 messages that refers to unknown orders."""
    return synthetic.write_lobster(directory, messages=400, levels=levels, seed=7, header=header)


def corrupt_line(source, target, line, edit):
    lines = source.read_text().splitlines(keepends=True)
    lines[line - 1] = edit(lines[line - 1])
    target.write_text("".join(lines))
    return target


def run_cli(capsys, *args):
    status = cli.main(["check", *map(str, args)])
    return status, capsys.readouterr().out


@pytest.mark.parametrize("levels, header", [(5, False), (1, True)])
def test_synthetic_lobster_agrees_with_reference(tmp_path, levels, header):
    messages, orderbook = synthetic_lobster(tmp_path, levels=levels, header=header)
    result = check.check_lobster(messages, orderbook)
    assert (result.checked, result.mismatches, result.unknown_orders) == naive.lobster_check(messages, orderbook)
    assert result.mismatches == 0 and result.checked == 400 and result.unknown_orders > 0
    assert result.events == 400 and result.gaps == 0


def test_synthetic_picks_resting_orders_as_a_list_of_them_does():
    """The generator's tree of resting ids gives the k-th id in the order added, as
    ``list(orders)[k]`` did (same files, in time linear in the messages)."""
    rng = np.random.default_rng(3)
    resting, held = synthetic._RestingIds(3000), []
    for order_id in range(1, 3001):
        resting.change(order_id, 1)
        held.append(order_id)
        if rng.random() < 0.45:
            gone = held.pop(int(rng.integers(0, len(held))))
            resting.change(gone, -1)
        for k in {0, len(held) // 2, len(held) - 1} if held else ():
            assert resting.kth(k) == held[k]


def test_corrupted_orderbook_row_reports_its_line(tmp_path, capsys):
    messages, orderbook = synthetic_lobster(tmp_path)
    bad = corrupt_line(orderbook, tmp_path / "bad_orderbook.csv", 123,
                       lambda row: ",".join([row.split(",")[0], str(int(row.split(",")[1]) + 1)]
                                            + row.split(",")[2:]))
    result = check.check_lobster(messages, bad)
    assert result.mismatches >= 1 and result.first_mismatch["line"] == 123
    assert result.first_mismatch["side"] == "ask" and result.first_mismatch["level"] == 1
    expected, found = result.first_mismatch["expected"], result.first_mismatch["found"]
    assert int(expected["quantity"]) == int(found["quantity"]) + 1
    assert (result.checked, result.mismatches, result.unknown_orders) == naive.lobster_check(messages, bad)
    status, out = run_cli(capsys, "--format", "lobster", messages, "--orderbook", bad)
    assert status == 1 and "line 123" in out and "MISMATCH" in out


def test_corrupted_message_reports_malformed_line(tmp_path, capsys):
    messages, orderbook = synthetic_lobster(tmp_path, header=True)
    bad = corrupt_line(messages, tmp_path / "bad_message.csv", 58, lambda row: row.replace(",", ";", 1))
    status, out = run_cli(capsys, "--format", "lobster", bad, "--orderbook", orderbook, "--json")
    report = json.loads(out)
    assert status == 2 and report["line"] == 58 and "line 58" in report["error"]
    # Skipped, the row is not checked and the rest still agrees with the file.
    status, out = run_cli(capsys, "--format", "lobster", bad, "--orderbook", orderbook, "--json",
                          "--skip-malformed")
    report = json.loads(out)
    assert report["skipped_lines"] == [58] and report["checked"] == 399


def test_rows_must_pair_with_messages(tmp_path, capsys):
    messages, orderbook = synthetic_lobster(tmp_path)
    short = tmp_path / "short_orderbook.csv"
    short.write_text("".join(orderbook.read_text().splitlines(keepends=True)[:-1]))
    status, out = run_cli(capsys, "--format", "lobster", messages, "--orderbook", short)
    assert status == 2


def test_lobster_without_orderbook_reports_unknown_orders(tmp_path, capsys):
    messages, _ = synthetic_lobster(tmp_path)
    status, out = run_cli(capsys, "--format", "lobster", messages, "--json")
    report = json.loads(out)
    assert status == 0 and report["checked"] == 0 and report["mismatches"] == 0
    assert report["unknown_orders"] > 0 and report["events"] == 400


def test_synthetic_binance(tmp_path, capsys):
    path = write_capture(tmp_path / "capture", BINANCE_MESSAGES)
    result = check.check_binance(path)
    assert (result.checked, result.mismatches, result.gaps) == naive.binance_check(path) == (4, 0, 1)
    status, out = run_cli(capsys, "--format", "binance", path, "--json")
    assert status == 0 and json.loads(out)["checked"] == 4


def test_synthetic_binance_market_agrees_with_reference(tmp_path):
    path = synthetic.write_binance_capture(tmp_path / "capture.gz", diffs=300, seed=3)
    result = check.check_binance(path)
    assert (result.checked, result.mismatches, result.gaps) == naive.binance_check(path)
    assert result.mismatches == 0 and result.checked > 250


def test_corrupted_binance_ticker_reports_its_line(tmp_path, capsys):
    messages = list(BINANCE_MESSAGES)
    messages[5] = messages[5].replace('"A":"0.50000000"', '"A":"0.50000001"')  # line 6
    path = write_capture(tmp_path / "capture", messages)
    status, out = run_cli(capsys, "--format", "binance", path, "--json")
    report = json.loads(out)
    assert status == 1 and report["mismatches"] == 1 and report["checked"] == 4
    assert report["first_mismatch"]["line"] == 6 and report["first_mismatch"]["side"] == "ask"
    assert report["first_mismatch"]["expected"]["quantity"] == "0.50000001"
    assert (report["checked"], report["mismatches"], report["gaps"]) == naive.binance_check(path)


@pytest.mark.parametrize("name", [AAPL, AMZN])
def test_real_lobster_has_no_mismatch(shared_data, capsys, name):
    messages, orderbook = shared_data / name.format("message"), shared_data / name.format("orderbook")
    status, out = run_cli(capsys, "--format", "lobster", messages, "--orderbook", orderbook, "--json")
    report = json.loads(out)
    rows = len(naive.lobster_rows(orderbook))
    assert status == 0 and report["mismatches"] == 0 and report["checked"] == rows == report["events"]
    assert (report["checked"], report["mismatches"], report["unknown_orders"]) == naive.lobster_check(
        messages, orderbook)
    assert {"events", "checked", "mismatches", "gaps", "unknown_orders"} <= set(report)


def test_real_lobster_check_grows_a_small_order_table(shared_data):
    """From 16 slots the table doubles again and again; the check finds exactly what it finds
    with a table large enough from the start."""
    messages, orderbook = shared_data / AMZN.format("message"), shared_data / AMZN.format("orderbook")
    grown = check.check_lobster(messages, orderbook, order_capacity=16)
    assert grown == check.check_lobster(messages, orderbook, order_capacity=2**20)
    assert grown.checked == grown.events and grown.mismatches == 0


def test_real_lobster_corrupted_copy(shared_data, tmp_path):
    messages = shared_data / AAPL.format("message")
    orderbook = shared_data / AAPL.format("orderbook")
    # Row 500's best bid size, one share off.
    bad = corrupt_line(orderbook, tmp_path / "orderbook.csv", 500,
                       lambda row: ",".join(row.split(",")[:3] + [str(int(row.split(",")[3]) - 1)]
                                            + row.split(",")[4:]))
    result = check.check_lobster(messages, bad)
    assert result.mismatches >= 1 and result.first_mismatch["line"] == 500
    assert result.first_mismatch["side"] == "bid"


def test_real_binance_has_no_mismatch(shared_data, capsys):
    status, out = run_cli(capsys, "--format", "binance", shared_data / CAPTURE)
    assert status == 0 and "checked         564" in out and "mismatches      0" in out
    result = check.check_binance(shared_data / CAPTURE)
    assert (result.checked, result.mismatches, result.gaps) == naive.binance_check(shared_data / CAPTURE)


def test_price_ticks_are_the_gcd_of_each_symbols_level_prices(shared_data):
    events = empty_events(5)
    events["kind"] = [KIND_L2_SET, KIND_L2_SET, KIND_TRADE, KIND_L2_SET, KIND_L2_SET]
    events["symbol"] = [0, 0, 0, 2, 2]
    events["price"] = [1050, -300, 7, 4, 4]     # a trade's price is not a level's
    assert check.price_ticks(events, 4).tolist() == [150, 1, 4, 1]
    feed = binance.read_capture(shared_data / "binance" / "spot_btcusdt_20240808.gz")
    assert check.price_ticks(feed.events, 1).tolist() == [1_000_000]   # 0.01 USDT at scale 8
    # The capture's prices agree with the exchange's published tick.
    listed = binance.read_capture(shared_data / CAPTURE, ticks={"BTCUSDT": "0.01"})
    assert listed.instruments.table["tick"][:1].tolist() == check.price_ticks(listed.events, 1).tolist()


def test_feed_ticks_take_the_listed_tick_else_the_implied_one(shared_data):
    feed = binance.read_capture(shared_data / CAPTURE)                       # no tick listed
    assert check.feed_ticks(feed, 1).tolist() == check.price_ticks(feed.events, 1).tolist()
    # Two symbols, one with a listed tick (kept, though its prices imply 8), one without (implied: 15).
    events = empty_events(4)
    events["kind"], events["symbol"], events["price"] = KIND_L2_SET, [0, 0, 1, 1], [30, 45, 8, 16]
    instruments = Instruments(2)
    instruments.intern("A", 0, 0, 1)
    instruments.intern("B", 0, 0, 2)
    assert check.feed_ticks(Feed(events, np.arange(4) + 1, instruments, "x"), 2).tolist() == [15, 2]


def test_real_binance_corrupted_copy(shared_data, tmp_path):
    lines = gzip.decompress((shared_data / CAPTURE).read_bytes()).decode().splitlines(keepends=True)
    documents = [json.loads(line.split(" ", 1)[1]).get("data", {}) for line in lines]
    diff_ids = {data["u"] for data in documents if data.get("e") == "depthUpdate"}
    # The first ticker the check compares: make its best bid quantity wrong.
    number = next(index for index, data in enumerate(documents, 1)
                  if "B" in data and data["u"] in diff_ids)
    line = lines[number - 1]
    lines[number - 1] = line.replace(f'"B":"{documents[number - 1]["B"]}"', '"B":"999.00000000"')
    bad = tmp_path / "capture.gz"
    bad.write_bytes(gzip.compress("".join(lines).encode()))
    result = check.check_binance(bad)
    assert result.mismatches == 1 and result.checked == 564
    assert result.first_mismatch["line"] == number
    assert result.first_mismatch["expected"]["quantity"] == "999.00000000"
    # A malformed line instead: named with its number.
    lines[number - 1] = line.replace('"b":"', '"b":"1.2.3')
    bad.write_bytes(gzip.compress("".join(lines).encode()))
    with pytest.raises(FeedError) as caught:
        check.check_binance(bad)
    assert caught.value.line == number and caught.value.field == "b"


def check_kernel_signatures():
    array, matrix = numba.types.int64[::1], numba.types.int64[:, ::1]
    book, events, scalar = numba.typeof(new_book(1, depth=1, order_capacity=16)), numba.typeof(empty_events(1)), \
        numba.types.int64
    return [
        (check.check_lobster_kernel, (book, scalar, events, array, matrix, matrix, matrix, matrix, array, array,
                                      array, array, array, scalar, scalar)),
        (check.check_binance_kernel, (book, events, array, numba.types.int32[::1], matrix,
                                      numba.types.bool_[::1], array, matrix, scalar)),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1])
def test_check_kernels_allocate_nothing_and_count_no_references_per_event(index):
    """The per-event steps are inlined and the arrays borrowed: no call per event counts
    references (an atomic increment and decrement per array, more than the work)."""
    kernel, signature = check_kernel_signatures()[index]
    assert allocation_calls(kernel, signature) == []
    body = function_body(kernel, signature)
    assert [line for line in body.splitlines() if "NRT_incref" in line or "NRT_decref" in line] == []
