"""A hostile or careless peer: header and slot fields rewritten while the ring runs, a region
shrunk under it, files that lie about their size, and the smaller edges of the Python API.

Whatever runs the ring runs in a child process (``tests/ring_hammer.py``), so that a crash
(SIGSEGV, SIGBUS) fails the test instead of killing the run.
"""

import math
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from ringbook.engine import ring as engine_ring
from ringbook.engine.ring import Ring, RingCorruptError, RingError, RingLayoutError, region_mode
from ringbook.kernels import ring
from tests import ring_hammer

HAMMER = Path(ring_hammer.__file__)
needs_memfd = pytest.mark.skipif(engine_ring.DEFAULT_BACKING != "memfd", reason="no sealed memfd on this system")
BACKINGS = ["file", "shm", pytest.param("memfd", marks=needs_memfd)]


def run_child(*arguments, timeout=120):
    """Run ``ring_hammer.py`` with ``arguments``; fail with its signal or output unless it printed ``ok``."""
    child = subprocess.run([sys.executable, str(HAMMER), *map(str, arguments)], capture_output=True, text=True,
                           timeout=timeout)
    if child.returncode < 0:
        pytest.fail(f"the child died of {signal.Signals(-child.returncode).name}: {child.stderr[-2000:]}")
    assert child.returncode == 0 and child.stdout.split()[-1:] == ["ok"], child.stderr[-3000:]


def shm_name():
    return f"ringbook-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# 1. A peer that rewrites the control block or a slot header while the ring runs

@pytest.mark.slow
def test_the_reported_races_do_not_reproduce():
    """A peer flipping the consumer count made open_producer walk four billion consumer lines;
    the slot count, read and write far outside the mapping; a slot's length, peek return a
    length beyond its view; the slot size, attach keep a slot_size of 0."""
    run_child("hammer", "file", "thread", 0.25, "consumers", "slot_count", "slot_length", "slot_size")


@pytest.mark.parametrize("mutator, seconds", [
    ("thread", 0.05),
    pytest.param("thread", 0.5, marks=pytest.mark.slow, id="thread-longer"),
    pytest.param("process", 0.3, marks=pytest.mark.slow, id="process"),
])
@pytest.mark.parametrize("backing", BACKINGS)
def test_every_field_rewritten_while_every_path_runs(backing, mutator, seconds):
    run_child("hammer", backing, mutator, seconds, timeout=600)


def test_a_header_changed_between_attach_and_open_is_refused():
    with Ring.create(8, 64) as shared:
        # Another valid geometry of the same size: 16 slots of 32 bytes for 8 of 64.
        shared.slab[ring.SLOT_SIZE_OFFSET:ring.SLOT_COUNT_OFFSET + 4].view("<u4")[:] = [32, 16]
        with pytest.raises(RingCorruptError, match=r"header changed after it was attached: found slot_size, "
                                                   r"slot_count, consumers = \(32, 16, 1\), attached as \(64, 8, 1\)"):
            shared.consumer(0)
        with pytest.raises(RingCorruptError, match="header changed"):
            shared.producer


def test_a_torn_slot_header_never_yields_a_length_beyond_the_slot():
    """The length checked is the length returned: one read of each field."""
    with Ring.create(8, 64) as shared:
        shared.write(b"abc")
        consumer = shared.consumer(0)
        slot = ring.control_bytes(1)
        shared.slab[slot:slot + 4].view("<u4")[0] = 0xFFFF_FFF0
        assert ring.peek(shared.slab, consumer)[0] == ring.CORRUPT_LENGTH
        assert ring.peek_header(shared.slab, consumer)[0] == ring.CORRUPT_LENGTH
        assert ring.try_read(shared.slab, consumer, np.zeros(64, np.uint8)) == ring.CORRUPT_LENGTH


def test_check_header_validates_a_copy_against_any_size():
    with Ring.create(8, 64, consumers=2) as shared:
        header = shared.slab[:ring.CACHE_LINE].copy()
        assert ring.check_header(header, shared.slab.size) == (ring.OK, 64, 8, 2)
        assert ring.check_header(header, shared.slab.size + 1)[0] == ring.CORRUPT_SIZE
        assert ring.check_header(header[:10], shared.slab.size)[0] == ring.CORRUPT_SIZE
        header[0] = 0
        assert ring.check_header(header, shared.slab.size) == (ring.CORRUPT_MAGIC, 0, 0, 0)


# 2. A peer that shrinks the region

@pytest.mark.parametrize("backing", BACKINGS)
def test_a_region_shrunk_under_the_ring_is_an_error_not_a_crash(backing):
    """Ring.create(path=p); write; os.truncate(p, 0); try_read died of SIGBUS."""
    run_child("truncate", backing)


@needs_memfd
def test_the_default_shared_ring_is_a_sealed_memfd_no_peer_can_resize():
    name = shm_name()
    with Ring.create(8, 64, name=name) as shared, Ring.attach(name=name) as attached:
        assert shared.sealed and attached.sealed
        assert region_mode(shared.path) == 0o600
        assert os.stat(shared.path).st_size < 64  # the registry entry, not the region
        for ring_side in (shared, attached):
            with pytest.raises(PermissionError):
                os.ftruncate(ring_side._file.fileno(), 0)
            with pytest.raises(PermissionError):
                os.ftruncate(ring_side._file.fileno(), 1 << 20)
        shared.write(b"sealed")
        assert attached.read(timeout=1) == b"sealed"


def test_shared_memory_backing_is_still_offered():
    name = shm_name()
    with Ring.create(8, 64, name=name, backing="shm") as shared, Ring.attach(name=name) as attached:
        assert not shared.sealed and not attached.sealed
        assert os.stat(shared.path).st_size == shared.slab.size
        shared.write(b"shm")
        assert attached.read(timeout=1) == b"shm"
    with pytest.raises(ValueError, match="backing"):
        Ring.create(8, 64, backing="shm")


@needs_memfd
@pytest.mark.parametrize("content, match", [
    (b"ringbook-memfd 1\nnot numbers\n", "not a ring registry entry"),
    (b"ringbook-memfd 1", "not a ring registry entry"),
    (b"ringbook-memfd 1\n1 0 5 7\n", "not a ring registry entry"),
    (b"ringbook-memfd 1\nPID 0 5\n", "not a ring's memfd"),     # PID: this process (a live one)
    (b"ringbook-memfd 1\n999999999 3 5\n", "gone"),
])
def test_a_bad_registry_entry_is_a_layout_error(tmp_path, content, match):
    path = tmp_path / "entry"
    path.write_bytes(content.replace(b"PID", b"%d" % os.getpid()))
    with pytest.raises(RingLayoutError, match=match):
        Ring.attach(path=path)


@needs_memfd
def test_a_registry_entry_naming_another_memfd_is_refused(tmp_path):
    name = shm_name()
    with Ring.create(8, 64, name=name) as shared:
        pid, fd, inode = shared.path.read_bytes().split(b"\n")[1].split()
        entry = tmp_path / "entry"
        entry.write_bytes(b"ringbook-memfd 1\n%s %s %d\n" % (pid, fd, int(inode) + 1))
        with pytest.raises(RingLayoutError, match="another memfd"):
            Ring.attach(path=entry)


def test_an_unsealed_memfd_is_refused(tmp_path):
    if not hasattr(os, "memfd_create"):
        pytest.skip("no memfd")
    fd = os.memfd_create("ringbook:unsealed", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 4096)
        entry = tmp_path / "entry"
        entry.write_bytes(b"ringbook-memfd 1\n%d %d %d\n" % (os.getpid(), fd, os.fstat(fd).st_ino))
        with pytest.raises(RingLayoutError, match="not sealed"):
            Ring.attach(path=entry)
    finally:
        os.close(fd)


def test_a_header_claiming_more_than_the_file_holds_names_the_sizes(tmp_path):
    path = tmp_path / "ring.buf"
    Ring.create(8, 64, path=path).close()
    with open(path, "r+b") as region:
        region.seek(ring.SLOT_COUNT_OFFSET)
        region.write((1 << 20).to_bytes(4, "little"))
        region.seek(ring.REGION_BYTES_OFFSET)
        region.write((192 + 64 * (1 << 20)).to_bytes(8, "little"))
    with pytest.raises(RingLayoutError, match=f"truncated: expected {192 + 64 * (1 << 20)} bytes, found 704"):
        Ring.attach(path=path)


def test_an_enormous_sparse_file_is_refused_before_it_is_mapped(tmp_path):
    path = tmp_path / "ring.buf"
    Ring.create(8, 64, path=path).close()
    try:
        os.truncate(path, 1 << 40)
    except OSError as error:
        pytest.skip(f"this filesystem holds no 1 TiB sparse file: {error}")
    with pytest.raises(RingLayoutError, match=f"larger than its header says: expected 704 bytes, found {1 << 40}"):
        Ring.attach(path=path)


def test_an_enormous_sparse_file_of_an_enormous_ring_is_a_layout_error():
    """Its header is consistent with its size; mapping it is what fails, and says so (tmpfs holds it)."""
    path = Path("/dev/shm") / f"ringbook-test-sparse-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    Ring.create(8, 64, path=path).close()
    slot_size, slot_count = 1 << 24, 1 << 30
    size = ring.region_bytes(slot_size, slot_count, 1)
    with open(path, "r+b") as region:
        region.seek(ring.SLOT_SIZE_OFFSET)
        region.write(slot_size.to_bytes(4, "little") + slot_count.to_bytes(4, "little"))
        region.seek(ring.REGION_BYTES_OFFSET)
        region.write(size.to_bytes(8, "little"))
    try:
        os.truncate(path, size)
    except OSError as error:
        path.unlink()
        pytest.skip(f"this filesystem holds no {size}-byte sparse file: {error}")
    try:
        with pytest.raises(RingLayoutError, match=f"cannot map its {size} bytes"):
            Ring.attach(path=path)
    finally:
        path.unlink()


def test_attaching_a_directory_or_a_fifo_is_a_layout_error(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(RingLayoutError, match="not a regular file"):
        Ring.attach(path=fifo)


# 3. Smaller edges

@pytest.mark.parametrize("offset", [ring.PRODUCER_POSITION_OFFSET, ring.CONSUMER_POSITIONS_OFFSET])
def test_negative_positions_are_corruption_not_numbers(offset):
    with Ring.create(8, 64) as shared:
        shared.slab[offset:offset + 8].view("<i8")[0] = -13  # looked like a status code
        with pytest.raises(RingCorruptError, match="-13"):
            shared.producer_position if offset == ring.PRODUCER_POSITION_OFFSET else shared.consumer_position(0)


def test_an_infinite_timeout_waits():
    with Ring.create(2, 64) as shared:
        shared.write(b"waiting", timeout=math.inf)
        assert shared.read(timeout=float("inf")) == b"waiting"
        assert shared.read_into(bytearray(64), timeout=math.inf) if shared.try_write(b"x") else False
        with pytest.raises(TimeoutError):
            shared.read(timeout=-math.inf)
        with pytest.raises(ValueError, match="NaN"):
            shared.read(timeout=math.nan)


@pytest.mark.parametrize("flags", [2 ** 32, -1, 2 ** 64])
def test_flags_beyond_32_bits_are_refused_not_cut(flags):
    with Ring.create(2, 64) as shared:
        with pytest.raises(ValueError, match="u32"):
            shared.try_write(b"x", flags=flags)
        with pytest.raises(ValueError, match="u32"):
            shared.write(b"x", flags=flags)
        assert shared.try_write(b"x", flags=2 ** 32 - 1, stamp=-(2 ** 63))
        with pytest.raises(ValueError, match="int64"):
            shared.try_write(b"x", stamp=2 ** 63)
        assert shared.pending() == 1


def test_a_closed_ring_raises_instead_of_crashing():
    shared = Ring.create(2, 64)
    shared.close()
    with pytest.raises(RingError, match="closed"):
        shared.try_read()
