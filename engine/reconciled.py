"""A LOBSTER replay kept equal to its orderbook file.

LOBSTER's message file leaves out the messages of levels beyond those its orderbook
file shows, so a replay of the messages alone loses the book as soon as such a level
comes into view: on the shared 1-level AMZN day, the best bid and ask of a seeded replay
agree with the file after 53 of its 57,515 messages. After each message the book is
therefore reconciled with the orderbook row after it: the remaining size of the order
the message names (:func:`ringbook.engine.check._reconcile_order`) and each side
(:func:`ringbook.kernels.snapshots.reconcile_side`), the effect on the book that
``ringbook check`` has. Every level the file shows then equals the row after every message.

:func:`apply_reconciled` is that step, inlined into the loop of :func:`replay_reconciled`
(a user's callback after each message; :func:`replay_lobster` is the replay ``replay_files``
makes of a LOBSTER file). Snapshots need no such replay: they are the orderbook rows
themselves (:mod:`ringbook.engine.snapshots`).
"""

import numpy as np

from ringbook.engine.check import N_COUNTERS, _reconcile_order
from ringbook.engine.feeds import lobster
from ringbook.kernels import book as books
from ringbook.kernels import snapshots as kernels
from ringbook.kernels.book import borrow
from ringbook.kernels.events import FLAG_BATCH_END
from ringbook.kernels.jit_options import kernel_with_callback, llvm_inline_kernel
from ringbook.kernels.replay import EVERY_EVENT, _apply_event
from ringbook.kernels.status import OK


@llvm_inline_kernel
def apply_reconciled(book, symbol, events, i, row_of_event, ask_prices, ask_sizes, bid_prices, bid_sizes,
                     found_prices, found_quantities, all_prices, all_quantities, counters, previous):
    """Apply LOBSTER message ``events[i]`` and reconcile the book with its row (``row_of_event[i]``;
    -1: none) of the orderbook arrays, ``previous`` being the row reconciled last (-1: none yet).

    The scratch arrays are :func:`scratch_for`'s. Returns ``(status, previous)``: the
    book's status for the message (nothing reconciled on an error) and the row reconciled
    last from now on.
    """
    _reconcile_order(book, events, i, counters)
    status = _apply_event(book, events, i)
    if status < 0:
        return status, previous
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
    return status, previous


def scratch_for(book, levels):
    """``(found_prices, found_quantities, all_prices, all_quantities, counters)``: what
    :func:`apply_reconciled` works in, for ``book`` and rows of ``levels`` levels."""
    capacity = book.prices.shape[2] + book.ladders.shape[2]
    return (np.zeros(levels, np.int64), np.zeros(levels, np.int64), np.zeros(capacity, np.int64),
            np.zeros(capacity, np.int64), np.zeros(N_COUNTERS, np.int64))


@kernel_with_callback
def replay_reconciled(book, symbol, events, row_of_event, ask_prices, ask_sizes, bid_prices, bid_sizes,
                      found_prices, found_quantities, all_prices, all_quantities, counters, callback, state,
                      every):
    """:func:`ringbook.kernels.replay.replay` of LOBSTER messages, each reconciled with its row
    (:func:`apply_reconciled`) before the callback sees the book.

    Returns ``(next_index, status)``: ``len(events)`` and ``OK``, or the message the book
    refused and its status (the callback is not called for it).
    """
    book, events, counters = borrow((book, events, counters))
    ask_prices, ask_sizes, bid_prices, bid_sizes = borrow((ask_prices, ask_sizes, bid_prices, bid_sizes))
    found_prices, found_quantities, all_prices, all_quantities = borrow(
        (found_prices, found_quantities, all_prices, all_quantities))
    previous = -1
    for i in range(events.shape[0]):
        status, previous = apply_reconciled(book, symbol, events, i, row_of_event, ask_prices, ask_sizes,
                                            bid_prices, bid_sizes, found_prices, found_quantities, all_prices,
                                            all_quantities, counters, previous)
        if status < 0:
            return i, status
        if every == EVERY_EVENT or (events[i].flags & FLAG_BATCH_END) != 0:
            callback(book, events, i, state)
    return events.shape[0], OK


def replay_lobster(book, symbol, events, records, orderbook, callback, state, every):
    """The replay ``replay_files`` makes of a LOBSTER file's messages: the book seeded from its
    orderbook file's first row, then :func:`replay_reconciled` with the file's rows.

    ``records`` are the messages' (the feed's), ``orderbook`` the file's
    :class:`~ringbook.engine.feeds.lobster.OrderbookFile`. Returns :func:`replay_reconciled`'s
    ``(next_index, status)``; a seed the book refuses raises ``BookError``.
    """
    books.check_status(books.load_snapshot(book, symbol, *lobster.levels_before_first(orderbook, events[0]), 0),
                       "seeding the book")
    row_of_event = lobster.rows_of_records(orderbook.records, records)
    return replay_reconciled(book, symbol, events, row_of_event, orderbook.ask_price, orderbook.ask_size,
                             orderbook.bid_price, orderbook.bid_size, *scratch_for(book, orderbook.levels), callback,
                             state, every)
