"""Market-by-price (L2) order books for many symbols at once, on preallocated arrays.

State
-----
A :class:`Book` is a ``typing.NamedTuple`` of numpy arrays made once by
:func:`new_book`. Numba passes it into ``@njit`` code as is, so the kernels
below and a user's own njit loop share one object. It holds both the L2 levels
and the L3 order table of :mod:`ringbook.kernels.orders` (one argument everywhere: an
L3 event changes the order table and the level it feeds in one call).

Levels
------
Each side of a symbol keeps its levels in two places:

- The *ladder*: ``ladder`` slots of quantity indexed by price, one per
  tick, over a window of ``ladder`` ticks around the touch (a ring: the
  slot of a price is its tick number modulo ``ladder``). An update there is an
  index and a store; the best level is kept, and a delete at the touch scans
  down to the next level. This is where nearly all updates land.
- The *sorted levels*: ``depth`` slots of ``prices`` and ``quantities`` sorted
  from the farthest (rank 0, always at index 0) to the best, with the free
  slots as one *gap* between rank ``gaps[symbol, side_index] - 1`` and the
  next rank, so an insert or delete moves only the levels between the gap
  and its rank. They hold every other level: beyond the window, and prices
  that are not a multiple of the symbol's tick.

An on-tick level lies in the ladder exactly when its price lies in the
window. A new level better than the window, or within half a window of the
ladder's best, or any new level while the ladder is empty, recentres the
window on the best (levels leaving it move to the sorted levels, sorted levels
entering it move to the ladder). Queries merge both, best first. Every price
is exact: the tick (``ticks[symbol]``, 1 by default; :func:`set_tick`) only
decides where a level is kept. Use the queries below rather than the arrays.

Capacity
--------
Every price in the ladder's window has its slot. When the sorted levels hold
``depth`` levels and a new one arrives that is better than the farthest, the
farthest is dropped to make room; a new level at or beyond the farthest is dropped itself.
Either way ``stats[symbol, STAT_DROPPED_LEVELS]`` counts it and the side's
*horizon* (``horizon_keys[symbol, side_index]``, see :func:`horizon`) becomes
the best price dropped so far; ladder levels at or beyond it are dropped (and
counted) too. The book stays exact for every price strictly better than the
horizon: updates at or beyond it are dropped and counted (status
:data:`LEVEL_DROPPED`), so a level the book returns is always the exchange's
level. The horizon resets when the side is cleared (``KIND_CLEAR``,
``KIND_SNAPSHOT_BEGIN``, :func:`clear`).

Depth is not truncation
-----------------------
``depth`` bounds memory for a feed that sends the whole book: what lies beyond
it is unknown, so the book stops there and says so (the horizon). An exchange
with a subscribed depth (the best 10, 25, 1000 levels) works the other way:
it keeps only its best ``N``, forgets a level pushed out of view, and sends
the level that scrolls into view as a new insert. For such a feed, set
``max_levels`` (:func:`new_book`, or ``book.max_levels[symbol]``): after each
message (its ``FLAG_BATCH_END`` event) the replay kernels call
:func:`truncate`, which deletes the levels beyond the best ``max_levels``
and moves no horizon, so later updates at any price still apply. Keep
``depth`` at or above ``max_levels`` (plus the levels one message can add).

Memory
------
Per symbol: ``2 * depth * 16`` bytes of sorted levels, ``2 * ladder * 8``
bytes of ladder, plus ``(16 + N_STATS) * 8 + 8`` bytes of counters: 82,088
bytes at the defaults ``depth=2048, ladder=1024``, so 2048 symbols take
160.3 MiB. The order table adds ``32 * order_capacity`` bytes shared by all
symbols (32 MiB at the default ``2**20`` slots). Default total: 192.3 MiB.
``np.zeros`` commits pages only when touched.

Sequence handling (in :func:`ringbook.kernels.replay.apply_event`)
---------------------------------------------------------
At the level of an exchange message (events sharing ``sequence``; the last
one flagged ``FLAG_BATCH_END``): ``sequence == 0`` is unsequenced and always
applied. Otherwise a message whose ``sequence`` is ``<= sequences[symbol]`` is
stale: rejected (:data:`STALE`) and counted once. A message whose
``prev_sequence`` is ``> sequences[symbol]`` follows a gap: it is *applied*
(absolute L2 levels are better than none), counted once in ``STAT_GAPS`` and
each of its events returns :data:`GAP`, so the caller can resynchronize.
``sequences[symbol]`` takes the message's ``sequence`` at its
``FLAG_BATCH_END`` event. Events flagged ``FLAG_SNAPSHOT`` and the snapshot
kinds skip the checks; ``KIND_SNAPSHOT_BEGIN`` clears the symbol (levels,
horizons, its orders) and sets its sequence to 0; ``KIND_SNAPSHOT_END`` sets
it to the event's ``sequence``.

API (kernels: ``@kernel`` functions, book first; callable from njit code)
----------------------------------------------------------------------
new_book(n_symbols=2048, depth=2048, order_capacity=2**20, ladder=1024, ticks=None,
         max_levels=0) -> Book                              (Python)
set_level(book, symbol, side, price, quantity) -> status   quantity 0 deletes
set_tick(book, symbol, tick) -> status                     where levels are kept; exact either way
clear(book, symbol, side) -> status                        side 0 clears both
load_snapshot(book, symbol, bid_prices, bid_quantities, ask_prices,
              ask_quantities, sequence) -> status          clear, then set
replace_levels(book, symbol, side, after_price, through_price,
               prices, quantities) -> status               set a price range exactly
truncate(book, symbol, side, keep) -> deleted              keep the best ``keep``; side 0: both
best_bid(book, symbol) -> (price, quantity)                (NO_PRICE, 0) when empty
best_ask(book, symbol) -> (price, quantity)
mid_price(book, symbol) -> float64                         NaN when a side is empty
spread(book, symbol) -> int64                              NO_PRICE when a side is empty
level_count(book, symbol, side) -> int64
level_quantity(book, symbol, side, price) -> int64         0 when no level
top_levels(book, symbol, side, prices_out, quantities_out) -> n   best first
depth_to_price(book, symbol, side, price) -> int64         quantity at prices at least as good
quantity_to_depth(book, symbol, side, n_levels) -> int64   quantity in the best n levels
imbalance(book, symbol, n_levels) -> float64               (bid - ask) / (bid + ask), NaN if 0
fill_cost(book, symbol, side, quantity) -> (filled, cost)  walk ``side`` (ASK to buy)
vwap_to_fill(book, symbol, side, quantity) -> float64      cost / filled, NaN if 0
is_crossed(book, symbol) -> bool                           bid >= ask, both sides present
horizon(book, symbol, side) -> int64                       NO_PRICE when nothing dropped
levels(book, symbol, side, n_levels) -> (prices, quantities)   (Python) the best n, validated
check_status(status, what="")                              (Python) raise BookError if < 0
borrow(book) -> Book                                       the same book, not reference
                                                           counted: for a user's hot loop
                                                           (:mod:`ringbook.kernels.borrow`)

Prices and quantities are int64 fixed point (the instrument's scales); costs
and VWAPs are float64 in those units (``price * quantity`` would overflow
int64). ``side`` is :data:`~ringbook.kernels.events.BID` (1) or
:data:`~ringbook.kernels.events.ASK` (-1); ``side_index`` is 0 for bids and 1 for asks.

Status codes
------------
Those of :mod:`ringbook.kernels.status`, re-exported here. ``OK`` 0;
informational (positive, counted, replay goes on): ``STALE``, ``GAP``,
``UNKNOWN_ORDER``, ``LEVEL_DROPPED``; errors (negative, the event is not
applied, replay stops, :func:`check_status` raises :class:`BookError`):
``BAD_SYMBOL``, ``INVALID_SIDE``, ``BAD_QUANTITY``, ``BAD_KIND``,
``ORDER_TABLE_FULL``, ``DUPLICATE_ORDER``, ``BAD_INDEX``, ``BAD_TICK``,
``BAD_ARGUMENT``. A query that takes a side returns ``INVALID_SIDE`` for a
side that is neither ``BID`` nor ``ASK``, where its result would be a count,
a quantity or a price (NaN where it is a float).
"""

from typing import NamedTuple

import numpy as np

# borrow is re-exported: users' loops import it from here too.
from ringbook.kernels.borrow import borrow  # noqa: F401
from ringbook.kernels.events import ASK, BID
from ringbook.kernels.jit_options import inline_kernel, kernel, llvm_inline_kernel
from ringbook.kernels.limits import INT64_MAX, INT64_MIN
# The codes the book's kernels return, re-exported so ``book.OK`` and the like keep working.
from ringbook.kernels.status import (BAD_ARGUMENT, BAD_INDEX, BAD_KIND,  # noqa: F401
                                     BAD_QUANTITY, BAD_SYMBOL, BAD_TICK, DUPLICATE_ORDER, GAP,
                                     INVALID_SIDE, LEVEL_DROPPED, OK, ORDER_TABLE_FULL, STALE,
                                     UNKNOWN_ORDER, status_name)

# Columns of Book.stats, counted per symbol.
STAT_STALE = 0            # stale messages rejected
STAT_GAPS = 1             # messages applied after a sequence gap
STAT_UNKNOWN_ORDERS = 2   # L3 events for orders not in the table
STAT_DROPPED_LEVELS = 3   # levels dropped for capacity, and updates beyond the horizon
N_STATS = 4

#: Price of an empty side, spread of a one-sided book, horizon of a side that dropped nothing.
NO_PRICE = INT64_MIN

# Horizon keys: a level's key is its price for bids and -price for asks, so
# "better" is "greater key" on both sides; these keys mean "nothing dropped".
_NO_HORIZON_KEY = INT64_MIN

# Levels compared next to the touch before switching to binary search.
_LINEAR_SCAN = 8


class BookError(ValueError):
    """A kernel returned an error status."""


class Book(NamedTuple):
    """L2 levels and the L3 order table of ``n_symbols`` symbols (see the module docstring).

    Attributes
    ----------
    prices, quantities : int64[n_symbols, 2, depth]
        Sorted levels per symbol and side index (0 bids, 1 asks).
    counts : int64[n_symbols, 2]
        Sorted levels held per symbol and side index.
    gaps : int64[n_symbols, 2]
        Rank of the first sorted level after the side's gap (see "Levels").
    ladders : int64[n_symbols, 2, ladder]
        Ladder quantities, at slot ``steps % ladder`` (0: no level). ``steps``
        is a level's *key* (its price for bids, -price for asks: greater is
        better on both sides) divided by the tick.
    ladder_lows : int64[n_symbols, 2]
        Steps of the window's farthest price; the window is ``ladder`` steps.
    ladder_tops : int64[n_symbols, 2]
        Steps of the ladder's best level; ``ladder_lows - 1`` when it is empty.
    ladder_counts : int64[n_symbols, 2]
        Levels in the ladder.
    ticks : int64[n_symbols]
        Price increment per symbol, in fixed-point units (1: unknown).
    horizon_keys : int64[n_symbols, 2]
        Key (price for bids, -price for asks) of the best level dropped for
        capacity; the side is exact for keys above it.
    sequences : int64[n_symbols]
        Sequence of the last message applied (0: none).
    trading_status : int64[n_symbols]
        Last ``STATUS_*`` code (0: unknown).
    stats : int64[n_symbols, N_STATS]
        Counters, columns ``STAT_*``.
    orders : int64[order_capacity, 4]
        Open-addressing order table of :mod:`ringbook.kernels.orders`.
    order_counts : int64[n_symbols + 1]
        Orders in the table per symbol; the last element is the total.
    max_levels : int64[n_symbols]
        Levels kept per side after each message (:func:`truncate`, applied by
        :mod:`ringbook.kernels.replay` at each ``FLAG_BATCH_END`` event); 0: no limit.
    """

    prices: np.ndarray
    quantities: np.ndarray
    counts: np.ndarray
    gaps: np.ndarray
    ladders: np.ndarray
    ladder_lows: np.ndarray
    ladder_tops: np.ndarray
    ladder_counts: np.ndarray
    ticks: np.ndarray
    horizon_keys: np.ndarray
    sequences: np.ndarray
    trading_status: np.ndarray
    stats: np.ndarray
    orders: np.ndarray
    order_counts: np.ndarray
    max_levels: np.ndarray


def new_book(n_symbols=2048, depth=2048, order_capacity=2**20, ladder=1024, ticks=None,
             max_levels=0):
    """Allocate an empty book.

    Parameters
    ----------
    n_symbols : int
        Symbol ids ``0 .. n_symbols - 1`` (an :class:`~ringbook.kernels.events.Instruments` table's ids).
    depth : int
        Sorted levels held per side (see "Capacity" in the module docstring).
    order_capacity : int
        Slots of the L3 order table, rounded up to a power of two (at least
        16); it holds at most 3/4 of that many orders.
    ladder : int
        Ticks in each side's ladder window, a power of two.
    ticks : array of int, optional
        Price increment per symbol in fixed-point units, e.g.
        ``instruments.table["tick"]`` (entries of 0 or less mean unknown: 1).
        Any price is exact with any tick; the right tick keeps the levels
        near the touch in the ladder.
    max_levels : int or array of int
        For an exchange that publishes its best ``N`` levels (a subscribed
        depth): keep that many per side after each message, per symbol or for
        all; 0 keeps every level (see "Depth is not truncation" in the module
        docstring).
        ``book.max_levels[symbol]`` can be changed at any time.
    """
    if n_symbols < 1 or depth < 1:
        raise ValueError(f"n_symbols and depth must be positive, got {n_symbols}, {depth}")
    if ladder < 1 or ladder & (ladder - 1):
        raise ValueError(f"ladder must be a power of two, got {ladder}")
    max_levels_array = np.zeros(n_symbols, np.int64)
    max_levels_array[:] = max_levels
    if (max_levels_array < 0).any():
        raise ValueError(f"max_levels must be >= 0 (0: no limit), got {max_levels}")
    slots = 16
    while slots < order_capacity:
        slots *= 2
    tick_array = np.ones(n_symbols, np.int64)
    if ticks is not None:
        given = np.asarray(ticks, np.int64)[:n_symbols]
        tick_array[:len(given)] = np.where(given > 0, given, 1)
    horizon_keys = np.full((n_symbols, 2), _NO_HORIZON_KEY, np.int64)
    return Book(
        prices=np.zeros((n_symbols, 2, depth), np.int64),
        quantities=np.zeros((n_symbols, 2, depth), np.int64),
        counts=np.zeros((n_symbols, 2), np.int64),
        gaps=np.zeros((n_symbols, 2), np.int64),
        ladders=np.zeros((n_symbols, 2, ladder), np.int64),
        ladder_lows=np.zeros((n_symbols, 2), np.int64),
        ladder_tops=np.full((n_symbols, 2), -1, np.int64),
        ladder_counts=np.zeros((n_symbols, 2), np.int64),
        ticks=tick_array,
        horizon_keys=horizon_keys,
        sequences=np.zeros(n_symbols, np.int64),
        trading_status=np.zeros(n_symbols, np.int64),
        stats=np.zeros((n_symbols, N_STATS), np.int64),
        orders=np.zeros((slots, 4), np.int64),
        order_counts=np.zeros(n_symbols + 1, np.int64),
        max_levels=max_levels_array,
    )


def book_nbytes(book):
    """Bytes held by ``book``'s arrays."""
    return sum(array.nbytes for array in book)


def check_status(status, what=""):
    """Raise :class:`BookError` for an error status (< 0); return the status otherwise."""
    if status < 0:
        message = status_name(status)
        if status == ORDER_TABLE_FULL:
            message += (" (its load factor is bounded at 3/4): create the book with a "
                        "larger order_capacity")
        raise BookError(f"{what}: {message}" if what else message)
    return status


def levels(book, symbol, side, n_levels):
    """The best ``n_levels`` levels of ``side``, best first, as new arrays (Python).

    Returns
    -------
    prices, quantities : numpy.ndarray of int64
        As many levels as the side holds, up to ``n_levels``.

    Raises
    ------
    ValueError
        A symbol outside the book, a side neither BID nor ASK, or a negative
        ``n_levels`` (:class:`BookError` is a ``ValueError``).
    """
    if not 0 <= symbol < book.counts.shape[0]:
        raise BookError(f"symbol {symbol}: {status_name(BAD_SYMBOL)} "
                        f"(the book has {book.counts.shape[0]})")
    if n_levels < 0:
        raise ValueError(f"n_levels must be >= 0, got {n_levels}")
    prices = np.empty(n_levels, np.int64)
    quantities = np.empty(n_levels, np.int64)
    n = check_status(top_levels(book, symbol, side, prices, quantities), f"side {side!r}")
    return prices[:n], quantities[:n]


# ---------------------------------------------------------------------------
# Internal helpers (side_index 0: bids, 1: asks).

@kernel
def _side_index(side):
    """0 for BID, 1 for ASK, -1 for anything else."""
    if side == BID:
        return 0
    if side == ASK:
        return 1
    return -1


@kernel
def _key(side_index, price):
    """Sort key: greater is better on both sides."""
    return price if side_index == 0 else -price


@inline_kernel
def _slot(logical, gap, spare):
    """Where the level of rank ``logical`` (0 = farthest) sits in its side's array."""
    return logical + spare if logical >= gap else logical


@inline_kernel
def _lower_bound(prices, symbol, side_index, key, count, gap, spare):
    """Rank of the first of a side's sorted levels ``0 .. count - 1`` whose key is at
    least ``key`` (``count`` when none): binary search, the gap skipped."""
    low = 0
    high = count
    while low < high:
        middle = (low + high) >> 1
        if _key(side_index, prices[symbol, side_index, _slot(middle, gap, spare)]) < key:
            low = middle + 1
        else:
            high = middle
    return low


@inline_kernel
def _move_gap(prices, quantities, symbol, side_index, gap, spare, target):
    """Move a side's gap from before rank ``gap`` to before rank ``target``; return ``target``.

    Moves ``|target - gap|`` levels across the gap, none when it is empty.
    """
    if spare > 0:
        if target < gap:
            for rank in range(gap - 1, target - 1, -1):
                prices[symbol, side_index, rank + spare] = prices[symbol, side_index, rank]
                quantities[symbol, side_index, rank + spare] = quantities[symbol, side_index, rank]
        else:
            for rank in range(gap, target):
                prices[symbol, side_index, rank] = prices[symbol, side_index, rank + spare]
                quantities[symbol, side_index, rank] = quantities[symbol, side_index, rank + spare]
    return target


@kernel
def _update_sorted(book, symbol, side_index, price, quantity, relative):
    """:func:`_update_level` for a level kept in the sorted levels: the one
    place that changes them."""
    book = borrow(book)     # the caller's reference keeps it alive: no counting
    prices = book.prices
    quantities = book.quantities
    counts = book.counts
    gaps = book.gaps
    horizon_keys = book.horizon_keys
    stats = book.stats
    depth = prices.shape[2]
    status = OK
    key = _key(side_index, price)
    count = counts[symbol, side_index]
    gap = gaps[symbol, side_index]
    spare = depth - count
    if key <= horizon_keys[symbol, side_index]:
        stats[symbol, STAT_DROPPED_LEVELS] += 1
        status = LEVEL_DROPPED
    else:
        # Rank of the first level whose key is >= key: compare the few levels
        # next to the touch, where most updates land (a fixed-length loop: no
        # mispredicted exit), then binary search below them. A walk that stops
        # at the first lower level would win a little on near-touch L2 updates
        # and lose much more on L3 flow spread over dozens of levels.
        stop = max(count - _LINEAR_SCAN, 0)
        at_or_above = 0
        for rank in range(stop, count):
            level_price = prices[symbol, side_index, _slot(rank, gap, spare)]
            at_or_above += _key(side_index, level_price) >= key
        position = count - at_or_above
        if position == stop and stop > 0:
            position = _lower_bound(prices, symbol, side_index, key, stop, gap, spare)
        slot = _slot(position, gap, spare)
        if position < count and prices[symbol, side_index, slot] == price:
            total = quantities[symbol, side_index, slot] + quantity if relative else quantity
            if total > 0:
                quantities[symbol, side_index, slot] = total
            else:
                # Bring the gap next to the level (below it when the gap comes
                # from below, above it otherwise: the fewest moves), then widen
                # it over the level.
                _move_gap(prices, quantities, symbol, side_index, gap, spare,
                          position + (gap > position))
                gap = position
                count -= 1
                spare += 1
                if gap == 0 and count > 0:
                    # Keep the farthest level at index 0.
                    gap = _move_gap(prices, quantities, symbol, side_index, gap, spare, 1)
                counts[symbol, side_index] = count
                gaps[symbol, side_index] = gap
        elif quantity > 0:
            insert = True
            if spare == 0:
                stats[symbol, STAT_DROPPED_LEVELS] += 1
                if position == 0:
                    # Worse than every level held: it is the one that does not fit.
                    horizon_keys[symbol, side_index] = key
                    _trim_ladder(book, symbol, side_index)
                    status = LEVEL_DROPPED
                    insert = False
                else:
                    # Drop the farthest level (index 0: the gap is empty).
                    farthest = prices[symbol, side_index, 0]
                    horizon_keys[symbol, side_index] = _key(side_index, farthest)
                    _trim_ladder(book, symbol, side_index)
                    gap = 0
                    count -= 1
                    spare = 1
                    position -= 1
            if insert:
                _move_gap(prices, quantities, symbol, side_index, gap, spare, position)
                prices[symbol, side_index, position] = price
                quantities[symbol, side_index, position] = quantity
                counts[symbol, side_index] = count + 1
                gaps[symbol, side_index] = position + 1
    return status


# The ladder (see "Levels"). A level's *steps* are its key divided by the
# tick; the window holds steps ``low .. low + ladder - 1``, each at slot
# ``steps & (ladder - 1)``.

@inline_kernel
def _steps(tick, side_index, price):
    """``(steps, on_tick)``: the key of ``price`` in ticks (floored), and
    whether it is a whole number of ticks."""
    key = _key(side_index, price)
    if tick == 1:
        return key, True
    steps = key // tick
    return steps, steps * tick == key


@inline_kernel
def _ladder_slot(ladders, steps):
    """The slot of ``steps`` in a side's ladder. Unsigned: Numba then emits no
    negative-index wraparound, which the hot path would pay on every access."""
    return np.uint64(steps & (ladders.shape[2] - 1))


@inline_kernel
def _ladder_price(book, symbol, side_index, steps):
    return _key(side_index, steps * book.ticks[symbol])


@kernel
def _ladder_scan_down(ladders, low, symbol, side_index, steps):
    """Steps of the best ladder level at or below ``steps``; ``low - 1`` when none.

    Takes one array, not the book: the hot path that calls it then passes
    two words instead of the book's sixteen arrays.
    """
    while steps >= low and ladders[symbol, side_index, _ladder_slot(ladders, steps)] == 0:
        steps -= 1
    return max(steps, low - 1)


@kernel
def _ladder_recount(book, symbol, side_index):
    """Recompute a ladder's level count and best level from its slots."""
    low = book.ladder_lows[symbol, side_index]
    ladders = book.ladders
    count = 0
    top = low - 1
    for steps in range(low, low + ladders.shape[2]):
        if ladders[symbol, side_index, _ladder_slot(ladders, steps)] > 0:
            count += 1
            top = steps
    book.ladder_counts[symbol, side_index] = count
    book.ladder_tops[symbol, side_index] = top


@inline_kernel
def _ladder_update(book, symbol, side_index, steps, quantity, relative):
    """:func:`_update_level` for a level in the window (on tick, above the horizon)."""
    ladders = book.ladders
    slot = _ladder_slot(ladders, steps)
    old = ladders[symbol, side_index, slot]
    new = max(old + quantity if relative else quantity, 0)
    ladders[symbol, side_index, slot] = new
    book.ladder_counts[symbol, side_index] += np.int64(new > 0) - np.int64(old > 0)
    top = book.ladder_tops[symbol, side_index]
    # Selects and one branch: whether an update deletes is a coin toss to the
    # branch predictor; deleting the best level is rarer. (One test of
    # ``new | (steps ^ top)``: the compiler splits ``new == 0 and steps == top``
    # back into two branches.)
    book.ladder_tops[symbol, side_index] = max(top, steps) if new > 0 else top
    if (new | (steps ^ top)) == 0:
        # The best level went: the next one is usually a few ticks down (and none
        # is left to look for when it was the last).
        low = book.ladder_lows[symbol, side_index]
        book.ladder_tops[symbol, side_index] = (
            _ladder_scan_down(ladders, low, symbol, side_index, steps - 1)
            if book.ladder_counts[symbol, side_index] > 0 else low - 1)
    return OK


@kernel
def _push_to_sorted(book, symbol, side_index, keep_low, keep_high):
    """Move the ladder levels whose steps are outside ``keep_low .. keep_high - 1``
    to the sorted levels (count and best are left to the caller)."""
    low = book.ladder_lows[symbol, side_index]
    ladders = book.ladders
    if book.ladder_counts[symbol, side_index] == 0:
        return
    for steps in range(low, low + ladders.shape[2]):
        if steps < keep_low or steps >= keep_high:
            quantity = ladders[symbol, side_index, _ladder_slot(ladders, steps)]
            if quantity > 0:
                ladders[symbol, side_index, _ladder_slot(ladders, steps)] = 0
                _update_sorted(book, symbol, side_index,
                               _ladder_price(book, symbol, side_index, steps), quantity, False)


@kernel
def _pull_from_sorted(book, symbol, side_index):
    """Move the on-tick sorted levels inside the window to the ladder."""
    prices = book.prices
    quantities = book.quantities
    count = book.counts[symbol, side_index]
    if count == 0:
        return
    tick = book.ticks[symbol]
    low = book.ladder_lows[symbol, side_index]
    mask = book.ladders.shape[2] - 1
    low_key = low * tick
    high_key = (low + mask) * tick
    # Close the gap (levels at ranks 0 .. count - 1), then compact the ranks
    # from the window's low end upward.
    _move_gap(prices, quantities, symbol, side_index, book.gaps[symbol, side_index],
              prices.shape[2] - count, count)
    first = _lower_bound(prices, symbol, side_index, low_key, count, count, 0)
    kept = first
    for rank in range(first, count):
        key = _key(side_index, prices[symbol, side_index, rank])
        if key <= high_key and key % tick == 0:
            book.ladders[symbol, side_index, _ladder_slot(book.ladders, key // tick)] = (
                quantities[symbol, side_index, rank])
        else:
            prices[symbol, side_index, kept] = prices[symbol, side_index, rank]
            quantities[symbol, side_index, kept] = quantities[symbol, side_index, rank]
            kept += 1
    book.counts[symbol, side_index] = kept
    book.gaps[symbol, side_index] = kept


@kernel
def _move_ladder(book, symbol, side_index, new_low):
    """Move a side's window to start at ``new_low`` steps."""
    _push_to_sorted(book, symbol, side_index, new_low, new_low + book.ladders.shape[2])
    book.ladder_lows[symbol, side_index] = new_low
    _pull_from_sorted(book, symbol, side_index)
    _ladder_recount(book, symbol, side_index)


@kernel
def _trim_ladder(book, symbol, side_index):
    """Drop (and count) the ladder levels at or beyond the horizon, which just moved."""
    through = book.horizon_keys[symbol, side_index] // book.ticks[symbol]
    low = book.ladder_lows[symbol, side_index]
    if book.ladder_counts[symbol, side_index] == 0 or through < low:
        return
    ladders = book.ladders
    for steps in range(low, min(through, low + ladders.shape[2] - 1) + 1):
        if ladders[symbol, side_index, _ladder_slot(ladders, steps)] > 0:
            ladders[symbol, side_index, _ladder_slot(ladders, steps)] = 0
            book.stats[symbol, STAT_DROPPED_LEVELS] += 1
    _ladder_recount(book, symbol, side_index)


@kernel
def _update_outside(book, symbol, side_index, price, quantity, relative):
    """:func:`_update_level` for a level outside the window (or off tick, or at
    or beyond the horizon): recentre the window on it when it is new and near
    the touch, else keep it in the sorted levels."""
    book = borrow(book)     # the caller's reference keeps it alive: no counting
    steps, on_tick = _steps(book.ticks[symbol], side_index, price)
    half = book.ladders.shape[2] // 2
    if (on_tick and quantity > 0
            and _key(side_index, price) > book.horizon_keys[symbol, side_index]):
        top = book.ladder_tops[symbol, side_index]
        anchor = steps
        if book.ladder_counts[symbol, side_index] > 0 and steps <= top:
            anchor = top if steps > top - half else NO_PRICE
        if anchor != NO_PRICE:
            _move_ladder(book, symbol, side_index, anchor - half)
            if _key(side_index, price) > book.horizon_keys[symbol, side_index]:
                return _ladder_update(book, symbol, side_index, steps, quantity, relative)
    return _update_sorted(book, symbol, side_index, price, quantity, relative)


@inline_kernel
def _update_level(book, symbol, side_index, price, quantity, relative):
    """Set a validated level to ``quantity``, or add ``quantity`` to it when
    ``relative`` (L3; it may be negative). A level at 0 or less goes.

    The one place that changes levels: in the window, an index and a store,
    inlined into the replay loops; elsewhere a call. Callers pass a
    :func:`borrow`-ed book: reference counting would cost more than the update.
    """
    steps, on_tick = _steps(book.ticks[symbol], side_index, price)
    offset = steps - book.ladder_lows[symbol, side_index]
    if (on_tick and offset >= 0 and offset < book.ladders.shape[2]
            and _key(side_index, price) > book.horizon_keys[symbol, side_index]):
        return _ladder_update(book, symbol, side_index, steps, quantity, relative)
    return _update_outside(book, symbol, side_index, price, quantity, relative)


@kernel
def _set_level(book, symbol, side_index, price, quantity):
    """Set a validated level's total (0 deletes)."""
    return _update_level(borrow(book), symbol, side_index, price, quantity, False)


@kernel
def _level_slot(book, symbol, side_index, logical):
    """Index in the side's arrays of the level of rank ``logical`` (0 = farthest)."""
    count = book.counts[symbol, side_index]
    return _slot(logical, book.gaps[symbol, side_index], book.prices.shape[2] - count)


@kernel
def _find(book, symbol, side_index, price):
    """``(rank, found)`` of ``price`` on a side (queries): binary search."""
    key = _key(side_index, price)
    count = book.counts[symbol, side_index]
    gap = book.gaps[symbol, side_index]
    rank = _lower_bound(book.prices, symbol, side_index, key, count, gap,
                        book.prices.shape[2] - count)
    slot = _level_slot(book, symbol, side_index, rank)
    found = rank < count and book.prices[symbol, side_index, slot] == price
    return rank, found


@kernel
def _clear_side(book, symbol, side_index):
    book.counts[symbol, side_index] = 0
    book.gaps[symbol, side_index] = 0
    book.horizon_keys[symbol, side_index] = _NO_HORIZON_KEY
    if book.ladder_counts[symbol, side_index] > 0:
        for slot in range(book.ladders.shape[2]):
            book.ladders[symbol, side_index, slot] = 0
    book.ladder_counts[symbol, side_index] = 0
    book.ladder_tops[symbol, side_index] = book.ladder_lows[symbol, side_index] - 1


# ---------------------------------------------------------------------------
# Updates.

@llvm_inline_kernel
def set_level(book, symbol, side, price, quantity):
    """Set the total quantity at ``price`` on ``side``; 0 deletes the level.

    Returns
    -------
    status : int
        ``OK``, ``LEVEL_DROPPED`` (beyond capacity, counted), or an error.
    """
    if symbol < 0 or symbol >= book.counts.shape[0]:
        return BAD_SYMBOL
    side_index = _side_index(side)
    if side_index < 0:
        return INVALID_SIDE
    if quantity < 0:
        return BAD_QUANTITY
    return _update_level(borrow(book), symbol, side_index, price, quantity, False)


@kernel
def clear(book, symbol, side):
    """Empty one side (``BID`` or ``ASK``) or both (``side == 0``) of a symbol's levels.

    Only the L2 levels; :func:`ringbook.kernels.orders.clear_orders` empties the order
    table too (``KIND_CLEAR`` events do both).
    """
    if symbol < 0 or symbol >= book.counts.shape[0]:
        return BAD_SYMBOL
    if side == 0:
        _clear_side(book, symbol, 0)
        _clear_side(book, symbol, 1)
        return OK
    side_index = _side_index(side)
    if side_index < 0:
        return INVALID_SIDE
    _clear_side(book, symbol, side_index)
    return OK


@kernel
def set_tick(book, symbol, tick):
    """Set a symbol's price increment (fixed-point units): where its levels are kept.

    Every price stays exact whatever the tick; prices that are whole ticks
    near the touch go to the ladder. The ladder's levels move to the sorted
    levels and come back as updates arrive.
    """
    if symbol < 0 or symbol >= book.counts.shape[0]:
        return BAD_SYMBOL
    if tick <= 0:
        return BAD_TICK
    for side_index in range(2):
        _push_to_sorted(book, symbol, side_index, 0, 0)
        book.ladder_counts[symbol, side_index] = 0
        book.ladder_tops[symbol, side_index] = book.ladder_lows[symbol, side_index] - 1
    book.ticks[symbol] = tick
    return OK


@kernel
def load_snapshot(book, symbol, bid_prices, bid_quantities, ask_prices, ask_quantities,
                  sequence):
    """Replace a symbol's levels with a snapshot, in any order; set its sequence.

    Zero quantities are skipped; a price given twice takes the last quantity.
    Returns the first error status, or ``OK`` (levels beyond capacity are
    dropped and counted as usual).
    """
    status = clear(book, symbol, 0)
    if status < 0:
        return status
    if (bid_prices.shape[0] != bid_quantities.shape[0]
            or ask_prices.shape[0] != ask_quantities.shape[0]):
        return BAD_INDEX
    for index in range(bid_prices.shape[0]):
        if bid_quantities[index] < 0:
            return BAD_QUANTITY
        _set_level(book, symbol, 0, bid_prices[index], bid_quantities[index])
    for index in range(ask_prices.shape[0]):
        if ask_quantities[index] < 0:
            return BAD_QUANTITY
        _set_level(book, symbol, 1, ask_prices[index], ask_quantities[index])
    book.sequences[symbol] = sequence
    return OK


@kernel
def replace_levels(book, symbol, side, after_price, through_price, prices, quantities):
    """Make ``side`` equal the given levels over a price range; leave the rest alone.

    The range is the prices strictly worse than ``after_price`` (``NO_PRICE``:
    from the touch) and at least as good as ``through_price`` (``NO_PRICE``:
    to the end of the side). Levels held in the range are removed, then the
    given levels that fall in it are set (zero quantities skipped).

    This is how a window of an exchange's published book teaches the book
    levels it could not know: LOBSTER's orderbook row ``k`` shows the best
    ``N`` levels, so levels beyond the previous row's worst one changed out
    of sight; ``replace_levels(book, symbol, side, previous_worst,
    this_worst_or_NO_PRICE, row_prices, row_sizes)`` takes them from row
    ``k``, and every level within the previous window is a genuine check.
    """
    if symbol < 0 or symbol >= book.counts.shape[0]:
        return BAD_SYMBOL
    side_index = _side_index(side)
    if side_index < 0:
        return INVALID_SIDE
    if prices.shape[0] != quantities.shape[0]:
        return BAD_INDEX
    low_key = _NO_HORIZON_KEY if through_price == NO_PRICE else _key(side_index, through_price)
    high_key = INT64_MAX if after_price == NO_PRICE else _key(side_index, after_price)
    count = book.counts[symbol, side_index]
    # Close the gap (all levels at the start of the arrays), then keep the
    # levels outside the range.
    _move_gap(book.prices, book.quantities, symbol, side_index, book.gaps[symbol, side_index],
              book.prices.shape[2] - count, count)
    kept = 0
    for position in range(count):
        key = _key(side_index, book.prices[symbol, side_index, position])
        if key < low_key or key >= high_key:
            book.prices[symbol, side_index, kept] = book.prices[symbol, side_index, position]
            book.quantities[symbol, side_index, kept] = (
                book.quantities[symbol, side_index, position])
            kept += 1
    book.counts[symbol, side_index] = kept
    book.gaps[symbol, side_index] = kept
    if book.ladder_counts[symbol, side_index] > 0:
        low = book.ladder_lows[symbol, side_index]
        ladders = book.ladders
        for steps in range(low, low + ladders.shape[2]):
            key = _key(side_index, _ladder_price(book, symbol, side_index, steps))
            if low_key <= key < high_key:
                ladders[symbol, side_index, _ladder_slot(ladders, steps)] = 0
        _ladder_recount(book, symbol, side_index)
    for index in range(prices.shape[0]):
        key = _key(side_index, prices[index])
        if quantities[index] < 0:
            return BAD_QUANTITY
        if low_key <= key < high_key and quantities[index] > 0:
            _set_level(book, symbol, side_index, prices[index], quantities[index])
    return OK


@kernel
def truncate(book, symbol, side, keep):
    """Keep the best ``keep`` levels of ``side`` (``0``: of each side); delete the rest.

    For an exchange that publishes only its best ``N`` levels: when a new level
    pushes one out of view, the exchange forgets it and later sends the level
    that scrolls into view as a new insert, so the book must forget it too.
    Unlike a drop for capacity, the horizon does not move: the book stays
    exact and accepts every later update at any price.

    Returns
    -------
    deleted : int
        Levels deleted (0 when the side holds ``keep`` or fewer), or an error:
        ``BAD_SYMBOL``, ``INVALID_SIDE``, ``BAD_ARGUMENT`` for a negative ``keep``.
    """
    if symbol < 0 or symbol >= book.counts.shape[0]:
        return BAD_SYMBOL
    if keep < 0:
        return BAD_ARGUMENT
    if side == 0:
        return _truncate_side(book, symbol, 0, keep) + _truncate_side(book, symbol, 1, keep)
    side_index = _side_index(side)
    if side_index < 0:
        return INVALID_SIDE
    return _truncate_side(book, symbol, side_index, keep)


@kernel
def _truncate_side(book, symbol, side_index, keep):
    """:func:`truncate` for a validated side: delete the worst level while there are
    more than ``keep``; return how many went."""
    book = borrow(book)     # the caller's reference keeps it alive: no counting
    excess = book.counts[symbol, side_index] + book.ladder_counts[symbol, side_index] - keep
    if excess <= 0:
        return 0
    ladders = book.ladders
    # The worst ladder level: scanned for once from the window's low end; each
    # deletion only moves it up.
    steps = book.ladder_lows[symbol, side_index]
    for _ in range(excess):
        count = book.counts[symbol, side_index]
        use_ladder = False
        if book.ladder_counts[symbol, side_index] > 0:
            while ladders[symbol, side_index, _ladder_slot(ladders, steps)] == 0:
                steps += 1
            use_ladder = count == 0 or (
                _key(side_index, _ladder_price(book, symbol, side_index, steps))
                < _key(side_index, book.prices[symbol, side_index,
                                               _level_slot(book, symbol, side_index, 0)]))
        if use_ladder:
            _ladder_update(book, symbol, side_index, steps, 0, False)
        else:
            _update_sorted(book, symbol, side_index,
                           book.prices[symbol, side_index, _level_slot(book, symbol, side_index, 0)],
                           0, False)
    return excess


# ---------------------------------------------------------------------------
# Queries. A symbol outside the book returns BAD_SYMBOL (an empty book's
# answer where the result is a price or a ratio), a side that is neither BID
# nor ASK INVALID_SIDE, rather than reading outside the book's arrays: a
# user's njit code calls these with whatever it holds.

@inline_kernel
def _query_side(book, symbol, side):
    """The side index (0 bids, 1 asks) a query reads, or BAD_SYMBOL / INVALID_SIDE."""
    if symbol < 0 or symbol >= book.counts.shape[0]:
        return BAD_SYMBOL
    side_index = _side_index(side)
    return side_index if side_index >= 0 else INVALID_SIDE


@kernel
def _best(book, symbol, side_index):
    # The ladder's best; an empty ladder has every slot at 0, including the
    # one its top points at, so a positive quantity means a level.
    if symbol < 0 or symbol >= book.counts.shape[0]:
        return NO_PRICE, np.int64(0)
    steps = book.ladder_tops[symbol, side_index]
    ladder_price = _ladder_price(book, symbol, side_index, steps)
    ladder_quantity = book.ladders[symbol, side_index, _ladder_slot(book.ladders, steps)]
    count = book.counts[symbol, side_index]
    if count == 0:
        # The usual case (every level within the ladder's window): no merge.
        return (ladder_price if ladder_quantity > 0 else NO_PRICE), ladder_quantity
    # The sorted levels' best is the last element, or the last before the gap
    # when the gap is at the end.
    gap_before_touch = book.gaps[symbol, side_index] < count
    top = count - 1 + (book.prices.shape[2] - count) * gap_before_touch
    price = book.prices[symbol, side_index, top]
    if ladder_quantity > 0 and _key(side_index, ladder_price) > _key(side_index, price):
        return ladder_price, ladder_quantity
    return price, book.quantities[symbol, side_index, top]


@inline_kernel
def _walk_start(book, symbol, side_index):
    """A walk over a side's levels, best first: ``(steps, rank, left)``, where its next
    ladder level is looked for (at or below ``steps``), the rank of its next sorted
    level, and the ladder levels not yet handed out."""
    return (book.ladder_tops[symbol, side_index], book.counts[symbol, side_index] - 1,
            book.ladder_counts[symbol, side_index])


@inline_kernel
def _walk_next(book, symbol, side_index, steps, rank, left):
    """The walk's next level: ``(found, price, quantity, steps, rank, left)``.

    The ladder is scanned for its next level when that level is asked for, not
    after handing out the previous one, and not at all once it has none left:
    a walk never scans the empty slots below the ``n``-th level it hands out,
    nor below the ladder's last.
    """
    low = book.ladder_lows[symbol, side_index]
    steps = _ladder_scan_down(book.ladders, low, symbol, side_index, steps) if left > 0 else low - 1
    in_ladder = steps >= low
    in_sorted = rank >= 0
    slot = _level_slot(book, symbol, side_index, max(rank, 0))
    sorted_price = book.prices[symbol, side_index, slot]
    ladder_price = _ladder_price(book, symbol, side_index, steps)
    if in_ladder and (not in_sorted
                      or _key(side_index, ladder_price) > _key(side_index, sorted_price)):
        quantity = book.ladders[symbol, side_index, _ladder_slot(book.ladders, steps)]
        return True, ladder_price, quantity, steps - 1, rank, left - 1
    if in_sorted:
        return True, sorted_price, book.quantities[symbol, side_index, slot], steps, rank - 1, left
    return False, NO_PRICE, 0, steps, rank, left


@llvm_inline_kernel
def best_bid(book, symbol):
    """``(price, quantity)`` of the best bid; ``(NO_PRICE, 0)`` when there is none (or no such symbol)."""
    return _best(book, symbol, 0)


@llvm_inline_kernel
def best_ask(book, symbol):
    """``(price, quantity)`` of the best ask; ``(NO_PRICE, 0)`` when there is none (or no such symbol)."""
    return _best(book, symbol, 1)


@llvm_inline_kernel
def mid_price(book, symbol):
    """Mean of the best bid and ask prices (float64, fixed-point units); NaN if a side is empty."""
    bid, bid_quantity = _best(book, symbol, 0)
    ask, ask_quantity = _best(book, symbol, 1)
    if bid_quantity == 0 or ask_quantity == 0:
        return np.nan
    return bid * 0.5 + ask * 0.5


@llvm_inline_kernel
def spread(book, symbol):
    """Best ask minus best bid; ``NO_PRICE`` when a side is empty."""
    bid, bid_quantity = _best(book, symbol, 0)
    ask, ask_quantity = _best(book, symbol, 1)
    if bid_quantity == 0 or ask_quantity == 0:
        return NO_PRICE
    return ask - bid


@llvm_inline_kernel
def is_crossed(book, symbol):
    """True when both sides have levels and the best bid is at or above the best ask."""
    bid, bid_quantity = _best(book, symbol, 0)
    ask, ask_quantity = _best(book, symbol, 1)
    return bid_quantity != 0 and ask_quantity != 0 and bid >= ask


@llvm_inline_kernel
def level_count(book, symbol, side):
    """Levels held on ``side``; ``INVALID_SIDE`` for a side neither BID nor ASK."""
    side_index = _query_side(book, symbol, side)
    if side_index < 0:
        return side_index
    return book.counts[symbol, side_index] + book.ladder_counts[symbol, side_index]


@llvm_inline_kernel
def level_quantity(book, symbol, side, price):
    """Quantity at ``price`` on ``side``; 0 when there is no level there, ``INVALID_SIDE``
    for a side neither BID nor ASK."""
    side_index = _query_side(book, symbol, side)
    if side_index < 0:
        return side_index
    steps, on_tick = _steps(book.ticks[symbol], side_index, price)
    offset = steps - book.ladder_lows[symbol, side_index]
    if on_tick and offset >= 0 and offset < book.ladders.shape[2]:
        return book.ladders[symbol, side_index, _ladder_slot(book.ladders, steps)]
    rank, found = _find(book, symbol, side_index, price)
    if found:
        return book.quantities[symbol, side_index, _level_slot(book, symbol, side_index, rank)]
    return 0


@llvm_inline_kernel
def top_levels(book, symbol, side, prices_out, quantities_out):
    """Copy the best levels of ``side``, best first, into the caller's arrays.

    Returns
    -------
    n : int
        Levels written: ``min(len(prices_out), len(quantities_out), levels held)``;
        ``INVALID_SIDE`` (nothing written) for a side neither BID nor ASK.
    """
    side_index = _query_side(book, symbol, side)
    if side_index < 0:
        return side_index
    steps, rank, left = _walk_start(book, symbol, side_index)
    n = 0
    while n < min(prices_out.shape[0], quantities_out.shape[0]):
        found, price, quantity, steps, rank, left = _walk_next(book, symbol, side_index, steps, rank, left)
        if not found:
            break
        prices_out[n] = price
        quantities_out[n] = quantity
        n += 1
    return n


@kernel
def depth_to_price(book, symbol, side, price):
    """Total quantity on ``side`` at prices as good as ``price`` or better
    (``INVALID_SIDE`` for a side neither BID nor ASK)."""
    side_index = _query_side(book, symbol, side)
    if side_index < 0:
        return side_index
    key = _key(side_index, price)
    total = 0
    steps, rank, left = _walk_start(book, symbol, side_index)
    while True:
        found, level_price, quantity, steps, rank, left = _walk_next(book, symbol, side_index,
                                                                     steps, rank, left)
        if not found or _key(side_index, level_price) < key:
            break
        total += quantity
    return total


@kernel
def quantity_to_depth(book, symbol, side, n_levels):
    """Total quantity in the best ``n_levels`` levels of ``side`` (``INVALID_SIDE`` for
    a side neither BID nor ASK)."""
    side_index = _query_side(book, symbol, side)
    if side_index < 0:
        return side_index
    total = 0
    steps, rank, left = _walk_start(book, symbol, side_index)
    for _ in range(n_levels):
        found, price, quantity, steps, rank, left = _walk_next(book, symbol, side_index, steps, rank, left)
        if not found:
            break
        total += quantity
    return total


@kernel
def imbalance(book, symbol, n_levels):
    """``(bid - ask) / (bid + ask)`` over the best ``n_levels`` of each side.

    NaN when both are empty.
    """
    bid = quantity_to_depth(book, symbol, BID, n_levels)
    ask = quantity_to_depth(book, symbol, ASK, n_levels)
    if bid < 0 or ask < 0 or bid + ask == 0:
        return np.nan
    return (bid - ask) / (bid + ask)


@kernel
def fill_cost(book, symbol, side, quantity):
    """Walk ``side`` best first (``ASK`` to buy, ``BID`` to sell) to fill ``quantity``.

    Returns
    -------
    filled : int
        Quantity available up to ``quantity``; ``INVALID_SIDE`` (and a NaN cost)
        for a side neither BID nor ASK.
    cost : float
        Sum of ``price * quantity`` taken per level, in fixed-point units.
    """
    side_index = _query_side(book, symbol, side)
    if side_index < 0:
        return np.int64(side_index), np.nan
    remaining = quantity
    cost = 0.0
    steps, rank, left = _walk_start(book, symbol, side_index)
    while remaining > 0:
        found, price, level_quantity, steps, rank, left = _walk_next(book, symbol, side_index,
                                                                     steps, rank, left)
        if not found:
            break
        take = min(remaining, level_quantity)
        cost += float(price) * float(take)
        remaining -= take
    return quantity - max(remaining, 0), cost


@kernel
def vwap_to_fill(book, symbol, side, quantity):
    """Volume-weighted price of filling ``quantity`` from ``side``; NaN when it is
    empty or the side is neither BID nor ASK."""
    filled, cost = fill_cost(book, symbol, side, quantity)
    if filled <= 0:
        return np.nan
    return cost / filled


@kernel
def horizon(book, symbol, side):
    """Best price dropped for capacity on ``side`` (exact strictly better); ``NO_PRICE`` if
    none; ``INVALID_SIDE`` for a side neither BID nor ASK."""
    side_index = _query_side(book, symbol, side)
    if side_index < 0:
        return side_index
    key = book.horizon_keys[symbol, side_index]
    if key == _NO_HORIZON_KEY:
        return NO_PRICE
    return _key(side_index, key)
