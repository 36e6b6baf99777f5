"""Market data fan-out: one publisher offers every event to many subscribers' rings, each with
its own policy, and each subscriber reads its own ring. njit loops for both sides.

A subscriber's region (made by :mod:`ringbook.engine.fanout` in a sealed memfd):

========  =====  ==============================================================
0         u64    magic ``b"RBFANOUT"`` (:data:`MAGIC`)
8         u32    layout version (:data:`VERSION`)
12        u32    state: :data:`OPEN`, :data:`ENDED` (the publisher finished), :data:`CLOSED`
16        u32    policy: :data:`WAIT` or :data:`DROP`
24        i64    events dropped for this subscriber so far (the publisher writes it)
128       ...    the ring (:mod:`ringbook.kernels.ring`): one record per slot, the slot's
                 stamp holding the record's sequence in the publisher's stream, its flags
                 the record's kind: :data:`RECORD_EVENT` (an :data:`EVENT_DTYPE` event)
                 or :data:`RECORD_TOP` (a :data:`TOP_DTYPE` top of book)
========  =====  ==============================================================

The engine's callback (:func:`publish_event`) offers, at the end of each
exchange message, the message's events and then, for each symbol the message
touched whose best bid or ask (price or size) differs from the last one
published, a top-of-book record. A symbol's first published top is its first
change from an empty book; a subscriber joining later learns a symbol's top at
its next change.

Policies: :data:`WAIT` is lossless, the slowest such subscriber paces the
publisher (a subscriber that stays full past the publisher's wait limit is
closed); :data:`DROP` (the default) loses what does not fit, counts it in
its header, and never slows the others. A subscriber tells a drop from the
count and from the gap in the sequence.
"""

import numpy as np

from ringbook.kernels import book as books
from ringbook.kernels import futex, ring
from ringbook.kernels.atomics import load_acquire, spin_pause, store_release
from ringbook.kernels.clock import monotonic_ns
from ringbook.kernels.events import EVENT_DTYPE, FLAG_BATCH_END
from ringbook.kernels.jit_options import kernel
from ringbook.kernels.status import OK, TIMEOUT

MAGIC = int.from_bytes(b"RBFANOUT", "little")
VERSION = 1
STATE_OFFSET = 12
POLICY_OFFSET = 16
DROPPED_OFFSET = 24
HEADER_BYTES = 128

#: Record kinds (a slot's flags).
RECORD_EVENT = 0
RECORD_TOP = 1

#: A top-of-book record: the best bid and ask of ``symbol`` after the message whose last event
#: carried ``sequence`` and the two times (``NO_PRICE`` and 0 for an empty side).
TOP_DTYPE = np.dtype([
    ("exchange_ns", np.int64),
    ("local_ns", np.int64),
    ("bid_price", np.int64),
    ("bid_quantity", np.int64),
    ("ask_price", np.int64),
    ("ask_quantity", np.int64),
    ("sequence", np.int64),
    ("symbol", np.int32),
], align=True)
#: Bytes of a record, either kind (a slot holds one).
RECORD_BYTES = max(EVENT_DTYPE.itemsize, TOP_DTYPE.itemsize)
#: Columns of the publisher's last-published tops (one row per symbol).
TOP_BID_PRICE, TOP_BID_QUANTITY, TOP_ASK_PRICE, TOP_ASK_QUANTITY = 0, 1, 2, 3

OPEN, ENDED, CLOSED = 0, 1, 2
WAIT, DROP = 1, 2
POLICIES = {"wait": WAIT, "drop": DROP}

# A publisher's table: one int64 row per subscriber.
ACTIVE = 0
POLICY = 1
DROPPED = 2
SENT = 3
REASON = 4           # why the publisher closed it: a ring status, or TIMEOUT for a stalled WAIT subscriber
LEAVING = 5          # set by the engine when the subscriber's socket ended
TABLE_COLUMNS = 8

#: A subscriber's receive found the stream ended (and its ring empty).
STREAM_ENDED = -61


@kernel
def _serving(regions, rings, table, s):
    """Whether subscriber row ``s`` is served. A row the engine marked as leaving is let go
    here, by the publishing thread, so that the engine never replaces a row in use."""
    row = table[s]
    if load_acquire(row, ACTIVE) != 1:
        return False
    if load_acquire(row, LEAVING) != 0:
        store_release(row, ACTIVE, 0)
        return False
    return True


@kernel
def _close(regions, rings, table, s, status):
    table[s, REASON] = status
    regions[s][STATE_OFFSET:STATE_OFFSET + 4].view(np.uint32)[0] = CLOSED
    futex.doorbell_wake(rings[s], ring.DATA_BELL_OFFSET)
    store_release(table[s], ACTIVE, 0)


@kernel
def offer(regions, rings, states, table, records, kind, first_sequence, strategy, wait_timeout_ns):
    """Offer ``records`` (2-D uint8, one record of ``kind`` per row) to every active subscriber.

    Record ``i`` carries sequence ``first_sequence + i``. A :data:`DROP`
    subscriber takes what fits and counts the rest; a :data:`WAIT`
    subscriber is waited for (spin, then parked on its ring's space doorbell)
    up to ``wait_timeout_ns`` per event, then closed. Returns how many
    subscribers were closed in this call.
    """
    closed = 0
    for s in range(table.shape[0]):
        if not _serving(regions, rings, table, s):
            continue
        slab = rings[s]
        state = states[s]
        dropped = 0
        for i in range(records.shape[0]):
            if table[s, POLICY] == WAIT:
                status = ring.write_wait(slab, state, records[i], kind, first_sequence + i, strategy,
                                         wait_timeout_ns)
            else:
                status = ring.try_write(slab, state, records[i], kind, first_sequence + i)
                if status == ring.FULL:
                    dropped += 1
                    continue
            if status != ring.OK:
                _close(regions, rings, table, s, status)
                closed += 1
                break
            table[s, SENT] += 1
        if dropped > 0:
            table[s, DROPPED] += dropped
            regions[s][DROPPED_OFFSET:DROPPED_OFFSET + 8].view(np.int64)[0] = table[s, DROPPED]
    return closed


@kernel
def message_start(events, i):
    """Where the message ending at event ``i`` starts: after the previous ``FLAG_BATCH_END``
    event of ``events``, or at 0."""
    start = i
    while start > 0 and events[start - 1].flags & FLAG_BATCH_END == 0:
        start -= 1
    return start


@kernel
def top_changed(book, symbol, last):
    """Whether the top of ``symbol`` differs from row ``symbol`` of ``last`` (int64[:, 4]);
    if so, the row takes the new top."""
    bid_price, bid_quantity = books.best_bid(book, symbol)
    ask_price, ask_quantity = books.best_ask(book, symbol)
    row = last[symbol]
    if (row[TOP_BID_PRICE] == bid_price and row[TOP_BID_QUANTITY] == bid_quantity
            and row[TOP_ASK_PRICE] == ask_price and row[TOP_ASK_QUANTITY] == ask_quantity):
        return False
    row[TOP_BID_PRICE], row[TOP_BID_QUANTITY] = bid_price, bid_quantity
    row[TOP_ASK_PRICE], row[TOP_ASK_QUANTITY] = ask_price, ask_quantity
    return True


@kernel
def publish_event(book, events, i, state):
    """The engine's book-consumer callback (``callback(book, events, i, state)``, called at
    each message's last event ``i``): offer the message's events, then a top-of-book record
    for each symbol it touched whose top changed. ``state`` is
    :meth:`ringbook.engine.fanout.Publisher.engine_state`'s tuple; its ``counters[0]`` is
    the stream's next sequence.

    The message starts after the previous ``FLAG_BATCH_END`` event in ``events`` (the
    consumer's packet): the parts of a message split over several packets before its last
    one are not offered.
    """
    regions, rings, states, table, strategy, counters, last, top, top_bytes = state
    start = message_start(events, i)
    offer(regions, rings, states, table, events[start:i + 1].view(np.uint8).reshape(i + 1 - start, -1),
          RECORD_EVENT, counters[0], strategy, counters[1])
    counters[0] += i + 1 - start
    for j in range(start, i + 1):
        symbol = events[j].symbol
        if symbol < 0 or symbol >= last.shape[0] or symbol >= book.counts.shape[0]:
            continue
        if not top_changed(book, symbol, last):
            continue
        row = last[symbol]
        record = top[0]
        record.exchange_ns = events[i].exchange_ns
        record.local_ns = events[i].local_ns
        record.bid_price = row[TOP_BID_PRICE]
        record.bid_quantity = row[TOP_BID_QUANTITY]
        record.ask_price = row[TOP_ASK_PRICE]
        record.ask_quantity = row[TOP_ASK_QUANTITY]
        record.sequence = events[i].sequence
        record.symbol = symbol
        offer(regions, rings, states, table, top_bytes, RECORD_TOP, counters[0], strategy, counters[1])
        counters[0] += 1


@kernel
def take(region, slab, state, out, sequences, kinds, spins, timeout_ns, counters):
    """Read up to ``out.shape[0]`` records into the rows of ``out`` (their sequences into
    ``sequences``, their kinds into ``kinds``), waiting for the first: spin, then park on the
    ring's data doorbell.

    ``counters`` (int64[3]): received so far, gaps (events missing between sequences), the next
    sequence expected (-1 before the first: a subscriber may join a stream in its middle). Returns how many were read, :data:`TIMEOUT`, :data:`STREAM_ENDED` (the
    publisher finished or closed this subscriber, nothing left) or a ring status.
    """
    deadline = monotonic_ns() + timeout_ns if timeout_ns >= 0 else 0
    attempt = 0
    while ring.pending(slab, state) == 0:
        if futex.load_u32_at(region, STATE_OFFSET) != OPEN:
            if ring.pending(slab, state) == 0:
                return STREAM_ENDED
            break
        if attempt < spins:
            attempt += 1
            spin_pause()
            continue
        ticket = futex.doorbell_prepare(slab, ring.DATA_BELL_OFFSET)
        if ring.pending(slab, state) != 0 or futex.load_u32_at(region, STATE_OFFSET) != OPEN:
            futex.doorbell_cancel(slab, ring.DATA_BELL_OFFSET)
            continue
        if futex.doorbell_park(slab, ring.DATA_BELL_OFFSET, ticket, deadline, timeout_ns) == TIMEOUT:
            return TIMEOUT
    count = 0
    while count < out.shape[0]:
        length, payload, flags, sequence = ring.peek(slab, state)
        if length == ring.EMPTY:
            break
        if length < 0:
            return length if count == 0 else count
        row = out[count]
        for b in range(min(length, row.size)):
            row[b] = payload[b]
        ring.release(slab, state)
        if counters[2] >= 0 and sequence > counters[2]:  # none expected before the first
            counters[1] += sequence - counters[2]
        counters[2] = sequence + 1
        sequences[count] = sequence
        kinds[count] = flags
        count += 1
    counters[0] += count
    return count if count > 0 else OK
