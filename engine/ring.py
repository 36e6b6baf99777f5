"""Rings in memory: a private array, a file, or POSIX shared memory; and the :class:`Ring` class.

The kernels in :mod:`ringbook.kernels.ring` work on a bare uint8 slab and a small int64
state per side. This module provides the slab and its lifetime:

- **private** (``Ring.create(...)``): an anonymous mapping, page-aligned, shared
  by the threads of one process;
- **file** (``path=``): a file mapped ``MAP_SHARED``, which outlives the
  processes (the ring can be attached again after a crash);
- **shared memory** (``name=``): a POSIX shared-memory object (``/dev/shm/<name>``)
  between processes on one machine.

Files and shared-memory objects are created exclusively (never over an
existing one) with mode 0600: only the owner may read or write them.
Attaching validates the magic, version, geometry and size, and refuses a
mismatched or truncated region with a :class:`RingLayoutError` that says what
was expected and what was found.
"""

import fcntl
import io
import mmap
import os
import stat
from pathlib import Path

import numpy as np

from ringbook.engine.system import l2_cache_bytes, usable_cores
from ringbook.kernels import ring as kernels_ring
from ringbook.kernels import wait

#: Where Linux keeps POSIX shared-memory objects (``shm_open`` names).
SHM_DIRECTORY = Path("/dev/shm")

#: Unblock the GIL-free wait at least this often, so that Ctrl-C and a
#: ``timeout=None`` wait stay responsive.
_WAIT_SLICE_NS = 100_000_000


class RingError(RuntimeError):
    """A ring operation failed; ``status`` is the kernel's status code."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class RingCorruptError(RingError):
    """The shared region holds something impossible (a ``CORRUPT_*`` status)."""


class RingLayoutError(RingError, ValueError):
    """A region is not a ring of this layout: wrong magic, version, geometry or size."""


def default_wait_strategy():
    """The wait strategy :class:`Ring` uses unless told otherwise.

    Spinning threads never outnumber cores: on a machine with one usable core
    the strategy never spins (it yields, then sleeps); otherwise it spins
    briefly (:data:`ringbook.kernels.wait.DEFAULT_SPINS` pauses, a few microseconds),
    so that at worst one spinner per side runs for that long before yielding.
    """
    spins = wait.DEFAULT_SPINS if len(usable_cores()) >= 2 else 0
    return wait.wait_strategy(spins=spins)


def new_state():
    """A zeroed int64 state array for :func:`ringbook.kernels.ring.open_producer`/``open_consumer``.

    It covers exactly two whole cache lines of its own, so that a producer's
    and a consumer's states never share a line.
    """
    line_words = kernels_ring.CACHE_LINE // 8
    storage = np.zeros(kernels_ring.STATE_SIZE + line_words, dtype=np.int64)
    skip = (-storage.ctypes.data % kernels_ring.CACHE_LINE) // 8
    return storage[skip:skip + kernels_ring.STATE_SIZE]


def _header(slab):
    """The header fields of ``slab`` as a dict, read with numpy (for messages)."""
    fields = {}
    if slab.size >= kernels_ring.CACHE_LINE:
        line = slab[:kernels_ring.CACHE_LINE]
        fields["magic"] = bytes(line[0:8])
        u32 = line[8:32].view("<u4")
        fields["version"], fields["slot_size"], fields["slot_count"] = int(u32[0]), int(u32[1]), int(u32[2])
        fields["consumers"], fields["slot_header_bytes"] = int(u32[3]), int(u32[4])
        u64 = line[32:48].view("<u8")
        fields["control_bytes"], fields["region_bytes"] = int(u64[0]), int(u64[1])
    return fields


def describe_layout_error(slab, status, where="region"):
    """A sentence naming the header field that made :func:`ringbook.kernels.ring.check_layout` fail."""
    fields = _header(slab)
    K = kernels_ring
    if status == K.CORRUPT_SIZE and not fields:
        return (f"{where} is truncated: expected at least {K.control_bytes(1)} bytes "
                f"for a ring header, found {slab.size}")
    if status == K.CORRUPT_MAGIC:
        return (f"{where} is not a ring: expected magic {K.MAGIC.to_bytes(8, 'little')!r}, "
                f"found {fields['magic']!r}")
    if status == K.CORRUPT_VERSION:
        return f"{where} has ring layout version {fields['version']}, expected {K.VERSION}"
    if status == K.CORRUPT_GEOMETRY:
        size, count, consumers = fields["slot_size"], fields["slot_count"], fields["consumers"]
        return (f"{where} has an impossible geometry: found slot_size={size}, slot_count={count}, "
                f"consumers={consumers}, slot_header_bytes={fields['slot_header_bytes']}, "
                f"control_bytes={fields['control_bytes']}, region_bytes={fields['region_bytes']}; "
                f"expected powers of two slot_size in {K.MIN_SLOT_SIZE}..{K.MAX_SLOT_SIZE} and "
                f"slot_count in {K.MIN_SLOT_COUNT}..{K.MAX_SLOT_COUNT}, consumers in 1..{K.MAX_CONSUMERS}, "
                f"slot_header_bytes={K.SLOT_HEADER_BYTES}, control_bytes={K.control_bytes(consumers)} "
                f"and region_bytes={K.control_bytes(consumers) + size * count}")
    if status == K.CORRUPT_SIZE:
        expected = fields["region_bytes"]
        kind = "truncated" if slab.size < expected else "larger than its header says"
        return f"{where} is {kind}: expected {expected} bytes, found {slab.size}"
    return f"{where}: {K.STATUS_NAMES.get(status, status)}"


def _map(fd, size):
    mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return mapping, np.frombuffer(mapping, dtype=np.uint8)


def _create_file(path, size):
    """Create ``path`` exclusively with mode 0600, sized ``size`` bytes (zeros), and map it.

    Returns ``(file, mapping, slab)``; the open file is what the producer locks.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask: owner only
        os.ftruncate(fd, size)
        mapping, slab = _map(fd, size)
        return io.FileIO(fd, "r+"), mapping, slab
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise


def _open_file(path):
    """Map the ring file ``path``: ``(file, mapping, slab)``."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size < kernels_ring.control_bytes(1):
            raise RingLayoutError(
                f"{path} is truncated: expected at least {kernels_ring.control_bytes(1)} bytes "
                f"for a ring header, found {size}", kernels_ring.CORRUPT_SIZE)
        mapping, slab = _map(fd, size)
        return io.FileIO(fd, "r+"), mapping, slab
    except BaseException:
        os.close(fd)
        raise


def shm_path(name):
    """The file behind POSIX shared-memory object ``name`` (no slashes)."""
    name = name.lstrip("/")
    if not name or "/" in name:
        raise ValueError(f"a shared-memory name is one path component, got {name!r}")
    return SHM_DIRECTORY / name


def evicts_by_default(slot_bytes, consumers, l2_bytes):
    """Whether a consumer should evict the slots it has read (:func:`ringbook.kernels.ring.set_evict`),
    in a ring of ``consumers`` whose slots take ``slot_bytes``, on a core with an
    L2 cache of ``l2_bytes`` (``None``: unknown).

    Eviction saves the producer taking each line back from the consumer's core
    a lap later. Once the slots outgrow the L2 cache, the lines have left it by
    then anyway and the flushes only cost: two threads on the 2-core EPYC VM
    (1 MiB L2) ran 2x as fast evicting up to 1 MiB of slots, 1.03x as slow at
    2 MiB, 1.10-1.14x at 4 and 64 MiB. With two consumers, one evicting sends
    the other to memory: none evicting beat both evicting at 256 KiB and 4 MiB
    of slots (1.25x, 2.0x).
    """
    return consumers == 1 and (l2_bytes is None or slot_bytes <= l2_bytes)


class Ring:
    """A single-producer ring of fixed-size messages, with one or more consumers.

    Create one with :meth:`create`, or attach to an existing one with
    :meth:`attach`; close it with :meth:`close` or a ``with`` block. One
    thread or process writes (across processes, :attr:`producer` makes sure
    of it); each consumer index is read by one thread or process. For njit
    code, :attr:`slab`, :attr:`producer` and :meth:`consumer` are what the
    kernels of :mod:`ringbook.kernels.ring` take.

    Attributes
    ----------
    slab : numpy.ndarray
        The region (uint8).
    strategy : numpy.ndarray
        Wait strategy of the blocking calls (see :mod:`ringbook.kernels.wait`).
    path : pathlib.Path or None
        The file or shared-memory object behind the ring.
    """

    def __init__(self, slab, *, mapping=None, file=None, path=None, owner=False, strategy=None):
        status = kernels_ring.check_layout(slab)
        if status != kernels_ring.OK:
            raise RingLayoutError(describe_layout_error(slab, status, str(path or "ring")), status)
        self.slab = slab
        self.path = path
        self.strategy = default_wait_strategy() if strategy is None else strategy
        self._mapping = mapping
        self._file = file  # the open ring file, locked while this ring is its producer
        self._owner = owner  # unlinks a shared-memory object it created
        self._producer = None
        self._consumers = {}
        header = _header(slab)
        self.slot_size = header["slot_size"]
        self.slot_count = header["slot_count"]
        self.consumers = header["consumers"]
        self.payload_capacity = self.slot_size - kernels_ring.SLOT_HEADER_BYTES

    # Creating and attaching

    @classmethod
    def create(cls, slot_count, slot_size=64, consumers=1, *, name=None, path=None, strategy=None):
        """A new, empty ring.

        Parameters
        ----------
        slot_count : int
            Power of two, 2 .. 2**30.
        slot_size : int
            Bytes per slot including its 24-byte header: power of two, 32 .. 2**24.
        consumers : int
            Independent readers, each at its own position (1 .. 32).
        name : str, optional
            Create POSIX shared memory ``/dev/shm/<name>`` (mode 0600).
        path : str or path-like, optional
            Create this file (mode 0600). Without ``name`` or ``path`` the
            ring is private to this process.
        strategy : numpy.ndarray, optional
            Wait strategy; :func:`default_wait_strategy` when omitted.
        """
        if kernels_ring.check_geometry(slot_size, slot_count, consumers) != kernels_ring.OK:
            raise ValueError(
                f"ring geometry out of range: slot_size={slot_size} (power of two, "
                f"{kernels_ring.MIN_SLOT_SIZE}..{kernels_ring.MAX_SLOT_SIZE}), slot_count={slot_count} "
                f"(power of two, {kernels_ring.MIN_SLOT_COUNT}..{kernels_ring.MAX_SLOT_COUNT}), "
                f"consumers={consumers} (1..{kernels_ring.MAX_CONSUMERS})")
        if name is not None and path is not None:
            raise ValueError("give name (shared memory) or path (file), not both")
        size = kernels_ring.region_bytes(slot_size, slot_count, consumers)
        if name is not None:
            path = shm_path(name)
        file = None
        if path is not None:
            file, mapping, slab = _create_file(path, size)
        else:
            mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            slab = np.frombuffer(mapping, dtype=np.uint8)
        kernels_ring.format_slab(slab, slot_size, slot_count, consumers)
        return cls(slab, mapping=mapping, file=file, path=None if path is None else Path(path),
                   owner=name is not None, strategy=strategy)

    @classmethod
    def attach(cls, *, name=None, path=None, strategy=None):
        """Attach to the ring in shared memory ``name`` or in the file ``path``.

        Raises :class:`RingLayoutError` when the region is not a valid ring
        (the message names the field, what was expected and what was found),
        ``FileNotFoundError`` when it does not exist.
        """
        if (name is None) == (path is None):
            raise ValueError("give exactly one of name (shared memory) or path (file)")
        path = shm_path(name) if name is not None else Path(path)
        file, mapping, slab = _open_file(path)
        try:
            return cls(slab, mapping=mapping, file=file, path=path, strategy=strategy)
        except BaseException:
            del slab
            _close_mapping(mapping)
            file.close()
            raise

    # What njit code needs

    @property
    def producer(self):
        """The producer's state (opened on first use): pass it to the write kernels.

        A ring has one producer. For a shared-memory or file ring this takes
        an exclusive lock on the file (``flock``) first, held until
        :meth:`close` or the process ends however it ends, and raises
        :class:`RingError` while another process, or another :class:`Ring`
        attached to the same region, holds it. A child made by ``fork``
        shares the open file, and with it the lock.
        """
        if self._producer is None:
            self._lock_for_producer()
            state = new_state()
            try:
                self._check(kernels_ring.open_producer(self.slab, state))
            except BaseException:
                if self._file is not None:
                    fcntl.flock(self._file, fcntl.LOCK_UN)
                raise
            self._producer = state
        return self._producer

    def _lock_for_producer(self):
        if self._file is None:
            return  # a private ring: this object is the only way to it
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RingError(f"{self.path}: the ring has a producer already (another process or Ring "
                            f"holds its lock); a ring has one producer") from None

    def consumer(self, index=0, *, evict=None):
        """Consumer ``index``'s state (opened on first use): pass it to the read kernels.

        ``evict`` sets whether this consumer evicts the cache lines of slots it
        has read while behind (:func:`ringbook.kernels.ring.set_evict`). Opened without
        it, the consumer evicts when :func:`evicts_by_default` says so for this
        ring and this machine.
        """
        state = self._consumers.get(index)
        if state is None:
            if not 0 <= index < self.consumers:
                raise IndexError(f"consumer index {index} out of range 0..{self.consumers - 1}")
            state = new_state()
            self._check(kernels_ring.open_consumer(self.slab, index, state))
            self._consumers[index] = state
            if evict is None:
                evict = self.evicts_by_default
        if evict is not None:
            kernels_ring.set_evict(state, evict)
        return state

    @property
    def evicts_by_default(self):
        """Whether a consumer of this ring evicts by default on this machine (:func:`evicts_by_default`)."""
        return evicts_by_default(self.slot_count * self.slot_size, self.consumers, l2_cache_bytes())

    # Writing

    def try_write(self, payload, flags=0, stamp=0):
        """Write one message (bytes-like); ``False`` when the ring is full."""
        status = kernels_ring.try_write(self.slab, self.producer, _as_bytes(payload), flags, stamp)
        if status == kernels_ring.FULL:
            return False
        self._check(status, self._producer)
        return True

    def write(self, payload, flags=0, stamp=0, timeout=None):
        """Write one message, waiting while the ring is full.

        Raises ``TimeoutError`` after ``timeout`` seconds (``None``: no limit).
        """
        payload = _as_bytes(payload)
        producer = self.producer
        status = self._wait(lambda slice_ns: kernels_ring.write_wait(
            self.slab, producer, payload, flags, stamp, self.strategy, slice_ns), timeout)
        self._check(status, producer)

    # Reading

    def try_read(self, consumer=0):
        """The next message as ``bytes``, or ``None`` when there is none."""
        state = self.consumer(consumer)
        out = np.empty(self.payload_capacity, dtype=np.uint8)
        length = kernels_ring.try_read(self.slab, state, out)
        if length == kernels_ring.EMPTY:
            return None
        self._check(length, state)
        return out[:length].tobytes()

    def read(self, consumer=0, timeout=None):
        """The next message as ``bytes``, waiting while there is none.

        Raises ``TimeoutError`` after ``timeout`` seconds (``None``: no limit).
        """
        out = np.empty(self.payload_capacity, dtype=np.uint8)
        length = self.read_into(out, consumer, timeout)
        return out[:length].tobytes()

    def read_into(self, buffer, consumer=0, timeout=None):
        """Copy the next message into ``buffer`` (writable, bytes-like); return its length."""
        out = np.frombuffer(buffer, dtype=np.uint8) if not isinstance(buffer, np.ndarray) else buffer
        if out.dtype != np.uint8 or out.ndim != 1 or not out.flags.c_contiguous or not out.flags.writeable:
            raise TypeError("buffer must be a writable, contiguous 1-D uint8 buffer")
        state = self.consumer(consumer)
        length = self._wait(lambda slice_ns: kernels_ring.read_wait(
            self.slab, state, out, self.strategy, slice_ns), timeout)
        self._check(length, state)
        return length

    # Positions

    def pending(self, consumer=0):
        """Messages consumer ``consumer`` has yet to read."""
        state = self.consumer(consumer)
        return self._check(kernels_ring.pending(self.slab, state), state)

    def free_slots(self):
        """Messages the producer can write without waiting."""
        return self._check(kernels_ring.free_slots(self.slab, self.producer), self._producer)

    def is_empty(self, consumer=0):
        return self.pending(consumer) == 0

    def is_full(self):
        return self.free_slots() == 0

    @property
    def producer_position(self):
        """Messages published so far."""
        return int(kernels_ring.producer_position(self.slab))

    def consumer_position(self, index=0):
        """Messages consumer ``index`` has read so far."""
        if not 0 <= index < self.consumers:
            raise IndexError(f"consumer index {index} out of range 0..{self.consumers - 1}")
        return int(kernels_ring.consumer_position(self.slab, index))

    # Lifetime

    def unlink(self):
        """Remove the name of the shared memory or file behind the ring, now.

        Processes that have attached keep their mapping; no new one can
        attach. Once every process has attached, this leaves nothing behind
        however they exit.
        """
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self._owner = False

    def close(self):
        """Unmap the ring; a shared-memory object this ring created is also unlinked.

        Files are kept (a file-backed ring outlives its processes). Arrays
        still referring to the slab keep the mapping alive until they go.
        """
        if self._owner:
            self.unlink()
        self.slab = None
        self._producer = None
        self._consumers = {}
        if self._mapping is not None:
            _close_mapping(self._mapping)
            self._mapping = None
        if self._file is not None:
            self._file.close()  # and with it the producer's lock
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        where = self.path or "private"
        return (f"Ring({where}, slot_count={self.slot_count}, slot_size={self.slot_size}, "
                f"consumers={self.consumers})")

    # Status codes to exceptions

    def _wait(self, call, timeout):
        """Call a blocking kernel in slices, so that ``timeout=None`` still answers Ctrl-C."""
        remaining = None if timeout is None else max(0, int(timeout * 1e9))
        while True:
            slice_ns = _WAIT_SLICE_NS if remaining is None else min(remaining, _WAIT_SLICE_NS)
            result = call(slice_ns)
            if result != kernels_ring.TIMEOUT:
                return result
            if remaining is not None:
                remaining -= slice_ns
                if remaining <= 0:
                    raise TimeoutError(f"ring wait timed out after {timeout} s")

    def _check(self, result, state=None):
        """``result`` when it is a count or length; else raise the matching exception."""
        if result >= 0:
            return int(result)
        K = kernels_ring
        name = K.STATUS_NAMES.get(result, str(result))
        if result == K.TOO_LARGE:
            raise ValueError(f"message larger than the room for it: a slot holds "
                             f"{self.payload_capacity} payload bytes ({name})")
        if result in (K.BAD_STATE, K.BAD_ARGUMENT):
            raise RingError(f"ring call rejected its arguments ({name})", result)
        if result in (K.CORRUPT_MAGIC, K.CORRUPT_VERSION, K.CORRUPT_GEOMETRY, K.CORRUPT_SIZE):
            raise RingCorruptError(describe_layout_error(self.slab, result, str(self.path or "ring")),
                                   result)
        if K.is_corrupt(result):
            raise RingCorruptError(self._describe_corruption(result, state), result)
        raise RingError(f"ring call failed ({name})", result)

    def _describe_corruption(self, status, state):
        K = kernels_ring
        produced = self.producer_position
        consumed = [self.consumer_position(i) for i in range(self.consumers)]
        if status == K.CORRUPT_POSITION:
            return (f"ring positions make no sense (CORRUPT_POSITION): producer_position={produced}, "
                    f"consumer_positions={consumed}; expected every consumer position in "
                    f"[producer_position - {self.slot_count}, producer_position]")
        position = int(state[K.STATE_POSITION]) if state is not None else -1
        slot_index = position & (self.slot_count - 1)
        slot = K.control_bytes(self.consumers) + slot_index * self.slot_size
        header = self.slab[slot:slot + K.SLOT_HEADER_BYTES]
        length = int(header[0:4].view("<u4")[0])
        sequence = int(header[8:16].view("<i8")[0])
        if status == K.CORRUPT_LENGTH:
            return (f"slot {slot_index} (message {position}) is corrupt (CORRUPT_LENGTH): length field "
                    f"{length}, expected at most {self.payload_capacity}")
        return (f"slot {slot_index} (message {position}) is corrupt (CORRUPT_SEQUENCE): sequence field "
                f"{sequence}, expected {position}")


def _close_mapping(mapping):
    try:
        mapping.close()
    except BufferError:
        pass  # arrays over it remain; the mapping goes with the last of them


def _as_bytes(payload):
    """A message as a C-contiguous 1-D uint8 array, without copying when possible."""
    if isinstance(payload, np.ndarray):
        if payload.dtype == np.uint8 and payload.ndim == 1 and payload.flags.c_contiguous:
            return payload
        return np.ascontiguousarray(payload).reshape(-1).view(np.uint8)
    array = np.frombuffer(payload, dtype=np.uint8)
    # Kernels take writable arrays only: one compiled signature, not two.
    return array if array.flags.writeable else array.copy()


def region_mode(path):
    """The permission bits of a ring's file or shared-memory object (0o600 when ringbook made it)."""
    return stat.S_IMODE(os.stat(path).st_mode)
