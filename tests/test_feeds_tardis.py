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


#: Whole fields an edited row may take: edge cases of every field's syntax and range.
FIELD_TOKENS = ["", "-1", "-0", "0", "+3", "1e3", ".5", "5.", "0.05", "1.23", "99999999999999999",
                "9223372036854775", "9223372036854776", "9223372036854775807", "true", "false", "TRUE", "bid",
                "ask", "x", "1,2", " 1"]


def assert_read_as_the_reference_says(path, row):
    """The third line of ``path`` is ``row`` (a CR before its LF ends the line): it is kept with
    the reference's values, or named by the first field the reference finds wrong."""
    row = row[:-1] if row.endswith("\r") else row
    problem = naive.tardis_row_problem(row, 2, 1)
    if problem is None:
        feed = tardis.read_incremental(path, price_scale=2, size_scale=1)
        event = feed.events[(feed.lines == 3) & (feed.events["kind"] == 1)][0]
        fields = row.split(",")
        assert (event["price"], event["quantity"]) == (naive._fixed(fields[6], 2), naive._fixed(fields[7], 1))
        assert (event["exchange_ns"], event["local_ns"]) == (naive._fixed(fields[2], 0) * 1000,
                                                             naive._fixed(fields[3], 0) * 1000)
        assert event["side"] == (books.BID if fields[5] == "bid" else books.ASK)
        return
    with pytest.raises(FeedError) as caught:
        tardis.read_incremental(path, price_scale=2, size_scale=1)
    assert caught.value.line == 3
    assert caught.value.field == (None if problem == "fields" else problem), (row, caught.value)


def with_row(path, row):
    path.write_text(HEADER + ROWS.splitlines()[0] + "\n" + row + "\n" + ROWS.splitlines()[2] + "\n")
    return path


def test_a_row_with_a_field_replaced_is_read_or_named_as_the_reference_says(tmp_path):
    """Each row is read in one pass where it is well formed, field by field where it is not:
    either way, as the reference reads it."""
    row = ROWS.splitlines()[4]
    for index in range(8):
        for token in FIELD_TOKENS:
            fields = row.split(",")
            fields[index] = token
            edited = ",".join(fields)
            assert_read_as_the_reference_says(with_row(tmp_path / "edited.csv", edited), edited)


@settings(max_examples=300, deadline=None)
@given(row=st.sampled_from(ROWS.splitlines()), edits=st.lists(
    st.tuples(st.integers(0, 80), st.sampled_from(["", *",.-+0123456789abdefklrstuE \r"])), min_size=1,
    max_size=3))
def test_an_edited_row_is_read_or_named_as_the_reference_says(tmp_path_factory, row, edits):
    for position, text in edits:
        position = min(position, len(row))
        row = row[:position] + text + row[position + 1:]
    assert_read_as_the_reference_says(with_row(tmp_path_factory.mktemp("edit") / "edited.csv", row), row)


def test_not_a_tardis_file(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(FeedError, match="line 1"):
        tardis.read_incremental(path)


# ---------------------------------------------------------------- streaming in bounded memory

#: The smallest memory limit: 4 KiB blocks, so a file of a few hundred rows spans many.
SMALL = 2**16


def many_rows(count, seed=7):
    """Rows of three interleaved symbols: messages of several rows, snapshot runs (some long
    enough to cross blocks) after incremental rows, a symbol that is rare."""
    rng = np.random.default_rng(seed)
    rows, time = [], 1_600_000_000_000_000
    while len(rows) < count:
        time += int(rng.integers(0, 3))
        symbol = rng.choice(["BTC-PERPETUAL", "ETH-PERPETUAL", "SOL-PERPETUAL"], p=[0.6, 0.38, 0.02])
        snapshot = rng.random() < 0.03
        for level in range(int(rng.integers(50, 200)) if snapshot else int(rng.integers(1, 4))):
            side = "bid" if rng.random() < 0.5 else "ask"
            price = f"{int(rng.integers(6000, 7000))}.{int(rng.integers(0, 100)):02d}".rstrip("0").rstrip(".")
            rows.append(f"deribit,{symbol},{time},{time + 7},{str(snapshot).lower()},{side},{price},"
                        f"{int(rng.integers(0, 500))}")
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("compress", [False, True])
def test_file_larger_than_a_block_reads_as_the_whole_file(tmp_path, compress):
    path = write(tmp_path, many_rows(3000), compress=compress)
    assert path.stat().st_size > 4 * SMALL // 16
    whole = tardis.read_incremental(path)
    chunks = list(tardis.iter_incremental(path, memory_limit=SMALL))
    assert len(chunks) > 10
    streamed = tardis.read_incremental(path, memory_limit=SMALL)
    np.testing.assert_array_equal(streamed.events, whole.events)
    np.testing.assert_array_equal(streamed.lines, whole.lines)
    expected, _, _ = naive.tardis_events(path)
    assert_events_equal(streamed, expected)


def test_given_scales_read_a_large_file_once_and_the_same(tmp_path):
    path = write(tmp_path, many_rows(2000))
    found = tardis.read_incremental(path)
    scale = found.instruments.table[0]
    given = tardis.read_incremental(path, memory_limit=SMALL, price_scale=int(scale["price_scale"]),
                                    size_scale=int(scale["size_scale"]))
    np.testing.assert_array_equal(given.events, found.events)


@pytest.mark.parametrize("name", ["synthetic.csv", "synthetic.csv.gz"])
def test_synthetic_file_reads_as_the_reference_and_its_book_never_crosses(tmp_path, name):
    from ringbook.engine.feeds import synthetic
    from ringbook.kernels.events import FLAG_BATCH_END

    path = synthetic.write_tardis_incremental(tmp_path / name, rows=3000, seed=3)
    feed = tardis.read_incremental(path)
    expected, price_scale, size_scale = naive.tardis_events(path)
    assert_events_equal(feed, expected)
    assert (price_scale, size_scale) == (1, 3) and len(feed.events) >= 3000
    book = books.new_book(n_symbols=1)
    crossed, start = [], 0
    for end in np.flatnonzero(feed.events["flags"] & FLAG_BATCH_END):
        replay_events(book, feed.events[start:end + 1])
        start = end + 1
        crossed.append(books.best_bid(book, 0)[0] >= books.best_ask(book, 0)[0])
    assert len(crossed) > 500 and not any(crossed)


@pytest.mark.parametrize("more_decimals_at", [None, 2, 2500])
def test_a_whole_read_takes_the_file_once_unless_a_later_block_has_more_decimals(tmp_path, monkeypatch,
                                                                                 more_decimals_at):
    """read_incremental reads a file larger than a block once, at its first block's scales; a
    later block with more decimals (of the price or of the amount) starts it over. Either way
    the events and scales are the stream's, which takes the scales in a pass of their own."""
    lines = (HEADER + many_rows(3000)).splitlines()
    if more_decimals_at is not None:
        fields = lines[more_decimals_at - 1].split(",")
        fields[6] += "" if "." in fields[6] else "."
        fields[6] += "0001"     # a digit more than any other price
        fields[7] += ".5"       # the first amount with decimals
        lines[more_decimals_at - 1] = ",".join(fields)
    path = tmp_path / "decimals.csv"
    path.write_text("\n".join(lines) + "\n")
    opened = []
    real = tardis.iter_blocks
    monkeypatch.setattr(tardis, "iter_blocks", lambda *args: opened.append(args) or real(*args))
    streamed = list(tardis.iter_incremental(path, memory_limit=SMALL))
    assert len(opened) == 2 and len(streamed) > 10
    opened.clear()
    whole = tardis.read_incremental(path, memory_limit=SMALL)
    assert len(opened) == (3 if more_decimals_at == 2500 else 1)
    np.testing.assert_array_equal(whole.events, np.concatenate([chunk.events for chunk in streamed]))
    np.testing.assert_array_equal(whole.instruments.table, streamed[0].instruments.table)
    expected, _, _ = naive.tardis_events(path)
    assert_events_equal(whole, expected)


@pytest.mark.parametrize("line", [5, 2500])
def test_malformed_line_in_a_later_block(tmp_path, line):
    lines = (HEADER + many_rows(3000)).splitlines()
    lines[line - 1] = lines[line - 1].replace(",bid,", ",buy,").replace(",ask,", ",sell,")
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FeedError) as caught:
        tardis.read_incremental(path, memory_limit=SMALL)
    error = caught.value
    assert (error.path, error.line, error.field) == (str(path), line, "side")
    with pytest.raises(FeedError) as whole:
        tardis.read_incremental(path)
    np.testing.assert_array_equal(error.partial.events, whole.value.partial.events)
    skipped = tardis.read_incremental(path, skip_malformed=True, memory_limit=SMALL)
    assert skipped.skipped_lines == [line]
    np.testing.assert_array_equal(skipped.events, tardis.read_incremental(path, skip_malformed=True).events)


def test_memory_stays_bounded_whatever_the_file_size(tmp_path):
    """Files of 5 and 20 times the memory limit, read chunk by chunk: the reader's peak
    allocation (numpy's included, as tracemalloc sees it) is the same for both, and about the
    limit (the whole text would be many times it)."""
    import tracemalloc

    limit = 2**19
    rows = many_rows(12_500) * 2
    list(tardis.iter_incremental(write(tmp_path, many_rows(100), name="warm.csv")))  # compiled beforehand
    peaks = []
    for repeats in (2, 8):
        path = write(tmp_path, rows * repeats, name=f"x{repeats}.csv", compress=True)
        assert len(gzip.decompress(path.read_bytes())) > 2.5 * repeats * limit
        events = 0
        tracemalloc.start()
        try:
            for chunk in tardis.iter_incremental(path, memory_limit=limit):
                events += len(chunk)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert events > 25_000 * repeats
    assert peaks[1] < 1.2 * peaks[0], f"peaks {peaks}"
    assert peaks[1] < 2 * limit, f"peak {peaks[1] / 2**20:.1f} MiB"


def test_a_pipe_larger_than_a_block_needs_its_scales(tmp_path):
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = (HEADER + many_rows(2000)).encode()

    def feed_the_pipe():
        try:
            fifo.write_bytes(data)
        except BrokenPipeError:  # the reader stopped early, as it should
            pass

    writer = threading.Thread(target=feed_the_pipe)
    writer.start()
    with pytest.raises(FeedError, match="price_scale and size_scale"):
        tardis.read_incremental(fifo, memory_limit=SMALL)
    writer.join()
    writer = threading.Thread(target=feed_the_pipe)
    writer.start()
    feed = tardis.read_incremental(fifo, memory_limit=SMALL, price_scale=2, size_scale=0)
    writer.join()
    path = write(tmp_path, many_rows(2000))
    np.testing.assert_array_equal(feed.events, tardis.read_incremental(path).events)
