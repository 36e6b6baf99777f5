"""The loops on each side of ``bm_ring.py``'s measurements, and its consumer process.

Kept apart from the benchmark script so that a ``multiprocessing`` spawn child
imports only this (the script itself is re-run by pyperf's workers).

Every wait here is bounded: a spin that runs past its limit returns a failure
instead of hanging, and waits between runs block on a pipe.
"""

import os

import numpy as np

from ringbook.kernels import ring
from ringbook.kernels.atomics import load_acquire, spin_pause, store_release
from ringbook.kernels.clock import monotonic_ns, stamp
from ringbook.kernels.hist import record
from ringbook.kernels.jit_options import kernel
from ringbook.kernels.wait import backoff, wait_strategy

MESSAGE_BYTES = 32
BATCH = 64
#: Throughput runs have one spinning thread per core (two on two cores: the
#: rule holds), so they spin longer than the default before yielding: a
#: consumer asleep for the kernel's 50 us timer slack would measure the sleep.
THROUGHPUT_STRATEGY = wait_strategy(spins=20_000, yields=100)
#: A latency run's spin gives up after this long (a stuck partner, not a slow one).
SPIN_LIMIT_NS = 2_000_000_000


#: The cores this process may use, read before any thread is pinned.
CORES = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()


def pin(core):
    """Run the calling thread on ``core`` only, when this machine has it; return the old set."""
    if core not in CORES or len(CORES) < 2:
        return None
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    return previous


def unpin(previous):
    if previous is not None:
        os.sched_setaffinity(0, previous)


# Throughput: one side each.

@kernel
def produce(slab, producer, payload, count, strategy):
    """Write ``count`` messages, one call each; 0, or the status that stopped it."""
    for index in range(count):
        payload[0] = index & 255
        attempt = 0
        while True:
            status = ring.try_write(slab, producer, payload)
            if status == ring.OK:
                break
            if status != ring.FULL:
                return status
            attempt = backoff(strategy, attempt)
    return 0


@kernel
def produce_batches(slab, producer, payloads, lengths, count, strategy):
    """Write ``count`` messages with :func:`ringbook.kernels.ring.write_batch`; 0, or a status."""
    written = 0
    attempt = 0
    while written < count:
        batch = min(count - written, payloads.shape[0])
        done = ring.write_batch(slab, producer, payloads[:batch], lengths, 0, 0)
        if done < 0:
            return done
        if done == 0:
            attempt = backoff(strategy, attempt)
        else:
            written += done
            attempt = 0
    return 0


@kernel
def consume(slab, consumer, out, count, strategy):
    """Read ``count`` messages, one call each; the sum of their first bytes, or a status."""
    total = 0
    received = 0
    attempt = 0
    while received < count:
        length = ring.try_read(slab, consumer, out)
        if length >= 0:
            total += out[0]
            received += 1
            attempt = 0
        elif length == ring.EMPTY:
            attempt = backoff(strategy, attempt)
        else:
            return length
    return total


@kernel
def consume_batches(slab, consumer, payloads, lengths, count, strategy):
    """Read ``count`` messages with :func:`ringbook.kernels.ring.read_batch`; a checksum, or a status."""
    total = 0
    received = 0
    attempt = 0
    while received < count:
        batch = min(count - received, payloads.shape[0])
        done = ring.read_batch(slab, consumer, payloads[:batch], lengths)
        if done < 0:
            return done
        if done == 0:
            attempt = backoff(strategy, attempt)
        else:
            total += payloads[0, 0]
            received += done
            attempt = 0
    return total


@kernel
def consume_and_trail(slab, leading, trailing, out, payloads, lengths, count, strategy):
    """Read ``count`` messages as two consumers in one thread: ``leading`` one
    call each, ``trailing`` in batches once ``leading`` is a batch ahead, as a
    book consumer and a disk flusher would. A checksum, or a status."""
    total = 0
    led = 0
    trailed = 0
    attempt = 0
    batch = payloads.shape[0]
    while trailed < count:
        progressed = False
        if led < count:
            length = ring.try_read(slab, leading, out)
            if length >= 0:
                total += out[0]
                led += 1
                progressed = True
            elif length != ring.EMPTY:
                return length
        if led - trailed >= batch or led == count:
            done = ring.read_batch(slab, trailing, payloads[:min(count - trailed, batch)], lengths)
            if done < 0:
                return done
            trailed += done
            progressed = progressed or done > 0
        if progressed:
            attempt = 0
        else:
            attempt = backoff(strategy, attempt)
    return total


# Both sides in one thread.

@kernel
def write_then_read(slab, producer, consumer, payload, out, count):
    """``count`` rounds of one write and one read; the sum of the lengths read."""
    total = 0
    for index in range(count):
        payload[0] = index & 255
        ring.try_write(slab, producer, payload)
        total += ring.try_read(slab, consumer, out)
    return total


@kernel
def write_then_read_batches(slab, producer, consumer, payloads, lengths, outs, out_lengths, batches):
    """``batches`` rounds of one batch write and one batch read; the messages read."""
    total = 0
    for _ in range(batches):
        ring.write_batch(slab, producer, payloads, lengths, 0, 0)
        total += ring.read_batch(slab, consumer, outs, out_lengths)
    return total


# One-way latency: one message in flight at a time.

@kernel
def _spin(spins, deadline):
    """Round ``spins`` of a bounded spin: the deadline (set at the first check), or -1 once past it.

    Bounded by time, not rounds: under a hypervisor a pause may cost a VM exit.
    """
    spin_pause()
    if spins & 1023 == 1023:
        now = monotonic_ns()
        if deadline == 0:
            return now + SPIN_LIMIT_NS
        if now > deadline:
            return -1
    return deadline


#: Flag of the message that ends a latency run.
STOP = 1


@kernel
def latency_producer(slab, producer, payload, count, budget_ns):
    """Write up to ``count`` stamped messages, each once the previous one was read.

    Stops early when ``budget_ns`` has passed (on a busy machine a partner off
    its core takes a scheduler tick to answer), then sends a :data:`STOP`
    message. Returns the messages sent, or -1 on a stuck spin.
    """
    ends = monotonic_ns() + budget_ns
    sent = 0
    for index in range(count + 1):
        last = index == count or monotonic_ns() > ends
        if ring.try_write(slab, producer, payload, STOP if last else 0, stamp()) != ring.OK:
            return -1
        spins = 0
        deadline = 0
        while ring.consumer_position(slab, 0) < producer[ring.STATE_POSITION]:
            deadline = _spin(spins, deadline)
            spins += 1
            if deadline < 0:
                return -1
        if last:
            break
        sent += 1
    return sent


@kernel
def latency_consumer(slab, consumer, counts, meta):
    """Record ``stamp() - stamp at write`` of each message until :data:`STOP`; False on a stuck spin."""
    while True:
        spins = 0
        deadline = 0
        while True:
            length, flags, written_at = ring.peek_header(slab, consumer)
            if length >= 0:
                break
            deadline = _spin(spins, deadline)
            spins += 1
            if deadline < 0:
                return False
        # Received when peek_header returns it, as pong's stamp follows its load.
        received_at = stamp()
        ring.release(slab, consumer)
        if flags == STOP:
            return True
        record(counts, meta, received_at - written_at)


@kernel
def ping(lines, count, budget_ns):
    """Stamp into ``lines[0]``, wait for the echo in ``lines[8]``; then send -1 (stop).

    Returns the stamps sent (fewer than ``count`` once ``budget_ns`` has
    passed), or -1 on a stuck spin.
    """
    ends = monotonic_ns() + budget_ns
    sent = 0
    while sent < count and monotonic_ns() <= ends:
        stamped = stamp()
        store_release(lines, 0, stamped)
        spins = 0
        deadline = 0
        while load_acquire(lines, 8) != stamped:
            deadline = _spin(spins, deadline)
            spins += 1
            if deadline < 0:
                return -1
        sent += 1
    store_release(lines, 0, -1)
    return sent


@kernel
def pong(lines, counts, meta):
    """Record the age of each new stamp in ``lines[0]`` and echo it into ``lines[8]``, until -1.

    ``lines[0]`` must be 0 when the run starts (a stamp is never 0): pong may
    start after ping's first store, so it cannot take the line's value then as
    the old one.
    """
    last = 0
    while True:
        spins = 0
        deadline = 0
        while True:
            stamped = load_acquire(lines, 0)
            if stamped != last:
                break
            deadline = _spin(spins, deadline)
            spins += 1
            if deadline < 0:
                return False
        if stamped == -1:
            return True
        record(counts, meta, stamp() - stamped)
        last = stamped
        store_release(lines, 8, stamped)


# The consumer process.

def serve(kind, connection, channel, core):
    """Consume in a child process: for each count received, read that many messages, reply.

    ``kind`` is ``"ring"``/``"ring_batch"`` (``channel``: shared-memory name) or a
    peer: ``"multiprocessing"``/``"faster_fifo"`` (``channel``: the queue) or
    ``"posix_ipc"`` (``channel``: the queue's name).
    """
    pin(core)
    if kind.startswith("ring"):
        from ringbook.engine.ring import Ring
        shared = Ring.attach(name=channel)
        slab, consumer, strategy = shared.slab, shared.consumer(0), THROUGHPUT_STRATEGY
        out = np.zeros((BATCH, MESSAGE_BYTES), np.uint8)
        lengths = np.zeros(BATCH, np.int64)
    elif kind == "posix_ipc":
        import posix_ipc
        channel = posix_ipc.MessageQueue(channel)
    connection.send("ready")
    while (count := connection.recv()) is not None:
        if kind == "ring":
            result = consume(slab, consumer, out[0], count, strategy)
        elif kind == "ring_batch":
            result = consume_batches(slab, consumer, out, lengths, count, strategy)
        elif kind == "posix_ipc":
            result = sum(channel.receive()[0][0] for _ in range(count))
        elif kind == "faster_fifo":
            result = sum(channel.get(timeout=60)[0] for _ in range(count))
        else:
            result = sum(channel.get()[0] for _ in range(count))
        connection.send(int(result))
