"""Order book replay: ringbook's L2 and L3 kernels versus hftbacktest 2.4, same events.

Events (built at import, the same for both libraries; figures are per event):

- L2: 1,000,000 market-by-price level updates of one symbol. The touch takes
  a random walk; each update lands a geometric number of ticks from it (mean
  5), a quarter of them delete their level; the mix is about 56% changes of
  an existing level, 19% new levels, 19% deletions.
- L3: 200,000 LOBSTER-like market-by-order events: adds a geometric
  number of ticks from the touch, then partial cancels, deletes and
  executions (partial or full) of live orders, around a fixed mid. hftbacktest receives the same
  changes as ``ADD_ORDER_EVENT``, ``MODIFY_ORDER_EVENT`` (a partial cancel or
  execution: the order's new size) and ``CANCEL_ORDER_EVENT`` (the order
  leaves), with ``l3_fifo_queue_model``.

Benchmarks:

- ``ringbook_l2_replay_touch``: :func:`ringbook.kernels.replay.replay` with an
  ``@njit`` callback that reads the best bid and ask (price and quantity)
  after every event.
- ``ringbook_l2_apply_events``: :func:`ringbook.kernels.replay.apply_events`, no reads.
- ``hftbacktest_l2_per_event``: ``HashMapMarketDepthBacktest``, an njit loop
  of ``wait_next_feed(False, ...)`` (one feed event per call: every event has
  its own timestamp) reading ``best_bid_tick``, ``best_ask_tick``,
  ``best_bid_qty`` and ``best_ask_qty`` of ``depth(0)`` after each: its
  per-event replay.
- ``hftbacktest_l2_bulk``: the same backtest run to the end in one call
  (``_goto_end``, faster than ``elapse``): its fastest bulk replay.
- ``ringbook_l3_replay_touch`` / ``hftbacktest_l3_per_event`` and
  ``ringbook_l3_apply_events`` / ``hftbacktest_l3_bulk``: the same for L3.

At import, both libraries replay a prefix of each stream and their best bid
and ask are compared after every event, so both really build the same book.

Targets: L2 touch replay >= 10x hftbacktest's per-event replay, >= 3x its
bulk replay, >= 100 M events/s; L3 >= 10x hftbacktest's L3 replay.

Run: ``python perf/bm_book.py -o perf/results/book.json`` (``--fast`` for a quick look).
"""

import time

import numba
import numpy as np
from hftbacktest import (ADD_ORDER_EVENT, BUY_EVENT, CANCEL_ORDER_EVENT, DEPTH_EVENT,
                         EXCH_EVENT, LOCAL_EVENT, MODIFY_ORDER_EVENT, SELL_EVENT,
                         BacktestAsset, HashMapMarketDepthBacktest, event_dtype)

from harness import Comparison, Limit, bench, run_subject

from ringbook.kernels.book import best_ask, best_bid, new_book
from ringbook.kernels.events import (ASK, BID, EVENT_DTYPE, FLAG_BATCH_END, KIND_L2_SET, KIND_L3_ADD,
                            KIND_L3_CANCEL, KIND_L3_DELETE, KIND_L3_EXECUTE)
from ringbook.kernels.jit_options import kernel
from ringbook.kernels.replay import EVERY_EVENT, apply_events, replay

L2_COUNT = 1_000_000
L3_COUNT = 200_000     # hftbacktest's L3 replay takes ~5 us an event
CHECKED_PREFIX = 20_000
TICK = 0.5          # hftbacktest prices are ticks * TICK: exact in binary floating point
DEPTH = 2048
ORDER_CAPACITY = 2**20
TIMEOUT = 1 << 62


# ---------------------------------------------------------------------------
# Event streams: ringbook events and hftbacktest events side by side.

@kernel
def l2_stream(events, peer, seed):
    """Fill both arrays with the same L2 level updates."""
    np.random.seed(seed)
    touch = 100_000
    for i in range(events.shape[0]):
        if np.random.random() < 0.002:
            # The touch moves a tick; the level it moves onto leaves the other side.
            step = 1 if np.random.random() < 0.5 else -1
            touch += step
            side = ASK if step > 0 else BID
            price = touch
            quantity = 0
        else:
            side = BID if np.random.random() < 0.5 else ASK
            distance = np.random.geometric(0.2)
            price = touch - distance if side == BID else touch + distance
            quantity = 0 if np.random.random() < 0.25 else np.random.randint(1, 1000)
        events[i].kind = KIND_L2_SET
        events[i].side = side
        events[i].price = price
        events[i].quantity = quantity
        events[i].flags = FLAG_BATCH_END
        peer[i].ev = (DEPTH_EVENT | EXCH_EVENT | LOCAL_EVENT
                      | (BUY_EVENT if side == BID else SELL_EVENT))
        peer[i].px = price * TICK
        peer[i].qty = quantity
    return touch


@kernel
def l3_stream(events, peer, seed):
    """Fill both arrays with the same LOBSTER-like order events."""
    np.random.seed(seed)
    capacity = 200_000
    live_ids = np.zeros(capacity, np.int64)     # live orders, unordered
    live_sides = np.zeros(capacity, np.int64)
    live_prices = np.zeros(capacity, np.int64)
    live_sizes = np.zeros(capacity, np.int64)
    live = 0
    next_id = 1
    touch = 100_000      # the mid stays put: the book never crosses
    for i in range(events.shape[0]):
        choice = np.random.random()
        if live < 1000 or (choice < 0.5 and live < capacity):
            side = BID if np.random.random() < 0.5 else ASK
            distance = np.random.geometric(0.3)
            price = touch - distance if side == BID else touch + distance
            size = np.random.randint(1, 500)
            live_ids[live] = next_id
            live_sides[live] = side
            live_prices[live] = price
            live_sizes[live] = size
            live += 1
            kind = KIND_L3_ADD
            order_id = next_id
            amount = size
            remaining = size
            next_id += 1
        else:
            slot = np.random.randint(0, live)
            order_id = live_ids[slot]
            side = live_sides[slot]
            price = live_prices[slot]
            size = live_sizes[slot]
            roll = np.random.random()
            if roll < 0.4:
                kind = KIND_L3_DELETE
                amount = size
            elif roll < 0.7:
                kind = KIND_L3_CANCEL
                amount = np.random.randint(1, size + 1)
            else:
                kind = KIND_L3_EXECUTE
                amount = np.random.randint(1, size + 1)
            remaining = size - amount
            if remaining == 0:
                live -= 1
                live_ids[slot] = live_ids[live]
                live_sides[slot] = live_sides[live]
                live_prices[slot] = live_prices[live]
                live_sizes[slot] = live_sizes[live]
            else:
                live_sizes[slot] = remaining
        events[i].kind = kind
        events[i].side = side
        events[i].price = price
        events[i].quantity = amount
        events[i].order_id = order_id
        events[i].flags = FLAG_BATCH_END
        if kind == KIND_L3_ADD:
            peer_kind = ADD_ORDER_EVENT
        elif remaining == 0:
            peer_kind = CANCEL_ORDER_EVENT
        else:
            peer_kind = MODIFY_ORDER_EVENT
        peer[i].ev = (peer_kind | EXCH_EVENT | LOCAL_EVENT
                      | (BUY_EVENT if side == BID else SELL_EVENT))
        peer[i].px = price * TICK
        peer[i].qty = remaining if kind != KIND_L3_ADD else amount
        peer[i].order_id = order_id
    return live


def make_streams(generator, count, seed):
    events = np.zeros(count, EVENT_DTYPE)
    peer = np.zeros(count, event_dtype)
    generator(events, peer, seed)
    # Every event its own timestamp, so the peer's wait_next_feed stops at each.
    peer["exch_ts"] = np.arange(1, count + 1) * 10
    peer["local_ts"] = peer["exch_ts"] + 5
    return events, peer


L2_EVENTS, L2_PEER = make_streams(l2_stream, L2_COUNT, 20240808)
L3_EVENTS, L3_PEER = make_streams(l3_stream, L3_COUNT, 20120621)


def peer_backtest(peer_events, l3):
    asset = (BacktestAsset().data(peer_events).linear_asset(1.0).constant_order_latency(0, 0)
             .no_partial_fill_exchange().trading_value_fee_model(0.0, 0.0)
             .tick_size(TICK).lot_size(1.0))
    asset = asset.l3_fifo_queue_model() if l3 else asset.power_prob_queue_model(2.0)
    return HashMapMarketDepthBacktest([asset])


# ---------------------------------------------------------------------------
# Drivers.

@kernel
def read_touch(book, events, i, state):
    """The research callback: best bid and ask after the event (a checksum, so
    the reads are not optimised away)."""
    bid, bid_quantity = best_bid(book, 0)
    ask, ask_quantity = best_ask(book, 0)
    state[0] += bid + bid_quantity + ask + ask_quantity


@kernel
def record_touch(book, events, i, state):
    bid, bid_quantity = best_bid(book, 0)
    ask, ask_quantity = best_ask(book, 0)
    state[i, 0] = bid
    state[i, 1] = bid_quantity
    state[i, 2] = ask
    state[i, 3] = ask_quantity


# The peer's drivers take its jitclass, which Numba cannot cache: plain njit.
@numba.njit
def peer_per_event(backtest):
    total = 0.0
    while backtest.wait_next_feed(False, TIMEOUT) == 2:
        depth = backtest.depth(0)
        total += depth.best_bid_tick + depth.best_ask_tick + depth.best_bid_qty + depth.best_ask_qty
    return total


@numba.njit
def peer_record(backtest, out):
    i = 0
    while backtest.wait_next_feed(False, TIMEOUT) == 2 and i < out.shape[0]:
        depth = backtest.depth(0)
        out[i, 0] = depth.best_bid_tick
        out[i, 1] = depth.best_bid_qty
        out[i, 2] = depth.best_ask_tick
        out[i, 3] = depth.best_ask_qty
        i += 1
    return i


@numba.njit
def peer_bulk(backtest):
    return backtest._goto_end()


def fresh_book():
    return new_book(n_symbols=1, depth=DEPTH, order_capacity=ORDER_CAPACITY)


def time_replay_touch(loops, events):
    elapsed = 0.0
    for _ in range(loops):
        book, state = fresh_book(), np.zeros(1, np.int64)
        started = time.perf_counter()
        replay(book, events, read_touch, state, EVERY_EVENT)
        elapsed += time.perf_counter() - started
    return elapsed


def time_apply_events(loops, events):
    elapsed = 0.0
    for _ in range(loops):
        book = fresh_book()
        started = time.perf_counter()
        apply_events(book, events, 0, len(events))
        elapsed += time.perf_counter() - started
    return elapsed


def time_peer(loops, peer_events, l3, driver):
    elapsed = 0.0
    for _ in range(loops):
        backtest = peer_backtest(peer_events, l3)
        started = time.perf_counter()
        driver(backtest)
        elapsed += time.perf_counter() - started
        backtest.close()
    return elapsed


def check_same_books(events, peer_events, l3):
    """Both libraries' touch after each event of a prefix (compiles every driver too)."""
    prefix = CHECKED_PREFIX
    ours = np.zeros((prefix, 4), np.int64)
    replay(fresh_book(), events[:prefix], record_touch, ours, EVERY_EVENT)
    theirs = np.zeros((prefix, 4))
    backtest = peer_backtest(peer_events[:prefix], l3)
    seen = peer_record(backtest, theirs)
    backtest.close()
    # The peer reports the state after event k on its k-th return; an empty
    # side reads as an extreme tick with quantity 0 there, NO_PRICE here.
    both = (ours[:seen, 1] > 0) & (ours[:seen, 3] > 0)
    rows = np.flatnonzero(both)
    differ = rows[(ours[rows] != theirs[rows].astype(np.int64)).any(axis=1)]
    assert len(rows) > prefix // 2
    if len(differ):
        k = differ[0]
        raise AssertionError(f"ringbook and hftbacktest disagree on the touch after event {k}: "
                             f"{ours[k]} != {theirs[k]} ({events[k]}, {peer_events[k]})")
    for driver, l3_flag, stream in ((peer_per_event, l3, peer_events[:100]),
                                    (peer_bulk, l3, peer_events[:100])):
        backtest = peer_backtest(stream, l3_flag)
        driver(backtest)
        backtest.close()
    apply_events(fresh_book(), events[:100], 0, 100)


check_same_books(L2_EVENTS, L2_PEER, l3=False)
check_same_books(L3_EVENTS, L3_PEER, l3=True)


BENCHMARKS = {
    "ringbook_l2_replay_touch": bench(time_replay_touch, L2_EVENTS, inner_loops=L2_COUNT),
    "ringbook_l2_apply_events": bench(time_apply_events, L2_EVENTS, inner_loops=L2_COUNT),
    "hftbacktest_l2_per_event": bench(time_peer, L2_PEER, False, peer_per_event, inner_loops=L2_COUNT),
    "hftbacktest_l2_bulk": bench(time_peer, L2_PEER, False, peer_bulk, inner_loops=L2_COUNT),
    "ringbook_l3_replay_touch": bench(time_replay_touch, L3_EVENTS, inner_loops=L3_COUNT),
    "ringbook_l3_apply_events": bench(time_apply_events, L3_EVENTS, inner_loops=L3_COUNT),
    "hftbacktest_l3_per_event": bench(time_peer, L3_PEER, True, peer_per_event, inner_loops=L3_COUNT),
    "hftbacktest_l3_bulk": bench(time_peer, L3_PEER, True, peer_bulk, inner_loops=L3_COUNT),
}
COMPARISONS = [
    Comparison("ringbook_l2_replay_touch", "hftbacktest_l2_per_event", at_least=10,
               means="L2 replay reading the touch after every event, vs its per-event replay",
               peer_package="hftbacktest"),
    Comparison("ringbook_l2_replay_touch", "hftbacktest_l2_bulk", at_least=3,
               means="the same, vs its fastest bulk replay", peer_package="hftbacktest"),
    Limit("ringbook_l2_replay_touch", at_most=10e-9, means="100 M events/s: at most 10 ns an event"),
    Comparison("ringbook_l2_apply_events", "hftbacktest_l2_bulk",
               means="L2 apply_events (no reads) vs its bulk replay", peer_package="hftbacktest"),
    Comparison("ringbook_l3_replay_touch", "hftbacktest_l3_per_event", at_least=10,
               means="L3 replay with reads vs its per-event L3 replay", peer_package="hftbacktest"),
    Comparison("ringbook_l3_apply_events", "hftbacktest_l3_bulk",
               means="L3 apply_events vs its bulk L3 replay", peer_package="hftbacktest"),
]


if __name__ == "__main__":
    run_subject("Order books", BENCHMARKS, COMPARISONS)
