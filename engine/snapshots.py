"""Book snapshots of one file, per symbol, and their files: tardis.dev CSV, Parquet, npz.

:func:`snapshot_feed` replays a :class:`~ringbook.engine.feeds.source.Feed` into a book and
takes one snapshot per interval boundary with :mod:`ringbook.kernels.snapshots` (see
there for what a boundary and its snapshot are); :func:`snapshot_pieces` gives the same
rows a bounded piece at a time, which the writers take as they come, and
:func:`stream_pieces` gives them from a reader's stream of one symbol's chunks, holding
one chunk at a time. A LOBSTER message file with its orderbook file is seeded from it and
reconciled with it after every message (:func:`ringbook.kernels.snapshots.reconcile_side`),
with the effect on the book that ``ringbook check`` has (levels that come into view from
beyond those LOBSTER shows are taken from the row): each snapshot then equals the
orderbook row of the last message at or before its boundary.

Files (:func:`write_snapshots`), one per shard, written atomically (a
temporary file in the same folder, then a rename: :mod:`ringbook.engine.files`)
and synced, unless the caller syncs them later (``durable=False``: a batch's
driver does):

csv
    tardis.dev's ``book_snapshot_N`` layout: ``exchange,symbol,timestamp,
    local_timestamp,asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,...``;
    ``timestamp`` is the boundary in µs since the epoch, ``local_timestamp``
    the local receive time of the last message in µs (the boundary when the
    feed has none); numbers are exact decimal strings without trailing zeros;
    a side with fewer levels leaves its fields empty.
parquet
    The same columns, typed: prices and amounts ``decimal128(38, scale)``
    (null where a side has fewer levels), times ``int64``; plus
    ``last_exchange_ns`` (the clock at the last message) and ``sequence`` (the
    book's sequence after it: Binance's last applied ``u``). Needs pyarrow
    (``ringbook[parquet]``).
npz
    The kernel's arrays (``times``, ``last_ns``, ``last_local_ns``,
    ``sequences``, ``bid_prices``, ``bid_quantities``, ``ask_prices``,
    ``ask_quantities``) as int64 fixed point, with ``price_scale``,
    ``size_scale``, ``exchange`` and ``symbol``; absent levels hold price
    ``NO_PRICE``. Written with fixed zip timestamps, so equal snapshots give
    equal bytes.
"""

import io
import itertools
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringbook.engine.check import _reconcile_order, feed_ticks
from ringbook.engine.feeds import lobster
from ringbook.engine.files import write_atomic
from ringbook.kernels import book as books
from ringbook.kernels import snapshots as kernels
from ringbook.kernels.book import NO_PRICE, borrow
from ringbook.kernels.fixed import format_decimal_bytes
from ringbook.kernels.jit_options import kernel, llvm_inline_kernel
from ringbook.kernels.orders import order_slots_for, with_more_order_slots, with_room_for_orders
from ringbook.kernels.replay import _apply_event
from ringbook.kernels.slab import copy_bytes
from ringbook.kernels.status import BAD_ARGUMENT, FULL, OK, ORDER_TABLE_FULL

FORMATS = ("csv", "parquet", "npz")
EXTENSIONS = {"csv": ".csv", "parquet": ".parquet", "npz": ".npz"}
_NS_PER_US = 1000


@dataclass
class Snapshots:
    """One shard's snapshots: the kernel's output arrays, trimmed to the rows written."""

    exchange: str
    symbol: str
    price_scale: int
    size_scale: int
    times: np.ndarray
    last_ns: np.ndarray
    last_local_ns: np.ndarray
    sequences: np.ndarray
    bid_prices: np.ndarray
    bid_quantities: np.ndarray
    ask_prices: np.ndarray
    ask_quantities: np.ndarray

    @property
    def levels(self):
        return self.bid_prices.shape[1]

    def __len__(self):
        return len(self.times)


#: The arrays of :class:`Snapshots`, in the order of its fields.
ARRAYS = ("times", "last_ns", "last_local_ns", "sequences", "bid_prices", "bid_quantities", "ask_prices",
          "ask_quantities")


def _outputs(rows, levels):
    """The kernel's output arrays, uninitialised: it writes every field of each row it counts,
    and only those rows are kept."""
    return (np.empty(rows, np.int64), np.empty(rows, np.int64), np.empty(rows, np.int64),
            np.empty(rows, np.int64), np.empty((rows, levels), np.int64),
            np.empty((rows, levels), np.int64), np.empty((rows, levels), np.int64),
            np.empty((rows, levels), np.int64))


@kernel
def lobster_snapshots(book, symbol, events, row_of_event, ask_prices, ask_sizes, bid_prices,
                      bid_sizes, found_prices, found_quantities, all_prices, all_quantities, counters,
                      interval, cursor, times, last_ns, last_local_ns, sequences, out_bid_prices,
                      out_bid_quantities, out_ask_prices, out_ask_quantities, start, previous):
    """Snapshots of a LOBSTER replay reconciled with its orderbook rows after every message.

    The loop of :func:`ringbook.engine.check.check_lobster_kernel` with the
    snapshot steps around each event, from ``events[start]``; each side is
    reconciled with :func:`ringbook.kernels.snapshots.reconcile_side`, which
    changes only the levels that differ from the row. ``previous`` is the row
    reconciled last (-1: none yet).

    Returns ``(next_index, status, previous)``: on ``FULL`` (the outputs have no
    room for the next boundary) call again from ``next_index`` with ``previous``
    once the rows are used and the cursor's row count is reset.
    """
    # The caller's references keep these alive: the calls below then count none (atomic
    # increments and decrements on every array of every call, most of the cost otherwise).
    book, events, counters, cursor = borrow((book, events, counters, cursor))
    ask_prices, ask_sizes, bid_prices, bid_sizes = borrow((ask_prices, ask_sizes, bid_prices, bid_sizes))
    found_prices, found_quantities, all_prices, all_quantities = borrow(
        (found_prices, found_quantities, all_prices, all_quantities))
    times, last_ns, last_local_ns, sequences = borrow((times, last_ns, last_local_ns, sequences))
    out_bid_prices, out_bid_quantities, out_ask_prices, out_ask_quantities = borrow(
        (out_bid_prices, out_bid_quantities, out_ask_prices, out_ask_quantities))
    for i in range(max(start, 0), events.shape[0]):
        if kernels.boundary_due(events, i, cursor):
            status = kernels.snapshot_before(book, symbol, events, i, interval, cursor, times, last_ns,
                                             last_local_ns, sequences, out_bid_prices,
                                             out_bid_quantities, out_ask_prices, out_ask_quantities)
            if status != OK:
                return i, status, previous
        _reconcile_order(book, events, i, counters)
        status = _apply_event(book, events, i)
        if status < 0:
            return i, status, previous
        row = row_of_event[i]
        if row >= 0 and row < ask_prices.shape[0]:
            has_previous = previous >= 0
            reference = previous if has_previous else row
            kernels.reconcile_side(book, symbol, 1, bid_prices[row], bid_sizes[row], bid_prices[reference],
                                   bid_sizes[reference], has_previous, found_prices, found_quantities,
                                   all_prices, all_quantities)
            kernels.reconcile_side(book, symbol, -1, ask_prices[row], ask_sizes[row], ask_prices[reference],
                                   ask_sizes[reference], has_previous, found_prices, found_quantities,
                                   all_prices, all_quantities)
            previous = row
        kernels.note_applied(book, symbol, events, i, interval, cursor)
    return events.shape[0], OK, previous


#: Bytes of a shard's rows held at a time (unless a piece's rows are given): its memory stays
#: bounded however long its file or short its interval.
PIECE_BYTES = 1 << 24


def piece_rows_for(levels):
    """Rows of a piece of :data:`PIECE_BYTES` at ``levels`` levels (at least 1024)."""
    return max(1024, PIECE_BYTES // (8 * (4 + 4 * levels)))


def snapshot_pieces(feed, symbol, interval_ns, levels, *, exchange="", orderbook=None, depth=4096,
                    piece_rows=None):
    """Snapshots of one symbol of a feed at every boundary of ``interval_ns``, in pieces.

    Each piece is a :class:`Snapshots` of the next rows, at most ``piece_rows``
    of them (default :func:`piece_rows_for` the levels); the last piece may be
    empty (a shard always yields one). A piece's arrays are reused for the
    next: write or copy a piece before asking for the next. Parameters as
    :func:`snapshot_feed`.
    """
    piece_rows = _checked_piece_rows(interval_ns, levels, piece_rows)
    events, lines = feed.events, feed.lines
    if len(feed.instruments) > 1:   # a file of one instrument is used as it is, not copied
        mine = events["symbol"] == symbol
        events, lines = events[mine], lines[mine]
    table = feed.instruments.table
    n_symbols = max(len(feed.instruments), 1)
    ticks = feed_ticks(feed, n_symbols)   # any tick is exact: it decides only where levels are kept
    book = books.new_book(n_symbols=n_symbols, depth=depth, order_capacity=order_slots_for(events), ticks=ticks)
    out = _outputs(max(min(kernels.boundary_count(events, interval_ns), piece_rows), 1), levels)
    cursor = kernels.new_cursor()
    row = table[symbol]
    name, price_scale, size_scale = feed.instruments.name_of(symbol), int(row["price_scale"]), int(row["size_scale"])

    def piece():
        rows = int(cursor[kernels.CURSOR_ROWS])
        cursor[kernels.CURSOR_ROWS] = 0
        return Snapshots(exchange, name, price_scale, size_scale, *(array[:rows] for array in out))

    if orderbook is not None and len(events):
        _seed(book, symbol, orderbook, events[0])
        row_of_event = lobster.rows_of_records(orderbook.records, feed.records)
        book, _ = yield from _reconciled(book, symbol, events, lines, feed.path, orderbook, row_of_event, 0, -1,
                                         interval_ns, cursor, out, piece)
    else:
        book = yield from _taken(book, symbol, events, lines, feed.path, interval_ns, cursor, out, piece)
    yield from _finished(book, symbol, interval_ns, cursor, out, piece)


def _checked_piece_rows(interval_ns, levels, piece_rows):
    """``piece_rows`` (default :func:`piece_rows_for` the levels), once the arguments are checked."""
    piece_rows = piece_rows_for(levels) if piece_rows is None else piece_rows
    if interval_ns <= 0 or levels <= 0 or piece_rows <= 0:
        raise ValueError(f"interval, levels and piece_rows must be positive, got {interval_ns}, {levels}, "
                         f"{piece_rows}")
    return piece_rows


def _taken(book, symbol, events, lines, path, interval_ns, cursor, out, piece):
    """Apply ``events`` and take their snapshots, yielding a piece each time the outputs are full.
    Returns the book (see :func:`_driven`)."""
    def step(book, index):
        return kernels.take_snapshots(book, symbol, events, index, len(events), interval_ns, cursor, *out)

    return (yield from _driven(step, book, 0, lines, path, piece))


def _seed(book, symbol, orderbook, first_event):
    """Seed a LOBSTER replay's book from its orderbook's first row (see ``levels_before_first``)."""
    books.check_status(books.load_snapshot(book, symbol, *lobster.levels_before_first(orderbook, first_event), 0),
                       "seeding the book")


def _reconciled(book, symbol, events, lines, path, rows, row_of_event, start, previous, interval_ns, cursor, out,
                piece):
    """Apply LOBSTER ``events`` from ``start``, reconciled with their orderbook ``rows``, and take
    their snapshots, yielding a piece each time the outputs are full (:func:`lobster_snapshots`).
    Returns ``(book, previous)``: the book (see :func:`_driven`) and the row reconciled last.
    """
    found = np.zeros(rows.levels, np.int64), np.zeros(rows.levels, np.int64)
    capacity = book.prices.shape[2] + book.ladders.shape[2]
    every_level = np.zeros(capacity, np.int64), np.zeros(capacity, np.int64)
    counters, last = np.zeros(13, np.int64), [previous]

    def step(book, index):
        index, status, last[0] = lobster_snapshots(
            book, symbol, events, row_of_event, rows.ask_price, rows.ask_size, rows.bid_price, rows.bid_size,
            *found, *every_level, counters, interval_ns, cursor, *out, index, last[0])
        return index, status

    book = yield from _driven(step, book, start, lines, path, piece)
    return book, last[0]


def _driven(step, book, start, lines, path, piece):
    """Run ``step(book, index) -> (next index, status)`` from ``start`` to the end: a piece is
    yielded whenever the outputs are full, and a full order table grows (the refused add
    changed nothing) before the event is applied again. Returns the book, a new one if its
    table grew; a book error names the event's line."""
    index, status = start, FULL
    while status == FULL or status == ORDER_TABLE_FULL:
        index, status = step(book, index)
        if status == FULL:
            yield piece()
        elif status == ORDER_TABLE_FULL:
            book = with_more_order_slots(book)
    if status < 0:
        books.check_status(status, f"{path}, line {int(lines[index])} (event {index})")
    return book


def _finished(book, symbol, interval_ns, cursor, out, piece):
    """The last boundary's rows, then the last piece (a shard always yields one)."""
    status = FULL
    while status == FULL:
        status = kernels.finish_snapshots(book, symbol, interval_ns, cursor, *out)
        if status == FULL:
            yield piece()
    books.check_status(status, "the last snapshots")
    yield piece()


class SeveralSymbols(Exception):
    """A stream given to :func:`stream_pieces` holds a second symbol."""


class StreamSpan:
    """What :func:`stream_pieces` saw of a stream: its events and their least and greatest time."""

    def __init__(self):
        self.events = 0
        self.earliest = self.latest = None

    def add(self, events):
        _, earliest, latest = kernels.time_span(events)
        self.events += len(events)
        if earliest:
            self.earliest = earliest if self.earliest is None else min(self.earliest, earliest)
            self.latest = latest if self.latest is None else max(self.latest, latest)


def stream_pieces(chunks, interval_ns, levels, *, exchange="", orderbook=None, depth=4096, piece_rows=None,
                  span=None):
    """Snapshots of a stream of one symbol's feed chunks (a reader's ``iter_*``), in pieces,
    holding one chunk at a time: the pieces of :func:`snapshot_pieces` on the whole feed.

    ``chunks`` must hold events of one symbol, id 0; the book's ticks are those of the
    first chunk with events (any tick is exact). ``orderbook``, for LOBSTER message
    chunks, is the :class:`~ringbook.engine.feeds.lobster.OrderbookStream` of their
    orderbook file, streamed beside them: the book is seeded from it and reconciled with
    it. ``span``, a :class:`StreamSpan`, counts the events as they pass.

    Raises
    ------
    SeveralSymbols
        When a chunk interns a second symbol: take the whole feed's shards instead.
    """
    piece_rows = _checked_piece_rows(interval_ns, levels, piece_rows)
    book = out = None
    cursor = kernels.new_cursor()
    instruments = None

    def piece():
        rows = int(cursor[kernels.CURSOR_ROWS])
        cursor[kernels.CURSOR_ROWS] = 0
        row = instruments.table[0]
        return Snapshots(exchange, instruments.name_of(0), int(row["price_scale"]), int(row["size_scale"]),
                         *(array[:rows] for array in out))

    for chunk in chunks:
        if len(chunk.instruments) > 1:
            raise SeveralSymbols(chunk.path)
        events = chunk.events
        if not len(events):
            continue
        if span is not None:
            span.add(events)
        if book is None:
            instruments = chunk.instruments
            # The order table grows when full (a LOBSTER stream's adds are known a chunk at a time).
            book = books.new_book(n_symbols=1, depth=depth, order_capacity=order_slots_for(events),
                                  ticks=feed_ticks(chunk, 1))
            if orderbook is not None and orderbook.first_rows() is not None:
                _seed(book, 0, orderbook.first_rows(), events[0])
        wanted = max(min(kernels.boundary_count(events, interval_ns) + 1, piece_rows), 1024)
        if out is None or (cursor[kernels.CURSOR_ROWS] == 0 and len(out[0]) < wanted):
            out = _outputs(wanted, levels)   # rows are kept while a piece is pending
        if orderbook is None:
            book = yield from _taken(book, 0, events, chunk.lines, chunk.path, interval_ns, cursor, out, piece)
            continue
        for start, stop, rows, previous, row_of_event in orderbook.windows(chunk.records):
            book, previous = yield from _reconciled(book, 0, events[:stop], chunk.lines, chunk.path, rows,
                                                    row_of_event, start, previous, interval_ns, cursor, out, piece)
            orderbook.keep_previous(rows, previous)
            book = with_room_for_orders(book)
    if book is not None:   # no events: no shard
        yield from _finished(book, 0, interval_ns, cursor, out, piece)


def snapshot_feed(feed, symbol, interval_ns, levels, *, exchange="", orderbook=None, depth=4096):
    """Snapshots of one symbol of a feed at every boundary of ``interval_ns``, all in memory.

    Parameters
    ----------
    feed : ringbook.engine.feeds.source.Feed
    symbol : int
        The symbol id in ``feed.instruments``.
    interval_ns : int
        The interval, ns (a whole number of µs for the CSV layout).
    levels : int
        Levels of each side.
    exchange : str
        The ``exchange`` column.
    orderbook : ringbook.engine.feeds.lobster.OrderbookFile, optional
        For a LOBSTER feed: seed the book from it and reconcile with its rows.

    Returns
    -------
    Snapshots

    Raises
    ------
    ringbook.kernels.book.BookError
        An event the book refuses, naming its line.

    See :func:`snapshot_pieces` for the same rows a bounded piece at a time.
    """
    # Room for every boundary of the file (of any symbol): one piece, its arrays the whole result.
    rows = max(kernels.boundary_count(feed.events, interval_ns), 1) if interval_ns > 0 else 1
    (whole,) = snapshot_pieces(feed, symbol, interval_ns, levels, exchange=exchange, orderbook=orderbook,
                               depth=depth, piece_rows=rows)
    return whole


def joined(pieces):
    """One :class:`Snapshots` of a shard's pieces, in order (each copied as it comes: pieces
    share their arrays)."""
    first, columns = None, []
    for piece in pieces:
        first = piece if first is None else first
        columns.append([getattr(piece, name).copy() for name in ARRAYS])
    return Snapshots(first.exchange, first.symbol, first.price_scale, first.size_scale,
                     *(np.concatenate(column) for column in zip(*columns)))


# ---------------------------------------------------------------- files

@llvm_inline_kernel
def _put_text(out, at, text):
    copy_bytes(text, 0, out, at, text.shape[0])
    return at + text.shape[0]


@llvm_inline_kernel
def _put_integer(out, at, value):
    stop, _ = format_decimal_bytes(value, 0, 0, out, at)
    return stop


@llvm_inline_kernel
def _put_decimal(out, at, value, scale):
    """``value`` at ``scale`` decimals, without trailing zeros (``1.5``, ``11659``)."""
    stop, _ = format_decimal_bytes(value, scale, scale, out, at, True)
    return stop


@llvm_inline_kernel
def _copy_within(out, start, stop, at):
    """Copy ``out[start:stop]`` to ``out[at:]`` (``at >= stop``: no overlap); returns where the copy ends."""
    copy_bytes(out, start, out, at, stop - start)
    return at + stop - start


@llvm_inline_kernel
def _put_level(out, at, prices, quantities, row, level, price_scale, size_scale):
    """``,price,amount`` of one side's level; both fields empty when the side has no such level."""
    price = prices[row, level]
    out[at] = 44
    at += 1
    if price != NO_PRICE:
        at = _put_decimal(out, at, price, price_scale)
    out[at] = 44
    at += 1
    if price != NO_PRICE:
        at = _put_decimal(out, at, quantities[row, level], size_scale)
    return at


@llvm_inline_kernel
def _same_levels(bid_prices, bid_quantities, ask_prices, ask_quantities, row, other):
    """Whether rows ``row`` and ``other`` hold the same levels."""
    for level in range(bid_prices.shape[1]):
        if (bid_prices[row, level] != bid_prices[other, level]
                or bid_quantities[row, level] != bid_quantities[other, level]
                or ask_prices[row, level] != ask_prices[other, level]
                or ask_quantities[row, level] != ask_quantities[other, level]):
            return False
    return True


@llvm_inline_kernel
def widest_csv_row(prefix_bytes, levels):
    """Bytes a CSV row takes at most: each number at most 21 bytes with its separator, 20 more
    for the sign and dot, and the newline."""
    return prefix_bytes + 2 * 22 + levels * 4 * 23 + 1


@kernel
def format_csv_rows(prefix, times, last_local_ns, bid_prices, bid_quantities, ask_prices,
                    ask_quantities, price_scale, size_scale, first_row, out):
    """CSV rows in tardis.dev's layout into ``out``, from ``first_row`` on, while they fit.

    ``prefix`` is ``exchange,symbol,`` as bytes. A row whose levels equal the
    previous row's copies that row's level fields (the book often does not
    change between boundaries), and a local time equal to the boundary copies
    its digits.

    Returns
    -------
    next_row : int
        The first row not written (``len(times)`` when all are).
    written : int
        Bytes written to ``out``; ``BAD_ARGUMENT`` (nothing written) when the
        arrays disagree in shape. ``out`` takes at least one row when it holds
        :func:`widest_csv_row` bytes.
    """
    prefix, times, last_local_ns, out = borrow((prefix, times, last_local_ns, out))
    bid_prices, bid_quantities, ask_prices, ask_quantities = borrow(
        (bid_prices, bid_quantities, ask_prices, ask_quantities))
    rows = times.shape[0]
    levels = bid_prices.shape[1]
    for matrix in (bid_prices, bid_quantities, ask_prices, ask_quantities):
        if matrix.shape[0] < rows or matrix.shape[1] != levels:
            return first_row, BAD_ARGUMENT
    if last_local_ns.shape[0] < rows or first_row < 0:
        return first_row, BAD_ARGUMENT
    widest = widest_csv_row(prefix.shape[0], levels)
    at = 0
    levels_start = -1   # the previous row's level fields: out[levels_start:levels_stop]
    levels_stop = -1
    row = first_row
    while row < rows and at + widest <= out.shape[0]:
        at = _put_text(out, at, prefix)
        boundary_us = times[row] // 1000
        boundary_start = at
        at = _put_integer(out, at, boundary_us)
        boundary_stop = at
        out[at] = 44
        at += 1
        local = last_local_ns[row] // 1000 if last_local_ns[row] > 0 else boundary_us
        if local == boundary_us:
            at = _copy_within(out, boundary_start, boundary_stop, at)
        else:
            at = _put_integer(out, at, local)
        start = at
        if levels_start >= 0 and _same_levels(bid_prices, bid_quantities, ask_prices, ask_quantities, row,
                                              row - 1):
            at = _copy_within(out, levels_start, levels_stop, at)
        else:
            for level in range(levels):
                at = _put_level(out, at, ask_prices, ask_quantities, row, level, price_scale, size_scale)
                at = _put_level(out, at, bid_prices, bid_quantities, row, level, price_scale, size_scale)
        levels_start = start
        levels_stop = at
        out[at] = 10
        at += 1
        row += 1
    return row, at


def csv_header(levels):
    """tardis.dev's ``book_snapshot_N`` header for ``levels`` levels."""
    columns = ["exchange", "symbol", "timestamp", "local_timestamp"]
    for level in range(levels):
        columns += [f"asks[{level}].price", f"asks[{level}].amount",
                    f"bids[{level}].price", f"bids[{level}].amount"]
    return ",".join(columns)


#: Bytes of rows formatted at a time: the buffer stays in cache and memory stays bounded.
CSV_PIECE = 1 << 20


def _pieces(snapshots):
    """``(first piece, every piece)`` of a :class:`Snapshots` or of an iterable of a shard's pieces."""
    pieces = iter((snapshots,) if isinstance(snapshots, Snapshots) else snapshots)
    first = next(pieces)
    return first, itertools.chain((first,), pieces)


def csv_pieces(snapshots, piece=CSV_PIECE):
    """The CSV file's bytes in pieces: the header, then rows formatted into one reused buffer.

    ``snapshots``: a :class:`Snapshots`, or a shard's pieces (:func:`snapshot_pieces`).
    Each piece is valid until the next is asked for (write it, or copy it).
    """
    first, tables = _pieces(snapshots)
    prefix = np.frombuffer(f"{first.exchange},{first.symbol},".encode(), np.uint8)
    out = np.empty(max(piece, widest_csv_row(len(prefix), first.levels)), np.uint8)
    yield (csv_header(first.levels) + "\n").encode()
    for table in tables:
        row = 0
        while row < len(table):
            row, written = format_csv_rows(prefix, table.times, table.last_local_ns, table.bid_prices,
                                           table.bid_quantities, table.ask_prices, table.ask_quantities,
                                           table.price_scale, table.size_scale, row, out)
            if written <= 0:
                raise RuntimeError(f"CSV rows: the snapshot arrays disagree in shape (status {written})")
            yield memoryview(out)[:written]


def csv_bytes(snapshots):
    """The CSV file's bytes."""
    return b"".join(bytes(piece) for piece in csv_pieces(snapshots))


def _decimal_column(pa, values, scale):
    """An exact ``decimal128(38, scale)`` column from int64 fixed point (null at NO_PRICE)."""
    valid = values != NO_PRICE
    words = np.empty((len(values), 2), np.int64)
    words[:, 0] = np.where(valid, values, 0)
    words[:, 1] = np.where(words[:, 0] < 0, -1, 0)  # two's complement sign extension
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    return pa.Array.from_buffers(pa.decimal128(38, scale), len(values), [bitmap, pa.py_buffer(words.tobytes())],
                                 null_count=int((~valid).sum()))


#: Rows of a Parquet row group: the groups are the same however the rows came in pieces.
PARQUET_ROW_GROUP = 1 << 17


def _arrow_table(pa, snapshots):
    """The Parquet file's columns of a :class:`Snapshots`, as a pyarrow table."""
    rows = len(snapshots)
    boundary_us = snapshots.times // _NS_PER_US
    local_us = np.where(snapshots.last_local_ns > 0, snapshots.last_local_ns // _NS_PER_US, boundary_us)
    columns = {"exchange": pa.array([snapshots.exchange] * rows, pa.string()),
               "symbol": pa.array([snapshots.symbol] * rows, pa.string()),
               "timestamp": pa.array(boundary_us), "local_timestamp": pa.array(local_us)}
    for level in range(snapshots.levels):
        no_level = snapshots.ask_prices[:, level] == NO_PRICE
        columns[f"asks[{level}].price"] = _decimal_column(pa, snapshots.ask_prices[:, level], snapshots.price_scale)
        columns[f"asks[{level}].amount"] = _decimal_column(
            pa, np.where(no_level, NO_PRICE, snapshots.ask_quantities[:, level]), snapshots.size_scale)
        no_level = snapshots.bid_prices[:, level] == NO_PRICE
        columns[f"bids[{level}].price"] = _decimal_column(pa, snapshots.bid_prices[:, level], snapshots.price_scale)
        columns[f"bids[{level}].amount"] = _decimal_column(
            pa, np.where(no_level, NO_PRICE, snapshots.bid_quantities[:, level]), snapshots.size_scale)
    # Copies: pyarrow would share the arrays, which the next piece overwrites.
    columns["last_exchange_ns"] = pa.array(snapshots.last_ns.copy())
    columns["sequence"] = pa.array(snapshots.sequences.copy())
    return pa.table(columns)


def parquet_bytes(snapshots):
    """The Parquet file's bytes (pyarrow, ``ringbook[parquet]``), in row groups of
    :data:`PARQUET_ROW_GROUP` rows.

    ``snapshots``: a :class:`Snapshots`, or a shard's pieces (:func:`snapshot_pieces`),
    converted as they come.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("Parquet output needs pyarrow: pip install 'ringbook[parquet]'") from None
    sink = io.BytesIO()
    writer = pending = None
    groups = 0
    for table in _pieces(snapshots)[1]:
        arrow = _arrow_table(pa, table)
        if writer is None:
            writer = pq.ParquetWriter(sink, arrow.schema)
        pending = arrow if pending is None else pa.concat_tables([pending, arrow])
        while pending.num_rows >= PARQUET_ROW_GROUP:
            pending = pending.combine_chunks()
            writer.write_table(pending.slice(0, PARQUET_ROW_GROUP))
            pending = pending.slice(PARQUET_ROW_GROUP)
            groups += 1
    if pending.num_rows or not groups:   # an empty shard still gets its (empty) table
        writer.write_table(pending.combine_chunks())
    writer.close()
    return sink.getvalue()


def npz_bytes(snapshots):
    """The npz file's bytes, with fixed zip timestamps (equal snapshots, equal bytes).

    ``snapshots``: a :class:`Snapshots`, or a shard's pieces, joined in memory first.
    """
    if not isinstance(snapshots, Snapshots):
        snapshots = joined(snapshots)
    arrays = {**{name: getattr(snapshots, name) for name in ARRAYS},
              "price_scale": np.int64(snapshots.price_scale), "size_scale": np.int64(snapshots.size_scale),
              "exchange": np.str_(snapshots.exchange), "symbol": np.str_(snapshots.symbol)}
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)),
                             member.getvalue())
    return sink.getvalue()


def read_npz(path):
    """:class:`Snapshots` from an npz file this module wrote."""
    with np.load(path, allow_pickle=False) as data:
        return Snapshots(str(data["exchange"]), str(data["symbol"]), int(data["price_scale"]),
                         int(data["size_scale"]), *(data[name] for name in ARRAYS))


_WRITERS = {"csv": csv_bytes, "parquet": parquet_bytes, "npz": npz_bytes}


def write_snapshots(snapshots, path, format, durable=True):
    """Write one shard's snapshots to ``path`` atomically in ``format`` (csv, parquet, npz).

    ``snapshots``: a :class:`Snapshots`, or the shard's pieces (:func:`snapshot_pieces`):
    a CSV is then formatted and written a piece at a time, a Parquet file's columns
    are made a piece at a time; an npz file joins them. ``durable``: see
    :func:`ringbook.engine.files.write_atomic`.
    """
    if format not in _WRITERS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    data = csv_pieces(snapshots) if format == "csv" else _WRITERS[format](snapshots)
    return write_atomic(path, data, durable)


class Tally:
    """Rows of a shard's pieces as they pass on to a writer, and its first and last boundary."""

    def __init__(self):
        self.rows = 0
        self.first_boundary = self.last_boundary = None

    def passing(self, pieces):
        for piece in pieces:
            if len(piece):
                self.rows += len(piece)
                self.first_boundary = int(piece.times[0]) if self.first_boundary is None else self.first_boundary
                self.last_boundary = int(piece.times[-1])
            yield piece


def output_stem(input_path):
    """The input's file name without the suffixes of its format: what its outputs' names start with."""
    stem = Path(input_path).name
    for suffix in (".gz", ".csv", ".jsonl", ".json", ".txt"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem


def output_name(input_path, symbol, levels, interval_text, format):
    """``<input stem>.<symbol>.book_snapshot_<levels>_<interval>.<ext>``."""
    safe_symbol = "".join(c if c.isalnum() or c in "-_" else "_" for c in symbol)
    return f"{output_stem(input_path)}.{safe_symbol}.book_snapshot_{levels}_{interval_text}{EXTENSIONS[format]}"


# ---------------------------------------------------------------- ringbook snapshots

def add_arguments(parser):
    parser.add_argument("files", nargs="+", help="input files: LOBSTER message files (their orderbook "
                        "files are found by name), Binance captures, tardis incremental_book_L2 CSV, "
                        "Kalshi messages, journal directories (each stream imported from a capture), "
                        "or folders of them")
    parser.add_argument("--levels", type=int, default=25, help="levels of each side (default 25)")
    parser.add_argument("--interval", default="1s", help="boundary interval: 1s, 100ms, 1m ... (default 1s)")
    parser.add_argument("--out", default=".", help="output folder (default: the current one)")
    parser.add_argument("--format", default="csv", choices=FORMATS, help="output format (default csv)")
    parser.add_argument("--input-format", choices=("lobster", "binance", "tardis", "kalshi", "journal"),
                        help="the inputs' format (default: told from each file's name and first line)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="local worker processes (default: the usable cores; "
                       "0: this process)")
    where.add_argument("--cluster", metavar="ADDRESS", help="a Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--force", action="store_true", help="redo shards the manifest says are done")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args):
    import sys

    from ringbook.engine import batch, tasks

    try:
        report = batch.snapshot_files(args.files, args.out, levels=args.levels, interval=args.interval,
                                      format=args.format, workers=args.workers, cluster=args.cluster,
                                      force=args.force, progress=not args.no_progress,
                                      input_format=args.input_format)
    except (ValueError, OSError, ImportError, tasks.WorkersCannotStart) as error:
        print(f"ringbook snapshots: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ringbook snapshots: interrupted; the files done are recorded in {Path(args.out) / batch.MANIFEST}, "
              "and a rerun does the others", file=sys.stderr)
        return 130
    shards = sum(len(report.entries[path]["shards"]) for path in report.done + report.skipped)
    rows = sum(shard["rows"] for path in report.done + report.skipped
               for shard in report.entries[path]["shards"])
    print(f"{len(report.done)} files done, {len(report.skipped)} already done, {len(report.failed)} failed; "
          f"{shards} shards, {rows} rows in {args.out}")
    for path, failure in report.failed:
        print(tasks.failure_line("FAILED", path, failure.error))
    return 0 if report.ok else 1
