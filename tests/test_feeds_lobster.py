"""LOBSTER reader: exact events against a plain csv/decimal reference, real files, errors."""

import datetime

import numpy as np
import pytest

from ringbook.engine.feeds import lobster
from ringbook.engine.feeds.source import FeedError
from ringbook.kernels.events import (ASK, BID, FLAG_BATCH_END, KIND_L3_ADD, KIND_L3_DELETE,
                            KIND_L3_EXECUTE_HIDDEN, KIND_STATUS, KIND_TRADE, STATUS_HALTED,
                            STATUS_QUOTING, STATUS_TRADING)
from tests import naive
from tests.feed_asserts import assert_events_equal

AAPL = "lobster/AAPL_2012-06-21_34200000_57600000_{}_10.csv"
AMZN = "lobster/AMZN_2012-06-21_34200000_57600000_{}_1.csv"
MESSAGES = """34200.004241176,1,16113575,18,5853300,1
34200.00426064,2,16113575,8,5853300,1
34200.1,3,16113584,18,5853200,-1
34200.2,4,16120456,5,5859100,-1
34200.25,5,0,7,5859000,1
34200.3,6,99,100,5856000,1
34200.4,7,0,0,-1,-1
34200.5,7,0,0,0,-1
34200.6,7,0,0,1,-1
"""


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_messages_match_reference(tmp_path, header, newline):
    text = ("Time,Type,OrderId,Size,Price,Direction\n" if header else "") + MESSAGES
    path = tmp_path / "TEST_2012-06-21_34200000_57600000_message_5.csv"
    path.write_bytes(text.replace("\n", newline).encode())
    feed = lobster.read_messages(path)
    midnight = lobster.midnight_ns(datetime.date(2012, 6, 21))
    assert_events_equal(feed, naive.lobster_events(path, midnight))
    assert feed.instruments.name_of(0) == "TEST"
    assert feed.records.tolist() == list(range(9))
    assert feed.lines[0] == (2 if header else 1)


def test_mapping_and_exact_time(tmp_path):
    path = tmp_path / "messages.csv"  # no date in the name: ns since midnight
    path.write_text(MESSAGES)
    events = lobster.read_messages(path).events
    assert events["exchange_ns"][0] == 34200_004241176
    assert events["exchange_ns"][1] == 34200_004260640
    assert events["kind"].tolist()[:6] == [KIND_L3_ADD, 3, KIND_L3_DELETE, 5, KIND_L3_EXECUTE_HIDDEN,
                                           KIND_TRADE]
    assert events["side"].tolist()[:6] == [BID, BID, ASK, ASK, BID, 0]
    assert events["quantity"][6:].tolist() == [STATUS_HALTED, STATUS_QUOTING, STATUS_TRADING]
    assert (events["kind"][6:] == KIND_STATUS).all() and (events["price"][6:] == 0).all()
    assert (events["flags"] == FLAG_BATCH_END).all()


def test_midnight_is_new_york():
    # 2012-06-21 is summer time: midnight in New York is 04:00 UTC.
    expected = datetime.datetime(2012, 6, 21, 4, tzinfo=datetime.timezone.utc).timestamp()
    assert lobster.midnight_ns(datetime.date(2012, 6, 21)) == int(expected) * 10**9
    expected = datetime.datetime(2012, 1, 3, 5, tzinfo=datetime.timezone.utc).timestamp()
    assert lobster.midnight_ns(datetime.date(2012, 1, 3)) == int(expected) * 10**9


@pytest.mark.parametrize("line, field, reason", [
    ("34200.5,1,7,10,5853300", None, "5 fields"),
    ("34200.5,1,7,10,5853300,1,9", None, "7 fields"),
    ("34200.5,1,7,1O,5853300,1", "size", "not a decimal"),
    ("34200.5,1,7,10.5,5853300,1", "size", "too many decimals"),
    ("34200.5,8,7,10,5853300,1", "type", "1..7"),
    ("34200.5,1,7,10,5853300,0", "direction", "1 or -1"),
    ("34200.5,1,7,10,-5,1", "price", "positive"),
    ("34200.5,1,7,-10,5853300,1", "size", "negative"),
    ("34200.1234567891,1,7,10,5853300,1", "time", "too many decimals"),
    ("-34200.5,1,7,10,5853300,1", "time", "out of range"),
])
def test_malformed_line_names_file_line_and_field(tmp_path, line, field, reason):
    path = tmp_path / "messages.csv"
    lines = MESSAGES.splitlines()
    lines.insert(3, line)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FeedError) as caught:
        lobster.read_messages(path)
    error = caught.value
    assert error.line == 4 and error.field == field and reason in error.reason
    assert str(path) in str(error) and "line 4" in str(error)
    assert len(error.partial) == 3  # what was read before it is kept
    feed = lobster.read_messages(path, skip_malformed=True)
    assert feed.skipped_lines == [4] and len(feed) == 9
    assert feed.records.tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9]


def test_orderbook_reader(tmp_path):
    path = tmp_path / "orderbook.csv"
    path.write_text("AskPrice1,AskSize1,BidPrice1,BidSize1,AskPrice2,AskSize2,BidPrice2,BidSize2\n"
                    "5859400,200,5853300,18,5859800,200,-9999999999,0\n"
                    "5859400,100,5853300,18,9999999999,0,-9999999999,0\n")
    book = lobster.read_orderbook(path)
    assert book.levels == 2 and len(book) == 2
    assert book.ask_price[0].tolist() == [5859400, 5859800]
    assert book.bid_size[1].tolist() == [18, 0]
    assert book.lines.tolist() == [2, 3]
    path.write_text("5859400,200,5853300,18\n5859400,200,5853300\n")
    with pytest.raises(FeedError, match="line 2: 3 fields, expected 4"):
        lobster.read_orderbook(path)


def test_orderbook_negative_size_ends_the_rows_before_it(tmp_path):
    """The chunk before the row is whole; the error names the row's line."""
    path = tmp_path / "orderbook.csv"
    path.write_text("5859400,200,5853300,18,5859800,200,5853200,5\n"
                    "5859400,100,5853300,18,5859800,200,5853200,7\n"
                    "5859400,100,5853300,18,5859800,200,5853200,-7\n"
                    "5859400,100,5853300,18,5859800,200,5853200,9\n")
    chunks = []
    with pytest.raises(FeedError, match="line 3: negative size"):
        for chunk in lobster.iter_orderbook(path):
            chunks.append(chunk)
    assert [len(chunk) for chunk in chunks] == [2]
    assert chunks[0].bid_size.tolist() == [[18, 5], [18, 7]] and chunks[0].lines.tolist() == [1, 2]


def test_real_messages_match_reference(shared_data):
    for name in (AAPL, AMZN):
        path = shared_data / name.format("message")
        feed = lobster.read_messages(path)
        midnight = lobster.midnight_ns(datetime.date(2012, 6, 21))
        assert_events_equal(feed, naive.lobster_events(path, midnight))
        book = lobster.read_orderbook(shared_data / name.format("orderbook"))
        assert len(book) == len(feed)
        rows = naive.lobster_rows(shared_data / name.format("orderbook"))
        assert book.levels == len(rows[0][1]) // 4
        columns = np.array([[int(field) for field in fields] for _, fields in rows], np.int64)
        for kind, array in enumerate((book.ask_price, book.ask_size, book.bid_price, book.bid_size)):
            np.testing.assert_array_equal(array, columns[:, kind::4])


def test_a_corrupted_first_line_is_not_a_header(tmp_path):
    path = tmp_path / "messages.csv"
    path.write_text("34200.5,1,7,x,5853300,1\n" + MESSAGES)
    with pytest.raises(FeedError, match="line 1, field 'size'"):
        lobster.read_messages(path)
    path.write_text("34200.5,1,7\n")
    with pytest.raises(FeedError, match="line 1: 3 fields, expected 6"):
        lobster.read_messages(path)
    orderbook = tmp_path / "orderbook.csv"
    orderbook.write_text("AskPrice1,AskSize1,BidPrice1,BidSize1\n5859400,200,5853300\n")
    with pytest.raises(FeedError, match="line 2: 3 fields: an orderbook row has 4 per level"):
        lobster.read_orderbook(orderbook)


def test_a_time_beyond_int64_ns_from_midnight_is_named(tmp_path):
    path = tmp_path / "TEST_2012-06-21_34200000_57600000_message_5.csv"
    path.write_text(MESSAGES + "9223372036.5,1,7,10,5853300,1\n")
    with pytest.raises(FeedError, match="line 10, field 'time': time out of range"):
        lobster.read_messages(path)
