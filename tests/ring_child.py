"""A second process for the ring's cross-process tests: ``python tests/ring_child.py MODE ...``.

Modes
-----
consume NAME COUNT
    Attach to shared memory ``NAME``, read ``COUNT`` pattern messages, print
    ``ok COUNT`` (or ``bad ...``).
produce-then-stall PATH COMPLETE
    Attach to the file ring ``PATH``, write ``COMPLETE`` pattern messages, then
    write half of the next message (length and payload, no sequence), print
    ``stalled`` and sleep until killed.
produce-forever NAME
    Attach to shared memory ``NAME`` and write pattern messages, waiting with
    back-off when the ring is full, until killed.

Message ``i`` is :func:`pattern` ``(i)``: 32 bytes, the little-endian int64
``i`` then ``(i + k) & 255`` for ``k`` in 8..31.
"""

import sys
import time
from pathlib import Path

# Kernels cached by the test run, which imports this module as tests.<name>,
# name that module: the repository must be importable to load them here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ringbook.engine.ring import Ring
from ringbook.kernels import ring
from ringbook.kernels.jit_options import kernel

MESSAGE_BYTES = 32


def pattern(index):
    """Message ``index`` as bytes."""
    tail = bytes((index + k) & 255 for k in range(8, MESSAGE_BYTES))
    return int(index).to_bytes(8, "little") + tail


@kernel
def fill_pattern(buffer, index):
    value = index
    for k in range(8):
        buffer[k] = value & 255
        value >>= 8
    for k in range(8, MESSAGE_BYTES):
        buffer[k] = (index + k) & 255


@kernel
def check_pattern(buffer, length, index):
    if length != MESSAGE_BYTES:
        return False
    value = 0
    for k in range(8):
        value |= np.int64(buffer[k]) << (8 * k)
    if value != index:
        return False
    for k in range(8, MESSAGE_BYTES):
        if buffer[k] != (index + k) & 255:
            return False
    return True


@kernel
def produce(slab, producer, first, count, strategy, timeout_ns):
    """Write pattern messages ``first .. first+count-1``; return how many were written."""
    buffer = np.empty(MESSAGE_BYTES, np.uint8)
    for index in range(first, first + count):
        fill_pattern(buffer, index)
        if ring.write_wait(slab, producer, buffer, 0, 0, strategy, timeout_ns) != ring.OK:
            return index - first
    return count


@kernel
def consume(slab, consumer, count, strategy, timeout_ns):
    """Read ``count`` messages and check each against the pattern: the first bad index, or -1."""
    buffer = np.empty(MESSAGE_BYTES + 8, np.uint8)
    for index in range(count):
        length = ring.read_wait(slab, consumer, buffer, strategy, timeout_ns)
        if not check_pattern(buffer, length, index):
            return index
    return -1


def main(argv):
    mode = argv[0]
    if mode == "consume":
        name, count = argv[1], int(argv[2])
        with Ring.attach(name=name) as shared:
            bad = consume(shared.slab, shared.consumer(0), count, shared.strategy, 10_000_000_000)
        print(f"ok {count}" if bad < 0 else f"bad {bad}", flush=True)
    elif mode == "produce-then-stall":
        path, complete = argv[1], int(argv[2])
        shared = Ring.attach(path=path)
        written = produce(shared.slab, shared.producer, 0, complete, shared.strategy, 10_000_000_000)
        assert written == complete
        # Half of the next message, as a producer killed mid-copy leaves it:
        # length and payload bytes written, sequence and position not yet.
        slot = ring.control_bytes(shared.consumers) + (complete % shared.slot_count) * shared.slot_size
        shared.slab[slot:slot + 4].view("<u4")[0] = MESSAGE_BYTES
        shared.slab[slot + ring.SLOT_HEADER_BYTES:][:MESSAGE_BYTES // 2] = 0xEE
        print("stalled", flush=True)
        time.sleep(600)
    elif mode == "produce-forever":
        shared = Ring.attach(name=argv[1])
        print("started", flush=True)
        first = 0
        while True:
            first += produce(shared.slab, shared.producer, first, 1 << 20, shared.strategy, -1)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
