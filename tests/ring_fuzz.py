"""Corrupt a ring's bytes, then read and write it: nothing may touch memory outside the slab.

:func:`exercise` is shared by the hypothesis test in ``test_ring.py`` and by the
coverage-guided fuzzer this script runs with atheris::

    python tests/ring_fuzz.py -runs=100000      # or -max_total_time=60

The slab and the reader's buffer sit between guard bytes; every status must
be a known one, every length within a slot, every view inside the slab, and
the guards untouched.
"""

import sys
from pathlib import Path

import numpy as np

# Run as a script, this module shares its kernels' disk cache with the copy the
# tests import as ``tests.<name>``; loading that cache imports ``tests``.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ringbook.engine.ring import new_state  # noqa: E402
from ringbook.kernels import ring  # noqa: E402

SLOT_SIZE, SLOT_COUNT, CONSUMERS = 64, 4, 2
CAPACITY = SLOT_SIZE - ring.SLOT_HEADER_BYTES
REGION = ring.region_bytes(SLOT_SIZE, SLOT_COUNT, CONSUMERS)
GUARD = 256
KNOWN = set(ring.STATUS_NAMES) - {ring.TIMEOUT}


def exercise(corruptions, messages_before):
    """Write ``messages_before`` messages, apply ``(offset, byte)`` corruptions, then use the ring."""
    memory = np.full(REGION + 2 * GUARD, 0xA5, np.uint8)
    slab = memory[GUARD:GUARD + REGION]
    assert ring.format_slab(slab, SLOT_SIZE, SLOT_COUNT, CONSUMERS) == ring.OK
    producer, readers = new_state(), [new_state() for _ in range(CONSUMERS)]
    assert ring.open_producer(slab, producer) == ring.OK
    for index, reader in enumerate(readers):
        assert ring.open_consumer(slab, index, reader) == ring.OK
    payload = np.arange(CAPACITY, dtype=np.uint8)
    for index in range(messages_before):
        if ring.try_write(slab, producer, payload[:index * 6 % CAPACITY], 0, 0) == ring.FULL:
            for reader in readers:
                ring.try_read(slab, reader, np.zeros(CAPACITY, np.uint8))
    for offset, value in corruptions:
        slab[offset % REGION] = value
    out_memory = np.full(CAPACITY + 2 * GUARD, 0x5A, np.uint8)
    out = out_memory[GUARD:GUARD + CAPACITY]
    statuses = {ring.check_layout(slab)}
    fresh = new_state()
    statuses.add(ring.open_consumer(slab, 1, fresh))
    statuses.add(ring.open_producer(slab, new_state()))
    readers = readers + ([fresh] if fresh[ring.ROLE] else [])
    batch, lengths = np.zeros((3, CAPACITY), np.uint8), np.zeros(3, np.int64)
    for _ in range(6):
        for reader in readers:
            length = ring.try_read(slab, reader, out)
            assert length <= CAPACITY
            statuses.add(min(length, 0))
            peeked, view, _, _ = ring.peek(slab, reader)
            statuses.add(min(peeked, 0))
            if peeked >= 0:
                start = view.ctypes.data - slab.ctypes.data
                assert view.size == peeked <= CAPACITY and 0 <= start <= REGION - view.size
            statuses.add(min(ring.read_batch(slab, reader, batch, lengths), 0))
            assert (lengths <= CAPACITY).all()
        statuses.add(ring.try_write(slab, producer, payload, 0, 0))
        statuses.add(min(ring.write_batch(slab, producer, batch, lengths, 0, 0), 0))
    assert statuses <= KNOWN, statuses - KNOWN
    assert (memory[:GUARD] == 0xA5).all() and (memory[GUARD + REGION:] == 0xA5).all()
    assert (out_memory[:GUARD] == 0x5A).all() and (out_memory[GUARD + CAPACITY:] == 0x5A).all()


def _one_input(data):
    import atheris

    provider = atheris.FuzzedDataProvider(data)
    messages_before = provider.ConsumeIntInRange(0, 7)
    corruptions = [(provider.ConsumeIntInRange(0, REGION - 1), provider.ConsumeIntInRange(0, 255))
                   for _ in range(provider.ConsumeIntInRange(1, 8))]
    exercise(corruptions, messages_before)


def main(argv):
    import atheris

    exercise([(0, 0x52)], 3)  # compile (or load) every kernel before fuzzing starts
    atheris.Setup(argv, _one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
