"""A hostile peer for the ring: ``python tests/ring_hammer.py MODE ...``, run by ``test_ring_hostile.py``.

Modes
-----
hammer BACKING MUTATOR SECONDS [FIELD ...]
    For each field (all of :data:`FIELDS` when none is named): create a ring
    backed by ``BACKING`` (``file``, ``shm`` for ``/dev/shm``, ``memfd`` for
    the sealed default), start a mutator that rewrites the field in a loop
    with hostile values (``thread``: an njit thread of this process;
    ``process``: a second process attached to the ring), and meanwhile run
    every kernel and every Python path of the ring for ``SECONDS``. Prints
    ``ok`` when every result stayed within the slab and every error was a
    ``Ring*Error``; an assertion or a crash (SIGSEGV, SIGBUS) is the failure.
mutate BACKING
    The ``process`` mutator: for each line ``WHERE FIELD`` on its input,
    attach to the ring at ``WHERE`` and rewrite ``FIELD`` until the line
    ``stop``.
truncate BACKING
    Create a ring, write a message, shrink the region to 0 bytes behind the
    ring's back, then use every Python path: prints ``ok`` when each raised
    ``RingCorruptError`` (or, for a sealed backing, the shrink was refused).
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

# Run as a script, this module shares its kernels' disk cache with the copy the
# tests import as ``tests.<name>``; loading that cache imports ``tests``.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ringbook.engine.ring import Ring, RingError, new_state  # noqa: E402
from ringbook.kernels import ring  # noqa: E402
from ringbook.kernels.atomics import load_relaxed  # noqa: E402
from ringbook.kernels.jit_options import kernel  # noqa: E402

SLOT_COUNT, SLOT_SIZE, CONSUMERS = 8, 64, 2
CAPACITY = SLOT_SIZE - ring.SLOT_HEADER_BYTES
FIRST_SLOT = ring.control_bytes(CONSUMERS)
U32 = 0xFFFF_FFFF


def _slot(index, offset):
    return FIRST_SLOT + index * SLOT_SIZE + offset


#: field -> (byte offset, width, values the mutator cycles through).
FIELDS = {
    "magic": (ring.MAGIC_OFFSET, 8, [ring.MAGIC, 0, -1]),
    "version": (ring.VERSION_OFFSET, 4, [ring.VERSION, 0, U32]),
    "slot_size": (ring.SLOT_SIZE_OFFSET, 4, [SLOT_SIZE, 0, 1 << 24, U32]),
    "slot_count": (ring.SLOT_COUNT_OFFSET, 4, [SLOT_COUNT, 1 << 30, 0, U32]),
    "consumers": (ring.CONSUMER_COUNT_OFFSET, 4, [CONSUMERS, U32, 0, 32]),
    "slot_header_bytes": (ring.SLOT_HEADER_SIZE_OFFSET, 4, [ring.SLOT_HEADER_BYTES, 0, U32]),
    "control_bytes": (ring.CONTROL_BYTES_OFFSET, 8, [FIRST_SLOT, 0, 1 << 40, -1]),
    "region_bytes": (ring.REGION_BYTES_OFFSET, 8, [ring.region_bytes(SLOT_SIZE, SLOT_COUNT, CONSUMERS),
                                                   1 << 40, -1]),
    "producer_position": (ring.PRODUCER_POSITION_OFFSET, 8, [0, 3, -13, 1 << 62, -1]),
    "consumer_position": (ring.CONSUMER_POSITIONS_OFFSET, 8, [0, 2, -13, 1 << 62]),
    "consumer_position_1": (ring.CONSUMER_POSITIONS_OFFSET + ring.CACHE_LINE, 8, [0, -1, 100]),
    "slot_length": (_slot(0, ring.LENGTH_OFFSET), 4, [32, U32 - 15, 1000, 0]),
    "slot_flags": (_slot(0, ring.FLAGS_OFFSET), 4, [0, U32]),
    "slot_sequence": (_slot(0, ring.SEQUENCE_OFFSET), 8, [0, 1, -1, 8, 1 << 62]),
    "slot_stamp": (_slot(0, ring.STAMP_OFFSET), 8, [0, -1]),
    "next_slot_length": (_slot(1, ring.LENGTH_OFFSET), 4, [32, U32, 41]),
    "next_slot_sequence": (_slot(1, ring.SEQUENCE_OFFSET), 8, [1, -1, 9, -(1 << 62)]),
}


@kernel
def rewrite(slab, offset, width, values, stop):
    """Store ``values`` in turn at ``offset`` (``width`` bytes, little-endian) until ``stop[0]``."""
    rounds = 0
    while load_relaxed(stop, 0) == 0:
        for value in values:
            for k in range(width):
                slab[offset + k] = (value >> (8 * k)) & 255
        rounds += 1
    return rounds


@kernel
def peek_loop(slab, consumer, count):
    """Peek ``count`` times; how many views disagreed with the length returned."""
    bad = 0
    for _ in range(count):
        length, view, flags, stamp = ring.peek(slab, consumer)
        if length >= 0 and (view.size != length or length > consumer[ring.STATE_CAPACITY]):
            bad += 1
        elif length < 0 and view.size != 0:
            bad += 1
    return bad


@kernel
def read_loop(slab, producer, consumer, out, payloads, lengths, count):
    """Write and read ``count`` times in every way; how many lengths were beyond a slot."""
    bad = 0
    message = out[:32]
    for i in range(count):
        ring.try_write(slab, producer, message, 0, i)
        length = ring.try_read(slab, consumer, out)
        if length > out.size:
            bad += 1
        ring.write_batch(slab, producer, payloads, lengths, 0, 0)
        read = ring.read_batch(slab, consumer, payloads, lengths)
        for j in range(max(read, 0)):
            if lengths[j] > payloads.shape[1]:
                bad += 1
        length, flags, stamp = ring.peek_header(slab, consumer)
        if length > consumer[ring.STATE_CAPACITY]:
            bad += 1
        ring.release(slab, consumer)
        ring.pending(slab, consumer)
        ring.free_slots(slab, producer)
    return bad


@kernel
def open_loop(slab, count):
    """Open a producer and a consumer ``count`` times; how many opened states disagree with the slab."""
    producer = np.zeros(ring.STATE_SIZE, np.int64)
    consumer = np.zeros(ring.STATE_SIZE, np.int64)
    bad = 0
    for _ in range(count):
        for state, status in ((producer, ring.open_producer(slab, producer)),
                              (consumer, ring.open_consumer(slab, 1, consumer))):
            if status == ring.OK and (state[ring.STATE_CONSUMERS] > ring.MAX_CONSUMERS or
                                      state[ring.STATE_SLOTS_OFFSET] + state[ring.STATE_SLOT_SIZE]
                                      * (state[ring.STATE_SLOT_MASK] + 1) != slab.size):
                bad += 1
    return bad


def _attach_loop(backing, where, count):
    """Attach ``count`` times and read once each: a geometry read twice came back 0."""
    for _ in range(count):
        attached = _allowed(_attach, backing, where)
        if attached is not None:
            with attached:
                assert attached.slot_size >= ring.MIN_SLOT_SIZE and attached.slot_count >= ring.MIN_SLOT_COUNT
                _allowed(attached.try_read, 1)


def _values(field):
    offset, width, values = FIELDS[field]
    return offset, width, np.array([v & ((1 << (8 * width)) - 1) if v >= 0 else v for v in values], np.int64)


def _create(backing, where):
    if backing == "file":
        return Ring.create(SLOT_COUNT, SLOT_SIZE, CONSUMERS, path=where)
    if backing == "shm":
        return Ring.create(SLOT_COUNT, SLOT_SIZE, CONSUMERS, name=where, backing="shm")
    return Ring.create(SLOT_COUNT, SLOT_SIZE, CONSUMERS, name=where)


def _attach(backing, where):
    return Ring.attach(path=where) if backing == "file" else Ring.attach(name=where)


def _allowed(call, *args):
    """Call; a Ring*Error or a timeout is an answer, anything else fails the run."""
    try:
        return call(*args)
    except (RingError, TimeoutError):
        return None


def _kernel_paths(slab, states, out, payloads, lengths):
    """Every kernel once on fresh states and on the open ones."""
    producer, readers = states
    statuses = [ring.check_layout(slab)]
    fresh_producer, fresh_reader = new_state(), new_state()
    statuses.append(ring.open_producer(slab, fresh_producer))
    statuses.append(ring.open_consumer(slab, 1, fresh_reader))
    for state in (fresh_producer, fresh_reader):
        if state[ring.ROLE] != 0:
            assert state[ring.STATE_CONSUMERS] <= ring.MAX_CONSUMERS
            assert state[ring.STATE_SLOT_SIZE] * (state[ring.STATE_SLOT_MASK] + 1) + \
                state[ring.STATE_SLOTS_OFFSET] == slab.size
    for reader in readers + [fresh_reader]:
        length = ring.try_read(slab, reader, out)
        assert length <= out.size, length
        length, view, _, _ = ring.peek(slab, reader)
        assert view.size == max(length, 0) <= CAPACITY, (length, view.size)
        if view.size:
            start = view.ctypes.data - slab.ctypes.data
            assert 0 <= start and start + view.size <= slab.size
        assert ring.peek_header(slab, reader)[0] <= CAPACITY
        statuses.append(ring.release(slab, reader))
        read = ring.read_batch(slab, reader, payloads, lengths)
        assert read <= payloads.shape[0] and (read <= 0 or (lengths[:read] <= CAPACITY).all())
        statuses += [ring.pending(slab, reader), ring.is_empty(slab, reader)]
        statuses.append(ring.read_wait(slab, reader, out, np.zeros(4, np.int64), 0))
    for writer in (producer, fresh_producer):
        statuses.append(ring.try_write(slab, writer, out[:32], 0, 0))
        statuses.append(ring.write_batch(slab, writer, payloads, lengths, 0, 0))
        statuses += [ring.free_slots(slab, writer), ring.is_full(slab, writer)]
        statuses.append(ring.write_wait(slab, writer, out[:32], 0, 0, np.zeros(4, np.int64), 0))
    statuses += [ring.producer_position(slab), ring.consumer_position(slab, 1)]
    return statuses


def _python_paths(shared, backing, where):
    """Every Python path of ``Ring`` once; only Ring*Error (and timeouts) may come out."""
    _allowed(shared.try_write, b"x" * 20)
    _allowed(shared.write, b"y" * 30, 0, 0, 0)
    for index in range(CONSUMERS):
        got = _allowed(shared.try_read, index)
        assert got is None or len(got) <= shared.payload_capacity
        got = _allowed(shared.read, index, 0)
        assert got is None or len(got) <= shared.payload_capacity
        _allowed(shared.pending, index)
        _allowed(shared.is_empty, index)
        _allowed(shared.consumer_position, index)
    _allowed(shared.free_slots)
    _allowed(shared.is_full)
    _allowed(lambda: shared.producer_position)
    attached = _allowed(_attach, backing, where)
    if attached is not None:
        with attached:
            assert attached.slot_size > 0 and attached.slot_count > 0 and attached.consumers > 0
            got = _allowed(attached.try_read, 1)
            assert got is None or len(got) <= attached.payload_capacity
            _allowed(attached.pending, 1)


def _start_mutator(mutator, where, shared, field):
    if mutator is not None:  # the mutator process
        mutator.stdin.write(f"{where} {field}\n")
        mutator.stdin.flush()
        assert mutator.stdout.readline().strip() == "mutating", "the mutator did not start"

        def stop():
            mutator.stdin.write("stop\n")
            mutator.stdin.flush()
            assert mutator.stdout.readline().strip() == "stopped", "the mutator failed"
        return stop
    offset, width, values = _values(field)
    stop = np.zeros(1, np.int64)
    thread = threading.Thread(target=rewrite, args=(shared.slab, offset, width, values, stop))
    thread.start()

    def finish():
        stop[0] = 1
        thread.join()
    return finish


def hammer(backing, mutator, seconds, fields):
    directory = tempfile.mkdtemp(prefix="ringbook-hammer-")
    out = np.zeros(CAPACITY, np.uint8)
    payloads, lengths = np.zeros((3, CAPACITY), np.uint8), np.full(3, 20, np.int64)
    mutator_process = None
    if mutator == "process":
        mutator_process = subprocess.Popen([sys.executable, __file__, "mutate", backing], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True)
    for field in fields:
        where = (os.path.join(directory, field) if backing == "file"
                 else f"ringbook-hammer-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        with _create(backing, where) as shared:
            slab = shared.slab
            producer = shared.producer
            readers = [shared.consumer(i) for i in range(CONSUMERS)]
            shared.write(bytes(range(32)))
            finish = _start_mutator(mutator_process, where, shared, field)
            deadline = time.monotonic() + seconds
            try:
                while time.monotonic() < deadline:
                    _kernel_paths(slab, (producer, readers), out, payloads, lengths)
                    _python_paths(shared, backing, where)
                    assert peek_loop(slab, readers[0], 20_000) == 0, f"{field}: peek view and length differ"
                    assert open_loop(slab, 2_000) == 0, f"{field}: a state opened with a geometry not the slab's"
                    _attach_loop(backing, where, 20)
                    assert read_loop(slab, producer, readers[1], out, payloads, lengths, 2_000) == 0, field
            finally:
                finish()
        if backing == "file":
            os.unlink(where)
    os.rmdir(directory)
    if mutator_process is not None:
        mutator_process.stdin.close()
        assert mutator_process.wait(timeout=60) == 0, "the mutator failed"
    print("ok", flush=True)


def mutate(backing):
    for line in sys.stdin:
        where, field = line.split()
        with _attach(backing, where) as shared:
            offset, width, values = _values(field)
            stop = np.zeros(1, np.int64)
            thread = threading.Thread(target=rewrite, args=(shared.slab, offset, width, values, stop))
            thread.start()
            print("mutating", flush=True)
            assert sys.stdin.readline().strip() == "stop"
            stop[0] = 1
            thread.join()
        print("stopped", flush=True)


def truncate(backing):
    directory = tempfile.mkdtemp(prefix="ringbook-truncate-")
    where = (os.path.join(directory, "ring") if backing == "file"
             else f"ringbook-truncate-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    shared = _create(backing, where)
    shared.write(b"x")
    shared.consumer(0)
    try:
        os.ftruncate(shared._file.fileno(), 0)
    except PermissionError:
        assert backing == "memfd", "only a sealed ring may refuse to shrink"
        assert shared.try_read(0) == b"x"
        shared.close()   # and its registry entry
        os.rmdir(directory)
        print("ok", flush=True)
        return
    assert backing != "memfd", "a sealed ring shrank"
    calls = [lambda: shared.try_read(0), lambda: shared.read(0, 0.01), lambda: shared.try_write(b"y"),
             lambda: shared.write(b"y", timeout=0.01), lambda: shared.pending(0), shared.free_slots,
             lambda: shared.producer_position, lambda: shared.consumer_position(0),
             lambda: shared.consumer(1), lambda: shared.read_into(bytearray(64), 0, 0.01)]
    for call in calls:
        try:
            call()
        except RingError as error:
            assert type(error).__name__ == "RingCorruptError", error
            assert "bytes" in str(error), error
        else:
            raise AssertionError(f"{call} did not notice the region shrank")
    shared.close()
    if backing == "file":
        os.unlink(where)
    os.rmdir(directory)
    print("ok", flush=True)


def main(argv):
    mode = argv[0]
    if mode == "hammer":
        backing, mutator, seconds = argv[1], argv[2], float(argv[3])
        hammer(backing, mutator, seconds, argv[4:] or list(FIELDS))
    elif mode == "mutate":
        mutate(argv[1])
    elif mode == "truncate":
        truncate(argv[1])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
