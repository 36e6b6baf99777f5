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

Output: a short summary, or with ``--json`` one object with at least
``events``, ``checked``, ``mismatches``, ``gaps`` and ``unknown_orders``; the
first mismatch is shown with its line. Exit status 0 when there are no
mismatches, 1 when there are, 2 when a file cannot be read (a malformed line
is named with its line number).
"""

import json
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from ringbook.engine.feeds import binance, lobster
from ringbook.engine.feeds.source import FeedError
from ringbook.engine.journal import JournalError
from ringbook.kernels import book as books
from ringbook.kernels.book import NO_PRICE, STAT_GAPS, STAT_STALE, STAT_UNKNOWN_ORDERS
from ringbook.kernels.events import (ASK, BID, FLAG_BATCH_END, KIND_L2_SET, KIND_L3_CANCEL, KIND_L3_DELETE,
                            KIND_L3_EXECUTE, KIND_SEQUENCE, KIND_TOP_OF_BOOK)
from ringbook.kernels.fixed import format_decimal
from ringbook.kernels.jit_options import kernel
from ringbook.kernels.orders import ORDER_QUANTITY, find_order
from ringbook.kernels.replay import apply_event

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


@kernel
def _at_or_better(side, price, limit):
    return price >= limit if side == BID else price <= limit


@kernel
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


@kernel
def _verify_side(book, symbol, side, row_prices, row_sizes, previous_prices, previous_sizes,
                 has_previous, found_prices, found_quantities, event, counters):
    """Compare one side of the book with an orderbook row; resync what cannot be known.

    Returns True when the side matched.
    """
    levels = row_prices.shape[0]
    shown = 0
    while shown < levels and row_sizes[shown] > 0:
        shown += 1
    # The window of the previous row: levels beyond its worst could change unseen.
    windowed = has_previous and previous_sizes[levels - 1] > 0
    limit = previous_prices[levels - 1]
    held = books.top_levels(book, symbol, side, found_prices, found_quantities)
    matched = True
    for level in range(levels):
        book_known = level < held and (not windowed or _at_or_better(side, found_prices[level], limit))
        row_known = level < shown and (not windowed or _at_or_better(side, row_prices[level], limit))
        if not book_known and not row_known:
            break
        if (book_known != row_known or found_prices[level] != row_prices[level]
                or found_quantities[level] != row_sizes[level]):
            _note_mismatch(counters, event, side, level,
                           row_prices[level] if row_known else NO_PRICE,
                           row_sizes[level] if row_known else 0,
                           found_prices[level] if book_known else NO_PRICE,
                           found_quantities[level] if book_known else 0)
            matched = False
            break
    if matched and not windowed:
        return True
    # Resync from the row: on a mismatch the whole side, otherwise the levels
    # beyond the window, which changed unseen.
    for level in range(shown):
        if (matched and not _at_or_better(side, row_prices[level], limit)
                and books.level_quantity(book, symbol, side, row_prices[level]) != row_sizes[level]):
            counters[REVEALED] += 1
    after_price = limit if matched else NO_PRICE
    books.replace_levels(book, symbol, side, after_price, NO_PRICE, row_prices[:shown],
                         row_sizes[:shown])
    return matched


@kernel
def check_lobster_kernel(book, symbol, events, row_of_event, ask_prices, ask_sizes, bid_prices,
                         bid_sizes, found_prices, found_quantities, counters):
    """Replay LOBSTER events, comparing the book with orderbook row ``row_of_event[i]``
    after each event (-1: no row to compare with). ``counters`` gets the ``CHECKED``..
    columns; returns the number of events applied."""
    previous = -1
    for i in range(events.shape[0]):
        _reconcile_order(book, events, i, counters)
        status = apply_event(book, events, i)
        if status < 0:
            counters[ERROR_EVENT] = i
            counters[ERROR_STATUS] = status
            return i
        row = row_of_event[i]
        if row < 0 or row >= ask_prices.shape[0]:
            continue
        counters[CHECKED] += 1
        has_previous = previous >= 0
        reference = previous if has_previous else row
        bids_match = _verify_side(book, symbol, BID, bid_prices[row], bid_sizes[row],
                                  bid_prices[reference], bid_sizes[reference], has_previous,
                                  found_prices, found_quantities, i, counters)
        asks_match = _verify_side(book, symbol, ASK, ask_prices[row], ask_sizes[row],
                                  ask_prices[reference], ask_sizes[reference], has_previous,
                                  found_prices, found_quantities, i, counters)
        if not (bids_match and asks_match):
            counters[MISMATCHES] += 1  # one per row
        previous = row
    return events.shape[0]


@kernel
def _compare_top(book, symbol, events, bid_event, counters):
    """Compare the book's best bid and ask with a bookTicker's two events: True when equal."""
    price, quantity = books.best_bid(book, symbol)
    bid = events[bid_event]
    if price != bid.price or quantity != bid.quantity:
        _note_mismatch(counters, bid_event, BID, 0, bid.price, bid.quantity, price, quantity)
        return False
    price, quantity = books.best_ask(book, symbol)
    ask = events[bid_event + 1]
    if price != ask.price or quantity != ask.quantity:
        _note_mismatch(counters, bid_event + 1, ASK, 0, ask.price, ask.quantity, price, quantity)
        return False
    return True


@kernel
def check_binance_kernel(book, events, ticker_sequences, ticker_symbols, ticker_events,
                         ticker_checked, counters):
    """Replay synced Binance events and check bookTickers against the book.

    The tickers are given sorted by update id (``ticker_sequences``, with
    their symbols and the index of their bid event, the ask event following
    it). Whenever a diff is applied and the book's sequence becomes its ``u``,
    every ticker of that symbol with that update id is compared: a ticker
    usually arrives before the 100 ms diff that reaches its update id.
    """
    for i in range(events.shape[0]):
        event = events[i]
        if event.kind == KIND_TOP_OF_BOOK:
            continue
        status = apply_event(book, events, i)
        if status < 0:
            counters[ERROR_EVENT] = i
            counters[ERROR_STATUS] = status
            return i
        symbol = event.symbol
        sequence = event.sequence
        # After a diff (not a snapshot) that the book applied, at its last event.
        if ((event.kind != KIND_L2_SET and event.kind != KIND_SEQUENCE) or sequence == 0
                or (event.flags & FLAG_BATCH_END) == 0 or book.sequences[symbol] != sequence):
            continue
        index = np.searchsorted(ticker_sequences, sequence)
        while index < ticker_sequences.shape[0] and ticker_sequences[index] == sequence:
            if ticker_symbols[index] == symbol and not ticker_checked[index]:
                ticker_checked[index] = True
                counters[CHECKED] += 1
                if not _compare_top(book, symbol, events, ticker_events[index], counters):
                    counters[MISMATCHES] += 1
            index += 1
    return events.shape[0]


def _new_counters():
    counters = np.zeros(N_COUNTERS, np.int64)
    counters[FIRST_EVENT] = -1
    counters[ERROR_EVENT] = -1
    return counters


def _raise_book_error(counters, feed):
    event = int(counters[ERROR_EVENT])
    books.check_status(int(counters[ERROR_STATUS]),
                       f"{feed.path}, line {int(feed.lines[event])} (event {event})")


def _first_mismatch(counters, feed, price_scale, size_scale):
    event = int(counters[FIRST_EVENT])
    if event < 0:
        return None

    def level(price, quantity):
        if price == NO_PRICE:
            return None
        return {"price": format_decimal(int(price), price_scale),
                "quantity": format_decimal(int(quantity), size_scale)}

    return {"line": int(feed.lines[event]), "event": event,
            "side": "bid" if counters[FIRST_SIDE] == BID else "ask",
            "level": int(counters[FIRST_LEVEL]) + 1,
            "expected": level(counters[EXPECTED_PRICE], counters[EXPECTED_QUANTITY]),
            "found": level(counters[FOUND_PRICE], counters[FOUND_QUANTITY])}


def check_lobster(message_path, orderbook_path=None, *, skip_malformed=False, depth=4096,
                  order_capacity=2**20):
    """Replay a LOBSTER message file and verify it against its orderbook file.

    Returns
    -------
    CheckResult

    Raises
    ------
    ringbook.engine.feeds.source.FeedError
        A malformed line (unless ``skip_malformed``), or files that do not pair up.
    ringbook.kernels.book.BookError
        An event the book refuses (a duplicate order id, a full order table).
    """
    feed = lobster.read_messages(message_path, skip_malformed=skip_malformed)
    symbol = int(feed.events["symbol"][0]) if len(feed) else 0
    book = books.new_book(n_symbols=max(len(feed.instruments), 1), depth=depth,
                          order_capacity=order_capacity, ticks=feed.instruments.table["tick"])
    counters = _new_counters()
    result = CheckResult("lobster", str(message_path), events=len(feed),
                         skipped_lines=list(feed.skipped_lines))
    if orderbook_path is not None:
        orderbook = lobster.read_orderbook(orderbook_path, skip_malformed=skip_malformed)
        result.orderbook = str(orderbook_path)
        result.skipped_lines += orderbook.skipped_lines
        if len(orderbook) and len(feed) and orderbook.records[-1] != feed.records[-1]:
            raise FeedError(orderbook_path, int(orderbook.lines[-1]),
                            f"{orderbook.records[-1] + 1} rows for "
                            f"{feed.records[-1] + 1} messages in {message_path}")
        row_of_record = np.full(int(max(feed.records.max(initial=-1), orderbook.records.max(initial=-1))) + 1,
                                -1, np.int64)
        row_of_record[orderbook.records] = np.arange(len(orderbook))
        row_of_event = row_of_record[feed.records] if len(feed) else np.zeros(0, np.int64)
        if len(feed) and len(orderbook):
            bid_prices, bid_sizes, ask_prices, ask_sizes = lobster.levels_before_first(
                orderbook, feed.events[0])
            books.check_status(books.load_snapshot(book, symbol, bid_prices, bid_sizes, ask_prices,
                                                   ask_sizes, 0), "seeding the book")
        found_prices = np.zeros(orderbook.levels, np.int64)
        found_quantities = np.zeros(orderbook.levels, np.int64)
        check_lobster_kernel(book, symbol, feed.events, row_of_event, orderbook.ask_price,
                             orderbook.ask_size, orderbook.bid_price, orderbook.bid_size,
                             found_prices, found_quantities, counters)
    else:
        empty = np.zeros((0, 1), np.int64)
        check_lobster_kernel(book, symbol, feed.events, np.full(len(feed), -1, np.int64), empty,
                             empty, empty, empty, np.zeros(1, np.int64), np.zeros(1, np.int64),
                             counters)
    if counters[ERROR_EVENT] >= 0:
        _raise_book_error(counters, feed)
    _fill(result, counters, book, feed, lobster.PRICE_SCALE, lobster.SIZE_SCALE)
    return result


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


def check_binance(capture_path, *, skip_malformed=False, depth=2048):
    """Replay a Binance capture (synced) and verify the book against every matching bookTicker.

    Returns
    -------
    CheckResult
    """
    feed = binance.read_capture(capture_path, skip_malformed=skip_malformed)
    n_symbols = max(len(feed.instruments), 1)
    book = books.new_book(n_symbols=n_symbols, depth=depth, order_capacity=16,
                          ticks=price_ticks(feed.events, n_symbols))
    counters = _new_counters()
    events = feed.events
    # A ticker is its bid event followed by its ask event, sharing the update id.
    bid_events = np.flatnonzero((events["kind"] == KIND_TOP_OF_BOOK) & (events["side"] == BID))
    bid_events = bid_events[bid_events + 1 < len(events)]
    bid_events = bid_events[(events["kind"][bid_events + 1] == KIND_TOP_OF_BOOK)
                            & (events["sequence"][bid_events + 1] == events["sequence"][bid_events])]
    order = np.argsort(events["sequence"][bid_events], kind="stable")
    ticker_events = bid_events[order].astype(np.int64)
    check_binance_kernel(book, events, events["sequence"][ticker_events].copy(),
                         events["symbol"][ticker_events].copy(), ticker_events,
                         np.zeros(len(ticker_events), np.bool_), counters)
    if counters[ERROR_EVENT] >= 0:
        _raise_book_error(counters, feed)
    result = CheckResult("binance", str(capture_path), events=len(feed),
                         skipped_lines=list(feed.skipped_lines))
    table = feed.instruments.table
    _fill(result, counters, book, feed, int(table["price_scale"][0]), int(table["size_scale"][0]))
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


def _fill(result, counters, book, feed, price_scale, size_scale):
    result.checked = int(counters[CHECKED])
    result.mismatches = int(counters[MISMATCHES])
    result.revealed_levels = int(counters[REVEALED])
    result.resized_orders = int(counters[RESIZED])
    result.gaps = int(book.stats[:, STAT_GAPS].sum())
    result.stale = int(book.stats[:, STAT_STALE].sum())
    result.unknown_orders = int(book.stats[:, STAT_UNKNOWN_ORDERS].sum())
    result.first_mismatch = _first_mismatch(counters, feed, price_scale, size_scale)


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
    parser.add_argument("--format", required=True, choices=FORMATS, help="the file's format")
    parser.add_argument("file", help="LOBSTER message file, Binance capture (.gz is fine), or a journal "
                                     "directory (--format journal) imported from either")
    parser.add_argument("--orderbook", help="LOBSTER orderbook file to verify against")
    parser.add_argument("--stream", help="--format journal: the stream to check (when the journal has several)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--skip-malformed", action="store_true",
                        help="skip and count malformed lines instead of stopping at the first")


def run(args):
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
