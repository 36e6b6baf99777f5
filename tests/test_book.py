"""The L2 book (kernels.book) against tests.naive.NaiveBook, capacity, and allocation."""

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringbook.kernels import book as kb
from ringbook.kernels.book import (ASK, BID, NO_PRICE, best_ask, best_bid, check_status, clear,
                          depth_to_price, fill_cost, horizon, imbalance, is_crossed,
                          level_count, level_quantity, load_snapshot, mid_price, new_book,
                          quantity_to_depth, set_level, spread, top_levels, vwap_to_fill)
from ringbook.engine.feeds import lobster
from ringbook.kernels.jit_options import kernel
from tests.llvm_ir import allocation_calls, function_body
from tests.naive import NaiveBook


def random_levels(seed, count, symbols=2, center=10_000, width=40):
    """Level updates around a center: most near it, some far, a fifth deletes."""
    rng = np.random.default_rng(seed)
    updates = []
    for _ in range(count):
        symbol = int(rng.integers(symbols))
        side = BID if rng.random() < 0.5 else ASK
        distance = int(rng.geometric(0.15)) if rng.random() < 0.9 else int(rng.integers(width))
        price = center - distance if side == BID else center + distance
        quantity = 0 if rng.random() < 0.2 else int(rng.integers(1, 1000))
        updates.append((symbol, side, price, quantity))
    return updates


def assert_same_book(book, naive, symbol):
    """Every query of the fast book equals the naive book's answer."""
    for side in (BID, ASK):
        levels = naive.sorted_levels(symbol, side)
        prices = np.zeros(len(levels) + 2, np.int64)
        quantities = np.zeros(len(levels) + 2, np.int64)
        n = top_levels(book, symbol, side, prices, quantities)
        assert list(zip(prices[:n].tolist(), quantities[:n].tolist())) == levels
        assert level_count(book, symbol, side) == len(levels)
        for price, quantity in levels[:3]:
            assert level_quantity(book, symbol, side, price) == quantity
            assert depth_to_price(book, symbol, side, price) == \
                naive.depth_to_price(symbol, side, price)
        assert level_quantity(book, symbol, side, -10**12) == 0
        for n_levels in (1, 3, 50):
            assert quantity_to_depth(book, symbol, side, n_levels) == \
                naive.quantity_to_depth(symbol, side, n_levels)
        for size in (1, 700, 5000):
            filled, cost = fill_cost(book, symbol, side, size)
            assert (filled, cost) == naive.fill_cost(symbol, side, size)
            vwap = vwap_to_fill(book, symbol, side, size)
            assert (math.isnan(vwap) if filled == 0 else vwap == cost / filled)
    bid, ask = naive.best(symbol, BID), naive.best(symbol, ASK)
    assert best_bid(book, symbol) == (bid or (NO_PRICE, 0))
    assert best_ask(book, symbol) == (ask or (NO_PRICE, 0))
    if bid and ask:
        assert mid_price(book, symbol) == (bid[0] + ask[0]) / 2
        assert spread(book, symbol) == ask[0] - bid[0]
        assert is_crossed(book, symbol) == (bid[0] >= ask[0])
    else:
        assert math.isnan(mid_price(book, symbol))
        assert spread(book, symbol) == NO_PRICE
        assert not is_crossed(book, symbol)
    bid_total = naive.quantity_to_depth(symbol, BID, 5)
    ask_total = naive.quantity_to_depth(symbol, ASK, 5)
    total = bid_total + ask_total
    expected = (bid_total - ask_total) / total if total else math.nan
    assert imbalance(book, symbol, 5) == pytest.approx(expected, nan_ok=True)


# (ladder, tick): no room, a small window that recentres often, a tick that
# half the prices are not on, the default window.
LAYOUTS = [(1, 1), (4, 1), (8, 2), (1024, 1)]


@pytest.mark.parametrize("ladder, tick", LAYOUTS)
def test_levels_match_naive_book_after_every_update(ladder, tick):
    book = new_book(n_symbols=2, depth=64, order_capacity=16, ladder=ladder, ticks=[tick, tick])
    naive = NaiveBook()
    for symbol, side, price, quantity in random_levels(seed=ladder, count=1500):
        assert set_level(book, symbol, side, price, quantity) == kb.OK
        naive.set_level(symbol, side, price, quantity)
        assert_same_book(book, naive, symbol)
    assert book.stats.sum() == 0


#: Any short sequence of (side, price, quantity) updates on a narrow range of prices.
ANY_UPDATES = st.lists(st.tuples(st.sampled_from([BID, ASK]), st.integers(-12, 12),
                                 st.integers(0, 3)), max_size=60)


def books_after(layout, updates):
    """A one-symbol book of ``layout`` (ladder, tick) and the naive book, both updated."""
    ladder, tick = layout
    book = new_book(n_symbols=1, depth=32, order_capacity=16, ladder=ladder, ticks=[tick])
    naive = NaiveBook()
    for side, price, quantity in updates:
        set_level(book, 0, side, price, quantity)
        naive.set_level(0, side, price, quantity)
    return book, naive


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(LAYOUTS), ANY_UPDATES)
def test_levels_match_naive_book_for_any_sequence(layout, updates):
    book, naive = books_after(layout, updates)
    assert_same_book(book, naive, 0)


@pytest.mark.parametrize("depth, ladder, tick", [(1, 1, 1), (3, 2, 1), (8, 4, 1), (3, 8, 2)])
def test_beyond_capacity_far_levels_are_dropped_and_the_rest_stays_exact(depth, ladder, tick):
    """The book holds exactly the true levels strictly better than the horizon:
    at most ``depth`` sorted levels and a window of ``ladder`` ticks."""
    book = new_book(n_symbols=2, depth=depth, order_capacity=16, ladder=ladder,
                    ticks=[tick, tick])
    naive = NaiveBook()
    capacity = depth + ladder
    for symbol, side, price, quantity in random_levels(seed=depth, count=2000):
        status = set_level(book, symbol, side, price, quantity)
        assert status in (kb.OK, kb.LEVEL_DROPPED)
        naive.set_level(symbol, side, price, quantity)
        for side in (BID, ASK):
            limit = horizon(book, symbol, side)
            truth = [(p, q) for p, q in naive.sorted_levels(symbol, side)
                     if limit == NO_PRICE or (p > limit if side == BID else p < limit)]
            prices = np.zeros(capacity + 1, np.int64)
            quantities = np.zeros(capacity + 1, np.int64)
            n = top_levels(book, symbol, side, prices, quantities)
            assert list(zip(prices[:n].tolist(), quantities[:n].tolist())) == truth
            assert n == level_count(book, symbol, side) <= capacity
    assert book.stats[:, kb.STAT_DROPPED_LEVELS].sum() > 0


def test_full_side_drops_the_farthest_level_and_counts_it():
    # One tick of ladder (the best level) and three sorted levels.
    book = new_book(n_symbols=1, depth=3, order_capacity=16, ladder=1)
    for price in (100, 99, 98, 97):
        assert set_level(book, 0, BID, price, 1) == kb.OK
    assert horizon(book, 0, BID) == NO_PRICE
    assert set_level(book, 0, BID, 96, 1) == kb.LEVEL_DROPPED       # beyond the farthest
    assert horizon(book, 0, BID) == 96
    assert set_level(book, 0, BID, 101, 1) == kb.OK                 # 100 leaves the ladder,
    assert horizon(book, 0, BID) == 97                              # which pushes 97 out
    assert set_level(book, 0, BID, 97, 5) == kb.LEVEL_DROPPED       # at the horizon
    assert set_level(book, 0, BID, 100, 0) == kb.OK
    prices, quantities = np.zeros(4, np.int64), np.zeros(4, np.int64)
    assert top_levels(book, 0, BID, prices, quantities) == 3
    assert prices[:3].tolist() == [101, 99, 98]
    assert book.stats[0, kb.STAT_DROPPED_LEVELS] == 3
    assert clear(book, 0, BID) == kb.OK
    assert horizon(book, 0, BID) == NO_PRICE
    assert set_level(book, 0, BID, 50, 1) == kb.OK


def test_a_horizon_inside_the_window_drops_the_ladder_levels_beyond_it():
    # Tick 2: odd prices are kept sorted. Three odd bids above the window
    # fill the sorted levels; a fourth better one drops the farthest, whose
    # price lies inside the window, so the ladder's levels at or below it go.
    book = new_book(n_symbols=1, depth=3, order_capacity=16, ladder=8, ticks=[2])
    for price in (100, 98, 96):
        assert set_level(book, 0, BID, price, 1) == kb.OK
    for price in (97, 99, 101, 103):
        assert set_level(book, 0, BID, price, 2) == kb.OK
    assert horizon(book, 0, BID) == 97
    prices, quantities = np.zeros(8, np.int64), np.zeros(8, np.int64)
    n = top_levels(book, 0, BID, prices, quantities)
    assert prices[:n].tolist() == [103, 101, 100, 99, 98]
    assert book.stats[0, kb.STAT_DROPPED_LEVELS] == 2               # 97, then 96
    assert set_level(book, 0, BID, 96, 1) == kb.LEVEL_DROPPED


@pytest.mark.parametrize("old_tick, new_tick", [(1, 5), (5, 1), (5, 3)])
def test_set_tick_moves_levels_and_changes_no_answer(old_tick, new_tick):
    book = new_book(n_symbols=2, depth=64, order_capacity=16, ladder=16,
                    ticks=[old_tick, old_tick])
    naive = NaiveBook()
    updates = random_levels(seed=new_tick, count=400, center=10_000)
    for symbol, side, price, quantity in updates[:200]:
        set_level(book, symbol, side, price, quantity)
        naive.set_level(symbol, side, price, quantity)
    assert kb.set_tick(book, 0, new_tick) == kb.OK
    assert book.ticks.tolist() == [new_tick, old_tick]
    assert_same_book(book, naive, 0)
    for symbol, side, price, quantity in updates[200:]:
        set_level(book, symbol, side, price, quantity)
        naive.set_level(symbol, side, price, quantity)
    for symbol in (0, 1):
        assert_same_book(book, naive, symbol)
    assert kb.set_tick(book, 0, 0) == kb.BAD_TICK
    assert kb.set_tick(book, 2, 1) == kb.BAD_SYMBOL


def test_clear_and_snapshot():
    book = new_book(n_symbols=2, depth=8, order_capacity=16)
    set_level(book, 1, BID, 10, 1)
    set_level(book, 1, ASK, 12, 1)
    assert clear(book, 1, ASK) == kb.OK
    assert best_ask(book, 1) == (NO_PRICE, 0) and best_bid(book, 1) == (10, 1)
    assert clear(book, 1, 0) == kb.OK
    assert best_bid(book, 1) == (NO_PRICE, 0)
    status = load_snapshot(book, 1, np.array([9, 11, 10], np.int64), np.array([1, 0, 3], np.int64),
                           np.array([14, 13], np.int64), np.array([2, 4], np.int64), 77)
    assert status == kb.OK
    assert best_bid(book, 1) == (10, 3) and best_ask(book, 1) == (13, 4)
    assert level_count(book, 1, BID) == 2 and book.sequences[1] == 77


def test_invalid_input_is_an_error_status_and_wrappers_raise():
    book = new_book(n_symbols=2, depth=4, order_capacity=16)
    assert set_level(book, 2, BID, 1, 1) == kb.BAD_SYMBOL
    assert set_level(book, -1, BID, 1, 1) == kb.BAD_SYMBOL
    assert set_level(book, 0, 0, 1, 1) == kb.INVALID_SIDE
    assert set_level(book, 0, BID, 1, -1) == kb.BAD_QUANTITY
    assert clear(book, 0, 5) == kb.INVALID_SIDE
    assert book.counts.sum() == 0 and book.ladder_counts.sum() == 0
    with pytest.raises(ValueError, match="power of two"):
        new_book(n_symbols=1, ladder=3)
    with pytest.raises(kb.BookError, match="symbol id out of range"):
        check_status(kb.BAD_SYMBOL, "set_level")
    assert check_status(kb.STALE) == kb.STALE


def test_default_book_for_2048_symbols_fits_in_256_mb():
    book = new_book()
    assert book.counts.shape[0] == 2048
    assert kb.book_nbytes(book) <= 256 * 2**20


@pytest.mark.parametrize("ladder, tick", LAYOUTS)
def test_truncate_keeps_the_best_levels_as_the_naive_book_does(ladder, tick):
    book = new_book(n_symbols=2, depth=64, order_capacity=16, ladder=ladder, ticks=[tick, tick])
    naive = NaiveBook()
    rng = np.random.default_rng(ladder + tick)
    for symbol, side, price, quantity in random_levels(seed=tick, count=1500):
        set_level(book, symbol, side, price, quantity)
        naive.set_level(symbol, side, price, quantity)
        if rng.random() < 0.3:
            keep = int(rng.integers(0, 12))
            which = int(rng.choice([BID, ASK, 0]))
            assert kb.truncate(book, symbol, which, keep) == naive.truncate(symbol, which, keep)
        assert_same_book(book, naive, symbol)
    assert horizon(book, 0, BID) == horizon(book, 0, ASK) == NO_PRICE
    assert book.stats.sum() == 0


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(LAYOUTS), ANY_UPDATES, st.integers(0, 20), st.sampled_from([BID, ASK, 0]))
def test_truncate_matches_the_naive_book_for_any_levels(layout, updates, keep, side):
    book, naive = books_after(layout, updates)
    assert kb.truncate(book, 0, side, keep) == naive.truncate(0, side, keep)
    assert_same_book(book, naive, 0)


def test_truncate_moves_no_horizon_and_later_levels_apply():
    """Truncation forgets levels; a capacity drop would refuse them afterwards."""
    book = new_book(n_symbols=1, depth=4, order_capacity=16, ladder=2)
    for price in range(100, 90, -1):
        set_level(book, 0, BID, price, 1)
    assert kb.truncate(book, 0, BID, 3) == 3
    assert kb.levels(book, 0, BID, 10)[0].tolist() == [100, 99, 98]
    assert horizon(book, 0, BID) != NO_PRICE        # depth 4 dropped levels before
    assert clear(book, 0, BID) == kb.OK
    for price in range(100, 94, -1):
        set_level(book, 0, BID, price, 1)
    assert kb.truncate(book, 0, BID, 2) == 4
    assert horizon(book, 0, BID) == NO_PRICE
    assert set_level(book, 0, BID, 90, 7) == kb.OK  # far below what was cut: applied
    assert kb.levels(book, 0, BID, 10)[0].tolist() == [100, 99, 90]
    assert kb.truncate(book, 0, BID, 5) == 0


def test_truncate_rejects_bad_arguments():
    book = new_book(n_symbols=1, depth=4, order_capacity=16)
    set_level(book, 0, BID, 10, 1)
    assert kb.truncate(book, 1, BID, 1) == kb.BAD_SYMBOL
    assert kb.truncate(book, 0, 2, 1) == kb.INVALID_SIDE
    assert kb.truncate(book, 0, BID, -1) == kb.BAD_ARGUMENT
    assert level_count(book, 0, BID) == 1


def test_truncate_keeps_lobsters_best_levels(shared_data):
    """Each AAPL orderbook row (10 levels a side), truncated to k, is its own best k."""
    orderbook = lobster.read_orderbook(
        shared_data / "lobster" / "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv")
    rows = np.linspace(0, len(orderbook.bid_price) - 1, 200).astype(int)
    # A ladder narrower than the spread of ten levels: some sit in the sorted levels.
    book = new_book(n_symbols=1, depth=32, order_capacity=16, ladder=16, ticks=[100])
    for row in rows:
        for keep in (0, 1, 5, 9, 10, 11):
            load_snapshot(book, 0, orderbook.bid_price[row], orderbook.bid_size[row],
                          orderbook.ask_price[row], orderbook.ask_size[row], 0)
            held = [level_count(book, 0, side) for side in (BID, ASK)]
            assert kb.truncate(book, 0, 0, keep) == sum(max(n - keep, 0) for n in held)
            for side, prices, sizes in ((BID, orderbook.bid_price, orderbook.bid_size),
                                        (ASK, orderbook.ask_price, orderbook.ask_size)):
                shown = sizes[row] > 0
                got_prices, got_sizes = kb.levels(book, 0, side, 12)
                assert got_prices.tolist() == prices[row][shown][:keep].tolist()
                assert got_sizes.tolist() == sizes[row][shown][:keep].tolist()


QUERIES_WITH_A_SIDE = [
    ("level_count", lambda book, side, symbol=0: kb.level_count(book, symbol, side)),
    ("level_quantity", lambda book, side, symbol=0: kb.level_quantity(book, symbol, side, 100)),
    ("top_levels", lambda book, side, symbol=0: kb.top_levels(book, symbol, side, np.zeros(4, np.int64),
                                                              np.zeros(4, np.int64))),
    ("depth_to_price", lambda book, side, symbol=0: kb.depth_to_price(book, symbol, side, 100)),
    ("quantity_to_depth", lambda book, side, symbol=0: kb.quantity_to_depth(book, symbol, side, 3)),
    ("horizon", lambda book, side, symbol=0: kb.horizon(book, symbol, side)),
    ("fill_cost", lambda book, side, symbol=0: kb.fill_cost(book, symbol, side, 3)[0]),
]


def _two_sided_book(n_symbols=1):
    book = new_book(n_symbols=n_symbols, depth=4, order_capacity=16)
    for symbol in range(n_symbols):
        set_level(book, symbol, BID, 100, 5)
        set_level(book, symbol, ASK, 101, 5)
    return book


@pytest.mark.parametrize("name, query", QUERIES_WITH_A_SIDE)
@pytest.mark.parametrize("side", [0, 2, -2, 127])
def test_queries_reject_a_side_that_is_neither_bid_nor_ask(name, query, side):
    book = _two_sided_book()
    assert query(book, side) == kb.INVALID_SIDE
    assert query(book, BID) != kb.INVALID_SIDE and query(book, ASK) != kb.INVALID_SIDE
    assert math.isnan(fill_cost(book, 0, side, 3)[1])
    assert math.isnan(vwap_to_fill(book, 0, side, 3))


@pytest.mark.parametrize("name, query", QUERIES_WITH_A_SIDE)
@pytest.mark.parametrize("symbol", [-1, -3, 3, 1 << 40])
def test_queries_reject_a_symbol_outside_the_book(name, query, symbol):
    """Never a read outside the book's arrays, even for a negative symbol numpy would wrap."""
    book = _two_sided_book(n_symbols=3)
    for side in (BID, ASK):
        assert query(book, side, symbol) == kb.BAD_SYMBOL
        assert query(book, side, 2) != kb.BAD_SYMBOL
    assert best_bid(book, symbol) == (NO_PRICE, 0) and best_ask(book, symbol) == (NO_PRICE, 0)
    assert math.isnan(kb.mid_price(book, symbol)) and kb.spread(book, symbol) == NO_PRICE
    assert not kb.is_crossed(book, symbol) and math.isnan(kb.imbalance(book, symbol, 3))
    assert math.isnan(vwap_to_fill(book, symbol, BID, 3))
    assert best_bid(book, 2) == (100, 5) and kb.spread(book, 2) == 1


def test_levels_returns_the_best_levels_and_raises_on_bad_input():
    book = new_book(n_symbols=1, depth=4, order_capacity=16)
    for price, quantity in ((100, 5), (98, 2), (99, 7)):
        set_level(book, 0, BID, price, quantity)
    prices, quantities = kb.levels(book, 0, BID, 2)
    assert prices.tolist() == [100, 99] and quantities.tolist() == [5, 7]
    assert kb.levels(book, 0, ASK, 5)[0].tolist() == []
    with pytest.raises(ValueError, match="side 0: side is neither BID"):
        kb.levels(book, 0, 0, 5)
    with pytest.raises(ValueError, match="symbol 1"):
        kb.levels(book, 1, BID, 5)
    with pytest.raises(ValueError, match="n_levels"):
        kb.levels(book, 0, BID, -1)


def test_borrow_is_importable_from_the_book_and_its_own_module():
    from ringbook.kernels.borrow import borrow
    assert kb.borrow is borrow


BOOK_TYPE = numba.typeof(new_book(n_symbols=1, depth=1, order_capacity=16))
SCALAR = numba.types.int64
OUT = numba.types.int64[::1]


@pytest.mark.parametrize("kernel, signature", [
    (kb.set_level, (BOOK_TYPE, SCALAR, SCALAR, SCALAR, SCALAR)),
    (kb.best_bid, (BOOK_TYPE, SCALAR)),
    (kb.mid_price, (BOOK_TYPE, SCALAR)),
    (kb.top_levels, (BOOK_TYPE, SCALAR, SCALAR, OUT, OUT)),
    (kb.fill_cost, (BOOK_TYPE, SCALAR, SCALAR, SCALAR)),
    (kb.imbalance, (BOOK_TYPE, SCALAR, SCALAR)),
    (kb.truncate, (BOOK_TYPE, SCALAR, SCALAR, SCALAR)),
])
@pytest.mark.slow
def test_hot_kernels_allocate_nothing(kernel, signature):
    assert allocation_calls(kernel, signature) == []


@kernel
def _touch_sum(book, symbol, count):
    """A user's loop: a query per step, as a replay callback makes one per event."""
    total = 0
    out_prices = np.zeros(4, np.int64)
    out_quantities = np.zeros(4, np.int64)
    for _ in range(count):
        bid, bid_quantity = best_bid(book, symbol)
        ask, ask_quantity = best_ask(book, symbol)
        total += bid + bid_quantity + ask + ask_quantity + kb.level_count(book, symbol, BID)
        total += kb.level_quantity(book, symbol, ASK, ask)
        total += kb.top_levels(book, symbol, BID, out_prices, out_quantities)
    return total


def test_small_queries_compile_into_their_callers_loop():
    """A call would pass the book's sixteen arrays (and count their references): the small
    queries are inlined instead, and still answer as the kernels do."""
    body = function_body(_touch_sum, (BOOK_TYPE, SCALAR, SCALAR))
    calls = [line for line in body.splitlines() if "call " in line]
    for name in ("best_bid", "best_ask", "level_count", "level_quantity", "top_levels"):
        assert not any(name in line for line in calls), name
    book = new_book(n_symbols=1, depth=64)
    set_level(book, 0, BID, 100, 3)
    set_level(book, 0, BID, 99, 4)
    set_level(book, 0, ASK, 102, 5)
    assert _touch_sum(book, 0, 2) == 2 * (100 + 3 + 102 + 5 + 2 + 5 + 2)
