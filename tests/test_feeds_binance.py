"""Binance capture reader: events against a plain json/decimal reference, the sync procedure, errors."""

import gzip
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringbook.engine.feeds import binance
from ringbook.engine.feeds.source import FeedError
from ringbook.kernels.events import (ASK, BID, EVENT_DTYPE, FLAG_BATCH_END, FLAG_SNAPSHOT, KIND_L2_SET,
                            KIND_SEQUENCE, KIND_SNAPSHOT_BEGIN, KIND_SNAPSHOT_END, KIND_TOP_OF_BOOK, KIND_TRADE)
from tests import naive
from tests.feed_asserts import assert_events_equal

CAPTURE = "binance/spot_btcusdt_20240808.gz"


def depth(U, u, bids, asks, previous=None):
    extra = f'"pu":{previous},' if previous is not None else ""
    levels = lambda pairs: ",".join("[" + ",".join(f'"{x}"' for x in pair) + "]" for pair in pairs)  # noqa: E731
    return ('{"stream":"test@depth@100ms","data":{"e":"depthUpdate","E":1700000000%03d,"s":"TEST",'
            '"U":%d,"u":%d,%s"b":[%s],"a":[%s]}}' % (u % 1000, U, u, extra, levels(bids), levels(asks)))


def ticker(u, bid, bid_size, ask, ask_size):
    return ('{"stream":"test@bookTicker","data":{"u":%d,"s":"TEST","b":"%s","B":"%s","a":"%s","A":"%s"}}'
            % (u, bid, bid_size, ask, ask_size))


def trade(trade_id, price, quantity, maker):
    return ('{"stream":"test@trade","data":{"e":"trade","E":1700000000500,"s":"TEST","t":%d,"p":"%s",'
            '"q":"%s","T":1700000000499,"m":%s,"M":true}}' % (trade_id, price, quantity,
                                                             "true" if maker else "false"))


SNAPSHOT = ('{"lastUpdateId":10,"bids":[["10.00000000","5.00000000"],["9.50000000","1.00000000"]],'
            '"asks":[["11.00000000","1.00000000"],["12.00000000","4.00000000"]]}')

#: A capture that exercises the sync procedure: diffs before the snapshot (one
#: stale, one overlapping it), tickers before and after the diff that reaches
#: their update id, a trade, an empty diff and a gap.
MESSAGES = [
    depth(5, 7, [("10.00000000", "1.00000000")], []),                       # stale: dropped
    ticker(12, "10.50000000", "2.00000000", "11.00000000", "3.00000000"),   # checked after line 3
    depth(8, 12, [("10.50000000", "2.00000000")], [("11.00000000", "3.00000000")]),
    SNAPSHOT,
    depth(13, 15, [("10.50000000", "0.00000000")], [("10.90000000", "0.5")]),
    ticker(15, "10.00000000", "5.00000000", "10.90000000", "0.50000000"),
    trade(77, "10.90000000", "0.25000000", maker=False),
    depth(16, 16, [], []),                                                  # empty: carries u=16
    ticker(16, "10.00000000", "5.00000000", "10.90000000", "0.50000000"),
    depth(20, 21, [("9.00000000", "1.00000000")], []),                      # gap: 17..19 missing
    ticker(21, "10.00000000", "5.00000000", "10.90000000", "0.50000000"),
    '{"result":null,"id":1}',                                              # ignored
]


def write_capture(path, messages, compress=False):
    text = "".join(f"{1700000000000000000 + index} {message}\n" for index, message in enumerate(messages))
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_file_order_matches_reference(tmp_path, compress):
    path = write_capture(tmp_path / "capture", MESSAGES, compress)
    feed = binance.read_capture(path, sync=False)
    assert_events_equal(feed, naive.binance_events(path))
    assert feed.ignored == 1 and feed.instruments.name_of(0) == "TEST"
    assert feed.instruments.table[0]["price_scale"] == 8


def test_sync_procedure(tmp_path):
    path = write_capture(tmp_path / "capture", MESSAGES)
    feed = binance.read_capture(path)
    events, lines = feed.events, feed.lines
    assert feed.dropped == 1  # the diff with u=7 <= lastUpdateId
    # The snapshot comes first among the book's changes, then the held-back diff.
    changes = np.flatnonzero(events["kind"] != KIND_TOP_OF_BOOK)
    assert events["kind"][changes[0]] == KIND_SNAPSHOT_BEGIN
    end = np.flatnonzero(events["kind"] == KIND_SNAPSHOT_END)[0]
    assert events["sequence"][end] == 10 and events["flags"][end] == FLAG_SNAPSHOT | FLAG_BATCH_END
    assert (events["flags"][changes[0]:end] & FLAG_SNAPSHOT).all()
    held_back = end + 1
    assert lines[held_back] == 3 and events["sequence"][held_back] == 12
    # It overlaps the snapshot (U=8 <= 11 <= u=12): it follows lastUpdateId.
    assert (events["prev_sequence"][held_back:held_back + 2] == 10).all()
    later = np.flatnonzero(lines == 5)
    assert events["prev_sequence"][later].tolist() == [12, 12]  # spot: U - 1
    empty = np.flatnonzero(lines == 8)
    assert len(empty) == 1 and events["kind"][empty[0]] == KIND_SEQUENCE
    assert events["side"][empty[0]] == 0 and events["quantity"][empty[0]] == 0
    assert events["flags"][empty[0]] == FLAG_BATCH_END and events["sequence"][empty[0]] == 16


def test_kinds_and_fields(tmp_path):
    path = write_capture(tmp_path / "capture", MESSAGES)
    events = binance.read_capture(path, sync=False).events
    tickers = events[events["kind"] == KIND_TOP_OF_BOOK]
    assert tickers["side"][:2].tolist() == [BID, ASK]
    assert tickers["price"][:2].tolist() == [1050000000, 1100000000]
    assert tickers["flags"][:2].tolist() == [0, FLAG_BATCH_END]
    trades = events[events["kind"] == KIND_TRADE]
    assert trades["order_id"].tolist() == [77] and trades["side"].tolist() == [BID]  # buyer took
    assert trades["exchange_ns"].tolist() == [1700000000499 * 10**6]
    diff = events[(events["kind"] == KIND_L2_SET) & (events["sequence"] == 15)]
    assert diff["quantity"].tolist() == [0, 50000000]  # "0.5" at scale 8
    assert diff["flags"].tolist() == [0, FLAG_BATCH_END]


def test_futures_diffs_chain_on_pu(tmp_path):
    messages = [SNAPSHOT, depth(9, 12, [("10.00000000", "2.00000000")], [], previous=8),
                depth(13, 14, [], [("11.00000000", "0.00000000")], previous=12)]
    feed = binance.read_capture(write_capture(tmp_path / "capture", messages))
    diffs = feed.events[feed.events["kind"] == KIND_L2_SET][-2:]
    assert diffs["prev_sequence"].tolist() == [10, 12]  # first: lastUpdateId; then pu


@pytest.mark.parametrize("bad, field", [
    (depth(13, 15, [("10.5.0", "1.0")], []), "b"),
    (depth(13, 15, [], [("10.5", "1.0"), ("11.0",)]), "a"),
    (depth(13, 15, [("10.123456789", "1.0")], []), "b"),
    (ticker(15, "10.0", "x", "11.0", "1.0"), "B"),
    ('{"e":"depthUpdate","E":1,"s":"TEST","u":5,"b":[],"a":[]}', "U"),
    ("not json at all", "json"),
])
def test_malformed_line(tmp_path, bad, field):
    messages = MESSAGES[:5] + [bad] + MESSAGES[5:]
    path = write_capture(tmp_path / "capture", messages)
    with pytest.raises(FeedError) as caught:
        binance.read_capture(path)
    assert caught.value.line == 6 and caught.value.field == field
    assert "line 6" in str(caught.value) and str(path) in str(caught.value)
    assert len(caught.value.partial) > 0
    feed = binance.read_capture(path, skip_malformed=True)
    assert feed.skipped_lines == [6]
    assert len(feed) == len(binance.read_capture(write_capture(tmp_path / "good", MESSAGES)))


def test_malformed_local_time(tmp_path):
    path = tmp_path / "capture"
    path.write_text(f"1700000000000000000 {SNAPSHOT}\n17000x {SNAPSHOT}\n")
    with pytest.raises(FeedError, match="line 2, field 'local_ns'"):
        binance.read_capture(path)


def test_ticks_go_to_the_instrument_table(tmp_path):
    path = write_capture(tmp_path / "capture", MESSAGES)
    assert binance.read_capture(path).instruments.table[0]["tick"] == 1    # none given
    feed = binance.read_capture(path, ticks={"TEST": "0.05", "OTHER": "1"})
    assert feed.instruments.table[feed.instruments.id_of("TEST")]["tick"] == 5_000_000
    assert "OTHER" not in feed.instruments
    for bad, message in (("0", "must be positive"), ("0.000000001", "beyond 8 decimals"),
                         ("x", "invalid decimal")):
        with pytest.raises(ValueError, match=rf"ticks\['TEST'\]: .*{message}"):
            binance.read_capture(path, ticks={"TEST": bad})


def test_real_capture_matches_reference(shared_data):
    path = shared_data / CAPTURE
    feed = binance.read_capture(path, sync=False)
    assert_events_equal(feed, naive.binance_events(path))
    kinds = np.bincount(feed.events["kind"], minlength=13)
    assert kinds[KIND_TOP_OF_BOOK] == 2 * 28040 and kinds[KIND_TRADE] == 9757
    assert kinds[KIND_SNAPSHOT_END] == 1
    synced = binance.read_capture(path)
    assert synced.dropped > 0 and len(synced) < len(feed)


decimals = st.builds(lambda whole, fraction, digits: f"{whole}.{fraction:0{digits}d}"[: len(str(whole)) + 1 + digits],
                     st.integers(0, 10**7), st.integers(0, 10**8 - 1), st.integers(1, 8))
level_lists = st.lists(st.tuples(decimals, decimals), max_size=6)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(diffs=st.lists(st.tuples(level_lists, level_lists, st.booleans()), min_size=1, max_size=5),
       compact=st.booleans())
def test_random_diffs_match_reference(tmp_path, diffs, compact):
    """Any level lists and decimals, as json.dumps writes them (with or without spaces)."""
    separators = (",", ":") if compact else (", ", ": ")
    messages, update_id = [], 100
    for bids, asks, futures in diffs:
        data = {"e": "depthUpdate", "E": 1700000000000 + update_id, "s": "TEST", "U": update_id + 1,
                "u": update_id + 3, "b": [list(level) for level in bids], "a": [list(level) for level in asks]}
        if futures:
            data["pu"] = update_id
        messages.append(json.dumps({"stream": "test@depth", "data": data}, separators=separators))
        update_id += 3
    path = write_capture(tmp_path / "random_capture", messages)
    assert_events_equal(binance.read_capture(path, sync=False), naive.binance_events(path))


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(0, 4), max_size=12), data=st.data())
def test_gather_messages_matches_reference(counts, data):
    """Phase three's kernel: any message table and any order of any subset of its messages."""
    starts = np.cumsum([0] + counts[:-1]).astype(np.int64) if counts else np.zeros(0, np.int64)
    messages = np.zeros((len(counts), binance.MESSAGE_COLUMNS), np.int64)
    messages[:, binance.COLUMN_START], messages[:, binance.COLUMN_COUNT] = starts, counts
    events = np.zeros(sum(counts), EVENT_DTYPE)
    events["price"], events["order_id"] = np.arange(len(events)) * 7 + 1, np.arange(len(events))
    order = np.array(data.draw(st.permutations(range(len(counts))))[:data.draw(st.integers(0, len(counts)))],
                     np.int64)
    symbols = np.arange(len(counts), dtype=np.int64) % 3 + 1
    numbers = np.arange(len(counts), dtype=np.int64) * 10 + 5
    expected_events, expected_lines = naive.gather_messages(events, messages, order, symbols, numbers,
                                                            binance.COLUMN_START, binance.COLUMN_COUNT)
    out_events, out_lines = np.zeros(len(expected_events), events.dtype), np.zeros(len(expected_lines), np.int64)
    assert binance.gather_messages(events, messages, order, symbols, numbers, out_events, out_lines) == len(
        expected_events)
    assert out_events.tolist() == expected_events and out_lines.tolist() == expected_lines
    # Outputs one event short: the copy stops before the message that would not fit, writing nothing past them.
    if expected_events:
        short = np.zeros(len(expected_events) - 1, events.dtype)
        written = binance.gather_messages(events, messages, order, symbols, numbers, short, out_lines)
        assert written < len(expected_events) and short[:written].tolist() == expected_events[:written]
