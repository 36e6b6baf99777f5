"""``ringbook check``: replay a file into the book and verify it against the exchange's own truth.

LOBSTER (``--format lobster MESSAGE_FILE [--orderbook ORDERBOOK_FILE]``)
    The book is seeded with the levels as they stood before the first
    message (orderbook row 0 with message 0 undone), then after every message
    ``k`` its best levels are compared with orderbook row ``k``: every level
    the file has, prices and sizes, both sides.

    LOBSTER writes only the messages that touch the levels it shows, so a
    level that leaves the shown window changes unseen, and when it comes back
    (a level that was never shown, or was shown long ago) its size cannot be
    known from the messages. So per side the comparison covers the levels at
    or better than the worst level of row ``k - 1`` when that row was full
    (all levels otherwise), and levels beyond it are taken from row ``k``:
    counted as ``revealed_levels`` when the book held anything else there.
    For the same reason an order's remaining size in the book can be stale:
    a delete carries the size it removes, and a cancel or execution that
    removes more than the book's remaining size shows that more was resting;
    the message is then taken as the truth and counted as ``resized_orders``.
    After a mismatch the side is reset to row ``k``, so that one error is
    reported once.

    Without ``--orderbook`` the file is replayed from an empty book and only
    gaps and unknown orders are reported.

Binance (``--format binance CAPTURE_FILE``)
    The capture is synced as Binance documents it (see
    :mod:`ringbook.engine.feeds.binance`) and replayed; whenever a ``bookTicker``'s
    update id equals the last applied diff's ``u`` (the book's sequence), the
    book's best bid and ask (price and quantity) must equal it. A ticker
    usually arrives before the 100 ms diff that reaches its update id, so
    tickers are looked up by update id each time a diff is applied; each is
    checked once.

Both formats are read through the readers' streams
(:mod:`ringbook.engine.feeds.source`), so a file of any size is checked within
the memory limit (``$RINGBOOK_MEMORY_LIMIT``, 256 MiB by default).

Output: a short summary, or with ``--json`` one object with at least
``events``, ``checked``, ``mismatches``, ``gaps`` and ``unknown_orders``; the
first mismatch is shown with its line. Exit status 0 when there are no
mismatches, 1 when there are, 2 when a file cannot be read: a malformed line
(named with its line number), an empty file, a damaged gzip stream, a device.
"""

import json
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from ringbook.engine.feeds import binance, lobster
from ringbook.engine.feeds.source import FeedError
from ringbook.engine.journal import JournalError
from ringbook.kernels import book as books
from ringbook.kernels.book import NO_PRICE, STAT_GAPS, STAT_STALE, STAT_UNKNOWN_ORDERS, borrow
from ringbook.kernels.events import (ASK, BID, FLAG_BATCH_END, KIND_L2_SET, KIND_L3_CANCEL, KIND_L3_DELETE,
                            KIND_L3_EXECUTE, KIND_SEQUENCE, KIND_TOP_OF_BOOK)
from ringbook.kernels.fixed import format_decimal
from ringbook.kernels.jit_options import kernel, llvm_inline_kernel
from ringbook.kernels.orders import (ORDER_QUANTITY, find_order, with_more_order_slots,
                                     with_room_for_orders)
from ringbook.kernels.replay import _apply_event
from ringbook.kernels.snapshots import (compare_window, is_row, is_row_and_edge, resync_side, revealed_levels,
                                        row_window, shown_levels)
from ringbook.kernels.status import ORDER_TABLE_FULL

FORMATS = ("lobster", "binance", "journal")

# Columns of the counters array the check kernels fill.
CHECKED = 0
MISMATCHES = 1
REVEALED = 2
RESIZED = 3
FIRST_EVENT = 4      # event index of the first mismatch (-1: none)
FIRST_SIDE = 5
FIRST_LEVEL = 6      # 0 = best
EXPECTED_PRICE = 7
EXPECTED_QUANTITY = 8
FOUND_PRICE = 9
FOUND_QUANTITY = 10
ERROR_EVENT = 11     # event the book refused (-1: none)
ERROR_STATUS = 12
N_COUNTERS = 13


@dataclass
class CheckResult:
    """What a check found; :meth:`to_dict` is the ``--json`` object."""

    format: str
    file: str
    events: int = 0
    checked: int = 0
    mismatches: int = 0
    gaps: int = 0
    unknown_orders: int = 0
    stale: int = 0
    revealed_levels: int = 0
    resized_orders: int = 0
    skipped_lines: list = field(default_factory=list)
    first_mismatch: dict = None
    orderbook: str = None
    warnings: int = 0
    first_warning: str = None

    @property
    def ok(self):
        return self.mismatches == 0

    def to_dict(self):
        return asdict(self)


@kernel
def _note_mismatch(counters, event, side, level, expected_price, expected_quantity,
                   found_price, found_quantity):
    """Keep the details of the first mismatch (the caller counts mismatches)."""
    if counters[FIRST_EVENT] < 0:
        counters[FIRST_EVENT] = event
        counters[FIRST_SIDE] = side
        counters[FIRST_LEVEL] = level
        counters[EXPECTED_PRICE] = expected_price
        counters[EXPECTED_QUANTITY] = expected_quantity
        counters[FOUND_PRICE] = found_price
        counters[FOUND_QUANTITY] = found_quantity


@llvm_inline_kernel
def _reconcile_order(book, events, i, counters):
    """Make a known order's remaining size agree with an L3 message (see the module docstring)."""
    event = events[i]
    kind = event.kind
    if kind != KIND_L3_DELETE and kind != KIND_L3_CANCEL and kind != KIND_L3_EXECUTE:
        return
    if event.quantity <= 0:
        return
    slot = find_order(book, event.symbol, event.order_id)
    if slot < 0:
        return
    remaining = book.orders[slot, ORDER_QUANTITY]
    if (kind == KIND_L3_DELETE and remaining != event.quantity) or event.quantity > remaining:
        book.orders[slot, ORDER_QUANTITY] = event.quantity
        counters[RESIZED] += 1


@llvm_inline_kernel
def _verify_side(book, symbol, side, row_prices, row_sizes, previous_prices, previous_sizes,
                 has_previous, found_prices, found_quantities, all_prices, all_quantities, event, counters):
    """Compare one side of the book with an orderbook row; resync what cannot be known.

    The steps of :func:`ringbook.kernels.snapshots.reconcile_side` (the same
    effect on the book), noting the first mismatch and counting the levels
    revealed beyond the window. Returns True when the side matched.
    """
    shown = shown_levels(row_sizes)
    if is_row(book, symbol, side, row_prices, row_sizes, shown):
        return True     # the usual case: nothing differs, nothing beyond the window to take
    windowed, limit = row_window(previous_prices, previous_sizes, has_previous)
    if is_row_and_edge(book, symbol, side, row_prices, row_sizes, shown, windowed, limit):
        return True     # the next most usual: the row and the window's edge, none revealed
    level, expected_price, expected_quantity, found_price, found_quantity = compare_window(
        book, symbol, side, row_prices, row_sizes, shown, windowed, limit, found_prices, found_quantities)
    matched = level < 0
    if matched:
        if not windowed:
            return True
        counters[REVEALED] += revealed_levels(book, symbol, side, row_prices, row_sizes, shown,
                                                          limit)
    else:
        _note_mismatch(counters, event, side, level, expected_price, expected_quantity, found_price,
                       found_quantity)
    # Resync from the row: on a mismatch the whole side, otherwise the levels
    # beyond the window, which changed unseen.
    resync_side(book, symbol, side, row_prices, row_sizes, shown, not matched, limit, all_prices,
                            all_quantities)
    return matched


@kernel
def check_lobster_kernel(book, symbol, events, row_of_event, ask_prices, ask_sizes, bid_prices,
                         bid_sizes, found_prices, found_quantities, all_prices, all_quantities, counters,
                         previous=-1, start=0):
    """Replay LOBSTER events from ``start``, comparing the book with orderbook row ``row_of_event[i]``
    after each event (-1: no row to compare with). ``counters`` gets the ``CHECKED``..
    columns; ``previous`` is the row compared last (-1: none), whose window
    bounds the next comparison. ``found_*`` are scratch of the rows' level
    count, ``all_*`` of the book's depth plus its ladder. Returns
    ``(the index of the event the book refused, or the events' count; the row compared last)``."""
    # The caller's references keep these alive: the calls below then count none (atomic
    # increments and decrements on every array of every call, most of the cost otherwise).
    book, events, row_of_event, counters = borrow((book, events, row_of_event, counters))
    ask_prices, ask_sizes, bid_prices, bid_sizes = borrow((ask_prices, ask_sizes, bid_prices, bid_sizes))
    found_prices, found_quantities, all_prices, all_quantities = borrow(
        (found_prices, found_quantities, all_prices, all_quantities))
    for i in range(start, events.shape[0]):
        _reconcile_order(book, events, i, counters)
        status = _apply_event(book, events, i)
        if status < 0:
            counters[ERROR_EVENT] = i
            counters[ERROR_STATUS] = status
            return i, previous
        row = row_of_event[i]
        if row < 0 or row >= ask_prices.shape[0]:
            continue
        counters[CHECKED] += 1
        has_previous = previous >= 0
        reference = previous if has_previous else row
        bids_match = _verify_side(book, symbol, BID, bid_prices[row], bid_sizes[row],
                                  bid_prices[reference], bid_sizes[reference], has_previous,
                                  found_prices, found_quantities, all_prices, all_quantities, i, counters)
        asks_match = _verify_side(book, symbol, ASK, ask_prices[row], ask_sizes[row],
                                  ask_prices[reference], ask_sizes[reference], has_previous,
                                  found_prices, found_quantities, all_prices, all_quantities, i, counters)
        if not (bids_match and asks_match):
            counters[MISMATCHES] += 1  # one per row
        previous = row
    return events.shape[0], previous


#: Columns of the quote table of bookTickers: best bid and ask, price and quantity.
QUOTE_BID_PRICE, QUOTE_BID_QUANTITY, QUOTE_ASK_PRICE, QUOTE_ASK_QUANTITY = range(4)
#: Columns of the history of the book's top after each diff: symbol, sequence, then a quote.
HISTORY_SYMBOL, HISTORY_SEQUENCE = 4, 5
#: Diffs remembered for tickers that arrive in a later chunk than the diff of their update id.
HISTORY_LENGTH = 1 << 16


@llvm_inline_kernel
def _compare_top(book, symbol, quote, ticker, counters):
    """Compare the book's best bid and ask with a bookTicker's quote: True when equal."""
    price, quantity = books.best_bid(book, symbol)
    if price != quote[QUOTE_BID_PRICE] or quantity != quote[QUOTE_BID_QUANTITY]:
        _note_mismatch(counters, ticker, BID, 0, quote[QUOTE_BID_PRICE], quote[QUOTE_BID_QUANTITY],
                       price, quantity)
        return False
    price, quantity = books.best_ask(book, symbol)
    if price != quote[QUOTE_ASK_PRICE] or quantity != quote[QUOTE_ASK_QUANTITY]:
        _note_mismatch(counters, ticker, ASK, 0, quote[QUOTE_ASK_PRICE], quote[QUOTE_ASK_QUANTITY],
                       price, quantity)
        return False
    return True


@llvm_inline_kernel
def _remember_top(book, symbol, sequence, history, written):
    """Record the book's top after a diff in the ring ``history``; returns ``written + 1``."""
    row = history[written % history.shape[0]]
    row[QUOTE_BID_PRICE], row[QUOTE_BID_QUANTITY] = books.best_bid(book, symbol)
    row[QUOTE_ASK_PRICE], row[QUOTE_ASK_QUANTITY] = books.best_ask(book, symbol)
    row[HISTORY_SYMBOL] = symbol
    row[HISTORY_SEQUENCE] = sequence
    return written + 1


@kernel
def check_binance_kernel(book, events, ticker_sequences, ticker_symbols, ticker_quotes,
                         ticker_checked, counters, history, history_written):
    """Replay synced Binance events and check bookTickers against the book.

    The tickers are given sorted by update id (``ticker_sequences``, with
    their symbols and quotes). Whenever a diff is applied and the book's
    sequence becomes its ``u``, every ticker of that symbol with that update id
    is compared: a ticker usually arrives before the 100 ms diff that reaches
    its update id. The book's top after each such diff is also written to the
    ring ``history`` (``history_written`` rows so far), for tickers that
    arrive later. A mismatch's ``FIRST_EVENT`` is the ticker's index. Returns
    ``history_written`` after the events.
    """
    # The caller's references keep these alive: the calls below then count none.
    book, events, counters, history = borrow((book, events, counters, history))
    ticker_sequences, ticker_symbols, ticker_quotes, ticker_checked = borrow(
        (ticker_sequences, ticker_symbols, ticker_quotes, ticker_checked))
    for i in range(events.shape[0]):
        event = events[i]
        if event.kind == KIND_TOP_OF_BOOK:
            continue
        status = _apply_event(book, events, i)
        if status < 0:
            counters[ERROR_EVENT] = i
            counters[ERROR_STATUS] = status
            return history_written
        symbol = np.int64(event.symbol)  # the book's queries are compiled for int64 symbols
        sequence = event.sequence
        # After a diff (not a snapshot) that the book applied, at its last event.
        if ((event.kind != KIND_L2_SET and event.kind != KIND_SEQUENCE) or sequence == 0
                or (event.flags & FLAG_BATCH_END) == 0 or book.sequences[symbol] != sequence):
            continue
        history_written = _remember_top(book, symbol, sequence, history, history_written)
        index = np.searchsorted(ticker_sequences, sequence)
        while index < ticker_sequences.shape[0] and ticker_sequences[index] == sequence:
            if ticker_symbols[index] == symbol and not ticker_checked[index]:
                ticker_checked[index] = True
                counters[CHECKED] += 1
                if not _compare_top(book, symbol, ticker_quotes[index], index, counters):
                    counters[MISMATCHES] += 1
            index += 1
    return history_written


@kernel
def _check_late_tickers(history, history_written, ticker_sequences, ticker_symbols, ticker_quotes,
                        ticker_checked, counters):
    """Compare tickers whose diff came in an earlier chunk with the book's top remembered after it."""
    kept = min(history_written, history.shape[0])
    by_sequence = np.argsort(history[:kept, HISTORY_SEQUENCE], kind="mergesort")
    sequences = history[:kept, HISTORY_SEQUENCE][by_sequence]
    for index in range(ticker_sequences.shape[0]):
        at = np.searchsorted(sequences, ticker_sequences[index])
        while at < kept and sequences[at] == ticker_sequences[index]:
            top = history[by_sequence[at]]
            at += 1
            if top[HISTORY_SYMBOL] != ticker_symbols[index] or ticker_checked[index]:
                continue
            ticker_checked[index] = True
            counters[CHECKED] += 1
            quote = ticker_quotes[index]
            if top[QUOTE_BID_PRICE] != quote[QUOTE_BID_PRICE] or top[QUOTE_BID_QUANTITY] != quote[QUOTE_BID_QUANTITY]:
                _note_mismatch(counters, index, BID, 0, quote[QUOTE_BID_PRICE], quote[QUOTE_BID_QUANTITY],
                               top[QUOTE_BID_PRICE], top[QUOTE_BID_QUANTITY])
                counters[MISMATCHES] += 1
            elif (top[QUOTE_ASK_PRICE] != quote[QUOTE_ASK_PRICE]
                    or top[QUOTE_ASK_QUANTITY] != quote[QUOTE_ASK_QUANTITY]):
                _note_mismatch(counters, index, ASK, 0, quote[QUOTE_ASK_PRICE], quote[QUOTE_ASK_QUANTITY],
                               top[QUOTE_ASK_PRICE], top[QUOTE_ASK_QUANTITY])
                counters[MISMATCHES] += 1


def _new_counters():
    counters = np.zeros(N_COUNTERS, np.int64)
    counters[FIRST_EVENT] = -1
    counters[ERROR_EVENT] = -1
    return counters


def _raise_book_error(counters, chunk, events_before):
    event = int(counters[ERROR_EVENT])
    books.check_status(int(counters[ERROR_STATUS]),
                       f"{chunk.path}, line {int(chunk.lines[event])} (event {events_before + event})")


def _first_mismatch(counters, line, event, price_scale, size_scale):
    """The ``first_mismatch`` dict of the mismatch the counters hold, found at ``line``."""
    def level(price, quantity):
        if price == NO_PRICE:
            return None
        return {"price": format_decimal(int(price), price_scale),
                "quantity": format_decimal(int(quantity), size_scale)}

    return {"line": int(line), "event": int(event),
            "side": "bid" if counters[FIRST_SIDE] == BID else "ask",
            "level": int(counters[FIRST_LEVEL]) + 1,
            "expected": level(counters[EXPECTED_PRICE], counters[EXPECTED_QUANTITY]),
            "found": level(counters[FOUND_PRICE], counters[FOUND_QUANTITY])}


#: The rows a LOBSTER check without an orderbook file compares with: none.
_NO_ROWS = lobster.OrderbookFile(*(np.zeros((0, 1), np.int64),) * 4, np.zeros(0, np.int64), np.zeros(0, np.int64),
                                 "", [])


def check_lobster(message_path, orderbook_path=None, *, skip_malformed=False, depth=4096,
                  order_capacity=2**14, memory_limit=None):
    """Replay a LOBSTER message file and verify it against its orderbook file.

    Both files are streamed side by side (see :mod:`ringbook.engine.feeds.source`),
    each within half of ``memory_limit``. The order table starts at ``order_capacity``
    slots (a small table is faster to fill and to probe) and doubles whenever it is full,
    or more than half full between chunks (:func:`ringbook.kernels.orders.with_room_for_orders`).

    Returns
    -------
    CheckResult

    Raises
    ------
    ringbook.engine.feeds.source.FeedError
        A malformed line (unless ``skip_malformed``), a file that cannot be
        read or is empty, or files that do not pair up.
    ringbook.kernels.book.BookError
        An event the book refuses (a duplicate order id, a full order table).
    """
    chunks, orderbook = lobster.iter_with_orderbook(message_path, orderbook_path, skip_malformed=skip_malformed,
                                                    memory_limit=memory_limit)
    result = CheckResult("lobster", str(message_path), orderbook=None if orderbook_path is None
                         else str(orderbook_path))
    counters = _new_counters()
    book = None
    previous = -1
    last_record = None
    for chunk in chunks:
        result.skipped_lines += chunk.skipped_lines
        result.warnings += len(chunk.warnings)
        if chunk.warnings and result.first_warning is None:
            result.first_warning = f"line {chunk.warnings[0][0]}: {chunk.warnings[0][1]}"
        if not len(chunk):
            continue
        symbol = int(chunk.events["symbol"][0])
        if book is None:
            book = books.new_book(n_symbols=max(len(chunk.instruments), 1), depth=depth,
                                  order_capacity=order_capacity, ticks=chunk.instruments.table["tick"])
            # Scratch for every level of a side, for resyncing it with a row.
            capacity = book.prices.shape[2] + book.ladders.shape[2]
            every_level = np.zeros(capacity, np.int64), np.zeros(capacity, np.int64)
            first_rows = orderbook.first_rows() if orderbook is not None else None
            if first_rows is not None:
                books.check_status(books.load_snapshot(
                    book, symbol, *lobster.levels_before_first(first_rows, chunk.events[0]), 0),
                    "seeding the book")
        last_record = int(chunk.records[-1])
        if orderbook is None:
            windows = [(0, len(chunk), _NO_ROWS, -1, np.full(len(chunk), -1, np.int64))]
        else:
            windows = orderbook.windows(chunk.records)
        for start, stop, rows, previous, row_of_event in windows:
            sides = rows.ask_price, rows.ask_size, rows.bid_price, rows.bid_size
            found = np.zeros(rows.levels, np.int64), np.zeros(rows.levels, np.int64)
            while True:
                start, previous = check_lobster_kernel(book, symbol, chunk.events[:stop], row_of_event, *sides,
                                                       *found, *every_level, counters, previous, start)
                if counters[ERROR_STATUS] != ORDER_TABLE_FULL:
                    break
                # The refused add changed nothing: grow the table and apply it again.
                book = with_more_order_slots(book)
                counters[ERROR_EVENT], counters[ERROR_STATUS] = -1, 0
            if counters[ERROR_EVENT] >= 0:
                break   # a book error, raised below with its line
            if orderbook is not None:
                orderbook.keep_previous(rows, previous)
            book = with_room_for_orders(book)
        _take_chunk_outcome(result, counters, chunk, chunk.lines, lobster.PRICE_SCALE, lobster.SIZE_SCALE)
    if orderbook is not None:
        first_rows = orderbook.first_rows()
        orderbook.drain()
        if first_rows is not None and last_record is not None and orderbook.last_record != last_record:
            raise FeedError(orderbook_path, orderbook.last_line,
                            f"{orderbook.last_record + 1} rows for {last_record + 1} messages in {message_path}")
    if book is None:
        book = books.new_book(n_symbols=1, depth=8, order_capacity=16)
    _fill(result, counters, book)
    return result


def _take_chunk_outcome(result, counters, chunk, lines_of_first, price_scale, size_scale):
    """After a chunk's kernel: raise a book error, keep a first mismatch, count the events.

    ``lines_of_first[i]`` is the line of what ``FIRST_EVENT`` ``i`` names.
    """
    if counters[ERROR_EVENT] >= 0:
        _raise_book_error(counters, chunk, result.events)
    if counters[FIRST_EVENT] >= 0 and result.first_mismatch is None:
        event = int(counters[FIRST_EVENT])
        result.first_mismatch = _first_mismatch(counters, lines_of_first[event], result.events + event,
                                                 price_scale, size_scale)
    result.events += len(chunk)


def price_ticks(events, n_symbols):
    """Per symbol, the greatest common divisor of its L2 level prices (1 when it has none).

    A capture does not carry the instrument's tick size; every price a
    symbol's levels use is a multiple of this one, which is what the book's
    ladder needs (any tick keeps the book exact: it only decides where a level
    is kept).
    """
    ticks = np.ones(n_symbols, np.int64)
    levels = events[events["kind"] == KIND_L2_SET]
    for symbol in np.unique(levels["symbol"]):
        divisor = np.gcd.reduce(np.abs(levels["price"][levels["symbol"] == symbol]))
        ticks[symbol] = max(int(divisor), 1)
    return ticks


def feed_ticks(feed, n_symbols):
    """Per symbol, the tick the feed's instruments give, else (a capture carries none) the one
    its prices imply (:func:`price_ticks`, worked out only then)."""
    ticks = feed.instruments.table["tick"][:n_symbols].astype(np.int64)
    if (ticks <= 1).any():
        ticks = np.where(ticks > 1, ticks, price_ticks(feed.events, n_symbols))
    return ticks


#: Symbols a streamed Binance check's book holds (the capture's symbols are known only as they come).
BINANCE_SYMBOLS = 64


class _Tickers:
    """bookTickers waiting for the diff of their update id, sorted by it, across chunks."""

    def __init__(self):
        self.sequences = np.zeros(0, np.int64)
        self.symbols = np.zeros(0, np.int32)
        self.quotes = np.zeros((0, 4), np.int64)
        self.lines = np.zeros(0, np.int64)
        self.events = np.zeros(0, np.int64)

    @staticmethod
    def of_chunk(events, lines, events_before):
        """The tickers of a chunk: a bid event followed by its ask event, sharing the update id."""
        bid_events = np.flatnonzero((events["kind"] == KIND_TOP_OF_BOOK) & (events["side"] == BID))
        bid_events = bid_events[bid_events + 1 < len(events)]
        bid_events = bid_events[(events["kind"][bid_events + 1] == KIND_TOP_OF_BOOK)
                                & (events["sequence"][bid_events + 1] == events["sequence"][bid_events])]
        tickers = _Tickers()
        tickers.sequences = events["sequence"][bid_events].astype(np.int64)
        tickers.symbols = events["symbol"][bid_events].astype(np.int32)
        tickers.quotes = np.stack([events["price"][bid_events], events["quantity"][bid_events],
                                   events["price"][bid_events + 1], events["quantity"][bid_events + 1]],
                                  axis=1).astype(np.int64)
        tickers.lines = lines[bid_events].astype(np.int64)
        tickers.events = (events_before + bid_events).astype(np.int64)
        return tickers

    def select(self, mask):
        part = _Tickers()
        for name in ("sequences", "symbols", "quotes", "lines", "events"):
            setattr(part, name, getattr(self, name)[mask])
        return part

    def add(self, other):
        for name in ("sequences", "symbols", "quotes", "lines", "events"):
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)]))
        order = np.argsort(self.sequences, kind="stable")
        for name in ("sequences", "symbols", "quotes", "lines", "events"):
            setattr(self, name, getattr(self, name)[order])


def _binance_first_mismatch(result, counters, tickers, table):
    if counters[FIRST_EVENT] >= 0 and result.first_mismatch is None:
        index = int(counters[FIRST_EVENT])
        result.first_mismatch = _first_mismatch(counters, tickers.lines[index], tickers.events[index],
                                                int(table["price_scale"][0]), int(table["size_scale"][0]))


def check_binance(capture_path, *, skip_malformed=False, depth=2048, memory_limit=None):
    """Replay a Binance capture (synced) and verify the book against every matching bookTicker.

    The capture is streamed (see :mod:`ringbook.engine.feeds.source`): a
    ticker that arrives in a later chunk than the diff of its update id is
    compared with the book's top remembered after that diff (the last
    :data:`HISTORY_LENGTH` diffs are). The book's ticks are inferred from the
    first chunk's level prices (:func:`price_ticks`).

    Returns
    -------
    CheckResult
    """
    result = CheckResult("binance", str(capture_path))
    counters = _new_counters()
    book = None
    pending = _Tickers()
    history = np.zeros((HISTORY_LENGTH, 6), np.int64)
    history_written = 0
    for chunk in binance.iter_capture(capture_path, skip_malformed=skip_malformed, memory_limit=memory_limit):
        result.skipped_lines += chunk.skipped_lines
        if not len(chunk):
            continue
        if len(chunk.instruments) > BINANCE_SYMBOLS:
            raise FeedError(capture_path, int(chunk.lines[0]),
                            f"more than {BINANCE_SYMBOLS} symbols: check one symbol's capture at a time")
        if book is None:
            book = books.new_book(n_symbols=BINANCE_SYMBOLS, depth=depth, order_capacity=16,
                                  ticks=price_ticks(chunk.events, BINANCE_SYMBOLS))
        table = chunk.instruments.table
        arrived = _Tickers.of_chunk(chunk.events, chunk.lines, result.events)
        # Tickers whose update id the book has passed: their diff came in an earlier chunk.
        late = arrived.sequences <= book.sequences[arrived.symbols]
        passed = arrived.select(late)
        _check_late_tickers(history, history_written, passed.sequences, passed.symbols, passed.quotes,
                            np.zeros(len(passed.sequences), np.bool_), counters)
        _binance_first_mismatch(result, counters, passed, table)
        pending.add(arrived.select(~late))
        checked = np.zeros(len(pending.sequences), np.bool_)
        history_written = check_binance_kernel(book, chunk.events, pending.sequences, pending.symbols,
                                               pending.quotes, checked, counters, history, history_written)
        if counters[ERROR_EVENT] >= 0:
            _raise_book_error(counters, chunk, result.events)
        _binance_first_mismatch(result, counters, pending, table)
        result.events += len(chunk)
        # Keep the tickers the book can still reach.
        pending = pending.select(~checked & (pending.sequences > book.sequences[pending.symbols]))
    if book is None:
        book = books.new_book(n_symbols=1, depth=8, order_capacity=16)
    _fill(result, counters, book)
    return result


def check_journal(root, orderbook_path=None, *, stream=None, skip_malformed=False):
    """Run the check that fits a journal stream imported from a capture (``ringbook journal import``).

    The capture is written back to a temporary file and checked as the
    original would be; the result names the journal. Line numbers are those of
    the capture without its blank lines (line ``n``: record ``n - 1``, after a
    LOBSTER header row if the file had one).
    """
    import tempfile

    from ringbook.engine.feeds import journal as feeds_journal

    with tempfile.TemporaryDirectory(prefix="ringbook-check-") as directory:
        format, path = feeds_journal.materialize(root, directory, stream)
        if format == "lobster":
            result = check_lobster(path, orderbook_path, skip_malformed=skip_malformed)
        elif format == "binance" and orderbook_path is None:
            result = check_binance(path, skip_malformed=skip_malformed)
        else:
            raise FeedError(root, 0, f"no check for a {format} journal" +
                            (" with --orderbook" if orderbook_path else ""))
    result.file = str(root)
    return result


def _fill(result, counters, book):
    result.checked = int(counters[CHECKED])
    result.mismatches = int(counters[MISMATCHES])
    result.revealed_levels = int(counters[REVEALED])
    result.resized_orders = int(counters[RESIZED])
    result.gaps = int(book.stats[:, STAT_GAPS].sum())
    result.stale = int(book.stats[:, STAT_STALE].sum())
    result.unknown_orders = int(book.stats[:, STAT_UNKNOWN_ORDERS].sum())


def summary(result):
    """The human summary of a :class:`CheckResult`."""
    lines = [f"{result.format} {result.file}" + (f" against {result.orderbook}" if result.orderbook else "")]
    lines.append(f"  events          {result.events}")
    if result.format == "lobster" and result.orderbook is None:
        lines.append("  checked         0 (no --orderbook: replay only)")
    else:
        what = "orderbook rows" if result.format == "lobster" else "bookTickers at the book's update id"
        lines.append(f"  checked         {result.checked} {what}")
    lines.append(f"  mismatches      {result.mismatches}")
    lines.append(f"  gaps            {result.gaps}")
    lines.append(f"  unknown orders  {result.unknown_orders}")
    if result.format == "lobster" and result.orderbook is not None:
        lines.append(f"  revealed levels {result.revealed_levels} (entered the shown levels unseen)")
        lines.append(f"  resized orders  {result.resized_orders} (remaining size taken from a message)")
    if result.stale:
        lines.append(f"  stale           {result.stale}")
    if result.warnings:
        lines.append(f"  warnings        {result.warnings} (first: {result.first_warning})")
    if result.skipped_lines:
        lines.append(f"  skipped lines   {len(result.skipped_lines)} (first: line {result.skipped_lines[0]})")
    first = result.first_mismatch
    if first is not None:
        def text(level):
            return "no level" if level is None else f"{level['price']} x {level['quantity']}"
        lines.append(f"  first mismatch  line {first['line']}: {first['side']} level {first['level']} "
                     f"expected {text(first['expected'])}, book has {text(first['found'])}")
    lines.append("  OK" if result.ok else "  MISMATCH")
    return "\n".join(lines)


def add_arguments(parser):
    parser.add_argument("--format", choices=FORMATS, help="the files' format (default: told from each file)")
    parser.add_argument("files", nargs="+", metavar="file",
                        help="LOBSTER message files (orderbook files matched by name), Binance captures "
                             "(.gz is fine), journal directories (--format journal) imported from either, "
                             "or folders of them")
    parser.add_argument("--orderbook", help="LOBSTER orderbook file to verify against (one file)")
    parser.add_argument("--stream", help="--format journal: the stream to check (when the journal has several)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="check many files in local processes "
                       "(default: the usable cores; 0: this process)")
    where.add_argument("--cluster", metavar="ADDRESS", help="check many files on a Dask scheduler")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (many files)")
    parser.add_argument("--skip-malformed", action="store_true",
                        help="skip and count malformed lines instead of stopping at the first")


def run(args):
    from ringbook.engine.inputs import is_folder_of_inputs

    if (len(args.files) > 1 or args.workers is not None or args.cluster is not None
            or is_folder_of_inputs(args.files[0])):
        if args.orderbook or args.skip_malformed:
            print("ringbook check: --orderbook and --skip-malformed are for one file", file=sys.stderr)
            return 2
        from ringbook.engine import batch

        return batch.run_check(args)
    args.file = args.files[0]
    if args.format is None:
        from ringbook.engine.inputs import detect_format

        try:
            args.format = detect_format(args.file)
        except (ValueError, OSError) as error:
            print(f"ringbook check: {error}", file=sys.stderr)
            return 2
    try:
        if args.format == "journal":
            result = check_journal(args.file, args.orderbook, stream=args.stream,
                                   skip_malformed=args.skip_malformed)
        elif args.format == "lobster":
            result = check_lobster(args.file, args.orderbook, skip_malformed=args.skip_malformed)
        else:
            if args.orderbook:
                print("ringbook check: --orderbook is for --format lobster", file=sys.stderr)
                return 2
            result = check_binance(args.file, skip_malformed=args.skip_malformed)
    except (FeedError, books.BookError, OSError, JournalError) as error:
        if args.json:
            problem = {"format": args.format, "file": args.file, "error": str(error)}
            if isinstance(error, FeedError):
                problem.update({"error_file": error.path, "line": error.line, "field": error.field})
            json.dump(problem, sys.stdout)
            sys.stdout.write("\n")
        print(f"ringbook check: {error}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(result.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(summary(result))
    return 0 if result.ok else 1
