"""Events into the book: one event, a range of events, or a replay with a user callback.

Two ways to use it from research code:

- :func:`replay` runs an njit loop over an event array and calls a user
  ``@njit`` callback ``callback(book, events, i, state)`` after each event
  (``every=EVERY_EVENT``) or after each event that ends an exchange message
  (``every=EVERY_BATCH``, the ``FLAG_BATCH_END`` events: the book is
  consistent there). ``state`` is anything numba can pass (an array, a tuple
  of arrays, a namedtuple); the callback reads the book with the queries of
  :mod:`ringbook.kernels.book` and writes what it wants into ``state``. Its return
  value is ignored. The book it gets is borrowed (:func:`~ringbook.kernels.borrow.borrow`):
  read and change it, but do not keep it beyond the call.
- Or write your own ``@njit`` loop that calls :func:`apply_event` and the
  queries directly.

API (kernels, book first)
-------------------------
apply_event(book, events, i) -> status
apply_events(book, events, start, stop) -> (next_index, status)
    Applies ``events[start:stop]``; stops at the first error, returning its
    index and status, else ``(stop, OK)``. Informational statuses go on.
replay(book, events, callback, state, every) -> (next_index, status)
    As ``apply_events`` over the whole array, with the callback.
replay_events(book, events, callback=None, state=None, every=EVERY_EVENT) -> n   (Python)
    Validates the dtype, runs one of the above, raises ``BookError`` on an error.

Kinds (:mod:`ringbook.kernels.events`) and what :func:`apply_event` does
--------------------------------------------------------------
L2_SET            ``set_level``: quantity is the level's new total, 0 deletes.
L3_ADD            ``add_order``.
L3_CANCEL         ``cancel_order`` (quantity removed).
L3_DELETE         ``delete_order``.
L3_EXECUTE        ``execute_order`` (quantity executed, side of the resting order).
L3_EXECUTE_HIDDEN, TRADE, TOP_OF_BOOK   nothing (the replay's callback sees them).
CLEAR             empties a side (``side`` BID/ASK) or both (0): levels and orders.
SNAPSHOT_BEGIN    empties the symbol (levels, horizons, orders), sequence 0.
SNAPSHOT_END      the symbol's sequence becomes the event's ``sequence``.
STATUS            ``book.trading_status[symbol] = quantity`` (a ``STATUS_*`` code).
SEQUENCE          nothing but the sequence checks (a message that changes no level,
                  e.g. a Binance diff with no levels, still moves the sequence on).

After an event flagged ``FLAG_BATCH_END`` (the end of a message), a symbol
with ``book.max_levels[symbol] > 0`` keeps only that many levels per side
(:func:`~ringbook.kernels.book.truncate`): the replay of an exchange that
publishes its best ``N`` levels.

Sequence checks (see :mod:`ringbook.kernels.book`) apply to the kinds that change
levels (L2_SET, L3_ADD/CANCEL/DELETE/EXECUTE, CLEAR) and to SEQUENCE, with
``sequence != 0`` and without ``FLAG_SNAPSHOT``; the other kinds are never stale.

Speed
-----
``apply_events`` and ``replay`` inline the body of ``apply_event`` into
their loop and work on a :func:`~ringbook.kernels.borrow.borrow`-ed book (no reference
counting per event). ``apply_event`` borrows too, inside, but it is a call
that passes every array of the book, which the inlined loops do not; in your
own loop, ``book = borrow(book)`` before the loop saves the reference
counting around that call.

Caching
-------
``apply_event`` and ``apply_events`` are cached like every kernel. ``replay``
is compiled once per callback and process: Numba keys a function that takes
another function on the callback's type, which is new in each process, so a
disk cache would only grow (``kernel_with_callback`` in
:mod:`ringbook.kernels.jit_options`). The first call with a new callback compiles it
(a few seconds); the callback itself may be cached or not. A user who needs
a replay cached on disk writes their own loop (the second pattern) with
``cache=True``.
"""

import numpy as np

from ringbook.kernels.book import (STAT_GAPS, STAT_STALE, _side_index, _truncate_side,
                                   _update_level, check_status, clear)
from ringbook.kernels.borrow import borrow
from ringbook.kernels.events import (EVENT_DTYPE, FLAG_BATCH_END, FLAG_SNAPSHOT, KIND_CLEAR,
                                     KIND_L2_SET, KIND_L3_ADD, KIND_L3_CANCEL, KIND_L3_DELETE,
                                     KIND_L3_EXECUTE, KIND_L3_EXECUTE_HIDDEN, KIND_SEQUENCE,
                                     KIND_SNAPSHOT_BEGIN, KIND_SNAPSHOT_END, KIND_STATUS,
                                     KIND_TOP_OF_BOOK, KIND_TRADE)
from ringbook.kernels.jit_options import inline_kernel, kernel, kernel_with_callback
from ringbook.kernels.orders import _reduce_order, add_order, clear_orders
from ringbook.kernels.status import (BAD_INDEX, BAD_KIND, BAD_QUANTITY, BAD_SYMBOL, GAP,
                                     INVALID_SIDE, OK, STALE)

#: Call the replay's callback after every event.
EVERY_EVENT = 0
#: Call it after each event flagged FLAG_BATCH_END (the end of an exchange message).
EVERY_BATCH = 1


@kernel
def _apply_other(book, symbol, kind, side, price, quantity, order_id, sequence):
    """Every kind but L2_SET (validated symbol): a call of its own, so that the
    L2 path inlined into a caller's loop stays small."""
    book = borrow(book)     # the caller's reference keeps it alive: no counting
    if kind == KIND_L3_ADD:
        return add_order(book, symbol, order_id, side, price, quantity)
    if kind == KIND_L3_CANCEL or kind == KIND_L3_EXECUTE:
        return _reduce_order(book, symbol, order_id, side, price, quantity, False)
    if kind == KIND_L3_DELETE:
        return _reduce_order(book, symbol, order_id, side, price, quantity, True)
    if (kind == KIND_L3_EXECUTE_HIDDEN or kind == KIND_TRADE or kind == KIND_TOP_OF_BOOK
            or kind == KIND_SEQUENCE):
        return OK
    if kind == KIND_CLEAR:
        status = clear(book, symbol, side)
        if status == OK:
            status = clear_orders(book, symbol, side)
        return status
    if kind == KIND_SNAPSHOT_BEGIN:
        clear(book, symbol, 0)
        book.sequences[symbol] = 0
        return clear_orders(book, symbol, 0)
    if kind == KIND_SNAPSHOT_END:
        book.sequences[symbol] = sequence
        return OK
    if kind == KIND_STATUS:
        book.trading_status[symbol] = quantity
        return OK
    return BAD_KIND


@kernel
def apply_event(book, events, i):
    """Apply ``events[i]`` to the book, with the sequence checks of :mod:`ringbook.kernels.book`.

    Returns
    -------
    status : int
        ``OK``; informational ``STALE`` (rejected), ``GAP`` (applied after a
        gap), ``UNKNOWN_ORDER``, ``LEVEL_DROPPED``; or an error (< 0), in which
        case nothing was applied.
    """
    # Borrowed: the caller's references keep both alive for the call, and an
    # uncounted body costs no atomic reference counting per event.
    return _apply_event(borrow(book), borrow(events), i)


@inline_kernel
def _apply_event(book, events, i):
    """:func:`apply_event`'s body, inlined into the replay loops (no call per event)."""
    if i < 0 or i >= events.shape[0]:
        return BAD_INDEX
    event = events[i]
    # int64 throughout: the kernels below then share one compiled signature
    # with calls from Python and from users' code.
    symbol = np.int64(event.symbol)
    if symbol < 0 or symbol >= book.counts.shape[0]:
        return BAD_SYMBOL
    kind = np.int64(event.kind)
    flags = np.int64(event.flags)
    sequence = event.sequence
    checked = (sequence != 0 and (flags & FLAG_SNAPSHOT) == 0
               and ((kind <= KIND_CLEAR and kind != KIND_L3_EXECUTE_HIDDEN
                     and kind != KIND_TRADE) or kind == KIND_SEQUENCE))
    gap = False
    if checked:
        held = book.sequences[symbol]
        if sequence <= held:
            if flags & FLAG_BATCH_END:
                book.stats[symbol, STAT_STALE] += 1
            return STALE
        gap = event.prev_sequence > held
    side = np.int64(event.side)
    if kind == KIND_L2_SET:
        side_index = _side_index(side)
        if side_index < 0:
            status = INVALID_SIDE
        elif event.quantity < 0:
            status = BAD_QUANTITY
        else:
            status = _update_level(book, symbol, side_index, event.price, event.quantity, False)
    else:
        status = _apply_other(book, symbol, kind, side, event.price, event.quantity,
                              event.order_id, sequence)
    if status < 0:
        return status
    if (flags & FLAG_BATCH_END) and book.max_levels[symbol] > 0:
        # A feed of the exchange's best N levels: forget what left its view.
        _truncate_side(book, symbol, 0, book.max_levels[symbol])
        _truncate_side(book, symbol, 1, book.max_levels[symbol])
    if checked and (flags & FLAG_BATCH_END):
        book.sequences[symbol] = sequence
        if gap:
            book.stats[symbol, STAT_GAPS] += 1
    if gap and status == OK:
        return GAP
    return status


@kernel
def apply_events(book, events, start, stop):
    """Apply ``events[start:stop]``; stop at the first error.

    Returns
    -------
    next_index : int
        ``stop`` (clipped to the array), or the index of the event that failed.
    status : int
        ``OK``, or that event's error status.
    """
    stop = min(stop, events.shape[0])
    borrowed_book = borrow(book)
    borrowed_events = borrow(events)
    for i in range(max(start, 0), stop):
        status = _apply_event(borrowed_book, borrowed_events, i)
        if status < 0:
            return i, status
    return stop, OK


@kernel_with_callback
def replay(book, events, callback, state, every):
    """Apply every event; call ``callback(book, events, i, state)`` after each
    (``every=EVERY_EVENT``) or after each ``FLAG_BATCH_END`` event (``EVERY_BATCH``).

    Stale and other informational events still reach the callback (it can
    look at ``events[i]``). Returns ``(next_index, status)`` as
    :func:`apply_events`; an error stops the replay before the callback.
    """
    borrowed_book = borrow(book)
    borrowed_events = borrow(events)
    for i in range(borrowed_events.shape[0]):
        status = _apply_event(borrowed_book, borrowed_events, i)
        if status < 0:
            return i, status
        if every == EVERY_EVENT or (borrowed_events[i].flags & FLAG_BATCH_END) != 0:
            callback(borrowed_book, borrowed_events, i, state)
    return events.shape[0], OK


def replay_events(book, events, callback=None, state=None, every=EVERY_EVENT):
    """Replay an event array into ``book`` from Python; raise on an error status.

    Parameters
    ----------
    book : ringbook.kernels.book.Book
    events : numpy.ndarray of EVENT_DTYPE
    callback : numba dispatcher, optional
        ``@njit`` function ``callback(book, events, i, state)``.
    state : optional
        Passed to the callback.
    every : int
        :data:`EVERY_EVENT` or :data:`EVERY_BATCH`.

    Returns
    -------
    int
        Events applied.

    Raises
    ------
    TypeError
        If ``events`` is not a 1-d array of ``EVENT_DTYPE``.
    ringbook.kernels.book.BookError
        On an error status, naming the event's index.
    """
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        raise TypeError("events must be a 1-d numpy array of ringbook.kernels.events.EVENT_DTYPE")
    if every not in (EVERY_EVENT, EVERY_BATCH):
        raise ValueError(f"every must be EVERY_EVENT or EVERY_BATCH, got {every!r}")
    if callback is None:
        next_index, status = apply_events(book, events, 0, len(events))
    else:
        next_index, status = replay(book, events, callback, state, every)
    check_status(status, f"event {next_index} (kind {events[next_index]['kind']}, symbol "
                         f"{events[next_index]['symbol']})" if status < 0 else "")
    return next_index
