"""Book snapshots at interval boundaries: the best N levels every second (or any interval).

A boundary is every whole multiple of ``interval`` ns since the epoch, from the
first message's time to the last. The snapshot at boundary ``b`` is the book as
of the last message at or before ``b``: every event of every message whose
time is ``<= b`` has been applied, none after. A boundary is written whether or
not the book changed since the previous one.

Time is the *clock* of the replay: the running maximum of the events'
``exchange_ns``. An event with ``exchange_ns == 0`` (a feed that has no
exchange time for it, such as a Binance spot ``bookTicker``) and an event
earlier than the clock do not move it. A snapshot is taken only between
exchange messages (after a ``FLAG_BATCH_END`` event), where the book is
consistent.

API (kernels, book first; ``out`` is the tuple of output arrays below)
------------------------------------------------------------------------
new_cursor() -> cursor                                          (Python)
snapshot_before(book, symbol, events, i, interval, cursor, out) -> status
    Take the snapshots due before ``events[i]`` is applied.
note_applied(book, symbol, events, i, interval, cursor)
    Advance the clock after ``events[i]`` was applied.
take_snapshots(book, symbol, events, start, stop, interval, cursor, out) -> (next_index, status)
    Apply ``events[start:stop]`` with the two steps above around each.
finish_snapshots(book, symbol, interval, cursor, out) -> status
    Take the boundaries up to and including the clock (at the end of the file).

The steps are separate so that a loop of your own (one that also reconciles the
book with a reference, say) takes the same snapshots: call
``snapshot_before``, apply the event your way, then ``note_applied``.

take_published_snapshots(events, row_of_event, rows, start, current, interval, cursor, out)
        -> (next_index, status, current)
finish_published_snapshots(rows, current, interval, cursor, out) -> status
    The same snapshots without a book, for an exchange that publishes its best
    levels after each message (LOBSTER's orderbook file): each is the row of the
    last message at or before its boundary (see the section on published rows).

reconcile_side(book, symbol, side, row, previous row, scratch) -> matched
    Make one side agree with an exchange's published row of its best levels
    (a LOBSTER orderbook row), in the steps that ``ringbook check`` also takes:
    ``shown_levels``, ``row_window``, ``is_row``, ``is_row_and_edge``, ``compare_window``,
    ``revealed_levels``, ``resync_side`` (see the section at the end).

Outputs (``out``, allocated by the caller; row ``r`` is one boundary)
----------------------------------------------------------------------
times : int64[rows]            the boundary, ns since the epoch
last_ns : int64[rows]          the clock at the last message applied
last_local_ns : int64[rows]    ``local_ns`` of the last event applied (0: unknown)
sequences : int64[rows]        the book's sequence for the symbol (0: the feed has none)
bid_prices, bid_quantities, ask_prices, ask_quantities : int64[rows, levels]
    Best first. A side with fewer levels fills the rest with price
    :data:`~ringbook.kernels.book.NO_PRICE` and quantity 0.

``cursor`` (int64[N_CURSOR]) carries the clock, the next boundary and the rows
written between calls, so a file can be replayed in pieces. Statuses: ``OK``;
``FULL`` (negative, an outcome) when the outputs have no room for the next row
(nothing is written outside them; the rows so far are kept); a book error
(negative) from applying an event.
"""

import numpy as np

from ringbook.kernels import book as books
from ringbook.kernels.book import ASK, BID, NO_PRICE, borrow, top_levels
from ringbook.kernels.events import FLAG_BATCH_END
from ringbook.kernels.jit_options import inline_kernel, kernel, llvm_inline_kernel
from ringbook.kernels.replay import _apply_event
from ringbook.kernels.status import BAD_ARGUMENT, FULL, OK

# Cursor fields.
CURSOR_CLOCK = 0          # running max of exchange_ns (0: no time seen yet)
CURSOR_NEXT_BOUNDARY = 1  # first boundary not yet written (0: not known yet)
CURSOR_ROWS = 2           # rows written
CURSOR_OPEN = 3           # 1 while a message is partly applied (no snapshot there)
CURSOR_LAST_LOCAL = 4     # local_ns of the last event applied
CURSOR_EVENTS = 5         # events applied
N_CURSOR = 6


def new_cursor():
    """A cursor for a replay from the start of a file."""
    return np.zeros(N_CURSOR, np.int64)


@llvm_inline_kernel
def _write_row(book, symbol, row, boundary, cursor, times, last_ns, last_local_ns, sequences,
               bid_prices, bid_quantities, ask_prices, ask_quantities):
    times[row] = boundary
    last_ns[row] = cursor[CURSOR_CLOCK]
    last_local_ns[row] = cursor[CURSOR_LAST_LOCAL]
    sequences[row] = book.sequences[symbol]
    levels = bid_prices.shape[1]
    held = top_levels(book, symbol, BID, bid_prices[row], bid_quantities[row])
    for level in range(held, levels):
        bid_prices[row, level] = NO_PRICE
        bid_quantities[row, level] = 0
    held = top_levels(book, symbol, ASK, ask_prices[row], ask_quantities[row])
    for level in range(held, levels):
        ask_prices[row, level] = NO_PRICE
        ask_quantities[row, level] = 0


@llvm_inline_kernel
def _rows_due(limit, inclusive, interval, cursor, times, last_ns, last_local_ns, sequences, bid_prices,
              bid_quantities, ask_prices, ask_quantities):
    """``(status, count)``: the pending boundaries ``< limit`` (``<= limit`` when ``inclusive``) to
    write now: none while a message is partly applied or before the first time, and no more
    than the outputs have room for (then ``FULL``). ``BAD_ARGUMENT`` for arguments that do not fit."""
    if interval <= 0 or cursor.shape[0] < N_CURSOR:
        return BAD_ARGUMENT, 0
    if cursor[CURSOR_OPEN] != 0 or cursor[CURSOR_NEXT_BOUNDARY] == 0:
        return OK, 0
    if (bid_quantities.shape[1] != bid_prices.shape[1] or ask_prices.shape[1] != bid_prices.shape[1]
            or ask_quantities.shape[1] != bid_prices.shape[1]):
        return BAD_ARGUMENT, 0
    capacity = min(times.shape[0], last_ns.shape[0], last_local_ns.shape[0], sequences.shape[0],
                   bid_prices.shape[0], bid_quantities.shape[0], ask_prices.shape[0], ask_quantities.shape[0])
    boundary = cursor[CURSOR_NEXT_BOUNDARY]
    if limit < boundary or (limit == boundary and not inclusive):
        return OK, 0
    due = (limit - boundary) // interval + 1 if inclusive else (limit - boundary - 1) // interval + 1
    room = max(capacity - cursor[CURSOR_ROWS], 0)
    return (FULL, room) if due > room else (OK, due)


@llvm_inline_kernel
def _repeat_rows(count, interval, cursor, times, last_ns, last_local_ns, sequences, bid_prices, bid_quantities,
                 ask_prices, ask_quantities):
    """After the row just written at the cursor, ``count - 1`` rows that repeat it (the book has not
    changed in between); the cursor moves past all ``count``."""
    first, boundary = cursor[CURSOR_ROWS], cursor[CURSOR_NEXT_BOUNDARY]
    for row in range(first + 1, first + count):
        times[row] = boundary + (row - first) * interval
        last_ns[row] = last_ns[first]
        last_local_ns[row] = last_local_ns[first]
        sequences[row] = sequences[first]
        for level in range(bid_prices.shape[1]):
            bid_prices[row, level] = bid_prices[first, level]
            bid_quantities[row, level] = bid_quantities[first, level]
            ask_prices[row, level] = ask_prices[first, level]
            ask_quantities[row, level] = ask_quantities[first, level]
    cursor[CURSOR_ROWS] = first + count
    cursor[CURSOR_NEXT_BOUNDARY] = boundary + count * interval


@llvm_inline_kernel
def _snapshot_through(book, symbol, limit, inclusive, interval, cursor, times, last_ns,
                      last_local_ns, sequences, bid_prices, bid_quantities, ask_prices,
                      ask_quantities):
    """Write every pending boundary ``< limit`` (``<= limit`` when ``inclusive``).

    Inlined into its callers' machine code: a call would pass the book's and the
    outputs' arrays and count references to each of them on entry and exit, which
    costs far more than the row it writes (a boundary every few messages).
    """
    status, count = _rows_due(limit, inclusive, interval, cursor, times, last_ns, last_local_ns, sequences,
                              bid_prices, bid_quantities, ask_prices, ask_quantities)
    if count > 0:
        _write_row(book, symbol, cursor[CURSOR_ROWS], cursor[CURSOR_NEXT_BOUNDARY], cursor, times, last_ns,
                   last_local_ns, sequences, bid_prices, bid_quantities, ask_prices, ask_quantities)
        _repeat_rows(count, interval, cursor, times, last_ns, last_local_ns, sequences, bid_prices,
                     bid_quantities, ask_prices, ask_quantities)
    return status


@llvm_inline_kernel
def snapshot_before(book, symbol, events, i, interval, cursor, times, last_ns, last_local_ns,
                    sequences, bid_prices, bid_quantities, ask_prices, ask_quantities):
    """Write the boundaries that fall before ``events[i]``: those earlier than its time.

    Nothing is written while a message is partly applied, nor for an event
    without an exchange time. Returns ``OK``, ``FULL`` or ``BAD_ARGUMENT``.
    """
    time = events[i].exchange_ns
    if time <= 0:
        return OK
    return _snapshot_through(book, symbol, time, False, interval, cursor, times, last_ns,
                             last_local_ns, sequences, bid_prices, bid_quantities, ask_prices,
                             ask_quantities)


@inline_kernel
def boundary_due(events, i, cursor):
    """Whether :func:`snapshot_before` has a row to write before ``events[i]``: a
    loop that tests this first calls it only when it does."""
    boundary = cursor[CURSOR_NEXT_BOUNDARY]
    return events[i].exchange_ns > boundary and boundary != 0 and cursor[CURSOR_OPEN] == 0


@llvm_inline_kernel
def note_applied(book, symbol, events, i, interval, cursor):
    """Advance the cursor past ``events[i]``, which the caller has applied."""
    _note_applied(events, i, interval, cursor)


@inline_kernel
def _note_applied(events, i, interval, cursor):
    """:func:`note_applied`'s body, inlined into the loop of :func:`take_snapshots`."""
    event = events[i]
    if event.exchange_ns > cursor[CURSOR_CLOCK]:
        cursor[CURSOR_CLOCK] = event.exchange_ns
        if cursor[CURSOR_NEXT_BOUNDARY] == 0 and interval > 0:
            # The first boundary at or after the first time: ceil to a multiple.
            clock = cursor[CURSOR_CLOCK]
            cursor[CURSOR_NEXT_BOUNDARY] = ((clock + interval - 1) // interval) * interval
    cursor[CURSOR_OPEN] = 0 if (event.flags & FLAG_BATCH_END) != 0 else 1
    cursor[CURSOR_LAST_LOCAL] = event.local_ns
    cursor[CURSOR_EVENTS] += 1


@kernel
def take_snapshots(book, symbol, events, start, stop, interval, cursor, times, last_ns,
                   last_local_ns, sequences, bid_prices, bid_quantities, ask_prices,
                   ask_quantities):
    """Apply ``events[start:stop]`` (every symbol's) and write ``symbol``'s due boundaries.

    Returns
    -------
    next_index : int
        ``stop`` (clipped), or the event at which an error or ``FULL`` stopped it
        (not applied: call again from there with room made).
    status : int
        ``OK``, ``FULL``, ``BAD_ARGUMENT`` or the book's error for that event.
    """
    stop = min(stop, events.shape[0])
    # The caller's references keep these alive: the rows written below then count none.
    borrowed_book = borrow(book)
    borrowed_events = borrow(events)
    cursor, times, last_ns, last_local_ns, sequences = borrow((cursor, times, last_ns, last_local_ns, sequences))
    bid_prices, bid_quantities, ask_prices, ask_quantities = borrow(
        (bid_prices, bid_quantities, ask_prices, ask_quantities))
    if cursor.shape[0] < N_CURSOR:
        return max(start, 0), BAD_ARGUMENT
    for i in range(max(start, 0), stop):
        if boundary_due(borrowed_events, i, cursor):
            status = _snapshot_through(borrowed_book, symbol, borrowed_events[i].exchange_ns, False, interval,
                                       cursor, times, last_ns, last_local_ns, sequences, bid_prices,
                                       bid_quantities, ask_prices, ask_quantities)
            if status != OK:
                return i, status
        status = _apply_event(borrowed_book, borrowed_events, i)
        if status < 0:
            return i, status
        _note_applied(borrowed_events, i, interval, cursor)
    return stop, OK


@kernel
def finish_snapshots(book, symbol, interval, cursor, times, last_ns, last_local_ns, sequences,
                     bid_prices, bid_quantities, ask_prices, ask_quantities):
    """Write the boundaries up to and including the clock: the end of the file.

    Returns ``OK``, ``FULL`` or ``BAD_ARGUMENT``.
    """
    if cursor.shape[0] < N_CURSOR:   # the clock is read below
        return BAD_ARGUMENT
    return _snapshot_through(book, symbol, cursor[CURSOR_CLOCK], True, interval, cursor, times,
                             last_ns, last_local_ns, sequences, bid_prices, bid_quantities,
                             ask_prices, ask_quantities)


# ---------------------------------------------------------------- snapshots from published rows
#
# An exchange that publishes its best levels after each message (LOBSTER's orderbook file)
# gives the snapshots without a book: at each boundary, the row of the last message at or
# before it. A replay seeded from the rows and reconciled with them (``reconcile_side``
# below) holds exactly those levels after every message; of the levels beyond them the
# exchange says nothing, and a snapshot leaves them empty.

@llvm_inline_kernel
def _put_published_side(current, row_prices, row_sizes, prices, quantities):
    """The levels row ``current`` shows (those before its first empty one), the rest empty
    (all of them when ``current`` is -1: no row yet)."""
    shown = 0 if current < 0 else min(shown_levels(row_sizes[current]), prices.shape[0])
    for level in range(shown):
        prices[level] = row_prices[current, level]
        quantities[level] = row_sizes[current, level]
    for level in range(shown, prices.shape[0]):
        prices[level] = NO_PRICE
        quantities[level] = 0


@llvm_inline_kernel
def _published_through(row_bid_prices, row_bid_sizes, row_ask_prices, row_ask_sizes, current, limit, inclusive,
                       interval, cursor, times, last_ns, last_local_ns, sequences, bid_prices, bid_quantities,
                       ask_prices, ask_quantities):
    """:func:`_snapshot_through` with the rows taken from published row ``current``."""
    status, count = _rows_due(limit, inclusive, interval, cursor, times, last_ns, last_local_ns, sequences,
                              bid_prices, bid_quantities, ask_prices, ask_quantities)
    if count > 0:
        row = cursor[CURSOR_ROWS]
        times[row] = cursor[CURSOR_NEXT_BOUNDARY]
        last_ns[row] = cursor[CURSOR_CLOCK]
        last_local_ns[row] = cursor[CURSOR_LAST_LOCAL]
        sequences[row] = 0   # such an exchange (LOBSTER) has no sequence numbers
        _put_published_side(current, row_bid_prices, row_bid_sizes, bid_prices[row], bid_quantities[row])
        _put_published_side(current, row_ask_prices, row_ask_sizes, ask_prices[row], ask_quantities[row])
        _repeat_rows(count, interval, cursor, times, last_ns, last_local_ns, sequences, bid_prices,
                     bid_quantities, ask_prices, ask_quantities)
    return status


@inline_kernel
def _published_rows(row_bid_prices, row_bid_sizes, row_ask_prices, row_ask_sizes, current):
    """The rows' count; -1 when their shapes differ or ``current`` is not one of them."""
    rows = row_bid_prices.shape[0]
    if (row_bid_sizes.shape != row_bid_prices.shape or row_ask_prices.shape != row_bid_prices.shape
            or row_ask_sizes.shape != row_bid_prices.shape or current < -1 or current >= rows):
        return -1
    return rows


@kernel
def take_published_snapshots(events, row_of_event, row_bid_prices, row_bid_sizes, row_ask_prices, row_ask_sizes,
                             start, current, interval, cursor, times, last_ns, last_local_ns, sequences,
                             bid_prices, bid_quantities, ask_prices, ask_quantities):
    """Snapshots of ``events[start:]`` whose exchange publishes its best levels after each message.

    ``row_of_event[i]`` is the row (of the ``row_*`` arrays, best level first, empty levels of
    size 0) after ``events[i]``, -1 for none (the snapshot stays at the row before);
    ``current`` is the row after the events before ``start`` (-1: none yet). No book:
    the events only move the clock (:func:`note_applied`).

    Returns ``(next_index, status, current)``: on ``FULL`` call again from ``next_index``
    with ``current`` once the rows are used and the cursor's row count is reset.
    """
    events, row_of_event, cursor = borrow((events, row_of_event, cursor))
    row_bid_prices, row_bid_sizes, row_ask_prices, row_ask_sizes = borrow(
        (row_bid_prices, row_bid_sizes, row_ask_prices, row_ask_sizes))
    times, last_ns, last_local_ns, sequences = borrow((times, last_ns, last_local_ns, sequences))
    bid_prices, bid_quantities, ask_prices, ask_quantities = borrow(
        (bid_prices, bid_quantities, ask_prices, ask_quantities))
    rows = _published_rows(row_bid_prices, row_bid_sizes, row_ask_prices, row_ask_sizes, current)
    if rows < 0 or cursor.shape[0] < N_CURSOR:
        return max(start, 0), BAD_ARGUMENT, current
    stop = min(events.shape[0], row_of_event.shape[0])
    for i in range(max(start, 0), stop):
        if boundary_due(events, i, cursor):
            status = _published_through(row_bid_prices, row_bid_sizes, row_ask_prices, row_ask_sizes, current,
                                        events[i].exchange_ns, False, interval, cursor, times, last_ns,
                                        last_local_ns, sequences, bid_prices, bid_quantities, ask_prices,
                                        ask_quantities)
            if status != OK:
                return i, status, current
        row = row_of_event[i]
        if row >= 0 and row < rows:
            current = row
        _note_applied(events, i, interval, cursor)
    return stop, OK, current


@kernel
def finish_published_snapshots(row_bid_prices, row_bid_sizes, row_ask_prices, row_ask_sizes, current, interval,
                               cursor, times, last_ns, last_local_ns, sequences, bid_prices, bid_quantities,
                               ask_prices, ask_quantities):
    """:func:`finish_snapshots` for :func:`take_published_snapshots`: the boundaries up to and
    including the clock, from row ``current``. Returns ``OK``, ``FULL`` or ``BAD_ARGUMENT``."""
    if (_published_rows(row_bid_prices, row_bid_sizes, row_ask_prices, row_ask_sizes, current) < 0
            or cursor.shape[0] < N_CURSOR):   # the clock is read below
        return BAD_ARGUMENT
    return _published_through(row_bid_prices, row_bid_sizes, row_ask_prices, row_ask_sizes, current,
                              cursor[CURSOR_CLOCK], True, interval, cursor, times, last_ns, last_local_ns,
                              sequences, bid_prices, bid_quantities, ask_prices, ask_quantities)


@kernel
def time_span(events):
    """``(first, earliest, latest)`` exchange time of ``events``, ns: the first in file order,
    the least and the greatest, of the events that have one (``exchange_ns > 0``); all 0 when
    none has."""
    first = earliest = latest = 0
    for i in range(events.shape[0]):
        time = events[i].exchange_ns
        if time > 0:
            if first == 0:
                first = earliest = time
            earliest = min(earliest, time)
            latest = max(latest, time)
    return first, earliest, latest


def boundary_count(events, interval):
    """How many boundaries a replay of ``events`` writes (an upper bound for one symbol).

    From the first boundary at or after the first exchange time to the last
    at or before the latest one.
    """
    first, _, latest = time_span(events)
    return boundaries_between(first, latest, interval)


def boundaries_between(first, latest, interval):
    """:func:`boundary_count` of events whose :func:`time_span` is ``(first, _, latest)``."""
    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval}")
    if first == 0:
        return 0
    first_boundary = -(-first // interval) * interval
    last_boundary = latest // interval * interval
    return max(0, (last_boundary - first_boundary) // interval + 1)


# ---------------------------------------------------------------- reconciling with published rows
#
# An exchange that publishes its best ``levels`` levels after each message (LOBSTER's
# orderbook file) shows only part of the book: a level outside the shown window changes
# unseen. The steps below are shared by ``ringbook check`` (which reports what differs)
# and :func:`reconcile_side` (which only makes the book agree):
#
# 1. :func:`shown_levels` and :func:`row_window`: what the row shows, and the window of
#    the previous row (levels at least as good as its worst, when it shows them all).
# 2. :func:`is_row`: the book is exactly the row, found by lookups (the usual case):
#    nothing differs and nothing is to be set. :func:`is_row_and_edge`: the row and
#    the window's edge (the next most usual), also found by lookups, with the same outcome.
# 3. :func:`compare_window`: the first level within the window where book and row differ.
# 4. :func:`revealed_levels`: after an agreement, how many levels beyond the window the
#    book held otherwise (they changed unseen).
# 5. :func:`resync_side`: take from the row the levels beyond the window (every level
#    after a disagreement), setting only those that differ.

@inline_kernel
def _at_or_better(side, price, limit):
    return price >= limit if side == books.BID else price <= limit


@inline_kernel
def shown_levels(row_sizes):
    """Levels a row shows: those before its first empty one (size 0)."""
    shown = 0
    while shown < row_sizes.shape[0] and row_sizes[shown] > 0:
        shown += 1
    return shown


@inline_kernel
def row_window(previous_prices, previous_sizes, has_previous):
    """``(windowed, limit)``: whether the previous row bounds the comparison (it exists
    and shows all its levels), and its worst price, the window's bound."""
    levels = previous_sizes.shape[0]
    return has_previous and previous_sizes[levels - 1] > 0, previous_prices[levels - 1]


@llvm_inline_kernel
def _holds_row(book, symbol, side, row_prices, row_sizes, shown):
    """Whether the side holds each of the row's ``shown`` levels with its size, the row
    being in order (best first, each price once): one lookup a level."""
    for level in range(shown):
        if level > 0 and _at_or_better(side, row_prices[level], row_prices[level - 1]):
            return False
        if books.level_quantity(book, symbol, side, row_prices[level]) != row_sizes[level]:
            return False
    return True


@llvm_inline_kernel
def is_row(book, symbol, side, row_prices, row_sizes, shown):
    """Whether the side holds exactly the row's ``shown`` levels and nothing else.

    By one lookup a level, without walking the side. The row must be in
    order, best first, each price once: a row that is not (a damaged file)
    is not the book even when the book holds each of its levels.
    """
    return (books.level_count(book, symbol, side) == shown
            and _holds_row(book, symbol, side, row_prices, row_sizes, shown))


@llvm_inline_kernel
def is_row_and_edge(book, symbol, side, row_prices, row_sizes, shown, windowed, limit):
    """Whether the side holds exactly the row's levels and one more at ``limit``, the
    window's edge, worse than all of them, the row showing every level it has room for:
    the usual case after a better price comes in (the previous best, now unseen, stays).

    Then the window agrees and nothing is to be set or counted; found by lookups.
    """
    return (windowed and shown == row_sizes.shape[0] and shown > 0
            and books.level_count(book, symbol, side) == shown + 1
            and _at_or_better(side, row_prices[shown - 1], limit) and row_prices[shown - 1] != limit
            and books.level_quantity(book, symbol, side, limit) > 0
            and _holds_row(book, symbol, side, row_prices, row_sizes, shown))


@llvm_inline_kernel
def compare_window(book, symbol, side, row_prices, row_sizes, shown, windowed, limit, found_prices,
                   found_quantities):
    """Compare the side's best levels with the row's, level by level, within the window.

    Parameters
    ----------
    shown, windowed, limit
        From :func:`shown_levels` and :func:`row_window`.
    found_prices, found_quantities : int64[levels]
        Scratch for the book's best levels (they hold them afterwards).

    Returns
    -------
    level : int
        The first level (0 = best) where book and row differ; -1 when they agree.
    expected_price, expected_quantity, found_price, found_quantity : int
        The row's level and the book's there (``NO_PRICE`` and 0 for a level
        that one of them does not have within the window).
    """
    levels = row_prices.shape[0]
    held = books.top_levels(book, symbol, side, found_prices, found_quantities)
    for level in range(levels):
        book_known = level < held and (not windowed or _at_or_better(side, found_prices[level], limit))
        row_known = level < shown and (not windowed or _at_or_better(side, row_prices[level], limit))
        if not book_known and not row_known:
            break
        if (book_known != row_known or found_prices[level] != row_prices[level]
                or found_quantities[level] != row_sizes[level]):
            return (level, row_prices[level] if row_known else NO_PRICE, row_sizes[level] if row_known else 0,
                    found_prices[level] if book_known else NO_PRICE,
                    found_quantities[level] if book_known else 0)
    return -1, NO_PRICE, 0, NO_PRICE, 0


@llvm_inline_kernel
def revealed_levels(book, symbol, side, row_prices, row_sizes, shown, limit):
    """Levels of the row strictly worse than ``limit`` that the book holds with another
    size (or not at all): what came into view unseen. Call it before :func:`resync_side`."""
    revealed = 0
    for level in range(shown):
        if (not _at_or_better(side, row_prices[level], limit)
                and books.level_quantity(book, symbol, side, row_prices[level]) != row_sizes[level]):
            revealed += 1
    return revealed


@llvm_inline_kernel
def resync_side(book, symbol, side, row_prices, row_sizes, shown, whole, limit, all_prices, all_quantities):
    """Take the side's levels from the row: all of them (``whole``) or those strictly worse than ``limit``.

    The effect of ``replace_levels(book, symbol, side, NO_PRICE if whole else
    limit, NO_PRICE, row_prices[:shown], row_sizes[:shown])``, but only the
    levels that differ are set, so the cost follows the levels held, not the
    book's price range.

    Parameters
    ----------
    all_prices, all_quantities : int64[capacity]
        Scratch for every level of the side (the book's depth plus its ladder).
    """
    # Exactly the levels held: a walk asked for more would scan the empty ladder below the last.
    held_all = min(books.level_count(book, symbol, side), all_prices.shape[0])
    count = books.top_levels(book, symbol, side, all_prices[:held_all], all_quantities[:held_all])
    for k in range(count):
        price = all_prices[k]
        if not whole and _at_or_better(side, price, limit):
            continue
        wanted = 0
        for level in range(shown):
            if row_prices[level] == price:
                wanted = row_sizes[level]
                break
        if wanted != all_quantities[k]:
            books.set_level(book, symbol, side, price, wanted)
    for level in range(shown):
        price = row_prices[level]
        if not whole and _at_or_better(side, price, limit):
            continue
        if books.level_quantity(book, symbol, side, price) != row_sizes[level]:
            books.set_level(book, symbol, side, price, row_sizes[level])


@llvm_inline_kernel
def reconcile_side(book, symbol, side, row_prices, row_sizes, previous_prices, previous_sizes,
                   has_previous, found_prices, found_quantities, all_prices, all_quantities):
    """Make one side of the book agree with an exchange's published row of its best levels.

    The effect on the book of :func:`ringbook.engine.check._verify_side` (what
    ``ringbook check`` does after each LOBSTER message), with the same steps
    (see the comment above :func:`shown_levels`): within the window of the
    previous row (levels at least as good as its worst, when it shows them
    all) the book must equal the row; beyond it, levels changed unseen and are
    taken from the row. On a mismatch the whole side is taken from the row.
    Only the levels that differ are set, so the cost follows the levels held,
    not the book's price range.

    Parameters
    ----------
    row_prices, row_sizes, previous_prices, previous_sizes : int64[levels]
        The row (after this message) and the previous one (``has_previous``).
    found_prices, found_quantities : int64[levels]
        Scratch for the book's best levels.
    all_prices, all_quantities : int64[capacity]
        Scratch for every level of the side (the book's depth plus its ladder).

    Returns
    -------
    matched : bool
        The window agreed with the row (True: what ``ringbook check`` counts as a match).
    """
    book = borrow(book)     # the caller's reference keeps it alive: no counting in the calls below
    shown = shown_levels(row_sizes)
    if is_row(book, symbol, side, row_prices, row_sizes, shown):
        # The book is the row, the usual case: found by lookups, without walking the ladder.
        return True
    windowed, limit = row_window(previous_prices, previous_sizes, has_previous)
    if is_row_and_edge(book, symbol, side, row_prices, row_sizes, shown, windowed, limit):
        return True
    matched = compare_window(book, symbol, side, row_prices, row_sizes, shown, windowed, limit, found_prices,
                             found_quantities)[0] < 0
    if matched and not windowed:
        return True
    resync_side(book, symbol, side, row_prices, row_sizes, shown, not matched, limit, all_prices, all_quantities)
    return matched
