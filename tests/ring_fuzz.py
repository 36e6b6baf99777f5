"""Corrupt a ring's bytes or its file, then attach, read and write it: nothing may touch memory
outside the slab, and only ``Ring*Error`` may come out of the Python API.

Two targets, each shared by a test in ``test_ring.py`` and by the coverage-guided
fuzzer this script runs with atheris:

- ``kernels`` (:func:`exercise`): corrupt bytes of a formatted slab, then run
  every kernel on it. The slab and the reader's buffer sit between guard
  bytes; every status must be a known one, every length within a slot, every
  view inside the slab, and the guards untouched.
- ``attach`` (:func:`exercise_attach`): write a ring file (or a memfd registry
  entry) whose header, slots and size are corrupted, attach to it with
  ``Ring.attach`` and use every Python path: only ``RingError`` and its
  subclasses may come out, and every message returned fits a slot.

The longer runs (one target per command)::

    python tests/ring_fuzz.py --target=kernels -max_total_time=600
    python tests/ring_fuzz.py --target=attach -max_total_time=600

Other arguments go to libFuzzer (``-runs=N``, ``-seed=N``, a corpus folder). The ``attach``
target's files go to a temporary folder in ``$RINGBOOK_FUZZ_DIR`` (else the system's).
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

# Run as a script, this module shares its kernels' disk cache with the copy the
# tests import as ``tests.<name>``; loading that cache imports ``tests``.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ringbook.engine import ring as engine_ring  # noqa: E402
from ringbook.engine.ring import REGISTRY_MAGIC, Ring, RingError, new_state  # noqa: E402
from ringbook.kernels import ring  # noqa: E402

SLOT_SIZE, SLOT_COUNT, CONSUMERS = 64, 4, 2
CAPACITY = SLOT_SIZE - ring.SLOT_HEADER_BYTES
REGION = ring.region_bytes(SLOT_SIZE, SLOT_COUNT, CONSUMERS)
GUARD = 256
KNOWN = set(ring.STATUSES) - {ring.TIMEOUT}


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


#: Sizes a fuzzed ring file may take, beside its header's own: short, long, enormous and sparse.
_SIZES = (0, 100, ring.CACHE_LINE, REGION - 1, REGION + 1, 1 << 40)


def exercise_attach(directory, corruptions, size_choice, registry):
    """Attach to a corrupted ring file in ``directory`` and use it; only Ring*Error may come out.

    ``corruptions`` are ``(offset, byte)`` pairs applied to a valid ring with
    messages in it; ``size_choice`` indexes :data:`_SIZES` (or keeps the
    size); ``registry`` (bytes or ``None``) replaces the file by a memfd
    registry entry with that text after its first line.
    """
    path = os.path.join(directory, "ring.buf")
    if os.path.exists(path):
        os.unlink(path)
    if registry is not None:
        with open(path, "wb") as entry:
            entry.write(REGISTRY_MAGIC + b"\n" + registry)
    else:
        with Ring.create(SLOT_COUNT, SLOT_SIZE, CONSUMERS, path=path) as shared:
            for index in range(3):
                shared.write(bytes(range(index * 9)))
        with open(path, "r+b") as region:
            for offset, value in corruptions:
                region.seek(offset % REGION)
                region.write(bytes([value]))
        if size_choice < len(_SIZES):
            os.truncate(path, _SIZES[size_choice])
    try:
        attached = Ring.attach(path=path)
    except RingError:
        return
    with attached:
        for call in (lambda: attached.try_write(b"fuzz"), lambda: attached.free_slots(),
                     lambda: attached.producer_position, lambda: attached.write(b"z", timeout=0)):
            try:
                call()
            except (RingError, TimeoutError):
                pass
        for index in range(attached.consumers):
            for call in (attached.try_read, attached.pending, attached.consumer_position,
                         lambda i: attached.read(i, timeout=0)):
                try:
                    got = call(index)
                except (RingError, TimeoutError):
                    continue
                assert not isinstance(got, bytes) or len(got) <= attached.payload_capacity


def _kernels_input(data):
    import atheris

    provider = atheris.FuzzedDataProvider(data)
    messages_before = provider.ConsumeIntInRange(0, 7)
    corruptions = [(provider.ConsumeIntInRange(0, REGION - 1), provider.ConsumeIntInRange(0, 255))
                   for _ in range(provider.ConsumeIntInRange(1, 8))]
    exercise(corruptions, messages_before)


_DIRECTORY = None


def _attach_input(data):
    import atheris

    provider = atheris.FuzzedDataProvider(data)
    registry = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 40)) if provider.ConsumeBool() else None
    size_choice = provider.ConsumeIntInRange(0, 2 * len(_SIZES))
    corruptions = [(provider.ConsumeIntInRange(0, REGION - 1), provider.ConsumeIntInRange(0, 255))
                   for _ in range(provider.ConsumeIntInRange(0, 8))]
    exercise_attach(_DIRECTORY, corruptions, size_choice, registry)


def main(argv):
    import atheris

    global _DIRECTORY
    targets = [argument for argument in argv[1:] if argument.startswith("--target=")]
    target = targets[-1].split("=", 1)[1] if targets else "kernels"
    argv = [argument for argument in argv if not argument.startswith("--target=")]
    if target == "kernels":
        exercise([(0, 0x52)], 3)  # compile (or load) every kernel before fuzzing starts
        one_input = _kernels_input
    elif target == "attach":
        # Coverage of the Python attach path guides this target (njit code has none to give).
        for function in (engine_ring._open_file, engine_ring._open_registered, engine_ring._open_region,
                         engine_ring.describe_layout_error, engine_ring.Ring.__init__, engine_ring.Ring._check,
                         engine_ring.Ring._describe_corruption, engine_ring.Ring._check_geometry):
            atheris.instrument_func(function)
        _DIRECTORY = tempfile.mkdtemp(prefix="ringbook-fuzz-", dir=os.environ.get("RINGBOOK_FUZZ_DIR"))
        exercise_attach(_DIRECTORY, [(0, 0x52)], 99, None)
        exercise_attach(_DIRECTORY, [], 99, None)
        one_input = _attach_input
    else:
        raise SystemExit(f"unknown target {target!r}: kernels or attach")
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
