"""Building events (kernels.events): make_events against a loop, snapshots, instrument lists."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringbook.kernels import book as kb
from ringbook.kernels.events import (ASK, BID, EVENT_DTYPE, FLAG_BATCH_END, FLAG_SNAPSHOT,
                                     KIND_L2_SET, KIND_L3_ADD, KIND_SNAPSHOT_BEGIN,
                                     KIND_SNAPSHOT_END, KIND_TRADE, Instruments, make_events,
                                     snapshot_events)
from ringbook.kernels.replay import replay_events
from tests.naive import NaiveBook, naive_make_events

FIELDS = [name for name in EVENT_DTYPE.names]


def as_dicts(events):
    return [{name: int(event[name]) for name in FIELDS} for event in events]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 30).flatmap(lambda n: st.tuples(
    st.lists(st.sampled_from([BID, ASK]), min_size=n, max_size=n),
    st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n),
    st.lists(st.integers(0, 2**40), min_size=n, max_size=n),
    st.lists(st.integers(0, 3), min_size=n, max_size=n) | st.none(),
    st.integers(0, 2**31 - 1), st.integers(0, 2**62), st.sampled_from([0, FLAG_SNAPSHOT]))))
def test_make_events_matches_a_loop(columns):
    sides, prices, quantities, message, symbol, sequence, flags = columns
    if message is not None:
        message = np.sort(message)
    events = make_events(KIND_L2_SET, sides, prices, quantities, symbol=symbol,
                         sequence=sequence, prev_sequence=sequence - 1, flags=flags,
                         message=message)
    expected = naive_make_events(message=message, kind=KIND_L2_SET, side=sides, price=prices,
                                 quantity=quantities, symbol=symbol, sequence=sequence,
                                 prev_sequence=sequence - 1, flags=flags, order_id=0,
                                 exchange_ns=0, local_ns=0)
    assert as_dicts(events) == expected


def test_make_events_marks_the_end_of_each_message():
    events = make_events(KIND_TRADE, BID, [10, 11, 12, 13], 1, message=[7, 7, 8, 9])
    assert (events["flags"] & FLAG_BATCH_END).tolist() == [0, 1, 1, 1]
    one = make_events(KIND_L3_ADD, ASK, 100, 5, order_id=[1, 2])
    assert one["order_id"].tolist() == [1, 2] and one["flags"].tolist() == [0, FLAG_BATCH_END]
    assert len(make_events(KIND_TRADE, 0, 1, 1)) == 1
    assert len(make_events(KIND_L2_SET, BID, [], [])) == 0


@pytest.mark.parametrize("arguments, error, match", [
    (dict(kind=KIND_L2_SET, side=[1, 0], price=[1, 2], quantity=1), ValueError, r"side\[1\] = 0"),
    (dict(kind=KIND_TRADE, side=2, price=1, quantity=1), ValueError, r"side\[0\] = 2"),
    (dict(kind=99, side=1, price=1, quantity=1), ValueError, r"kind\[0\] = 99"),
    (dict(kind=KIND_L2_SET, side=1, price=[1, 2], quantity=[1, 2, 3]), ValueError, "lengths"),
    (dict(kind=KIND_L2_SET, side=1, price=[1.5], quantity=1), TypeError, "price: integers"),
    (dict(kind=KIND_L2_SET, side=1, price=1, quantity=1, symbol=-1), ValueError, "symbol = -1"),
    (dict(kind=KIND_L2_SET, side=1, price=[2**63], quantity=1), (ValueError, OverflowError),
     "price"),
    (dict(kind=KIND_L2_SET, side=1, price=[1, 2], quantity=1, message=[1]), ValueError,
     "lengths"),
])
def test_make_events_names_the_bad_field(arguments, error, match):
    with pytest.raises(error, match=match):
        make_events(**arguments)


def test_a_snapshot_replaces_the_book_and_sets_its_sequence():
    book = kb.new_book(n_symbols=2, depth=16, order_capacity=16)
    naive = NaiveBook()
    diff = make_events(KIND_L2_SET, [BID, ASK, BID], [90, 120, 95], [1, 1, 1], symbol=1,
                       sequence=5, prev_sequence=4)
    snapshot = snapshot_events(1, [100, 99], [3, 4], [101], [2], sequence=10)
    late = make_events(KIND_L2_SET, BID, 100, 0, symbol=1, sequence=9, prev_sequence=8)
    after = make_events(KIND_L2_SET, ASK, 102, 6, symbol=1, sequence=11, prev_sequence=10)
    stream = np.concatenate([diff, snapshot, late, after])
    assert snapshot["kind"].tolist() == [KIND_SNAPSHOT_BEGIN, 1, 1, 1, KIND_SNAPSHOT_END]
    assert (snapshot["flags"] == FLAG_SNAPSHOT | np.array([0, 0, 0, 0, FLAG_BATCH_END])).all()
    replay_events(book, stream)
    for event in stream:
        naive.apply(event)
    assert book.sequences[1] == naive.sequences[1] == 11
    assert book.stats[1, kb.STAT_STALE] == naive.stale == 1        # the late diff
    for side in (BID, ASK):
        prices, quantities = kb.levels(book, 1, side, 10)
        assert list(zip(prices.tolist(), quantities.tolist())) == naive.sorted_levels(1, side)
    assert kb.levels(book, 1, BID, 10)[0].tolist() == [100, 99]
    with pytest.raises(ValueError, match="differ in length"):
        snapshot_events(0, [1, 2], [1], [], [])


def test_instruments_from_an_exchange_instrument_list():
    listings = [
        {"instId": "BTC-USDT", "tickSz": "0.1", "lotSz": "0.00000001"},
        {"instId": "ETH-USDT", "tickSz": "0.01000000", "lotSz": "0.000001"},
        {"instId": "DOGE-USDT", "tickSz": "0.00001", "lotSz": "10"},
    ]
    instruments = Instruments.from_listings(listings, name="instId", tick="tickSz", lot="lotSz")
    table = instruments.table[:3]
    assert table["price_scale"].tolist() == [1, 2, 5]
    assert table["size_scale"].tolist() == [8, 6, 0]
    assert table["tick"].tolist() == [1, 1, 1]
    assert instruments.id_of("DOGE-USDT") == 2
    assert Instruments().intern_listing("X", "0.25", "0.5") == 0
    big = Instruments.from_listings([{"symbol": f"S{i}", "tick_size": "5", "lot_size": "1"}
                                     for i in range(3000)])
    assert len(big) == 3000 and big.table["tick"][2999] == 5


@pytest.mark.parametrize("listing, match", [
    ({"instId": "A", "tickSz": "0.1", "lotSz": "1e-8"}, r"entry 1 \('A'\), key 'lotSz'"),
    ({"instId": "A", "tickSz": "", "lotSz": "1"}, r"entry 1 \('A'\), key 'tickSz'"),
    ({"instId": "A", "lotSz": "1"}, r"entry 1 \('A'\): no key 'tickSz'"),
    ({"tickSz": "1", "lotSz": "1"}, r"entry 1: no key 'instId'"),
])
def test_a_bad_instrument_listing_is_named(listing, match):
    good = {"instId": "B", "tickSz": "1", "lotSz": "1"}
    with pytest.raises(ValueError, match=match):
        Instruments.from_listings([good, listing], name="instId", tick="tickSz", lot="lotSz")
