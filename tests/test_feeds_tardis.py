"""tardis.dev incremental_book_L2 reader: exact events against a csv/Decimal reference,
snapshot runs (clear, then load), the real format sample, gzip, errors naming file, line and field."""

import gzip

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ringbook.engine.feeds import tardis
from ringbook.engine.feeds.source import FeedError
from ringbook.kernels import book as books
from ringbook.kernels.replay import replay_events
from tests import naive
from tests.feed_asserts import assert_events_equal

SAMPLE = "tardis/deribit_incremental_book_L2_BTC-PERPETUAL.csv"
HEADER = tardis.HEADER + "\n"
ROWS = """deribit,BTC-PERPETUAL,1000,1010,true,ask,6421.5,18640
deribit,BTC-PERPETUAL,1000,1010,true,bid,6420,100
deribit,BTC-PERPETUAL,2000,2010,false,bid,6420.5,7
deribit,BTC-PERPETUAL,2000,2010,false,ask,6421.5,0
deribit,ETH-PERPETUAL,2000,2011,false,ask,200.05,3.5
deribit,BTC-PERPETUAL,3000,3010,false,ask,6422,1
deribit,BTC-PERPETUAL,4000,4010,true,ask,6430,2
deribit,BTC-PERPETUAL,4000,4010,true,bid,6429,1
deribit,BTC-PERPETUAL,5000,5010,false,bid,6429,0
"""


def write(tmp_path, text, name="deribit_incremental_book_L2.csv", compress=False):
    path = tmp_path / (name + (".gz" if compress else ""))
    data = (HEADER + text).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_events_match_reference(tmp_path, compress):
    path = write(tmp_path, ROWS, compress=compress)
    feed = tardis.read_incremental(path)
    expected, price_scale, size_scale = naive.tardis_events(path)
    assert_events_equal(feed, expected)
    assert (price_scale, size_scale) == (2, 1)
    assert feed.instruments.table[0]["price_scale"] == 2 and feed.instruments.name_of(1) == "ETH-PERPETUAL"


def test_snapshot_after_incremental_rows_clears_then_loads(tmp_path):
    feed = tardis.read_incremental(write(tmp_path, ROWS))
    book = books.new_book(n_symbols=2)
    replay_events(book, feed.events)
    # The second snapshot (6430 ask, 6429 bid) replaced the first; then 6429 bid was deleted.
    assert books.best_ask(book, 0) == (643000, 20)
    assert books.level_count(book, 0, books.BID) == 0
    assert books.best_ask(book, 1) == (20005, 35)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A", "B"]), st.integers(0, 3), st.booleans(),
                          st.sampled_from(["bid", "ask"]), st.integers(1, 50), st.integers(0, 3),
                          st.integers(0, 999)), min_size=1, max_size=40))
def test_random_files_match_reference(tmp_path_factory, rows):
    text, time = "", 1_600_000_000_000_000
    for symbol, step, snapshot, side, price, decimals, amount in rows:
        time += step
        text += (f"ex,{symbol},{time},{time + 5},{str(snapshot).lower()},{side},{price}.{'5' * decimals},"
                 f"{amount}\n").replace(".,", ",")
    path = write(tmp_path_factory.mktemp("tardis"), text)
    expected, _, _ = naive.tardis_events(path)
    assert_events_equal(tardis.read_incremental(path), expected)


def test_real_format_sample(shared_data):
    path = shared_data / SAMPLE
    feed = tardis.read_incremental(path)
    expected, _, _ = naive.tardis_events(path)
    assert_events_equal(feed, expected)
    assert len(feed) == 15 + 2 and tardis.exchange_of(path) == "deribit"
    book = books.new_book(n_symbols=1)
    replay_events(book, feed.events)
    assert books.best_ask(book, 0) == (64215, 18640) and books.level_count(book, 0, books.ASK) == 15


@pytest.mark.parametrize("line, edit, field, reason", [
    (4, lambda row: row.replace("false", "maybe"), "is_snapshot", "true or false"),
    (4, lambda row: row.replace(",bid,", ",buy,"), "side", "bid or ask"),
    (6, lambda row: row.replace("3.5", "3.x"), "amount", "not a decimal"),
    (4, lambda row: row.replace(",2000,", ",2e3,"), "timestamp", "not a decimal"),
    (7, lambda row: row + ",extra", None, "8 fields"),
    (10, lambda row: row.replace(",0", ",-1"), "amount", "negative"),
])
def test_malformed_line_names_file_line_and_field(tmp_path, line, edit, field, reason):
    lines = (HEADER + ROWS).splitlines()
    lines[line - 1] = edit(lines[line - 1])
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FeedError) as caught:
        tardis.read_incremental(path)
    error = caught.value
    assert (error.path, error.line, error.field) == (str(path), line, field) and reason in str(error)
    assert np.all(error.partial.lines < line) and len(error.partial) > 0
    skipped = tardis.read_incremental(path, skip_malformed=True)
    assert skipped.skipped_lines == [line] and line not in skipped.lines.tolist()


def test_not_a_tardis_file(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(FeedError, match="line 1"):
        tardis.read_incremental(path)
