"""The engine's data path: the njit loops of the feed and the book consumer, and the engine's own records.

::

    feed thread ──packets──> raw ring ──consumer 0──> book consumer ──> engine ring ─┐
      (TSC stamp at write)            └─consumer 1──> flusher ──> journal "raw"      │
                                                          flusher ──> journal "engine" <┘

- :func:`publish` (feed thread) writes packets (:mod:`ringbook.engine.feeds.packet`)
  into the raw ring, each stamped with the TSC at its write, paced to
  per-packet due times or as fast as the ring takes them; on a full ring it
  waits (``--on-full wait``) or drops the packet and counts it (``drop``).
- :func:`consume` (book consumer thread) decodes each packet, applies its
  events to the book (:func:`ringbook.kernels.replay.apply_event`), records
  the latency ``TSC after apply - TSC at write`` into a
  :class:`~ringbook.kernels.hist.Histogram`, the last-10,000
  :class:`~ringbook.kernels.window.Window` and a run
  :class:`~ringbook.kernels.summary.Summary`, calls a user's ``@njit``
  callback at each message end, and writes the engine's own records into a
  second small ring that the same flusher drains into the ``engine`` stream.

Both loops are nogil njit functions that return to their Python thread only
when done, told to stop, or after a time slice; neither allocates.

Engine records
--------------
Eight little-endian int64 words each, the first always the *raw position*:
how many raw-ring messages (= records of the ``raw`` journal stream) the book
had consumed when it wrote the record. A slot's flags carry the record kind.

===================  ========================================================
kind                 words after the raw position
===================  ========================================================
RECORD_GAP           symbol, sequence, prev_sequence, sequence the book held
RECORD_BOOK_RESET    symbol, side (0: both)
RECORD_DROPS         dropped messages so far, dropped events so far, new drops
RECORD_CHECKPOINT    symbols, levels a side, hash (:func:`book_hash`), events applied
===================  ========================================================
"""

import numpy as np

from ringbook.engine.feeds import packet
from ringbook.kernels import book as books
from ringbook.kernels import hist, summary, window
from ringbook.kernels import ring as kring
from ringbook.kernels.atomics import load_acquire, load_relaxed, spin_pause
from ringbook.kernels.book import top_levels
from ringbook.kernels.clock import monotonic_ns, stamp
from ringbook.kernels.events import (ASK, BID, FLAG_BATCH_END, KIND_CLEAR, KIND_SNAPSHOT_BEGIN)
from ringbook.kernels.jit_options import inline_kernel, kernel, kernel_with_callback
from ringbook.kernels.replay import apply_event
from ringbook.kernels.wait import SPINS, backoff, sleep_ns, yield_now
from ringbook.engine import counters as C

from ringbook.kernels.journal import RECORD_BOOK_RESET, RECORD_CHECKPOINT, RECORD_DATA, RECORD_DROPS, RECORD_GAP

RECORD_KIND_MASK = 0xFF
ENGINE_RECORD_WORDS = 8
ENGINE_SLOT_SIZE = 128

# control words (one writer each, on lines of their own)
STOP = 0          # the feed stops producing (a signal, Engine.stop(), an error)
FEED_DONE = 8     # the feed wrote its last packet: consumers drain, then finish
ABORT = 16        # consumers stop now (a consumer failed: nothing left to drain into)
CONTROL_WORDS = 24

# what a loop returns besides a negative ring or book status
DONE = 0          # drained after the feed finished
SLICE = 1         # its time slice ended: call again
STOPPED = 2       # told to stop (feed) or abort (consumer)

FNV_OFFSET = np.int64(-3750763034362895579)  # 0xcbf29ce484222325
FNV_PRIME = np.int64(1099511628211)


# ---------------------------------------------------------------- feed


@kernel
def publish(slab, producer, buffer, offsets, counts, due_ns, origin_ticks, ticks_per_ns,
            drop, spin, strategy, control, counters):
    """Write packets ``buffer[offsets[i]:offsets[i + 1]]`` into the raw ring, in order.

    Parameters
    ----------
    due_ns : int64[:]
        Per packet, when to write it: ns after ``origin_ticks`` (a TSC stamp);
        empty to write as fast as the ring takes them.
    drop : bool
        On a full ring, drop the packet and count it (else wait).
    spin : bool
        Whether this thread may spin while pacing (a core of its own).

    Returns
    -------
    written : int
        Packets handled (written or dropped), from the first.
    status : int
        :data:`DONE`, :data:`STOPPED`, or a negative ring status.
    """
    packets = counts.shape[0]
    paced = due_ns.shape[0] >= packets
    i = 0
    attempt = 0
    while i < packets:
        if load_relaxed(control, STOP) != 0:
            return i, STOPPED
        if paced:
            due = origin_ticks + np.int64(due_ns[i] * ticks_per_ns)
            now = stamp()
            if now < due:
                remaining_ns = np.int64((due - now) / ticks_per_ns)
                if remaining_ns > 200_000:
                    sleep_ns(remaining_ns - 100_000)  # the timer oversleeps by ~50 us
                elif spin:
                    spin_pause()
                else:
                    yield_now()
                continue
        payload = buffer[offsets[i]:offsets[i + 1]]
        status = kring.try_write(slab, producer, payload, 0, stamp())
        if status == kring.FULL:
            if drop:
                counters[C.DROPPED_MESSAGES] += 1
                counters[C.DROPPED_EVENTS] += counts[i]
                i += 1
            else:
                if attempt == 0:
                    counters[C.FULL_WAITS] += 1
                attempt = backoff(strategy, attempt)
            continue
        if status < 0:
            return i, status
        attempt = 0
        counters[C.FEED_MESSAGES] += 1
        counters[C.FEED_EVENTS] += counts[i]
        counters[C.FEED_BYTES] += offsets[i + 1] - offsets[i]
        i += 1
    return i, DONE


# ---------------------------------------------------------------- book consumer


@kernel
def book_hash(book, prices, quantities):
    """FNV-1a hash of the top ``len(prices)`` levels a side of every symbol of ``book``.

    Words hashed, per symbol and side (bids first): symbol, side, level
    count, then each level's price and quantity, best first.
    """
    value = FNV_OFFSET
    for symbol in range(book.counts.shape[0]):
        for side in (BID, ASK):
            n = top_levels(book, symbol, side, prices, quantities)
            value = _mix(_mix(_mix(value, symbol), side), n)
            for k in range(n):
                value = _mix(_mix(value, prices[k]), quantities[k])
    return value


@inline_kernel
def _mix(value, word):
    for shift in range(0, 64, 8):
        value = (value ^ ((np.int64(word) >> shift) & 0xFF)) * FNV_PRIME
    return value


@inline_kernel
def _engine_record(engine_slab, engine_producer, record, record_bytes, kind, strategy, control, counters):
    """Write ``record`` into the engine ring, waiting for the flusher; False when aborted."""
    attempt = 0
    while True:
        status = kring.try_write(engine_slab, engine_producer, record_bytes, kind, stamp())
        if status == kring.OK:
            counters[C.ENGINE_RECORDS] += 1
            return True
        if status != kring.FULL or load_relaxed(control, ABORT) != 0:
            return False
        attempt = backoff(strategy, attempt)


@inline_kernel
def _report_drops(engine_slab, engine_producer, record, record_bytes, strategy, control, counters):
    """A RECORD_DROPS record when the feed dropped messages since the last one."""
    dropped = load_relaxed(counters, C.DROPPED_MESSAGES)
    if dropped != counters[C.DROPS_REPORTED]:
        record[0] = counters[C.RAW_POSITION]
        _fill_record(record, dropped, load_relaxed(counters, C.DROPPED_EVENTS),
                     dropped - counters[C.DROPS_REPORTED], 0, 0)
        counters[C.DROPS_REPORTED] = dropped
        _engine_record(engine_slab, engine_producer, record, record_bytes, RECORD_DROPS,
                       strategy, control, counters)


@inline_kernel
def _fill_record(record, a, b, c, d, e):
    record[1] = a
    record[2] = b
    record[3] = c
    record[4] = d
    record[5] = e
    record[6] = 0
    record[7] = 0


@inline_kernel
def _consume(slab, consumer, events, event_bytes, book, hist_counts, hist_meta, window_values,
             window_meta, run_summary, ns_per_tick, engine_slab, engine_producer, record, record_bytes,
             checkpoint_every, top_prices, top_quantities, strategy, control, counters, slice_ns,
             callback, state):
    deadline = monotonic_ns() + slice_ns
    since_checkpoint = 0
    while True:
        if load_relaxed(control, ABORT) != 0:
            return STOPPED
        length, flags, write_stamp = kring.peek_header(slab, consumer)
        if length == kring.EMPTY:
            if load_acquire(control, FEED_DONE) != 0:
                if kring.pending(slab, consumer) == 0:
                    # drops after the last message have no message to follow: report them now
                    _report_drops(engine_slab, engine_producer, record, record_bytes, strategy, control,
                                  counters)
                    return DONE
                continue
            if monotonic_ns() >= deadline:
                _report_drops(engine_slab, engine_producer, record, record_bytes, strategy, control, counters)
                return SLICE
            # spin, then park until the feed writes (or rings the doorbell when done or stopped)
            kring.wait_readable(slab, consumer, strategy[SPINS], deadline, slice_ns)
            continue
        if length < 0:
            return length
        position = counters[C.RAW_POSITION] + 1  # raw messages consumed once this one is
        batch_end = False
        if (flags & RECORD_KIND_MASK) == RECORD_DATA:
            size, payload, _, _ = kring.peek(slab, consumer)
            count, _, _ = packet.decode_header(payload, size)
            if count < 0:
                counters[C.BOOK_ERRORS] += 1
                summary.record_error(run_summary, np.int64(write_stamp * ns_per_tick))
            else:
                packet.copy_events(payload, count, event_bytes)
                for i in range(count):
                    status = apply_event(book, events, i)
                    symbol = np.int64(events[i].symbol)
                    if status == books.GAP:
                        counters[C.BOOK_GAPS] += 1
                        record[0] = position
                        _fill_record(record, symbol, events[i].sequence, events[i].prev_sequence,
                                     events[i].prev_sequence - 1, 0)
                        record[4] = -1  # the held sequence is no longer known once applied
                        _engine_record(engine_slab, engine_producer, record, record_bytes, RECORD_GAP,
                                       strategy, control, counters)
                    elif status < 0:
                        counters[C.BOOK_ERRORS] += 1
                    kind = events[i].kind
                    if status >= 0 and (kind == KIND_SNAPSHOT_BEGIN or (kind == KIND_CLEAR and events[i].side == 0)):
                        counters[C.RESETS] += 1
                        record[0] = position
                        _fill_record(record, symbol, 0, 0, 0, 0)
                        _engine_record(engine_slab, engine_producer, record, record_bytes,
                                       RECORD_BOOK_RESET, strategy, control, counters)
                    if events[i].flags & FLAG_BATCH_END:
                        batch_end = True
                        callback(book, events, i, state)
                    else:
                        batch_end = False
                after = stamp()
                latency_ns = np.int64((after - write_stamp) * ns_per_tick)
                hist.record(hist_counts, hist_meta, latency_ns)
                window.record(window_values, window_meta, latency_ns)
                summary.record(run_summary, np.int64(after * ns_per_tick), latency_ns)
                counters[C.LAST_LATENCY_NS] = latency_ns
                counters[C.BOOK_EVENTS] += count
        kring.release(slab, consumer)
        counters[C.RAW_POSITION] = position
        counters[C.BOOK_MESSAGES] += 1
        _report_drops(engine_slab, engine_producer, record, record_bytes, strategy, control, counters)
        since_checkpoint += 1
        if checkpoint_every > 0 and since_checkpoint >= checkpoint_every and batch_end:
            since_checkpoint = 0
            record[0] = position
            _fill_record(record, book.counts.shape[0], top_prices.shape[0],
                         book_hash(book, top_prices, top_quantities), counters[C.BOOK_EVENTS], 0)
            counters[C.CHECKPOINTS] += 1
            _engine_record(engine_slab, engine_producer, record, record_bytes, RECORD_CHECKPOINT,
                           strategy, control, counters)


@kernel
def no_callback(book, events, i, state):
    """The book consumer's callback when the user gives none."""
    return


@kernel
def consume(slab, consumer, events, event_bytes, book, hist_counts, hist_meta, window_values,
            window_meta, run_summary, ns_per_tick, engine_slab, engine_producer, record, record_bytes,
            checkpoint_every, top_prices, top_quantities, strategy, control, counters, slice_ns):
    """The book consumer's loop (see the module docstring); returns :data:`DONE`, :data:`SLICE`,
    :data:`STOPPED` or a negative ring status."""
    return _consume(slab, consumer, events, event_bytes, book, hist_counts, hist_meta, window_values,
                    window_meta, run_summary, ns_per_tick, engine_slab, engine_producer, record,
                    record_bytes, checkpoint_every, top_prices, top_quantities, strategy, control,
                    counters, slice_ns, no_callback, 0)


@kernel_with_callback
def consume_with_callback(slab, consumer, events, event_bytes, book, hist_counts, hist_meta,
                          window_values, window_meta, run_summary, ns_per_tick, engine_slab,
                          engine_producer, record, record_bytes, checkpoint_every, top_prices,
                          top_quantities, strategy, control, counters, slice_ns, callback, state):
    """:func:`consume`, calling ``callback(book, events, i, state)`` (a user's ``@njit``
    function) after each event that ends a message, as :func:`ringbook.kernels.replay.replay` does."""
    return _consume(slab, consumer, events, event_bytes, book, hist_counts, hist_meta, window_values,
                    window_meta, run_summary, ns_per_tick, engine_slab, engine_producer, record,
                    record_bytes, checkpoint_every, top_prices, top_quantities, strategy, control,
                    counters, slice_ns, callback, state)


@kernel
def discard(slab, consumer):
    """Read and throw away every message a ring holds now (the flusher's place when no
    journal is written); how many. The caller waits between calls, never spinning."""
    read = 0
    while True:
        length, _, _ = kring.peek_header(slab, consumer)
        if length < 0:
            return read if length == kring.EMPTY else length
        kring.release(slab, consumer)
        read += 1
