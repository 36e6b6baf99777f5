"""The L3 order table (kernels.orders): naive reference, table limits, real LOBSTER files."""

import numba
import numpy as np
import pytest

from ringbook.kernels import book as kb
from ringbook.kernels.book import (ASK, BID, NO_PRICE, best_ask, best_bid, level_count, load_snapshot,
                          new_book, replace_levels, top_levels)
from ringbook.kernels.events import (FLAG_BATCH_END, KIND_L3_ADD, KIND_L3_CANCEL, KIND_L3_DELETE,
                            KIND_L3_EXECUTE, KIND_L3_EXECUTE_HIDDEN, KIND_STATUS, KIND_TRADE,
                            empty_events)
from ringbook.kernels.orders import (ORDER_QUANTITY, ROOMY_LOAD, add_order, cancel_order, clear_orders, delete_order,
                            execute_order, find_order, order_count, with_more_order_slots,
                            with_room_for_orders)
from ringbook.kernels.replay import apply_event
from tests.llvm_ir import allocation_calls
from tests.naive import NaiveBook


def random_orders(seed, count, symbols=2, unknown_share=0.05):
    """LOBSTER-like L3 events: adds near the touch, then cancels, deletes, executions
    of live orders, and some of orders never seen (a file that starts mid-day)."""
    rng = np.random.default_rng(seed)
    live = []
    events = []
    next_id = 1
    for _ in range(count):
        choice = rng.random()
        if choice < 0.45 or not live:
            symbol = int(rng.integers(symbols))
            side = BID if rng.random() < 0.5 else ASK
            price = 1000 - side * int(rng.geometric(0.3))
            size = int(rng.integers(1, 500))
            events.append((KIND_L3_ADD, symbol, next_id, side, price, size))
            live.append((symbol, next_id, side, price, size))
            next_id += 1
        elif choice < 0.45 + unknown_share:
            kind = [KIND_L3_CANCEL, KIND_L3_DELETE, KIND_L3_EXECUTE][int(rng.integers(3))]
            side = BID if rng.random() < 0.5 else ASK
            price = 1000 - int(rng.integers(1, 4)) * side
            events.append((kind, int(rng.integers(symbols)), 10**9 + next_id, side, price,
                           int(rng.integers(1, 50))))
        else:
            symbol, order_id, side, price, size = live.pop(int(rng.integers(len(live))))
            kind = [KIND_L3_CANCEL, KIND_L3_DELETE, KIND_L3_EXECUTE][int(rng.integers(3))]
            amount = size if kind == KIND_L3_DELETE else int(rng.integers(1, size + 1))
            events.append((kind, symbol, order_id, side, price, amount))
            if amount < size:
                live.append((symbol, order_id, side, price, size - amount))
    array = empty_events(len(events))
    for index, (kind, symbol, order_id, side, price, size) in enumerate(events):
        array[index] = (0, 0, price, size, order_id, 0, 0, symbol, kind, side, FLAG_BATCH_END)
    return array


@pytest.mark.parametrize("ladder", [4, 1024])
def test_orders_feed_levels_as_the_naive_book_does(ladder):
    events = random_orders(seed=3, count=3000)
    book = new_book(n_symbols=2, depth=256, order_capacity=4096, ladder=ladder)
    naive = NaiveBook()
    prices, quantities = np.zeros(256, np.int64), np.zeros(256, np.int64)
    for index in range(len(events)):
        status = apply_event(book, events, index)
        assert status in (kb.OK, kb.UNKNOWN_ORDER)
        naive.apply(events[index])
        symbol = int(events[index]["symbol"])
        if index % 7 == 0 or index == len(events) - 1:
            for side in (BID, ASK):
                n = top_levels(book, symbol, side, prices, quantities)
                assert list(zip(prices[:n].tolist(), quantities[:n].tolist())) == \
                    naive.sorted_levels(symbol, side)
    assert book.stats[:, kb.STAT_UNKNOWN_ORDERS].sum() == naive.unknown_orders > 0
    assert order_count(book, -1) == len(naive.orders)
    for (symbol, order_id), (_, _, quantity) in naive.orders.items():
        slot = find_order(book, symbol, order_id)
        assert slot >= 0 and book.orders[slot, ORDER_QUANTITY] == quantity


def test_add_cancel_execute_delete_one_order():
    book = new_book(n_symbols=1, depth=8, order_capacity=16)
    assert add_order(book, 0, 7, BID, 100, 50) == kb.OK
    assert add_order(book, 0, 8, BID, 100, 5) == kb.OK
    assert best_bid(book, 0) == (100, 55)
    assert cancel_order(book, 0, 7, 0, 0, 10) == kb.OK       # side and price from the table
    assert execute_order(book, 0, 7, BID, 100, 15) == kb.OK
    assert best_bid(book, 0) == (100, 30)
    assert book.orders[find_order(book, 0, 7), ORDER_QUANTITY] == 25
    assert delete_order(book, 0, 7, 0, 0, 0) == kb.OK        # no size given: the rest
    assert best_bid(book, 0) == (100, 5) and find_order(book, 0, 7) == -1
    assert execute_order(book, 0, 8, BID, 100, 5) == kb.OK   # fully executed: gone
    assert find_order(book, 0, 8) == -1 and level_count(book, 0, BID) == 0
    assert order_count(book, 0) == 0


def test_unknown_orders_are_counted_and_adjust_a_seeded_level():
    book = new_book(n_symbols=1, depth=8, order_capacity=16)
    load_snapshot(book, 0, np.array([100], np.int64), np.array([300], np.int64),
                  np.array([101], np.int64), np.array([40], np.int64), 0)
    assert cancel_order(book, 0, 555, BID, 100, 100) == kb.UNKNOWN_ORDER
    assert execute_order(book, 0, 556, ASK, 101, 40) == kb.UNKNOWN_ORDER
    assert delete_order(book, 0, 557, 0, 100, 100) == kb.UNKNOWN_ORDER   # no side: only counted
    assert delete_order(book, 0, 558, BID, 99, 100) == kb.UNKNOWN_ORDER  # no such level
    assert best_bid(book, 0) == (100, 200) and best_ask(book, 0) == (NO_PRICE, 0)
    assert book.stats[0, kb.STAT_UNKNOWN_ORDERS] == 4


def test_full_table_is_an_error_and_changes_nothing():
    book = new_book(n_symbols=1, depth=8, order_capacity=16)       # 12 orders at most
    for order_id in range(12):
        assert add_order(book, 0, order_id, ASK, 100 + order_id % 3, 1) == kb.OK
    before = [array.copy() for array in book]
    assert add_order(book, 0, 99, ASK, 100, 1) == kb.ORDER_TABLE_FULL
    assert all(np.array_equal(a, b) for a, b in zip(before, book))
    with pytest.raises(kb.BookError, match="order table full.*larger order_capacity"):
        kb.check_status(kb.ORDER_TABLE_FULL, "add_order")


def test_invalid_and_duplicate_orders_are_errors():
    book = new_book(n_symbols=1, depth=8, order_capacity=16)
    assert add_order(book, 0, 1, BID, 100, 5) == kb.OK
    assert add_order(book, 0, 1, BID, 100, 5) == kb.DUPLICATE_ORDER
    assert add_order(book, 1, 2, BID, 100, 5) == kb.BAD_SYMBOL
    assert add_order(book, 0, 2, 0, 100, 5) == kb.INVALID_SIDE
    assert add_order(book, 0, 2, BID, 100, 0) == kb.BAD_QUANTITY
    assert cancel_order(book, 0, 1, BID, 100, -1) == kb.BAD_QUANTITY
    assert best_bid(book, 0) == (100, 5) and order_count(book, -1) == 1


def test_churn_in_a_nearly_full_table_keeps_every_order_findable():
    """Backward-shift deletion: no tombstones, nothing lost, across symbols."""
    book = new_book(n_symbols=3, depth=64, order_capacity=64)      # 48 orders at most
    rng = np.random.default_rng(5)
    live = {}
    for step in range(5000):
        if len(live) < 48 and (rng.random() < 0.55 or not live):
            key = (int(rng.integers(3)), int(rng.integers(-2**62, 2**62)))
            if key in live:
                continue
            assert add_order(book, key[0], key[1], BID, 10 + key[1] % 5, 1) == kb.OK
            live[key] = True
        else:
            key = list(live)[int(rng.integers(len(live)))]
            assert delete_order(book, key[0], key[1], 0, 0, 0) == kb.OK
            del live[key]
        if step % 50 == 0:
            assert all(find_order(book, symbol, order_id) >= 0 for symbol, order_id in live)
    assert order_count(book, -1) == len(live)
    assert (book.orders[:, 1] != 0).sum() == len(live)


def test_grown_table_holds_the_same_orders():
    """Fill a small table across symbols, grow it each time it is full, and churn: every
    order stays findable with its side, price and size, in twice the slots each time."""
    book = new_book(n_symbols=3, depth=64, order_capacity=16)
    rng = np.random.default_rng(11)
    live = {}
    for step in range(3000):
        if rng.random() < 0.7 or not live:
            key = (int(rng.integers(3)), int(rng.integers(-2**62, 2**62)))
            if key in live:
                continue
            side, price, size = (BID, ASK)[step % 2], 10 + key[1] % 7, 1 + step % 9
            status = add_order(book, key[0], key[1], side, price, size)
            if status == kb.ORDER_TABLE_FULL:
                slots = book.orders.shape[0]
                book = with_more_order_slots(book)
                assert book.orders.shape[0] == 2 * slots
                status = add_order(book, key[0], key[1], side, price, size)
            assert status == kb.OK
            live[key] = (side, price, size)
        else:
            key = list(live)[int(rng.integers(len(live)))]
            assert delete_order(book, key[0], key[1], 0, 0, 0) == kb.OK
            del live[key]
    assert book.orders.shape[0] >= 1024 and order_count(book, -1) == len(live)
    for (symbol, order_id), (side, price, size) in live.items():
        slot = find_order(book, symbol, order_id)
        assert slot >= 0 and book.orders[slot, 2:].tolist() == [price, size]
        assert (book.orders[slot, 1] & 1) == (0 if side == BID else 1)


def test_a_table_given_room_is_at_most_roomy_and_keeps_its_orders():
    book = new_book(n_symbols=2, depth=8, order_capacity=64)
    assert with_room_for_orders(book) is book   # empty: nothing to do
    for order_id in range(40):
        assert add_order(book, order_id % 2, order_id, BID, 100 + order_id, 1 + order_id) == kb.OK
    roomy = with_room_for_orders(book)
    assert roomy.orders.shape[0] == 128 and order_count(roomy, -1) == 40   # 40 > 64 / 2: one doubling
    assert order_count(roomy, -1) <= ROOMY_LOAD * roomy.orders.shape[0] < 2 * order_count(roomy, -1)
    assert roomy.prices is book.prices and with_room_for_orders(roomy) is roomy
    for order_id in range(40):
        slot = find_order(roomy, order_id % 2, order_id)
        assert slot >= 0 and roomy.orders[slot, 2:].tolist() == [100 + order_id, 1 + order_id]


def test_clear_orders_of_one_symbol_and_side():
    book = new_book(n_symbols=2, depth=8, order_capacity=64)
    for order_id in range(20):
        add_order(book, order_id % 2, order_id, BID if order_id % 4 < 2 else ASK, 100, 1)
    assert clear_orders(book, 0, ASK) == kb.OK
    assert order_count(book, 0) == 5 and order_count(book, 1) == 10
    assert all((find_order(book, 0, i) >= 0) == (i % 4 == 0) for i in range(0, 20, 2))
    assert clear_orders(book, 1, 0) == kb.OK
    assert order_count(book, -1) == 5


BOOK_TYPE = numba.typeof(new_book(n_symbols=1, depth=1, order_capacity=16))
I64 = numba.types.int64


@pytest.mark.slow
@pytest.mark.parametrize("kernel", [add_order, cancel_order, delete_order])
def test_order_kernels_allocate_nothing(kernel):
    assert allocation_calls(kernel, (BOOK_TYPE, I64, I64, I64, I64, I64)) == []


# ---------------------------------------------------------------------------
# Real LOBSTER files: seed from orderbook row 0, replay, compare every row.

LOBSTER_KINDS = {1: KIND_L3_ADD, 2: KIND_L3_CANCEL, 3: KIND_L3_DELETE, 4: KIND_L3_EXECUTE,
                 5: KIND_L3_EXECUTE_HIDDEN, 6: KIND_TRADE, 7: KIND_STATUS}


def read_lobster(message_path, orderbook_path):
    """A minimal reader for this test (engine.feeds has the real one)."""
    header = 1 if open(message_path).readline()[:1].isalpha() else 0
    messages = np.loadtxt(message_path, delimiter=",", skiprows=header, dtype=np.float64)
    rows = np.loadtxt(orderbook_path, delimiter=",", skiprows=header, dtype=np.int64, ndmin=2)
    events = empty_events(len(messages))
    events["kind"] = [LOBSTER_KINDS[int(kind)] for kind in messages[:, 1]]
    events["order_id"] = messages[:, 2].astype(np.int64)
    events["quantity"] = messages[:, 3].astype(np.int64)
    events["price"] = messages[:, 4].astype(np.int64)
    events["side"] = messages[:, 5].astype(np.int8)
    events["flags"] = FLAG_BATCH_END
    return events, rows


@numba.njit
def replay_and_compare(book, events, rows, visible, prices, quantities):
    """Replay messages 1.. and compare each orderbook row: ``(mismatches, first, revealed)``.

    A row with all its levels occupied shows a window of the side; levels
    beyond the previous row's window were not visible, so they are taken from
    this row (``replace_levels``) and every level within the previous window
    is a genuine check. A row with empty levels shows the whole side.
    """
    n_levels = rows.shape[1] // 4
    mismatches = 0
    first = -1
    revealed = 0
    for k in range(1, events.shape[0]):
        if apply_event(book, events, k) < 0:
            return -1, k, revealed
        for column in range(2):                  # 0: ask columns, 1: bid columns
            side = ASK if column == 0 else BID
            n = 0
            for level in range(n_levels):
                if rows[k, 4 * level + 2 * column + 1] > 0:
                    visible[0, n] = rows[k, 4 * level + 2 * column]
                    visible[1, n] = rows[k, 4 * level + 2 * column + 1]
                    n += 1
            last = 4 * (n_levels - 1) + 2 * column
            if rows[k - 1, last + 1] > 0:
                through = visible[0, n - 1] if n == n_levels else NO_PRICE
                replace_levels(book, 0, side, rows[k - 1, last], through,
                               visible[0, :n], visible[1, :n])
                revealed += 1
            held = top_levels(book, 0, side, prices, quantities)
            same = held == n if n < n_levels else held >= n
            for level in range(n):
                if prices[level] != visible[0, level] or quantities[level] != visible[1, level]:
                    same = False
            if not same:
                mismatches += 1
                if first < 0:
                    first = k
    return mismatches, first, revealed


# Tick 100 (LOBSTER's cent at price scale 4) keeps the levels near the touch
# in the ladder; tick 1 keeps most of them sorted. Both are exact.
@pytest.mark.parametrize("stem, levels, tick", [("AAPL_2012-06-21_34200000_57600000", 10, 100),
                                                ("AAPL_2012-06-21_34200000_57600000", 10, 1),
                                                ("AMZN_2012-06-21_34200000_57600000", 1, 100)])
def test_lobster_book_equals_every_orderbook_row(shared_data, stem, levels, tick):
    events, rows = read_lobster(shared_data / "lobster" / f"{stem}_message_{levels}.csv",
                                shared_data / "lobster" / f"{stem}_orderbook_{levels}.csv")
    book = new_book(n_symbols=1, depth=4096, order_capacity=2**16, ticks=[tick])
    seed = rows[0].reshape(-1, 4)
    asks, bids = seed[seed[:, 1] > 0], seed[seed[:, 3] > 0]
    load_snapshot(book, 0, bids[:, 2].copy(), bids[:, 3].copy(), asks[:, 0].copy(),
                  asks[:, 1].copy(), 0)
    visible = np.zeros((2, levels), np.int64)
    prices, quantities = np.zeros(4096, np.int64), np.zeros(4096, np.int64)
    mismatches, first, revealed = replay_and_compare(book, events, rows, visible, prices,
                                                     quantities)
    assert (mismatches, first) == (0, -1)
    assert book.stats[0, kb.STAT_UNKNOWN_ORDERS] > 0
