"""Market-by-order (L3): an order table that feeds the L2 levels of :mod:`ringbook.kernels.book`.

The table lives in the :class:`~ringbook.kernels.book.Book` (``book.orders``), so an L3
event changes the order and its level in one call with one argument.

Table
-----
Open addressing with linear probing over ``book.orders``, an
``int64[slots, 4]`` array (``slots`` a power of two; 32 bytes a slot, two per
cache line): columns :data:`ORDER_ID`, :data:`ORDER_TAG` (``(symbol + 1) * 2 +
side_index``; 0 marks an empty slot), :data:`ORDER_PRICE`,
:data:`ORDER_QUANTITY` (remaining). Keys are ``(symbol, order_id)``, hashed by a
hash that keeps consecutive ids in consecutive slots
(exchanges number orders in sequence: live orders then share cache lines).
Deletion shifts the following entries back (no tombstones), so probe lengths stay short under churn. The load factor is
bounded at 3/4: an add beyond it returns :data:`~ringbook.kernels.status.ORDER_TABLE_FULL`
and changes nothing (``check_status`` turns it into a clear error). A replay that cannot
know its orders in advance starts small, and on that status takes
:func:`with_more_order_slots` and applies the event again.

Semantics (LOBSTER's)
---------------------
add_order             a new visible order: the level at its price grows by its size.
cancel_order          partial cancel: ``quantity`` is the amount removed.
delete_order          the whole order leaves the table.
execute_order         visible execution of ``quantity`` against the resting order.
A cancel or execution of at least the remaining size removes the order. For a
known order the table's side and price are used (the event's may be 0). The
level loses the quantity the event states, as the exchange's own book does
(LOBSTER's book follows its messages even where an order's history in the
file is incomplete); a delete with quantity 0 (a feed whose deletes carry no
size) takes the order's remaining size off the level.

Unknown orders (a file that starts mid-day refers to orders placed before it)
are counted in ``stats[symbol, STAT_UNKNOWN_ORDERS]`` and never crash: when
the event carries a valid side and a price, the level at that price is reduced
by the event's quantity (clamped at 0), so a book seeded with the levels as
they stood before the first message (from LOBSTER's orderbook file) stays
exact; with side 0 the event is only counted. Status :data:`UNKNOWN_ORDER`.

API (kernels, book first)
-------------------------
add_order(book, symbol, order_id, side, price, quantity) -> status
cancel_order(book, symbol, order_id, side, price, quantity) -> status
delete_order(book, symbol, order_id, side, price, quantity) -> status
execute_order(book, symbol, order_id, side, price, quantity) -> status
find_order(book, symbol, order_id) -> slot, or -1     then book.orders[slot, ORDER_*]
order_count(book, symbol) -> int64                     symbol -1: all symbols
clear_orders(book, symbol, side) -> status             side 0: both; levels untouched
order_slots_for(events) -> int                         (Python) slots for replaying events: twice their adds
with_more_order_slots(book) -> book                    (Python) after ORDER_TABLE_FULL: twice the slots
with_room_for_orders(book) -> book                     (Python) between chunks: at most ROOMY_LOAD full

Status codes are those of :mod:`ringbook.kernels.status`.
"""

import numpy as np

from ringbook.kernels.book import STAT_UNKNOWN_ORDERS, _side_index, _update_level
from ringbook.kernels.borrow import borrow
from ringbook.kernels.events import KIND_L3_ADD
from ringbook.kernels.jit_options import kernel, llvm_inline_kernel
from ringbook.kernels.status import (BAD_QUANTITY, BAD_SYMBOL, DUPLICATE_ORDER, INVALID_SIDE, OK,
                                     ORDER_TABLE_FULL, UNKNOWN_ORDER)

# Columns of book.orders.
ORDER_ID = 0
ORDER_TAG = 1        # (symbol + 1) * 2 + side_index; 0: empty slot
ORDER_PRICE = 2
ORDER_QUANTITY = 3

_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)


@kernel
def _home_slot(order_id, symbol, mask):
    """Consecutive ids of a symbol go to consecutive slots: exchanges number
    orders in sequence, so live orders share cache lines. High bits fold in
    (ids far apart spread out), and the symbol moves its run elsewhere."""
    key = np.uint64(order_id)
    mixed = key ^ (key >> np.uint64(24)) ^ (np.uint64(symbol) * _FIBONACCI)
    return np.int64(mixed & np.uint64(0x7FFFFFFFFFFFFFFF)) & mask


@kernel
def _tag(symbol, side_index):
    return (symbol + 1) * 2 + side_index


@kernel
def _probe(orders, symbol, order_id):
    """Slot holding ``(symbol, order_id)``, or ``-(empty slot) - 1`` where it would go."""
    mask = orders.shape[0] - 1
    slot = _home_slot(order_id, symbol, mask)
    symbol_tag = symbol + 1
    while True:
        tag = orders[slot, ORDER_TAG]
        if tag == 0:
            return -slot - 1
        if orders[slot, ORDER_ID] == order_id and (tag >> 1) == symbol_tag:
            return slot
        slot = (slot + 1) & mask


@kernel
def _remove_slot(book, slot):
    """Empty ``slot``, shifting later entries of its probe run back into the hole."""
    orders = book.orders
    mask = orders.shape[0] - 1
    symbol = (orders[slot, ORDER_TAG] >> 1) - 1
    book.order_counts[symbol] -= 1
    book.order_counts[book.order_counts.shape[0] - 1] -= 1
    hole = slot
    probe = slot
    while True:
        probe = (probe + 1) & mask
        tag = orders[probe, ORDER_TAG]
        if tag == 0:
            break
        home = _home_slot(orders[probe, ORDER_ID], (tag >> 1) - 1, mask)
        # The entry may fill the hole unless its home lies cyclically in (hole, probe].
        if hole <= probe:
            stays = hole < home <= probe
        else:
            stays = home > hole or home <= probe
        if not stays:
            for column in range(4):
                orders[hole, column] = orders[probe, column]
            hole = probe
    orders[hole, ORDER_TAG] = 0


@llvm_inline_kernel
def find_order(book, symbol, order_id):
    """Slot of an order in ``book.orders``, or -1 when it is not there."""
    if symbol < 0 or symbol >= book.counts.shape[0]:
        return -1
    slot = _probe(book.orders, symbol, order_id)
    return slot if slot >= 0 else -1


@kernel
def order_count(book, symbol):
    """Orders in the table for ``symbol`` (all symbols when ``symbol`` is -1)."""
    if symbol < 0:
        return book.order_counts[book.order_counts.shape[0] - 1]
    return book.order_counts[symbol]


@kernel
def add_order(book, symbol, order_id, side, price, quantity):
    """A new visible order: into the table, its size onto its level.

    Returns ``OK``, ``LEVEL_DROPPED`` (kept in the table, its level beyond
    capacity), or an error (``BAD_SYMBOL``, ``INVALID_SIDE``, ``BAD_QUANTITY`` for
    a size <= 0, ``DUPLICATE_ORDER``, ``ORDER_TABLE_FULL``) with nothing changed.
    """
    book = borrow(book)     # the caller's reference keeps it alive: no counting
    if symbol < 0 or symbol >= book.counts.shape[0]:
        return BAD_SYMBOL
    side_index = _side_index(side)
    if side_index < 0:
        return INVALID_SIDE
    if quantity <= 0:
        return BAD_QUANTITY
    orders = book.orders
    total = book.order_counts.shape[0] - 1
    if book.order_counts[total] >= (orders.shape[0] >> 2) * 3:
        return ORDER_TABLE_FULL
    slot = _probe(orders, symbol, order_id)
    if slot >= 0:
        return DUPLICATE_ORDER
    slot = -slot - 1
    orders[slot, ORDER_ID] = order_id
    orders[slot, ORDER_TAG] = _tag(symbol, side_index)
    orders[slot, ORDER_PRICE] = price
    orders[slot, ORDER_QUANTITY] = quantity
    book.order_counts[symbol] += 1
    book.order_counts[total] += 1
    return _update_level(book, symbol, side_index, price, quantity, True)


@kernel
def _reduce_order(book, symbol, order_id, side, price, quantity, whole):
    """Take ``quantity`` (the whole order when ``whole``) off an order and its level."""
    book = borrow(book)     # the caller's reference keeps it alive: no counting
    if symbol < 0 or symbol >= book.counts.shape[0]:
        return BAD_SYMBOL
    if quantity < 0:
        return BAD_QUANTITY
    slot = _probe(book.orders, symbol, order_id)
    if slot < 0:
        book.stats[symbol, STAT_UNKNOWN_ORDERS] += 1
        side_index = _side_index(side)
        if side_index >= 0 and quantity > 0:
            _update_level(book, symbol, side_index, price, -quantity, True)
        return UNKNOWN_ORDER
    orders = book.orders
    resting = orders[slot, ORDER_QUANTITY]
    side_index = orders[slot, ORDER_TAG] & 1
    level_price = orders[slot, ORDER_PRICE]
    # The exchange's message is authoritative for the level: it loses the
    # quantity the message states (a delete without one: the order's rest).
    from_level = quantity if quantity > 0 or not whole else resting
    if whole or quantity >= resting:
        _remove_slot(book, slot)
    else:
        orders[slot, ORDER_QUANTITY] = resting - quantity
    if from_level > 0:
        return _update_level(book, symbol, side_index, level_price, -from_level, True)
    return OK


@kernel
def cancel_order(book, symbol, order_id, side, price, quantity):
    """Partial cancel: ``quantity`` leaves the order and its level.

    A cancel of at least the rest removes the order.
    """
    return _reduce_order(book, symbol, order_id, side, price, quantity, False)


@kernel
def delete_order(book, symbol, order_id, side, price, quantity):
    """The order leaves the table; its level loses ``quantity`` (0: the order's remaining size)."""
    return _reduce_order(book, symbol, order_id, side, price, quantity, True)


@kernel
def execute_order(book, symbol, order_id, side, price, quantity):
    """Visible execution of ``quantity`` against a resting order."""
    return _reduce_order(book, symbol, order_id, side, price, quantity, False)


@kernel
def clear_orders(book, symbol, side):
    """Remove a symbol's orders on ``side`` (``side == 0``: both) from the table.

    O(table slots) when the symbol has orders, O(1) otherwise. The levels are
    left alone (:func:`ringbook.kernels.book.clear` empties them).
    """
    if symbol < 0 or symbol >= book.counts.shape[0]:
        return BAD_SYMBOL
    if book.order_counts[symbol] == 0:
        return OK
    orders = book.orders
    symbol_tag = symbol + 1
    side_index = _side_index(side)
    slot = 0
    while slot < orders.shape[0] and book.order_counts[symbol] > 0:
        tag = orders[slot, ORDER_TAG]
        if (tag != 0 and (tag >> 1) == symbol_tag
                and (side == 0 or (tag & 1) == side_index)):
            # An entry from further on may shift into this slot: look again.
            _remove_slot(book, slot)
        else:
            slot += 1
    return OK


@kernel
def move_orders(orders, into):
    """Put every order of the table ``orders`` into ``into``, an empty table of more slots
    (a power of two), each where a lookup there finds it: how a full table grows."""
    for slot in range(orders.shape[0]):
        tag = orders[slot, ORDER_TAG]
        if tag != 0:
            target = -_probe(into, (tag >> 1) - 1, orders[slot, ORDER_ID]) - 1   # the free slot it goes to
            for column in range(orders.shape[1]):
                into[target, column] = orders[slot, column]


def order_slots_for(events):
    """Order table slots for a replay of ``events``: twice their adds, so the table (at most 3/4
    full) holds every order they can leave live at once."""
    return max(16, 2 * int(np.count_nonzero(events["kind"] == KIND_L3_ADD)))


def with_more_order_slots(book):
    """``book`` with an order table of twice the slots holding the same orders; its other
    arrays are ``book``'s own (use the new book from then on)."""
    into = np.zeros((2 * book.orders.shape[0], book.orders.shape[1]), np.int64)
    move_orders(book.orders, into)
    return book._replace(orders=into)


#: How full a streamed replay lets its order table get between chunks: probes over the runs
#: of consecutive ids grow long as the table nears the 3/4 bound.
ROOMY_LOAD = 1 / 2


def with_room_for_orders(book):
    """``book``, or with more order slots (:func:`with_more_order_slots`) until its table is at
    most :data:`ROOMY_LOAD` full: call it between the chunks of a replay whose orders are
    not known in advance."""
    while order_count(book, -1) > ROOMY_LOAD * book.orders.shape[0]:
        book = with_more_order_slots(book)
    return book
