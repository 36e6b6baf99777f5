"""Book snapshots of one file, per symbol, and their files: tardis.dev CSV, Parquet, npz.

:func:`snapshot_feed` replays a :class:`~ringbook.engine.feeds.source.Feed` into a book and
takes one snapshot per interval boundary with :mod:`ringbook.kernels.snapshots` (see
there for what a boundary and its snapshot are); :func:`snapshot_pieces` gives the same
rows a bounded piece at a time, which the writers (:class:`SnapshotWriter`) take as they
come, and :func:`stream_symbols` gives every symbol's from a reader's stream of chunks in
one pass, holding one chunk at a time (a :class:`SymbolStream` for each symbol). A LOBSTER
message file with its orderbook file needs no book: LOBSTER publishes the book after every
message, and each snapshot is the orderbook row of the last message at or before its
boundary (:func:`ringbook.kernels.snapshots.take_published_snapshots`). A replay seeded from
the file and reconciled with it after every message, as ``ringbook check`` and
``replay_files`` make it (:mod:`ringbook.engine.reconciled`), holds exactly those levels;
the levels beyond those the file shows, whose messages LOBSTER leaves out, are left empty.

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
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringbook.engine.check import price_ticks
from ringbook.engine.feeds import lobster
from ringbook.engine.files import AtomicFile
from ringbook.kernels import book as books
from ringbook.kernels import snapshots as kernels
from ringbook.kernels.book import NO_PRICE, borrow
from ringbook.kernels.fixed import format_decimal_bytes, put_digits
from ringbook.kernels.jit_options import kernel, llvm_inline_kernel
from ringbook.kernels.orders import order_slots_for, with_more_order_slots
from ringbook.kernels.slab import copy_bytes
from ringbook.kernels.status import BAD_ARGUMENT, FULL, ORDER_TABLE_FULL

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
    events, lines, records = feed.events, feed.lines, feed.records
    if len(feed.instruments) > 1:   # a file of one instrument is used as it is, not copied
        mine = events["symbol"] == symbol
        events, lines = events[mine], lines[mine]
        events["symbol"] = 0
        records = None if records is None else records[mine]
    row = feed.instruments.table[symbol]
    stream = SymbolStream(interval_ns, levels, feed.instruments.name_of(symbol), int(row["price_scale"]),
                          int(row["size_scale"]), int(row["tick"]), symbol=symbol, exchange=exchange, depth=depth,
                          orderbook=None if orderbook is None else lobster.OrderbookStream([orderbook]),
                          piece_rows=piece_rows, min_rows=1)
    yield from stream.take(events, lines, feed.path, records)
    if len(events):
        yield from stream.finish()
    else:
        stream.out = _outputs(0, levels)
        yield stream._piece()   # no events: no rows, and still the shard's one piece


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


def _published(events, lines, path, rows, row_of_event, start, current, interval_ns, cursor, out, piece):
    """Take the snapshots of LOBSTER ``events`` from ``start`` from their orderbook ``rows``
    (:func:`~ringbook.kernels.snapshots.take_published_snapshots`), yielding a piece each
    time the outputs are full. Returns the row after the last event (-1: none yet)."""
    last = [current]

    def step(book, index):
        index, status, last[0] = kernels.take_published_snapshots(
            events, row_of_event, rows.bid_price, rows.bid_size, rows.ask_price, rows.ask_size, index, last[0],
            interval_ns, cursor, *out)
        return index, status

    yield from _driven(step, None, start, lines, path, piece)
    return last[0]


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
        # The file's line: an event's index would be its chunk's.
        books.check_status(status, f"{path}, line {int(lines[index])}")
    return book


def _finished(finish, out, piece):
    """The last boundary's rows (``finish(*out)``), then the last piece (a shard always yields one)."""
    status = FULL
    while status == FULL:
        status = finish(*out)
        if status == FULL:
            yield piece()
    books.check_status(status, "the last snapshots")
    yield piece()


class SeveralSymbols(Exception):
    """A stream given to :func:`stream_pieces` holds a second symbol."""


class StreamSpan:
    """What a :class:`SymbolStream` saw of its symbol: its events and their least and greatest time."""

    def __init__(self):
        self.events = 0
        self.earliest = self.latest = None

    def add(self, events):
        """Count ``events``; returns their :func:`~ringbook.kernels.snapshots.time_span`."""
        span = first, earliest, latest = kernels.time_span(events)
        self.events += len(events)
        if earliest:
            self.earliest = earliest if self.earliest is None else min(self.earliest, earliest)
            self.latest = latest if self.latest is None else max(self.latest, latest)
        return span


class SymbolStream:
    """One symbol's snapshots, taken as its events come a chunk at a time: the rows of
    :func:`snapshot_pieces` on the whole feed, holding one chunk, the book and a piece.

    :meth:`take` applies a chunk of the symbol's events (symbol id 0 in them) and yields the
    pieces that filled; :meth:`pending` yields the rows not yet in a piece; :meth:`finish`
    the last boundaries' and the last piece (a shard always yields one). A piece's arrays
    are reused for the next: write it before asking for the next. ``span`` counts the
    events. ``orderbook``, for LOBSTER, is the
    :class:`~ringbook.engine.feeds.lobster.OrderbookStream` of the orderbook file streamed
    beside the messages: the snapshots are its rows, and no book is kept.
    """

    def __init__(self, interval_ns, levels, name, price_scale, size_scale, tick, *, symbol=0, exchange="",
                 orderbook=None, depth=4096, piece_rows=None, min_rows=1024):
        self.piece_rows = _checked_piece_rows(interval_ns, levels, piece_rows)
        self.interval_ns, self.levels, self.depth, self.min_rows = interval_ns, levels, depth, min_rows
        self.name, self.price_scale, self.size_scale, self.exchange = name, price_scale, size_scale, exchange
        self.tick = tick   # the instrument's (<= 1: none known)
        self.symbol = symbol   # the feed's id of the symbol
        self.orderbook = orderbook
        self.book = self.out = None
        self.cursor = kernels.new_cursor()
        self.span = StreamSpan()

    def _piece(self):
        rows = int(self.cursor[kernels.CURSOR_ROWS])
        self.cursor[kernels.CURSOR_ROWS] = 0
        return Snapshots(self.exchange, self.name, self.price_scale, self.size_scale,
                         *(array[:rows] for array in self.out))

    def take(self, events, lines, path, records=None):
        """Apply ``events`` (of this symbol, as id 0; ``lines`` their lines in ``path``) and take
        their snapshots, yielding each piece that fills; ``records`` pair LOBSTER messages with rows."""
        if not len(events):
            return
        first, _, latest = self.span.add(events)
        if self.book is None and self.orderbook is None:
            # The order table grows when full (a stream's adds are known a chunk at a time).
            # The instrument's tick, else (a capture carries none) one the first prices imply: any is exact.
            tick = self.tick if self.tick > 1 else int(price_ticks(events, 1)[0])
            self.book = books.new_book(n_symbols=1, depth=self.depth, order_capacity=order_slots_for(events),
                                       ticks=np.array([tick], np.int64))
        wanted = max(min(kernels.boundaries_between(first, latest, self.interval_ns) + 1, self.piece_rows),
                     self.min_rows)
        if self.out is None or (self.cursor[kernels.CURSOR_ROWS] == 0 and len(self.out[0]) < wanted):
            self.out = _outputs(wanted, self.levels)   # rows are kept while a piece is pending
        if self.orderbook is None:
            self.book = yield from _taken(self.book, 0, events, lines, path, self.interval_ns, self.cursor, self.out,
                                          self._piece)
            return
        for start, stop, rows, previous, row_of_event in self.orderbook.windows(records):
            current = yield from _published(events[:stop], lines, path, rows, row_of_event, start, previous,
                                            self.interval_ns, self.cursor, self.out, self._piece)
            self.orderbook.keep_previous(rows, current)

    def levels_shown(self):
        """The levels of the orderbook file the snapshots come from (None without one, or when
        it has no rows): its levels beyond are empty."""
        rows = None if self.orderbook is None else self.orderbook.first_rows()
        return None if rows is None else rows.levels

    def pending(self):
        """The rows taken and not yet in a piece, as a piece (none when there are none)."""
        if self.cursor[kernels.CURSOR_ROWS]:
            yield self._piece()

    def finish(self):
        """The last boundary's rows, then the last piece (none when no events came)."""
        if self.out is None:
            return
        if self.orderbook is None:
            def finish(*out):
                return kernels.finish_snapshots(self.book, 0, self.interval_ns, self.cursor, *out)
        else:
            last = self.orderbook.previous   # the row after the last message, kept by ``take``
            none = np.zeros((0, 1), np.int64)
            rows = (none,) * 4 if last is None else (last.bid_price, last.bid_size, last.ask_price, last.ask_size)

            def finish(*out):
                return kernels.finish_published_snapshots(*rows, -1 if last is None else 0, self.interval_ns,
                                                          self.cursor, *out)
        yield from _finished(finish, self.out, self._piece)


def stream_symbols(chunks, interval_ns, levels, *, exchange="", orderbook=None, depth=4096, piece_rows=None):
    """Snapshots of every symbol of a reader's stream of chunks (its ``iter_*``), in one pass,
    holding one chunk and each symbol's book and rows of that chunk.

    Yields ``(stream, piece)``: the :class:`SymbolStream` of a symbol (its ``name``,
    ``symbol`` id and ``span``) and its next piece; each symbol's pieces in order, the
    pieces of :func:`snapshot_pieces` on the whole feed. A symbol's stream comes when its
    first events do. ``orderbook``: for a LOBSTER message stream (one symbol), see
    :class:`SymbolStream`.
    """
    streams = {}
    # Several symbols' rows are handed on after every chunk: each holds a chunk's rows at most.
    several = dict(min_rows=64, piece_rows=piece_rows)
    for chunk in chunks:
        if not len(chunk.events):
            continue
        for symbol, events, lines in _by_symbol(chunk):
            stream = streams.get(symbol)
            if stream is None:
                row = chunk.instruments.table[symbol]
                stream = streams[symbol] = SymbolStream(
                    interval_ns, levels, chunk.instruments.name_of(symbol), int(row["price_scale"]),
                    int(row["size_scale"]), int(row["tick"]), symbol=symbol, exchange=exchange, orderbook=orderbook,
                    depth=depth,
                    **(several if len(chunk.instruments) > 1 else dict(piece_rows=piece_rows)))
            for piece in stream.take(events, lines, chunk.path, chunk.records):
                yield stream, piece
            if len(chunk.instruments) > 1:
                for piece in stream.pending():
                    yield stream, piece
    for stream in streams.values():
        for piece in stream.finish():
            yield stream, piece


def _by_symbol(chunk):
    """``(symbol, its events renumbered 0, their lines)`` for each symbol with events in a chunk;
    a chunk of one instrument as it is."""
    if len(chunk.instruments) <= 1:
        return [(0, chunk.events, chunk.lines)]
    symbols = chunk.events["symbol"]
    order = np.argsort(symbols, kind="stable")   # one sort, whatever the number of symbols
    bounds = np.concatenate([[0], np.cumsum(np.bincount(symbols))])
    found = []
    for symbol in np.flatnonzero(np.diff(bounds)).tolist():
        mine = order[bounds[symbol]:bounds[symbol + 1]]
        events = chunk.events[mine]
        events["symbol"] = 0
        found.append((symbol, events, chunk.lines[mine]))
    return found


def stream_pieces(chunks, interval_ns, levels, *, exchange="", orderbook=None, depth=4096, piece_rows=None):
    """The pieces of :func:`stream_symbols` for a stream of one symbol's chunks.

    Raises
    ------
    SeveralSymbols
        When a second symbol has events.
    """
    first = None
    for stream, piece in stream_symbols(chunks, interval_ns, levels, exchange=exchange, orderbook=orderbook,
                                        depth=depth, piece_rows=piece_rows):
        first = stream if first is None else first
        if stream is not first:
            raise SeveralSymbols(stream.name)
        yield piece


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
        For a LOBSTER feed: the snapshots are its rows (the levels it shows; no book).

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
def _put_field(out, at, prices, quantities, row, level, price_scale, size_scale, fields, k, copies):
    """Level field ``k`` of a row (:func:`_put_level`), copied from the previous row's when
    ``copies`` and the level holds the same price and amount; ``fields[k]`` becomes where it
    starts (``fields[k]`` and ``fields[k + 1]`` are the previous row's until then)."""
    start = at
    price = prices[row, level]
    if (copies and price != NO_PRICE and price == prices[row - 1, level]
            and quantities[row, level] == quantities[row - 1, level]):
        at = _copy_within(out, fields[k], fields[k + 1], at)
    else:
        at = _put_level(out, at, prices, quantities, row, level, price_scale, size_scale)
    fields[k] = start
    return at


#: A timestamp whose digits above the last :data:`_LOW_DIGITS` are the previous row's copies them.
_LOW_DIGITS = 8
_LOW_SPAN = 10 ** _LOW_DIGITS


@llvm_inline_kernel
def _put_timestamp(out, at, value, previous, previous_start, previous_stop):
    """``value`` (µs) as digits; where its digits above the last :data:`_LOW_DIGITS` are those
    of ``previous``, written at ``out[previous_start:previous_stop]``, they are copied from there
    (never for ``previous`` 0: no row before it in ``out``)."""
    high = value // _LOW_SPAN
    if high > 0 and high == previous // _LOW_SPAN:
        at = _copy_within(out, previous_start, previous_stop - _LOW_DIGITS, at)
        put_digits(out, at, np.uint64(value - high * _LOW_SPAN), _LOW_DIGITS)
        return at + _LOW_DIGITS
    return _put_integer(out, at, value)


@llvm_inline_kernel
def widest_csv_row(prefix_bytes, levels):
    """Bytes a CSV row takes at most: each number at most 21 bytes with its separator, 20 more
    for the sign and dot, and the newline."""
    return prefix_bytes + 2 * 22 + levels * 4 * 23 + 1


@kernel
def format_csv_rows(prefix, times, last_local_ns, bid_prices, bid_quantities, ask_prices,
                    ask_quantities, price_scale, size_scale, first_row, out):
    """CSV rows in tardis.dev's layout into ``out``, from ``first_row`` on, while they fit.

    ``prefix`` is ``exchange,symbol,`` as bytes. Text the previous row already holds
    is copied from it rather than formatted again: all its level fields when the levels
    are the same (the book often does not change between boundaries), else each level
    that is; the leading digits of the time; a local time equal to the boundary.

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
    # Where the previous row's level fields are in ``out`` (ask then bid of each level, field k
    # from fields[k] to fields[k + 1]): read only from the second row of the call on.
    fields = np.empty(2 * levels + 1, np.int64)
    boundary_us = boundary_start = boundary_stop = 0
    at = 0
    row = first_row
    while row < rows and at + widest <= out.shape[0]:
        at = _put_text(out, at, prefix)
        previous_boundary, previous_start, previous_stop = boundary_us, boundary_start, boundary_stop
        boundary_us = times[row] // 1000
        boundary_start = at
        at = _put_timestamp(out, at, boundary_us, previous_boundary, previous_start, previous_stop)
        boundary_stop = at
        out[at] = 44
        at += 1
        local = last_local_ns[row] // 1000 if last_local_ns[row] > 0 else boundary_us
        if local == boundary_us:
            at = _copy_within(out, boundary_start, boundary_stop, at)
        else:
            at = _put_integer(out, at, local)
        if row > first_row and _same_levels(bid_prices, bid_quantities, ask_prices, ask_quantities, row, row - 1):
            moved = at - fields[0]
            at = _copy_within(out, fields[0], fields[2 * levels], at)
            for k in range(2 * levels + 1):
                fields[k] += moved
        else:
            copies = row > first_row
            for level in range(levels):
                at = _put_field(out, at, ask_prices, ask_quantities, row, level, price_scale, size_scale, fields,
                                2 * level, copies)
                at = _put_field(out, at, bid_prices, bid_quantities, row, level, price_scale, size_scale, fields,
                                2 * level + 1, copies)
            fields[2 * levels] = at
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
    """Every piece of a :class:`Snapshots` (itself) or of an iterable of a shard's pieces."""
    return (snapshots,) if isinstance(snapshots, Snapshots) else snapshots


def csv_bytes(snapshots):
    """The CSV file's bytes."""
    return _in_memory(snapshots, "csv")


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
    return _in_memory(snapshots, "parquet")


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


def _check_format(format):
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError("Parquet output needs pyarrow: pip install 'ringbook[parquet]'") from None


def _in_memory(snapshots, format):
    sink = io.BytesIO()
    _write_into(sink, snapshots, format)
    return sink.getvalue()


def _write_into(sink, snapshots, format):
    """Write a :class:`Snapshots`, or a shard's pieces, as they come into ``sink`` in ``format``."""
    writer = SnapshotWriter(sink, format)
    for piece in _pieces(snapshots):
        writer.add(piece)
    writer.finish()


class SnapshotWriter:
    """One shard's file in ``format``, written into ``sink`` (a binary file) a piece at a time,
    as the pieces come: :meth:`add` each piece, then :meth:`finish`.

    A CSV is formatted a piece at a time into ``scratch``, a uint8 buffer reused (writers
    that take turns may share one; default :data:`CSV_PIECE` bytes, and at least the widest
    row); a Parquet file's columns are made a piece at a time, in row groups of
    :data:`PARQUET_ROW_GROUP` rows; an npz file joins its pieces when finished. The bytes are
    those of the whole shard written at once, however the rows came in pieces.
    """

    def __init__(self, sink, format, scratch=None):
        _check_format(format)
        self.sink, self.format, self.scratch = sink, format, scratch
        self.prefix = self.parquet = self.pending = None
        self.groups = 0
        self.pieces = []

    def add(self, piece):
        """Write (or, for npz, keep a copy of) the rows of a :class:`Snapshots`: the caller may
        reuse its arrays once this returns."""
        getattr(self, "_add_" + self.format)(piece)

    def finish(self):
        """Write what is left: the last Parquet row group and the footer, or the npz file."""
        if self.format == "parquet":
            if self.pending.num_rows or not self.groups:   # an empty shard still gets its (empty) table
                self.parquet.write_table(self.pending.combine_chunks())
            self.parquet.close()
        elif self.format == "npz":
            self.sink.write(npz_bytes(joined(self.pieces)))

    def _add_csv(self, piece):
        if self.prefix is None:
            self.prefix = np.frombuffer(f"{piece.exchange},{piece.symbol},".encode(), np.uint8)
            widest = widest_csv_row(len(self.prefix), piece.levels)
            if self.scratch is None or len(self.scratch) < widest:
                self.scratch = np.empty(max(CSV_PIECE if self.scratch is None else 0, widest), np.uint8)
            self.sink.write((csv_header(piece.levels) + "\n").encode())
        row = 0
        while row < len(piece):
            row, written = format_csv_rows(self.prefix, piece.times, piece.last_local_ns, piece.bid_prices,
                                           piece.bid_quantities, piece.ask_prices, piece.ask_quantities,
                                           piece.price_scale, piece.size_scale, row, self.scratch)
            if written <= 0:
                raise RuntimeError(f"CSV rows: the snapshot arrays disagree in shape (status {written})")
            self.sink.write(memoryview(self.scratch)[:written])

    def _add_parquet(self, piece):
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrow = _arrow_table(pa, piece)
        if self.parquet is None:
            self.parquet = pq.ParquetWriter(self.sink, arrow.schema)
        self.pending = arrow if self.pending is None else pa.concat_tables([self.pending, arrow])
        while self.pending.num_rows >= PARQUET_ROW_GROUP:
            self.pending = self.pending.combine_chunks()
            self.parquet.write_table(self.pending.slice(0, PARQUET_ROW_GROUP))
            self.pending = self.pending.slice(PARQUET_ROW_GROUP)
            self.groups += 1

    def _add_npz(self, piece):
        self.pieces.append(joined([piece]))


def write_snapshots(snapshots, path, format, durable=True):
    """Write one shard's snapshots to ``path`` atomically in ``format`` (csv, parquet, npz).

    ``snapshots``: a :class:`Snapshots`, or the shard's pieces (:func:`snapshot_pieces`),
    written as they come (:class:`SnapshotWriter`). ``durable``: see
    :func:`ringbook.engine.files.write_atomic`.
    """
    _check_format(format)   # before a file is made
    with AtomicFile(path, durable) as file:
        _write_into(file, snapshots, format)
    return Path(path)


class Tally:
    """Rows of a shard's pieces as they pass on to a writer, and its first and last boundary."""

    def __init__(self):
        self.rows = 0
        self.first_boundary = self.last_boundary = None

    def add(self, piece):
        if len(piece):
            self.rows += len(piece)
            self.first_boundary = int(piece.times[0]) if self.first_boundary is None else self.first_boundary
            self.last_boundary = int(piece.times[-1])

    def passing(self, pieces):
        for piece in pieces:
            self.add(piece)
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
    for path in report.done + report.skipped:
        shown = min((shard["levels_shown"] for shard in report.entries[path]["shards"]
                     if shard.get("levels_shown") is not None), default=args.levels)
        if shown < args.levels:
            print(f"{path}: its orderbook file shows {shown} level{'s' if shown > 1 else ''} a side: levels "
                  f"{shown + 1} to {args.levels} of its snapshots are empty (LOBSTER leaves out their messages)")
    for path, failure in report.failed:
        print(tasks.failure_line("FAILED", path, failure.error))
    return 0 if report.ok else 1
