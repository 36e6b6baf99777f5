"""Events into the book (kernels.replay): sequence rules, callbacks, users' own loops,
and the real Binance capture."""

import gzip
import json

import numba
import numpy as np
import pytest

from ringbook.kernels import book as kb
from ringbook.kernels.book import (ASK, BID, NO_PRICE, best_ask, best_bid, borrow, mid_price, new_book,
                          spread, top_levels)
from ringbook.kernels.events import (EVENT_DTYPE, FLAG_BATCH_END, FLAG_SNAPSHOT, KIND_CLEAR, KIND_L2_SET,
                            KIND_L3_ADD, KIND_NAMES, KIND_SEQUENCE, KIND_SNAPSHOT_BEGIN,
                            KIND_SNAPSHOT_END, KIND_STATUS, KIND_TOP_OF_BOOK, KIND_TRADE,
                            STATUS_HALTED, empty_events, make_events, snapshot_events)
from ringbook.kernels.replay import (EVERY_BATCH, EVERY_EVENT, apply_event, apply_events, replay,
                            replay_events)
from tests.llvm_ir import allocation_calls, function_body
from tests.naive import NaiveBook


def events_from_rows(rows):
    """Events from ``(kind, symbol, side, price, quantity, sequence, prev_sequence, flags)``."""
    events = empty_events(len(rows))
    for index, (kind, symbol, side, price, quantity, sequence, previous, flags) in enumerate(rows):
        events[index] = (0, index, price, quantity, 0, sequence, previous, symbol, kind, side,
                         flags)
    return events


def sequenced_stream(seed, messages):
    """Depth-diff-like messages of 1-3 levels with in-order, stale, duplicate and gapped ids."""
    rng = np.random.default_rng(seed)
    rows = []
    last = 100
    for _ in range(messages):
        roll = rng.random()
        if roll < 0.1:
            sequence = last - int(rng.integers(0, 5))          # stale or duplicate
            previous = sequence - 3
        elif roll < 0.15:
            sequence = last + 10                                # a gap
            previous = last + 5
            last = sequence
        else:
            sequence = last + 3
            previous = last
            last = sequence
        size = int(rng.integers(1, 4))
        for level in range(size):
            side = BID if rng.random() < 0.5 else ASK
            price = 100 - int(rng.integers(1, 6)) * side
            quantity = int(rng.integers(0, 4))
            flags = FLAG_BATCH_END if level == size - 1 else 0
            rows.append((KIND_L2_SET, int(rng.integers(2)), side, price, quantity, sequence,
                         previous, flags))
    return events_from_rows(rows)


def test_sequence_rules_match_the_naive_book():
    events = sequenced_stream(seed=11, messages=600)
    book = new_book(n_symbols=2, depth=16, order_capacity=16)
    naive = NaiveBook()
    expected = {"ok": kb.OK, "gap": kb.GAP, "stale": kb.STALE}
    for index in range(len(events)):
        assert apply_event(book, events, index) == expected[naive.apply(events[index])]
    for symbol in (0, 1):
        for side in (BID, ASK):
            prices, quantities = np.zeros(16, np.int64), np.zeros(16, np.int64)
            n = top_levels(book, symbol, side, prices, quantities)
            assert list(zip(prices[:n].tolist(), quantities[:n].tolist())) == \
                naive.sorted_levels(symbol, side)
        assert book.sequences[symbol] == naive.sequences.get(symbol, 0)
    assert book.stats[:, kb.STAT_STALE].sum() == naive.stale > 0
    assert book.stats[:, kb.STAT_GAPS].sum() == naive.gaps > 0


def test_a_message_is_stale_as_a_whole_and_counted_once():
    events = events_from_rows([
        (KIND_L2_SET, 0, BID, 10, 1, 5, 0, 0),
        (KIND_L2_SET, 0, ASK, 11, 1, 5, 0, FLAG_BATCH_END),   # message 5: two levels
        (KIND_L2_SET, 0, BID, 10, 7, 5, 0, 0),                # message 5 again: stale
        (KIND_L2_SET, 0, ASK, 11, 7, 5, 0, FLAG_BATCH_END),
        (KIND_L2_SET, 0, BID, 9, 2, 0, 0, FLAG_BATCH_END),    # unsequenced: applied
        (KIND_TOP_OF_BOOK, 0, BID, 10, 1, 5, 0, FLAG_BATCH_END),   # a check, never stale
        (KIND_L2_SET, 0, BID, 10, 3, 9, 7, FLAG_BATCH_END),   # follows 7, book holds 5: gap
    ])
    book = new_book(n_symbols=1, depth=8, order_capacity=16)
    statuses = [apply_event(book, events, index) for index in range(len(events))]
    assert statuses == [kb.OK, kb.OK, kb.STALE, kb.STALE, kb.OK, kb.OK, kb.GAP]
    assert best_bid(book, 0) == (10, 3) and best_ask(book, 0) == (11, 1)
    assert book.stats[0, kb.STAT_STALE] == 1 and book.stats[0, kb.STAT_GAPS] == 1
    assert book.sequences[0] == 9


def test_a_sequence_event_moves_the_sequence_on_and_changes_no_level():
    events = events_from_rows([
        (KIND_L2_SET, 0, BID, 10, 1, 5, 0, FLAG_BATCH_END),
        (KIND_SEQUENCE, 0, 0, 0, 0, 6, 5, FLAG_BATCH_END),     # an empty diff: follows 5
        (KIND_SEQUENCE, 0, 0, 0, 0, 6, 5, FLAG_BATCH_END),     # again: stale
        (KIND_L2_SET, 0, ASK, 12, 2, 7, 6, FLAG_BATCH_END),    # follows the empty diff
        (KIND_SEQUENCE, 0, 0, 0, 0, 9, 8, FLAG_BATCH_END),     # follows 8: a gap
        (KIND_SEQUENCE, 0, 0, 0, 0, 0, 0, FLAG_BATCH_END),     # unsequenced: nothing to do
    ])
    book = new_book(n_symbols=1, depth=8, order_capacity=16)
    naive = NaiveBook()
    expected = {"ok": kb.OK, "gap": kb.GAP, "stale": kb.STALE}
    statuses = [apply_event(book, events, index) for index in range(len(events))]
    assert statuses == [expected[naive.apply(event)] for event in events]
    assert statuses == [kb.OK, kb.OK, kb.STALE, kb.OK, kb.GAP, kb.OK]
    assert book.sequences[0] == naive.sequences[0] == 9
    assert best_bid(book, 0) == (10, 1) and best_ask(book, 0) == (12, 2)
    assert book.stats[0, kb.STAT_STALE] == 1 and book.stats[0, kb.STAT_GAPS] == 1
    assert KIND_NAMES[KIND_SEQUENCE] == "sequence"


def test_snapshot_clear_status_and_trade_events():
    events = events_from_rows([
        (KIND_L3_ADD, 0, BID, 50, 4, 0, 0, FLAG_BATCH_END),
        (KIND_SNAPSHOT_BEGIN, 0, 0, 0, 0, 0, 0, FLAG_SNAPSHOT),
        (KIND_L2_SET, 0, BID, 10, 1, 0, 0, FLAG_SNAPSHOT),
        (KIND_L2_SET, 0, ASK, 12, 2, 0, 0, FLAG_SNAPSHOT),
        (KIND_SNAPSHOT_END, 0, 0, 0, 0, 40, 0, FLAG_SNAPSHOT | FLAG_BATCH_END),
        (KIND_L2_SET, 0, ASK, 12, 5, 40, 39, FLAG_BATCH_END),     # already in the snapshot
        (KIND_TRADE, 0, BID, 12, 1, 0, 0, FLAG_BATCH_END),
        (KIND_STATUS, 0, 0, 0, STATUS_HALTED, 0, 0, FLAG_BATCH_END),
        (KIND_CLEAR, 0, ASK, 0, 0, 41, 40, FLAG_BATCH_END),
    ])
    book = new_book(n_symbols=1, depth=8, order_capacity=16)
    assert replay_events(book, events) == len(events)
    assert best_bid(book, 0) == (10, 1) and best_ask(book, 0) == (NO_PRICE, 0)
    assert book.sequences[0] == 41 and book.trading_status[0] == STATUS_HALTED
    assert book.order_counts[-1] == 0 and book.stats[0, kb.STAT_STALE] == 1


#: The columns :func:`record_touch` fills.
BID_PRICE, ASK_PRICE, CALLED, LEVELS, BID_QUANTITY, ASK_QUANTITY, SEQUENCE, TOUCH_COLUMNS = range(8)


@numba.njit
def record_touch(book, events, i, state):
    """What a callback sees after event ``i``: row ``i`` of ``state`` gets the best bid and ask,
    1 in ``CALLED``, the number of levels on both sides and the book's sequence, all of the
    event's symbol. The one callback of the replay tests: each new callback compiles the
    replay loop again."""
    symbol = events[i].symbol
    state[i, BID_PRICE], state[i, BID_QUANTITY] = best_bid(book, symbol)
    state[i, ASK_PRICE], state[i, ASK_QUANTITY] = best_ask(book, symbol)
    state[i, CALLED] = 1
    state[i, LEVELS] = kb.level_count(book, symbol, BID) + kb.level_count(book, symbol, ASK)
    state[i, SEQUENCE] = book.sequences[symbol]


def touch_state(events):
    return np.zeros((len(events), TOUCH_COLUMNS), np.int64)


@pytest.mark.parametrize("every", [EVERY_EVENT, EVERY_BATCH])
def test_replay_calls_the_callback_after_each_event_or_message(every):
    events = sequenced_stream(seed=4, messages=200)
    book = new_book(n_symbols=2, depth=16, order_capacity=16)
    state = touch_state(events)
    assert replay(book, events, record_touch, state, every) == (len(events), kb.OK)
    reference = new_book(n_symbols=2, depth=16, order_capacity=16)
    for index in range(len(events)):
        apply_event(reference, events, index)
        called = every == EVERY_EVENT or bool(events[index]["flags"] & FLAG_BATCH_END)
        assert state[index, CALLED] == called
        if called:
            symbol = int(events[index]["symbol"])
            assert tuple(state[index, [BID_PRICE, BID_QUANTITY]]) == best_bid(reference, symbol)
            assert tuple(state[index, [ASK_PRICE, ASK_QUANTITY]]) == best_ask(reference, symbol)
            assert state[index, SEQUENCE] == reference.sequences[symbol]


@numba.njit
def mid_and_spread_series(book, events, symbol, mids, spreads):
    """A user's own loop: apply each event, read the book, keep a series."""
    book = borrow(book)
    n = 0
    for i in range(events.shape[0]):
        status = apply_event(book, events, i)
        if status < 0:
            return -1
        if events[i].symbol == symbol and (events[i].flags & FLAG_BATCH_END) != 0:
            mids[n] = mid_price(book, symbol)
            spreads[n] = spread(book, symbol)
            n += 1
    return n


def test_a_users_own_njit_loop_sees_what_replay_sees():
    events = sequenced_stream(seed=8, messages=300)
    book = new_book(n_symbols=2, depth=16, order_capacity=16)
    mids, spreads = np.zeros(len(events)), np.zeros(len(events), np.int64)
    n = mid_and_spread_series(book, events, 1, mids, spreads)
    reference = new_book(n_symbols=2, depth=16, order_capacity=16)
    expected = []
    for index in range(len(events)):
        apply_event(reference, events, index)
        if events[index]["symbol"] == 1 and events[index]["flags"] & FLAG_BATCH_END:
            expected.append((mid_price(reference, 1), spread(reference, 1)))
    assert n == len(expected) > 0
    np.testing.assert_array_equal(mids[:n], [mid for mid, _ in expected])
    np.testing.assert_array_equal(spreads[:n], [gap for _, gap in expected])


def test_an_error_stops_the_replay_and_the_wrapper_names_the_event():
    events = events_from_rows([(KIND_L2_SET, 0, BID, 10, 1, 0, 0, FLAG_BATCH_END),
                          (KIND_L2_SET, 0, 0, 10, 1, 0, 0, FLAG_BATCH_END),    # no side
                          (KIND_L2_SET, 0, ASK, 12, 1, 0, 0, FLAG_BATCH_END)])
    book = new_book(n_symbols=1, depth=8, order_capacity=16)
    assert apply_events(book, events, 0, 3) == (1, kb.INVALID_SIDE)
    with pytest.raises(kb.BookError, match="event 1 .*side is neither"):
        replay_events(book, events)
    events[1]["symbol"] = 3
    assert apply_event(book, events, 1) == kb.BAD_SYMBOL
    events[1]["symbol"], events[1]["kind"] = 0, 99
    assert apply_event(book, events, 1) == kb.BAD_KIND
    assert apply_event(book, events, 3) == kb.BAD_INDEX
    with pytest.raises(TypeError):
        replay_events(book, np.zeros(3, np.int64))
    assert best_ask(book, 0) == (NO_PRICE, 0)


BOOK_TYPE = numba.typeof(new_book(n_symbols=1, depth=1, order_capacity=16))
EVENTS_TYPE = numba.typeof(empty_events(1))


@pytest.mark.slow
def test_replay_kernels_allocate_nothing():
    """apply_events inlines apply_event's body: its IR covers every event kind."""
    signature = (BOOK_TYPE, EVENTS_TYPE, numba.types.int64, numba.types.int64)
    assert allocation_calls(apply_events, signature) == []


@pytest.mark.parametrize("kernel, signature", [
    (apply_event, (BOOK_TYPE, EVENTS_TYPE, numba.types.int64)),
    (apply_events, (BOOK_TYPE, EVENTS_TYPE, numba.types.int64, numba.types.int64)),
])
@pytest.mark.slow
def test_the_l2_path_pays_no_reference_counting(kernel, signature):
    """Atomic reference counting per event would cost more than the update itself."""
    body = function_body(kernel, signature)
    assert "call" in body
    assert [line for line in body.splitlines() if "NRT_incref" in line or "NRT_decref" in line] == []


# ---------------------------------------------------------------------------
# The real Binance capture: every bookTicker whose update id equals the last
# applied diff's u must equal the book's best bid and ask.

def decimal_8(text):
    whole, _, fraction = text.partition(".")
    assert len(fraction) == 8
    return int(whole + fraction)


def read_binance(path):
    """A minimal reader for this test (engine.feeds has the real one)."""
    rows, early_diffs = [], []
    synced = False
    for line in gzip.open(path, "rt"):
        local_ns, _, text = line.partition(" ")
        message = json.loads(text)
        data = message.get("data", message)
        if "lastUpdateId" in data:
            rows.append((KIND_SNAPSHOT_BEGIN, 0, 0, 0, 0, 0, FLAG_SNAPSHOT))
            for side, key in ((BID, "bids"), (ASK, "asks")):
                for price, quantity in data[key]:
                    rows.append((KIND_L2_SET, side, decimal_8(price), decimal_8(quantity), 0, 0,
                                 FLAG_SNAPSHOT))
            rows.append((KIND_SNAPSHOT_END, 0, 0, 0, data["lastUpdateId"], 0,
                         FLAG_SNAPSHOT | FLAG_BATCH_END))
            rows.extend(early_diffs)      # diffs that came before the snapshot, buffered
            synced = True
        elif data.get("e") == "depthUpdate":
            levels = [(BID, p, q) for p, q in data["b"]] + [(ASK, p, q) for p, q in data["a"]]
            diff = [(KIND_L2_SET, side, decimal_8(p), decimal_8(q), data["u"], data["U"] - 1,
                     FLAG_BATCH_END if index == len(levels) - 1 else 0)
                    for index, (side, p, q) in enumerate(levels)]
            (rows if synced else early_diffs).extend(diff)
        elif "A" in data and synced:                 # bookTicker
            rows.append((KIND_TOP_OF_BOOK, BID, decimal_8(data["b"]), decimal_8(data["B"]),
                         data["u"], 0, 0))
            rows.append((KIND_TOP_OF_BOOK, ASK, decimal_8(data["a"]), decimal_8(data["A"]),
                         data["u"], 0, FLAG_BATCH_END))
    events = np.zeros(len(rows), EVENT_DTYPE)
    columns = list(zip(*rows))
    for name, values in zip(("kind", "side", "price", "quantity", "sequence", "prev_sequence",
                             "flags"), columns):
        events[name] = values
    return events


def check_book_tickers(events, touch, ticker_ids, tickers):
    """Compare the book after each applied diff (``touch``: :func:`record_touch`'s rows) with the
    bookTicker of the same update id: [checks, mismatches, first mismatch index]."""
    applied = ((touch[:, CALLED] == 1) & (events["kind"] == KIND_L2_SET)
               & (events["sequence"] == touch[:, SEQUENCE]))   # not a diff, or a stale one: skip
    rows = np.searchsorted(ticker_ids, events["sequence"])
    found = rows < len(ticker_ids)
    found[found] = ticker_ids[rows[found]] == events["sequence"][found]
    checked = np.flatnonzero(applied & found)
    seen = touch[checked][:, [BID_PRICE, BID_QUANTITY, ASK_PRICE, ASK_QUANTITY]]
    wrong = checked[(seen != tickers[rows[checked]]).any(axis=1)]
    return [len(checked), len(wrong), int(wrong[0]) if len(wrong) else -1]


def test_binance_book_equals_every_matching_book_ticker(shared_data):
    events = read_binance(shared_data / "binance" / "spot_btcusdt_20240808.gz")
    is_ticker = events["kind"] == KIND_TOP_OF_BOOK
    bids = events[is_ticker & (events["side"] == BID)]
    asks = events[is_ticker & (events["side"] == ASK)]
    ticker_ids, rows = np.unique(bids["sequence"], return_index=True)
    tickers = np.stack([bids["price"][rows], bids["quantity"][rows],
                        asks["price"][rows], asks["quantity"][rows]], axis=1)
    book = new_book(n_symbols=1, depth=2048, order_capacity=16)
    diffs = events[~is_ticker]
    touch = touch_state(diffs)
    replay_events(book, diffs, record_touch, touch, EVERY_BATCH)
    assert check_book_tickers(diffs, touch, ticker_ids, tickers) == [564, 0, -1]
    assert book.stats[0, kb.STAT_GAPS] == 0
    assert book.stats[0, kb.STAT_STALE] > 0      # buffered diffs older than the snapshot


def subscribed_depth_feed(seed, messages, keep):
    """What an exchange with a subscribed depth of ``keep`` levels sends.

    It holds a full book, and per message publishes the changes of its best
    ``keep`` levels a side: a level pushed out of view is not deleted in the
    feed, and one that scrolls into view comes as an insert. Returns the
    messages (a snapshot first) and the view after each.
    """
    rng = np.random.default_rng(seed)
    full = {BID: {}, ASK: {}}

    def view():
        return {side: dict(sorted(full[side].items(), reverse=side == BID)[:keep])
                for side in (BID, ASK)}

    for side in (BID, ASK):
        for distance in range(1, 3 * keep):
            full[side][1000 - side * distance] = int(rng.integers(1, 9))
    shown = view()
    messages_out = [snapshot_events(0, list(shown[BID]), list(shown[BID].values()),
                                    list(shown[ASK]), list(shown[ASK].values()), sequence=1)]
    views = [shown]
    sequence = 1
    for _ in range(messages):
        for _ in range(int(rng.integers(1, 4))):
            side = BID if rng.random() < 0.5 else ASK
            price = 1000 - side * int(rng.geometric(0.1))
            if rng.random() < 0.4:
                full[side].pop(price, None)
            else:
                full[side][price] = int(rng.integers(1, 9))
        before, shown = shown, view()
        changes = [(side, price, quantity) for side in (BID, ASK)
                   for price, quantity in shown[side].items()
                   if before[side].get(price) != quantity]
        changes += [(side, price, 0) for side in (BID, ASK)
                    for price in before[side] if price not in full[side]]
        if changes:
            sides, prices, quantities = zip(*changes)
            messages_out.append(make_events(KIND_L2_SET, sides, prices, quantities,
                                               sequence=sequence + 1, prev_sequence=sequence))
            views.append(shown)
            sequence += 1
    return messages_out, views


def book_view(book, keep):
    return {side: dict(zip(*(array.tolist() for array in kb.levels(book, 0, side, keep + 5))))
            for side in (BID, ASK)}


@pytest.mark.parametrize("keep, ladder", [(1, 1024), (5, 1024), (10, 4), (25, 8)])
def test_max_levels_follows_a_feed_of_the_best_levels(keep, ladder):
    messages, views = subscribed_depth_feed(seed=keep, messages=400, keep=keep)
    book = new_book(n_symbols=1, depth=4 * keep + 8, order_capacity=16, ladder=ladder,
                    max_levels=keep)
    naive = NaiveBook()
    naive.max_levels[0] = keep
    for events, expected in zip(messages, views):
        assert apply_events(book, events, 0, len(events)) == (len(events), kb.OK)
        for event in events:
            naive.apply(event)
        assert book_view(book, keep) == expected
        for side in (BID, ASK):
            assert naive.sorted_levels(0, side) == sorted(expected[side].items(),
                                                          reverse=side == BID)
    assert book.stats.sum() == 0

    # The same stream, without max_levels: levels that left the exchange's view linger.
    untruncated = new_book(n_symbols=1, depth=4 * keep + 8, order_capacity=16, ladder=ladder)
    replay_events(untruncated, np.concatenate(messages))
    assert book_view(untruncated, keep) != views[-1]


def test_replay_truncates_after_each_message_not_within_it():
    # Three bids in one message with max_levels 2: the callback after each event
    # sees the message build up; the book is cut to 2 at its end.
    events = make_events(KIND_L2_SET, BID, [100, 99, 98], [1, 1, 1])
    book = new_book(n_symbols=1, depth=8, order_capacity=16, max_levels=2)
    state = touch_state(events)
    assert replay(book, events, record_touch, state, EVERY_EVENT) == (3, kb.OK)
    assert state[:, LEVELS].tolist() == [1, 2, 2]
    assert kb.levels(book, 0, BID, 5)[0].tolist() == [100, 99]
    with pytest.raises(ValueError, match="max_levels"):
        new_book(n_symbols=1, max_levels=-1)
