"""Book snapshots at interval boundaries: the kernel against the naive reference, the exchange's
own truth on real files (LOBSTER orderbook rows, Binance bookTickers), and the three file formats."""

import csv
import io
from decimal import Decimal

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ringbook.engine import snapshots
from ringbook.engine.feeds import binance, lobster, synthetic
from ringbook.engine.feeds.source import Feed
from ringbook.kernels import snapshots as kernels
from ringbook.kernels.book import NO_PRICE, new_book, top_levels
from ringbook.kernels.orders import with_more_order_slots
from ringbook.kernels.events import (FLAG_BATCH_END, KIND_L2_SET, KIND_TOP_OF_BOOK, Instruments,
                                     empty_events)
from ringbook.kernels.status import BAD_ARGUMENT, FULL, OK
from tests import naive
from tests.llvm_ir import allocation_calls

AAPL = "lobster/AAPL_2012-06-21_34200000_57600000_{}_10.csv"
AMZN = "lobster/AMZN_2012-06-21_34200000_57600000_{}_1.csv"
CAPTURE = "binance/spot_btcusdt_20240808.gz"
TARDIS_SNAPSHOT = "tardis/binance-futures_book_snapshot_25_BTCUSDT.csv"
SECOND = 10**9


def assert_matches_reference(table, events, symbol, interval, levels):
    expected = naive.snapshots(events, symbol, interval, levels)
    assert len(table) == len(expected)
    for row, (boundary, bids, asks) in enumerate(expected):
        assert table.times[row] == boundary
        for prices, quantities, wanted in ((table.bid_prices, table.bid_quantities, bids),
                                           (table.ask_prices, table.ask_quantities, asks)):
            found = [(int(p), int(q)) for p, q in zip(prices[row], quantities[row]) if p != NO_PRICE]
            assert found == wanted, (row, boundary)
            assert (quantities[row][len(wanted):] == 0).all()


@pytest.mark.parametrize("interval", [SECOND // 10, SECOND, 7 * SECOND])
@pytest.mark.parametrize("levels", [1, 3, 8])
def test_lobster_replay_matches_reference(tmp_path, interval, levels):
    messages, _ = synthetic.write_lobster(tmp_path, messages=800, levels=5, seed=3)
    feed = lobster.read_messages(messages)
    table = snapshots.snapshot_feed(feed, 0, interval, levels)
    assert len(table) > 0
    assert_matches_reference(table, feed.events, 0, interval, levels)


def test_binance_replay_matches_reference(tmp_path):
    """Snapshots, held-back diffs and tickers without an exchange time (they do not move the clock)."""
    feed = binance.read_capture(synthetic.write_binance_capture(tmp_path / "c.gz", diffs=400))
    table = snapshots.snapshot_feed(feed, 0, SECOND // 4, 10)
    assert_matches_reference(table, feed.events, 0, SECOND // 4, 10)


def l2_events(rows):
    events = empty_events(len(rows))
    for i, (time, side, price, quantity, batch_end) in enumerate(rows):
        events[i]["exchange_ns"], events[i]["kind"], events[i]["side"] = time, KIND_L2_SET, side
        events[i]["price"], events[i]["quantity"] = price, quantity
        events[i]["flags"] = FLAG_BATCH_END if batch_end else 0
    events[-1]["flags"] = FLAG_BATCH_END
    return events


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.sampled_from([1, -1]), st.integers(90, 110),
                          st.integers(0, 5), st.booleans()), min_size=1, max_size=60),
       st.sampled_from([1, 100, 250, 1000]), st.integers(1, 4), st.sampled_from([None, 1, 2, 5]))
def test_random_times_match_reference(rows, interval, levels, piece_rows):
    """Times with zeros (no exchange time), repeats, jumps backwards and messages of several events;
    all rows at once, or in pieces of a few rows (the kernel resumes where the outputs were full)."""
    events = l2_events(rows)
    instruments = Instruments(1)
    instruments.intern("X", 0, 0, 1)
    feed = Feed(events, np.arange(len(events)) + 1, instruments, "x")
    if piece_rows is None:
        table = snapshots.snapshot_feed(feed, 0, interval, levels)
    else:
        table = snapshots.joined(assert_at_most(piece_rows, snapshots.snapshot_pieces(
            feed, 0, interval, levels, piece_rows=piece_rows)))
    assert_matches_reference(table, events, 0, interval, levels)


def assert_at_most(rows, pieces):
    """The pieces, each checked to hold at most ``rows`` rows."""
    for piece in pieces:
        assert len(piece) <= rows
        yield piece


def assert_same_snapshots(table, expected):
    assert (table.exchange, table.symbol, table.price_scale, table.size_scale) == (
        expected.exchange, expected.symbol, expected.price_scale, expected.size_scale)
    for name in snapshots.ARRAYS:
        assert np.array_equal(getattr(table, name), getattr(expected, name)), name


@pytest.mark.parametrize("pair, piece_rows", [(AMZN, 1000), (AAPL, 7), (AAPL, 1)])
def test_lobster_pieces_equal_the_whole(shared_data, pair, piece_rows):
    """The reconciled replay resumes where its outputs were full: the pieces make the same rows."""
    feed = lobster.read_messages(shared_data / pair.format("message"))
    orderbook = lobster.read_orderbook(shared_data / pair.format("orderbook"))
    whole = snapshots.snapshot_feed(feed, 0, SECOND, 10, exchange="nasdaq", orderbook=orderbook)
    pieces = snapshots.snapshot_pieces(feed, 0, SECOND, 10, exchange="nasdaq", orderbook=orderbook,
                                       piece_rows=piece_rows)
    tally = snapshots.Tally()
    assert_same_snapshots(snapshots.joined(assert_at_most(piece_rows, tally.passing(pieces))), whole)
    assert (tally.rows, tally.first_boundary, tally.last_boundary) == (len(whole), whole.times[0], whole.times[-1])
    assert len(whole) > 3 * piece_rows


@pytest.mark.parametrize("pair, memory_limit", [(AMZN, 1 << 18), (AAPL, 1 << 16), (AMZN, None)])
def test_a_streamed_lobster_file_gives_the_whole_files_snapshots(shared_data, pair, memory_limit):
    """Both files streamed side by side, in chunks that do not line up: the rows of the whole file."""
    feed = lobster.read_messages(shared_data / pair.format("message"))
    orderbook = lobster.read_orderbook(shared_data / pair.format("orderbook"))
    whole = snapshots.snapshot_feed(feed, 0, SECOND, 10, exchange="nasdaq", orderbook=orderbook)
    chunks = lobster.iter_messages(shared_data / pair.format("message"), memory_limit=memory_limit)
    rows = lobster.OrderbookStream(lobster.iter_orderbook(shared_data / pair.format("orderbook"),
                                                          memory_limit=memory_limit))
    streamed = snapshots.joined(snapshots.stream_pieces(chunks, SECOND, 10, exchange="nasdaq", orderbook=rows,
                                                        piece_rows=500))
    assert_same_snapshots(streamed, whole)
    assert len(whole) > 40


@pytest.mark.parametrize("memory_limit", [1 << 18, None])
def test_a_streamed_replay_grows_its_order_table(shared_data, monkeypatch, memory_limit):
    """LOBSTER messages replayed without their orderbook file, streamed, with an order table that
    starts at 16 slots and grows within a chunk and between chunks: the rows of the whole file."""
    feed = lobster.read_messages(shared_data / AMZN.format("message"))
    whole = snapshots.snapshot_feed(feed, 0, SECOND, 10, exchange="nasdaq")
    grown = []
    monkeypatch.setattr(snapshots, "order_slots_for", lambda events: 16)
    monkeypatch.setattr(snapshots, "with_more_order_slots", lambda book: grown.append(1) or with_more_order_slots(book))
    chunks = lobster.iter_messages(shared_data / AMZN.format("message"), memory_limit=memory_limit)
    streamed = snapshots.joined(snapshots.stream_pieces(chunks, SECOND, 10, exchange="nasdaq", piece_rows=500))
    assert_same_snapshots(streamed, whole)
    assert len(grown) > 1 and len(whole) > 40


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=30), st.sampled_from([1, 100, 250, 1000]))
def test_time_span_and_boundary_count_match_reference(times, interval):
    """Times with zeros (no exchange time), repeats and jumps backwards."""
    events = l2_events([(time, 1, 100, 1, True) for time in times])
    known = [time for time in times if time > 0]
    assert kernels.time_span(events) == ((known[0], min(known), max(known)) if known else (0, 0, 0))
    assert kernels.boundary_count(events, interval) == len(naive.snapshots(events, 0, interval, 1))


def test_rows_of_records_pair_each_event_with_the_row_of_its_record():
    def rows(*records):
        return np.array(records, np.int64)

    assert lobster.rows_of_records(rows(0, 1, 2, 3), rows(0, 1, 2, 3)).tolist() == [0, 1, 2, 3]
    # A message of two events, a row that was left out, a message after the last row.
    assert lobster.rows_of_records(rows(0, 2, 3), rows(0, 1, 1, 2, 4)).tolist() == [0, -1, -1, 1, -1]
    assert lobster.rows_of_records(rows(0), rows()).tolist() == []
    assert lobster.rows_of_records(rows(), rows(0, 1)).tolist() == [-1, -1]
    # A streamed window: row 0 is the row reconciled last, never paired again.
    assert lobster.rows_of_records(rows(4, 5, 6), rows(5, 6), first=1).tolist() == [1, 2]
    assert lobster.rows_of_records(rows(4, 6), rows(4, 5, 6), first=1).tolist() == [-1, -1, 1]


def test_full_outputs_stop_without_writing_outside():
    events = l2_events([(100, 1, 10, 1, True), (950, -1, 12, 2, True)])
    out = snapshots._outputs(3, 2)
    cursor = kernels.new_cursor()
    next_index, status = kernels.take_snapshots(new_book(1, depth=8, order_capacity=16), 0, events, 0, 2, 100,
                                                cursor, *out)
    assert (next_index, status) == (1, FULL)       # boundaries 100..800 do not fit in 3 rows
    assert cursor[kernels.CURSOR_ROWS] == 3 and out[0].tolist() == [100, 200, 300]


@pytest.mark.slow
def test_snapshot_kernel_allocates_nothing():
    array = numba.types.Array(numba.types.int64, 1, "C")
    matrix = numba.types.Array(numba.types.int64, 2, "C")
    signature = (numba.typeof(new_book(1, depth=1, order_capacity=16)), numba.types.int64,
                 numba.typeof(empty_events(1)), numba.types.int64, numba.types.int64, numba.types.int64,
                 array, array, array, array, array, matrix, matrix, matrix, matrix)
    assert allocation_calls(kernels.take_snapshots, signature) == []


# ---------------------------------------------------------------- the exchange's own truth

@pytest.mark.parametrize("pair", [AAPL, AMZN])
def test_lobster_snapshots_equal_orderbook_rows(shared_data, pair):
    """Every boundary, every level the file has: the row of the last message at or before it."""
    feed = lobster.read_messages(shared_data / pair.format("message"))
    orderbook = lobster.read_orderbook(shared_data / pair.format("orderbook"))
    table = snapshots.snapshot_feed(feed, 0, SECOND, orderbook.levels, orderbook=orderbook)
    times = feed.events["exchange_ns"]
    assert len(table) == times[-1] // SECOND - -(-times[0] // SECOND) + 1
    last = np.searchsorted(times, table.times, side="right") - 1
    rows = feed.records[last]
    for found_prices, found_sizes, prices, sizes in (
            (table.bid_prices, table.bid_quantities, orderbook.bid_price, orderbook.bid_size),
            (table.ask_prices, table.ask_quantities, orderbook.ask_price, orderbook.ask_size)):
        shown = sizes[rows] > 0
        assert np.array_equal(np.where(shown, found_prices, 0), np.where(shown, prices[rows], 0))
        assert np.array_equal(np.where(shown, found_sizes, 0), np.where(shown, sizes[rows], 0))
        # An empty level of the row is empty in the snapshot.
        assert (found_prices[~shown] == NO_PRICE).all()
    assert np.array_equal(table.last_ns, times[last])


@pytest.mark.slow
def test_binance_snapshots_equal_book_ticker(shared_data):
    """Where the last applied diff's update id equals the last bookTicker's, best bid/ask equal it."""
    feed = binance.read_capture(shared_data / CAPTURE)
    table = snapshots.snapshot_feed(feed, 0, SECOND // 10, 5)
    events = feed.events
    # The events before each boundary: those before the first message that starts later than it.
    message_start = np.concatenate(([True], (events["flags"][:-1] & FLAG_BATCH_END) != 0))
    checked = 0
    for row, boundary in enumerate(table.times):
        later = np.flatnonzero(message_start & (events["exchange_ns"] > boundary))
        applied = events[:later[0]] if len(later) else events
        tickers = np.flatnonzero(applied["kind"] == KIND_TOP_OF_BOOK)
        if len(tickers) < 2:
            continue
        bid, ask = applied[tickers[-2]], applied[tickers[-1]]
        if bid["sequence"] != table.sequences[row]:
            continue
        checked += 1
        assert (table.bid_prices[row, 0], table.bid_quantities[row, 0]) == (bid["price"], bid["quantity"])
        assert (table.ask_prices[row, 0], table.ask_quantities[row, 0]) == (ask["price"], ask["quantity"])
    print(f"{checked} of {len(table)} boundaries at a bookTicker's update id")
    assert checked >= 90


# ---------------------------------------------------------------- files

def small_table():
    table = snapshots.Snapshots(
        "binance", "BTCUSDT", 8, 8, np.array([SECOND, 2 * SECOND]), np.array([SECOND - 5, SECOND - 5]),
        np.array([0, 2 * SECOND + 123_456]), np.array([7, 7]),
        np.array([[6173763000000, 6173762000000], [6173763000000, NO_PRICE]]),
        np.array([[150000000, 1], [100000000, 0]]),
        np.array([[6173764000000, NO_PRICE], [NO_PRICE, NO_PRICE]]), np.array([[12345, 0], [0, 0]]))
    return table


def test_csv_header_is_tardis_book_snapshot(shared_data):
    header = (shared_data / TARDIS_SNAPSHOT).read_text().splitlines()[0]
    assert snapshots.csv_header(25) == header


def test_csv_rows_exact_decimals_and_empty_levels():
    text = snapshots.csv_bytes(small_table()).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == snapshots.csv_header(2).split(",")
    assert rows[1] == ["binance", "BTCUSDT", "1000000", "1000000", "61737.64", "0.00012345", "61737.63", "1.5",
                       "", "", "61737.62", "0.00000001"]
    assert rows[2] == ["binance", "BTCUSDT", "2000000", "2000123", "", "", "61737.63", "1", "", "", "", ""]


def test_csv_numbers_round_trip_through_decimal():
    table = small_table()
    rows = list(csv.DictReader(io.StringIO(snapshots.csv_bytes(table).decode())))
    assert Decimal(rows[0]["bids[0].price"]).scaleb(8) == int(table.bid_prices[0, 0])


def table_arrays(table):
    return (table.exchange, table.symbol, table.price_scale, table.size_scale, table.times, table.last_local_ns,
            table.bid_prices, table.bid_quantities, table.ask_prices, table.ask_quantities)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 12), st.integers(1, 4), st.integers(0, 18), st.integers(0, 18), st.integers(1, 3),
       st.data())
def test_csv_matches_reference_in_any_pieces(rows, levels, price_scale, size_scale, distinct, data):
    """Rows that repeat the previous one's levels (copied), local times equal to the boundary or not,
    negative and extreme numbers, absent levels; written whole and one row a piece."""
    value = st.one_of(st.integers(-10**6, 10**6), st.integers(-2**63 + 1, 2**63 - 1), st.just(0))
    variants = []
    for _ in range(distinct):
        prices = np.array(data.draw(st.lists(st.one_of(value, st.just(NO_PRICE)), min_size=2 * levels,
                                             max_size=2 * levels)), np.int64).reshape(2, levels)
        quantities = np.array(data.draw(st.lists(value, min_size=2 * levels, max_size=2 * levels)),
                              np.int64).reshape(2, levels)
        variants.append((prices, quantities))
    pick = data.draw(st.lists(st.integers(0, distinct - 1), min_size=rows, max_size=rows))
    times = np.array(sorted(data.draw(st.lists(st.integers(1, 2**62), min_size=rows, max_size=rows))), np.int64)
    local = np.array(data.draw(st.lists(st.sampled_from([0, -5, 1, 2**61 + 123_456]), min_size=rows,
                                        max_size=rows)), np.int64)
    local = np.where(data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows)) if rows else [], times, local)
    matrices = [np.array([variants[k][kind][side] for k in pick], np.int64).reshape(rows, levels)
                for kind, side in ((0, 0), (1, 0), (0, 1), (1, 1))]
    table = snapshots.Snapshots("ex", "SYM-1", price_scale, size_scale, times, times, local, times, *matrices)
    expected = naive.snapshot_csv(*table_arrays(table), NO_PRICE)
    assert snapshots.csv_bytes(table).decode() == expected
    sink = io.BytesIO()   # formatted a row at a time: a buffer that holds only the widest row
    writer = snapshots.SnapshotWriter(sink, "csv", scratch=np.empty(1, np.uint8))
    writer.add(table)
    writer.finish()
    assert sink.getvalue().decode() == expected and len(writer.scratch) < snapshots.CSV_PIECE


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 4), st.sampled_from([1, 99_999_990, 10**8 - 1, 10**15 - 7]),
       st.sampled_from([1, 3, 1000, 10**6]), st.data())
def test_csv_rows_copied_in_part_from_the_previous_row_match_reference(rows, levels, first_us, interval_us, data):
    """Boundaries a fixed interval apart (their leading digits repeat, and cross a power of ten),
    and each level drawn from a few values (a row often repeats some of the previous row's
    levels, not all): written whole and one row a piece."""
    cell = st.sampled_from([NO_PRICE, 0, 1, 25, 10**6])
    matrices = [np.array(data.draw(st.lists(cell, min_size=rows * levels, max_size=rows * levels)),
                         np.int64).reshape(rows, levels) for _ in range(4)]
    times = (first_us + interval_us * np.arange(rows, dtype=np.int64)) * 1000
    table = snapshots.Snapshots("ex", "SYM", 2, 0, times, times, times, times, *matrices)
    expected = naive.snapshot_csv(*table_arrays(table), NO_PRICE)
    assert snapshots.csv_bytes(table).decode() == expected
    sink = io.BytesIO()
    writer = snapshots.SnapshotWriter(sink, "csv", scratch=np.empty(1, np.uint8))
    writer.add(table)
    writer.finish()
    assert sink.getvalue().decode() == expected


def test_csv_rows_refuse_arrays_of_other_shapes():
    table = small_table()
    out = np.zeros(4096, np.uint8)
    prefix = np.frombuffer(b"x,y,", np.uint8)
    assert snapshots.format_csv_rows(prefix, table.times, table.last_local_ns, table.bid_prices[:1],
                                     table.bid_quantities, table.ask_prices, table.ask_quantities, 8, 8, 0,
                                     out) == (0, BAD_ARGUMENT)
    assert not out.any()


def test_csv_of_real_snapshots_matches_reference(shared_data):
    feed = lobster.read_messages(shared_data / AMZN.format("message"))
    orderbook = lobster.read_orderbook(shared_data / AMZN.format("orderbook"))
    table = snapshots.snapshot_feed(feed, 0, SECOND, 10, exchange="nasdaq", orderbook=orderbook)
    assert snapshots.csv_bytes(table).decode() == naive.snapshot_csv(*table_arrays(table), NO_PRICE)


def test_parquet_typed_columns_and_nulls():
    pq = pytest.importorskip("pyarrow.parquet")
    data = snapshots.parquet_bytes(small_table())
    assert data == snapshots.parquet_bytes(small_table())
    table = pq.read_table(io.BytesIO(data))
    assert table.column_names[:8] == snapshots.csv_header(2).split(",")[:8]
    assert table.column("bids[0].price").to_pylist() == [Decimal("61737.63000000")] * 2
    assert table.column("asks[0].price").to_pylist() == [Decimal("61737.64000000"), None]
    assert table.column("bids[1].amount").to_pylist() == [Decimal("0.00000001"), None]
    assert table.column("sequence").to_pylist() == [7, 7]
    assert table.column("last_exchange_ns").to_pylist() == [SECOND - 5] * 2


def published(orderbook):
    return orderbook.bid_price, orderbook.bid_size, orderbook.ask_price, orderbook.ask_size


def test_published_kernel_stops_when_full_and_says_where_to_resume(shared_data):
    feed = lobster.read_messages(shared_data / AAPL.format("message"))
    orderbook = lobster.read_orderbook(shared_data / AAPL.format("orderbook"))
    rows = lobster.rows_of_records(orderbook.records, feed.records)
    out, cursor = snapshots._outputs(1, 10), kernels.new_cursor()
    index, current, stops = 0, -1, 0
    while True:
        index, status, current = kernels.take_published_snapshots(feed.events, rows, *published(orderbook), index,
                                                                  current, SECOND, cursor, *out)
        if status != FULL:
            break
        stops += 1
        # Stopped at the first event after the boundary with no room, at the row of the one before.
        boundary = cursor[kernels.CURSOR_NEXT_BOUNDARY]
        assert cursor[kernels.CURSOR_ROWS] == 1 and out[0][0] < boundary
        assert feed.events[index - 1]["exchange_ns"] <= boundary < feed.events[index]["exchange_ns"]
        assert current == rows[index - 1]
        cursor[kernels.CURSOR_ROWS] = 0
    assert (status, index, current) == (OK, len(feed.events), rows[-1]) and stops >= 40


def published_table(events, row_of_event, rows, interval, levels, piece_rows):
    """The kernels' snapshots of published ``rows``, taken ``piece_rows`` at a time."""
    out, cursor, taken = snapshots._outputs(piece_rows, levels), kernels.new_cursor(), []

    def used():
        count = int(cursor[kernels.CURSOR_ROWS])
        taken.append([array[:count].copy() for array in out])
        cursor[kernels.CURSOR_ROWS] = 0

    index, status, current = 0, FULL, -1
    while status == FULL:
        index, status, current = kernels.take_published_snapshots(events, row_of_event, *rows, index, current,
                                                                  interval, cursor, *out)
        if status == FULL:
            used()
    assert (status, index) == (OK, len(events))
    while (status := kernels.finish_published_snapshots(*rows, current, interval, cursor, *out)) == FULL:
        used()
    assert status == OK
    used()
    return snapshots.Snapshots("x", "X", 0, 0, *(np.concatenate(arrays) for arrays in zip(*taken)))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.booleans(), st.integers(-2, 6)), min_size=1, max_size=40),
       st.sampled_from([1, 100, 250, 1000]), st.integers(1, 5), st.sampled_from([1, 2, 7, 400]), st.data())
def test_published_snapshots_match_reference(messages, interval, levels, piece_rows, data):
    """Times with zeros, repeats and jumps backwards, messages of several events, events without a
    row or with one outside the rows, rows with empty levels anywhere, more levels asked than the
    rows have or fewer; in pieces of any size."""
    depth = data.draw(st.integers(1, 4))
    count = data.draw(st.integers(1, 6))
    sizes = np.array(data.draw(st.lists(st.sampled_from([0, 1, 7]), min_size=4 * count * depth,
                                        max_size=4 * count * depth)), np.int64).reshape(4, count, depth)
    prices = np.arange(4 * count * depth, dtype=np.int64).reshape(4, count, depth) + 100
    rows = (prices[0], sizes[0], prices[1], sizes[1])
    events = l2_events([(time, 1, 100, 1, end) for time, end, _ in messages])
    row_of_event = np.array([row for _, _, row in messages], np.int64)
    table = published_table(events, row_of_event, rows, interval, levels, piece_rows)
    assert_matches(table, naive.published_snapshots(events, row_of_event, *rows, interval, levels))


def assert_matches(table, expected):
    assert len(table) == len(expected)
    for row, (boundary, bids, asks) in enumerate(expected):
        assert table.times[row] == boundary
        for prices, quantities, wanted in ((table.bid_prices, table.bid_quantities, bids),
                                           (table.ask_prices, table.ask_quantities, asks)):
            assert [(int(p), int(q)) for p, q in zip(prices[row], quantities[row]) if p != NO_PRICE] == wanted
            assert (prices[row][len(wanted):] == NO_PRICE).all() and (quantities[row][len(wanted):] == 0).all()


def test_published_kernel_refuses_rows_it_cannot_read():
    """Rows of other shapes, or a current row outside them: nothing read or written."""
    rows = np.ones((3, 2), np.int64)
    events = l2_events([(SECOND, 1, 100, 5, True), (3 * SECOND, 1, 100, 6, True)])
    row_of_event = np.array([0, 1], np.int64)
    for arrays, current in (((rows, rows[:, :1], rows, rows), -1), ((rows, rows, rows[:2], rows), -1),
                            ((rows,) * 4, 3), ((rows,) * 4, -2)):
        out, cursor = snapshots._outputs(4, 2), kernels.new_cursor()
        before = [array.copy() for array in out]
        assert kernels.take_published_snapshots(events, row_of_event, *arrays, 0, current, SECOND, cursor,
                                                *out)[1:] == (BAD_ARGUMENT, current)
        assert kernels.finish_published_snapshots(*arrays, current, SECOND, cursor, *out) == BAD_ARGUMENT
        assert not cursor.any() and all(np.array_equal(a, b) for a, b in zip(out, before))


def test_finishing_with_a_short_cursor_reads_nothing():
    """A cursor too short for its fields: refused (the clock is not read from it)."""
    rows, out = np.ones((1, 2), np.int64), snapshots._outputs(2, 2)
    for cursor in (np.zeros(0, np.int64), np.zeros(kernels.N_CURSOR - 1, np.int64)):
        assert kernels.finish_snapshots(new_book(1, depth=8, order_capacity=16), 0, SECOND, cursor,
                                        *out) == BAD_ARGUMENT
        assert kernels.finish_published_snapshots(rows, rows, rows, rows, 0, SECOND, cursor, *out) == BAD_ARGUMENT


@numba.njit
def _record_boundaries(book, events, i, state):
    """A reconciled replay's callback: the book's best levels at each boundary that message
    ``i`` is the last at or before (state: first boundary, then a row of levels per boundary)."""
    interval, first = state[0, 0], state[0, 1]
    time = events[i].exchange_ns
    until = events[i + 1].exchange_ns if i + 1 < events.shape[0] else time + 1
    levels = (state.shape[1] - 2) // 4
    boundary = max(-(-time // interval) * interval, first)
    while boundary < until:
        row = state[1 + (boundary - first) // interval]
        row[:] = 0
        top_levels(book, 0, 1, row[:levels], row[levels:2 * levels])
        top_levels(book, 0, -1, row[2 * levels:3 * levels], row[3 * levels:4 * levels])
        boundary += interval


@pytest.mark.parametrize("pair", [AAPL, AMZN])
def test_published_snapshots_are_the_reconciled_replays_levels(shared_data, pair):
    """A replay seeded from the orderbook file and reconciled with it after every message holds,
    at every boundary, the levels the snapshot takes from the rows; of the levels beyond those
    the file shows (whose messages LOBSTER leaves out) the snapshot says nothing."""
    from ringbook.engine.reconciled import replay_lobster
    from ringbook.kernels.replay import EVERY_EVENT

    feed = lobster.read_messages(shared_data / pair.format("message"))
    orderbook = lobster.read_orderbook(shared_data / pair.format("orderbook"))
    depth = orderbook.levels
    table = snapshots.snapshot_feed(feed, 0, SECOND, depth + 3, exchange="nasdaq", orderbook=orderbook)
    state = np.zeros((1 + len(table), 2 + 4 * (depth + 1)), np.int64)   # a level more than the file's
    state[0, :2] = SECOND, table.times[0]
    book = new_book(1, depth=4096, order_capacity=1 << 16, ticks=np.array([100]))
    assert replay_lobster(book, 0, feed.events, feed.records, orderbook, _record_boundaries, state,
                          EVERY_EVENT) == (len(feed.events), OK)
    replayed = state[1:, :-2].reshape(len(table), 4, depth + 1)
    for found_prices, found_sizes, k in ((table.bid_prices, table.bid_quantities, 0),
                                         (table.ask_prices, table.ask_quantities, 2)):
        held = replayed[:, k + 1, :depth] > 0
        assert np.array_equal(np.where(held, replayed[:, k, :depth], NO_PRICE), found_prices[:, :depth])
        assert np.array_equal(replayed[:, k + 1, :depth], found_sizes[:, :depth])
        assert (found_prices[:, depth:] == NO_PRICE).all() and not found_sizes[:, depth:].any()
        # The replay holds a level beyond the file's at some boundaries: what it was when last seen.
        assert (replayed[:, k + 1, depth] > 0).any()


@pytest.mark.parametrize("format", snapshots.FORMATS)
def test_files_written_from_pieces_equal_files_of_the_whole(tmp_path, monkeypatch, format):
    """Byte for byte, Parquet row groups included (of a fixed number of rows, however the rows came)."""
    if format == "parquet":
        pq = pytest.importorskip("pyarrow.parquet")
        monkeypatch.setattr(snapshots, "PARQUET_ROW_GROUP", 40)
    messages, orderbook_path = synthetic.write_lobster(tmp_path, messages=3000, levels=5, seed=4)
    feed, orderbook = lobster.read_messages(messages), lobster.read_orderbook(orderbook_path)
    whole = snapshots.snapshot_feed(feed, 0, SECOND // 10, 5, exchange="nasdaq", orderbook=orderbook)
    snapshots.write_snapshots(whole, tmp_path / "whole", format)
    pieces = snapshots.snapshot_pieces(feed, 0, SECOND // 10, 5, exchange="nasdaq", orderbook=orderbook,
                                       piece_rows=17)
    snapshots.write_snapshots(pieces, tmp_path / "pieces", format)
    assert len(whole) > 100
    assert (tmp_path / "pieces").read_bytes() == (tmp_path / "whole").read_bytes()
    if format == "parquet":
        assert pq.ParquetFile(tmp_path / "pieces").num_row_groups == -(-len(whole) // 40)


def test_a_shard_of_many_rows_is_written_in_bounded_memory(tmp_path):
    """An hour at 1 ms: 3.6 million rows, whose arrays alone would take 200 MB, written a piece at a time."""
    import tracemalloc

    events = l2_events([(SECOND, 1, 100, 5, True), (3601 * SECOND, -1, 101, 2, True)])
    instruments = Instruments(1)
    instruments.intern("X", 0, 0, 1)
    feed = Feed(events, np.arange(len(events)) + 1, instruments, "x")
    snapshots.write_snapshots(snapshots.snapshot_pieces(feed, 0, SECOND, 1), tmp_path / "warm.csv", "csv")  # compiled
    tracemalloc.start()
    try:
        tally = snapshots.Tally()
        snapshots.write_snapshots(tally.passing(snapshots.snapshot_pieces(feed, 0, SECOND // 1000, 1)),
                                  tmp_path / "x.csv", "csv", durable=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tally.rows == 3600 * 1000 + 1 and peak < 2 * snapshots.PIECE_BYTES
    with open(tmp_path / "x.csv", "rb") as file:
        file.seek(-200, 2)
        last = file.read().splitlines()[-1].decode().split(",")
    assert last[2:] == [str(3601 * 10**6), str(3601 * 10**6), "101", "2", "100", "5"]


def test_npz_round_trip_and_same_bytes(tmp_path):
    table = small_table()
    assert snapshots.npz_bytes(table) == snapshots.npz_bytes(table)
    path = snapshots.write_snapshots(table, tmp_path / "x.npz", "npz")
    again = snapshots.read_npz(path)
    for name in ("times", "bid_prices", "ask_quantities", "sequences", "last_local_ns"):
        assert np.array_equal(getattr(again, name), getattr(table, name))
    assert (again.symbol, again.exchange, again.price_scale) == ("BTCUSDT", "binance", 8)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]  # no temporary file left behind


# ---------------------------------------------------------------- reconciling with published rows

def laid_out(pairs, side, depth):
    """A row of ``depth`` levels as LOBSTER lays it out: best first, distinct prices, empty levels at the end."""
    pairs = sorted({price * 100: size for price, size in pairs}.items(), reverse=side == 1)[:depth]
    shown = [(price, size) for price, size in pairs if size > 0]
    prices = np.array([p for p, _ in shown] + [NO_PRICE] * (depth - len(shown)), np.int64)
    sizes = np.array([s for _, s in shown] + [0] * (depth - len(shown)), np.int64)
    return prices, sizes


def book_holding(side, levels):
    from ringbook.kernels import book as books

    book = books.new_book(n_symbols=1, depth=64, order_capacity=16, ladder=16, ticks=np.array([100]))
    for price, quantity in levels.items():
        books.set_level(book, 0, side, price, quantity)
    return book


def side_levels(book, side):
    from ringbook.kernels import book as books

    return sorted((int(p), int(q)) for p, q in zip(*books.levels(book, 0, side, 128)) if q > 0)


SIDES_AND_ROWS = (st.sampled_from([1, -1]), st.integers(1, 4),
                  st.dictionaries(st.integers(1, 40), st.integers(1, 9), max_size=12),
                  st.lists(st.tuples(st.integers(1, 40), st.integers(0, 9)), min_size=4, max_size=4),
                  st.lists(st.tuples(st.integers(1, 40), st.integers(0, 9)), min_size=4, max_size=4),
                  st.booleans())


@settings(max_examples=200, deadline=None)
@given(*SIDES_AND_ROWS)
def test_reconcile_side_matches_reference(side, depth, held, row, previous, has_previous):
    """Random sides against random rows (and previous rows) of ``depth`` levels, as LOBSTER lays
    them out: best first, distinct prices, empty levels at the end."""
    from ringbook.kernels.snapshots import reconcile_side

    row_prices, row_sizes = laid_out(row, side, depth)
    previous_prices, previous_sizes = laid_out(previous, side, depth)
    levels = {price * 100: quantity for price, quantity in held.items()}
    book = book_holding(side, levels)
    scratch = [np.zeros(depth, np.int64) for _ in range(2)] + [np.zeros(128, np.int64) for _ in range(2)]
    matched = reconcile_side(book, 0, side, row_prices, row_sizes, previous_prices, previous_sizes, has_previous,
                             *scratch)
    expected, expected_matched = naive.reconcile_side(levels, side, row_prices, row_sizes, previous_prices,
                                                      previous_sizes, has_previous)
    assert side_levels(book, side) == sorted(expected.items())
    assert matched == expected_matched


@settings(max_examples=300, deadline=None)
@given(*SIDES_AND_ROWS, st.sampled_from(["as laid out", "swapped", "repeated"]), st.integers(0, 3),
       st.sampled_from(["any levels", "the row", "the row and the window's edge"]))
def test_check_and_reconcile_agree_with_reference_on_any_row(side, depth, held, row, previous, has_previous,
                                                              damage, at, book_holds):
    """``ringbook check``'s side verification and :func:`reconcile_side` (the same steps) against the
    reference, also for a damaged row (two levels swapped, a price given twice), which is never the
    book even when the book holds each of its levels; check's mismatch note and revealed count too."""
    from ringbook.engine import check
    from ringbook.kernels.snapshots import reconcile_side

    row_prices, row_sizes = laid_out(row, side, depth)
    previous_prices, previous_sizes = laid_out(previous, side, depth)
    shown = int(np.count_nonzero(row_sizes))
    if shown >= 2:
        at = at % (shown - 1)
        if damage == "swapped":
            row_prices[[at, at + 1]], row_sizes[[at, at + 1]] = row_prices[[at + 1, at]], row_sizes[[at + 1, at]]
        elif damage == "repeated":
            row_prices[at + 1], row_sizes[at + 1] = row_prices[at], row_sizes[at]
    # The book holding each of the row's levels (and no other, or one more at the previous row's worst
    # price) are the cases the lookup-only shortcuts take, or would get wrong for a damaged row.
    levels = ({int(p): int(q) for p, q in zip(row_prices[:shown], row_sizes[:shown])} if book_holds != "any levels"
              else {price * 100: quantity for price, quantity in held.items()})
    if book_holds == "the row and the window's edge" and previous_sizes[depth - 1] > 0:
        levels.setdefault(int(previous_prices[depth - 1]), 3)
    expected, expected_matched = naive.reconcile_side(levels, side, row_prices, row_sizes, previous_prices,
                                                      previous_sizes, has_previous)
    windowed = has_previous and previous_sizes[depth - 1] > 0
    limit = int(previous_prices[depth - 1])
    worse = (lambda price: price < limit) if side == 1 else (lambda price: price > limit)
    expected_revealed = sum(1 for k in range(shown) if worse(row_prices[k]) and levels.get(int(row_prices[k]), 0)
                            != row_sizes[k]) if expected_matched and windowed else 0

    book = book_holding(side, levels)
    scratch = [np.zeros(depth, np.int64) for _ in range(2)] + [np.zeros(128, np.int64) for _ in range(2)]
    matched = reconcile_side(book, 0, side, row_prices, row_sizes, previous_prices, previous_sizes, has_previous,
                             *scratch)
    assert (side_levels(book, side), matched) == (sorted(expected.items()), expected_matched)

    book = book_holding(side, levels)
    counters = check._new_counters()
    matched = check._verify_side(book, 0, side, row_prices, row_sizes, previous_prices, previous_sizes,
                                 has_previous, *scratch, 7, counters)
    assert (side_levels(book, side), matched) == (sorted(expected.items()), expected_matched)
    assert counters[check.REVEALED] == expected_revealed
    assert counters[check.FIRST_EVENT] == (-1 if expected_matched else 7)
