"""Rings in memory: a private array, a sealed memfd, a file or POSIX shared memory; and the :class:`Ring` class.

The kernels in :mod:`ringbook.kernels.ring` work on a bare uint8 slab and a small int64
state per side. This module provides the slab and its lifetime:

- **private** (``Ring.create(...)``): an anonymous mapping, page-aligned, shared
  by the threads of one process;
- **shared by name** (``name=``, the default backing between processes): a
  ``memfd`` sealed against shrinking and growing, so no peer can truncate the
  region under a reader. Other processes attach by name through a small
  registry entry, ``/dev/shm/<name>`` (mode 0600), that names the creator's
  process and descriptor; they open the region through
  ``/proc/<pid>/fd/<fd>``, which the kernel allows only to the creator's user.
  The region lives while any process has it open or mapped, and can be
  attached while its creator runs;
- **POSIX shared memory** (``name=..., backing="shm"``): ``/dev/shm/<name>``
  itself, which a peer can truncate;
- **file** (``path=``): a file mapped ``MAP_SHARED``, which outlives the
  processes (the ring can be attached again after a crash), and which a peer
  can truncate.

Files, shared-memory objects and registry entries are created exclusively
(never over an existing one) with mode 0600: only the owner may read or write
them. Attaching reads the header once, validates that copy against the
region's size before mapping it, and refuses a mismatched, truncated or
oversized region with a :class:`RingLayoutError` that says what was expected
and what was found.

A peer that shrinks a file or ``/dev/shm`` backing makes any access to the
lost pages fault (``SIGBUS``). Every :class:`Ring` method checks the backing
is still whole (``fstat``) before touching it and raises
:class:`RingCorruptError`; njit code calling the kernels directly cannot (see
:mod:`ringbook.kernels.ring`), and a shrink between the check and the access
still faults. The sealed memfd backing is the answer: it cannot shrink.
"""

import fcntl
import io
import math
import mmap
import os
import stat
from pathlib import Path

import numpy as np

from ringbook.engine.system import l2_cache_bytes, usable_cores
from ringbook.kernels import ring as kernels_ring
from ringbook.kernels import futex, wait
from ringbook.kernels.status import status_name

#: Where Linux keeps POSIX shared-memory objects (``shm_open`` names), and
#: where a sealed ring's registry entry goes.
SHM_DIRECTORY = Path("/dev/shm")

#: Backings of a ring shared by name: a sealed memfd (the default where
#: Linux offers it) or a POSIX shared-memory object.
BACKINGS = ("memfd", "shm")
_SEALS = getattr(fcntl, "F_SEAL_SHRINK", 0) | getattr(fcntl, "F_SEAL_GROW", 0)
DEFAULT_BACKING = "memfd" if hasattr(os, "memfd_create") and _SEALS else "shm"

#: First line of a registry entry; the second is ``<pid> <fd> <inode>``.
REGISTRY_MAGIC = b"ringbook-memfd 1"
_REGISTRY_MAX_BYTES = 256
_MEMFD_PREFIX = "ringbook:"

#: Unblock the GIL-free wait at least this often, so that Ctrl-C and a
#: ``timeout=None`` wait stay responsive, and a shrunk backing is noticed.
_WAIT_SLICE_NS = 100_000_000

_U32_LIMIT = 1 << 32
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


class RingError(RuntimeError):
    """A ring operation failed; ``status`` is the kernel's status code."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class RingCorruptError(RingError):
    """The shared region holds something impossible (a ``CORRUPT_*`` status), or shrank."""


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


def _header_copy(slab):
    """A private copy of the first cache line of ``slab`` (what exists of it): the header read once."""
    copy = np.zeros(kernels_ring.CACHE_LINE, np.uint8)
    count = min(slab.size, kernels_ring.CACHE_LINE)
    copy[:count] = slab[:count]
    return copy


def _header(header):
    """The header fields of a header copy as a dict (for messages)."""
    u32 = header[8:32].view("<u4")
    u64 = header[32:48].view("<u8")
    return {"magic": bytes(header[0:8]), "version": int(u32[0]), "slot_size": int(u32[1]),
            "slot_count": int(u32[2]), "consumers": int(u32[3]), "slot_header_bytes": int(u32[4]),
            "control_bytes": int(u64[0]), "region_bytes": int(u64[1])}


def describe_layout_error(header, size, status, where="region"):
    """A sentence naming the header field that made :func:`ringbook.kernels.ring.check_header` fail.

    ``header`` is the copy that was validated, ``size`` the region's size in bytes.
    """
    fields = _header(header)
    K = kernels_ring
    if status == K.CORRUPT_SIZE and size < K.control_bytes(1):
        return (f"{where} is truncated: expected at least {K.control_bytes(1)} bytes "
                f"for a ring header, found {size}")
    if status == K.CORRUPT_MAGIC:
        return (f"{where} is not a ring: expected magic {K.MAGIC.to_bytes(8, 'little')!r}, "
                f"found {fields['magic']!r}")
    if status == K.CORRUPT_VERSION:
        return f"{where} has ring layout version {fields['version']}, expected {K.VERSION}"
    if status == K.CORRUPT_GEOMETRY:
        slot_size, count, consumers = fields["slot_size"], fields["slot_count"], fields["consumers"]
        return (f"{where} has an impossible geometry: found slot_size={slot_size}, slot_count={count}, "
                f"consumers={consumers}, slot_header_bytes={fields['slot_header_bytes']}, "
                f"control_bytes={fields['control_bytes']}, region_bytes={fields['region_bytes']}; "
                f"expected powers of two slot_size in {K.MIN_SLOT_SIZE}..{K.MAX_SLOT_SIZE} and "
                f"slot_count in {K.MIN_SLOT_COUNT}..{K.MAX_SLOT_COUNT}, consumers in 1..{K.MAX_CONSUMERS}, "
                f"slot_header_bytes={K.SLOT_HEADER_BYTES}, control_bytes={64 * (2 + consumers)} "
                f"and region_bytes={64 * (2 + consumers) + slot_size * count}")
    if status == K.CORRUPT_SIZE:
        expected = fields["region_bytes"]
        kind = "truncated" if size < expected else "larger than its header says"
        return f"{where} is {kind}: expected {expected} bytes, found {size}"
    return f"{where}: {status_name(status)}"


def _map(fd, size, where):
    try:
        mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, OverflowError, ValueError) as error:
        raise RingLayoutError(f"{where}: cannot map its {size} bytes ({error})",
                              kernels_ring.CORRUPT_SIZE) from None
    return mapping, np.frombuffer(mapping, dtype=np.uint8)


def _create_file(path, size):
    """Create ``path`` exclusively with mode 0600, sized ``size`` bytes (zeros), and map it.

    Returns ``(file, mapping, slab)``; the open file is what the producer locks.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask: owner only
        os.ftruncate(fd, size)
        mapping, slab = _map(fd, size, path)
        return io.FileIO(fd, "r+"), mapping, slab
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise


def sealed_memfd(name, size):
    """A zeroed memfd of ``size`` bytes, mode 0600, sealed against shrinking, growing and new seals:
    its descriptor (close-on-exec)."""
    fd = os.memfd_create(_MEMFD_PREFIX + name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, size)
        # SEAL_SEAL too: no peer may add a seal later (a write seal would lock
        # out the producer, a future-write seal every later attacher).
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS | fcntl.F_SEAL_SEAL)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _create_memfd(path, name, size):
    """A sealed memfd of ``size`` bytes and its registry entry ``path``: ``(file, mapping, slab)``."""
    fd = sealed_memfd(name, size)
    try:
        mapping, slab = _map(fd, size, path)
        entry = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(entry, 0o600)
            os.write(entry, REGISTRY_MAGIC + f"\n{os.getpid()} {fd} {os.fstat(fd).st_ino}\n".encode())
        finally:
            os.close(entry)
        return io.FileIO(fd, "r+"), mapping, slab
    except BaseException:
        os.close(fd)
        raise


def _is_registry(fd):
    """Whether the open file ``fd`` is a registry entry rather than a region."""
    return os.pread(fd, len(REGISTRY_MAGIC), 0) == REGISTRY_MAGIC


def _open_registered(path, entry_fd):
    """Open the sealed memfd a registry entry names; the descriptor."""
    text = os.pread(entry_fd, _REGISTRY_MAX_BYTES, 0)
    lines = text.split(b"\n")
    try:
        pid, number, inode = (int(field) for field in lines[1].split(b" "))
        if len(lines) != 3 or lines[2] or pid <= 0 or number < 0 or inode < 0:
            raise ValueError
    except (ValueError, IndexError):
        raise RingLayoutError(f"{path} is not a ring registry entry: expected {REGISTRY_MAGIC!r} then "
                              f"'<pid> <fd> <inode>', found {text[:80]!r}", kernels_ring.CORRUPT_MAGIC) from None
    source = f"/proc/{pid}/fd/{number}"
    try:
        target = os.readlink(source)
    except (FileNotFoundError, ProcessLookupError):
        raise RingLayoutError(f"{path} names descriptor {number} of process {pid}, which is gone: "
                              f"the ring's creator has exited (a stale entry)", kernels_ring.CORRUPT_MAGIC) from None
    if not target.startswith("/memfd:" + _MEMFD_PREFIX):
        raise RingLayoutError(f"{path} names {source}, which is {target!r}, not a ring's memfd",
                              kernels_ring.CORRUPT_MAGIC)
    fd = os.open(source, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        if os.fstat(fd).st_ino != inode:
            raise RingLayoutError(f"{path} names {source}, which is another memfd than the ring's "
                                  f"(inode {os.fstat(fd).st_ino}, expected {inode})", kernels_ring.CORRUPT_MAGIC)
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        if seals & _SEALS != _SEALS:
            raise RingLayoutError(f"{source} is not sealed against shrinking and growing",
                                  kernels_ring.CORRUPT_MAGIC)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_region(path, fd):
    """Validate the ring header in ``fd`` before mapping it, then map it: ``(file, mapping, slab)``.

    The header is read once into a private copy and validated against the
    file's size, so that neither a header claiming more than the file holds
    nor an enormous file is ever mapped.
    """
    size = os.fstat(fd).st_size
    header = np.frombuffer(os.pread(fd, kernels_ring.CACHE_LINE, 0).ljust(kernels_ring.CACHE_LINE, b"\0"),
                           np.uint8).copy()
    status, _, _, _ = kernels_ring.check_header(header, size)
    if status != kernels_ring.OK:
        raise RingLayoutError(describe_layout_error(header, size, status, str(path)), status)
    mapping, slab = _map(fd, size, path)
    return io.FileIO(fd, "r+"), mapping, slab


def _open_file(path):
    """Open the ring at ``path`` (a file, a shared-memory object or a registry entry): ``(file, mapping, slab, sealed)``."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RingLayoutError(f"{path} is not a regular file", kernels_ring.CORRUPT_MAGIC)
        if _is_registry(fd):
            region = _open_registered(path, fd)
            os.close(fd)
            fd = region
            return (*_open_region(path, fd), True)
        return (*_open_region(path, fd), False)
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
    then anyway and the flushes only cost. With two consumers, one evicting
    sends the other to memory. ``perf/bm_ring.py`` measures both cases
    (``ring_threads_large*``, ``ring_threads_two_consumers``).
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

    The geometry (:attr:`slot_size`, :attr:`slot_count`, :attr:`consumers`)
    is read from the header once, validated, and kept: a peer rewriting the
    header later changes nothing here.

    Attributes
    ----------
    slab : numpy.ndarray
        The region (uint8).
    strategy : numpy.ndarray
        Wait strategy of the blocking calls (see :mod:`ringbook.kernels.wait`).
    path : pathlib.Path or None
        The file, shared-memory object or registry entry behind the ring.
    sealed : bool
        Whether the region cannot shrink (private, or a sealed memfd): no
        size check is needed before touching it.
    """

    def __init__(self, slab, *, mapping=None, file=None, path=None, owner=False, strategy=None, sealed=True):
        header = _header_copy(slab)
        status, slot_size, slot_count, consumers = kernels_ring.check_header(header, slab.size)
        if status != kernels_ring.OK:
            raise RingLayoutError(describe_layout_error(header, slab.size, status, str(path or "ring")), status)
        self.slab = slab
        self.path = path
        self.strategy = default_wait_strategy() if strategy is None else strategy
        self.sealed = sealed
        self._mapping = mapping
        self._file = file  # the open region, locked while this ring is its producer
        self._owner = owner  # unlinks the name it created
        self._producer = None
        self._consumers = {}
        self.slot_size = int(slot_size)
        self.slot_count = int(slot_count)
        self.consumers = int(consumers)
        self.payload_capacity = self.slot_size - kernels_ring.SLOT_HEADER_BYTES
        if not futex.register_asymmetric():
            # Asymmetric doorbells need every writing process registered: this one fences instead.
            for bell in (kernels_ring.DATA_BELL_OFFSET, kernels_ring.SPACE_BELL_OFFSET):
                futex.set_asymmetric(slab, bell, False)

    # Creating and attaching

    @classmethod
    def create(cls, slot_count, slot_size=64, consumers=1, *, name=None, path=None, backing=None,
               strategy=None):
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
            Share the ring between processes under this name (one path
            component), attached with ``Ring.attach(name=...)``.
        path : str or path-like, optional
            Create this file (mode 0600). Without ``name`` or ``path`` the
            ring is private to this process.
        backing : {"memfd", "shm"}, optional
            With ``name``: a memfd sealed against shrinking and growing,
            registered as ``/dev/shm/<name>`` (``"memfd"``, the default on
            Linux), or the POSIX shared-memory object ``/dev/shm/<name>``
            itself (``"shm"``), which a peer can truncate.
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
            raise ValueError("give name (shared between processes) or path (file), not both")
        if backing is not None and (name is None or backing not in BACKINGS):
            raise ValueError(f"backing is one of {BACKINGS}, with a name; got backing={backing!r}, name={name!r}")
        backing = backing or DEFAULT_BACKING
        size = kernels_ring.region_bytes(slot_size, slot_count, consumers)
        file, sealed = None, True
        if name is not None and backing == "memfd":
            path = shm_path(name)
            file, mapping, slab = _create_memfd(path, name, size)
        elif path is not None or name is not None:
            path = shm_path(name) if name is not None else path
            file, mapping, slab = _create_file(path, size)
            sealed = False
        else:
            mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            slab = np.frombuffer(mapping, dtype=np.uint8)
        kernels_ring.format_slab(slab, slot_size, slot_count, consumers)
        if futex.register_asymmetric():  # writers skip the fence; a consumer about to park pays
            for bell in (kernels_ring.DATA_BELL_OFFSET, kernels_ring.SPACE_BELL_OFFSET):
                futex.set_asymmetric(slab, bell, True)
        return cls(slab, mapping=mapping, file=file, path=None if path is None else Path(path),
                   owner=name is not None, strategy=strategy, sealed=sealed)

    @classmethod
    def attach(cls, *, name=None, path=None, strategy=None):
        """Attach to the ring shared under ``name`` or in the file ``path``.

        Raises :class:`RingLayoutError` when the region is not a valid ring
        (the message names the field or the sizes, what was expected and what
        was found), ``FileNotFoundError`` when it does not exist.
        """
        if (name is None) == (path is None):
            raise ValueError("give exactly one of name (shared between processes) or path (file)")
        path = shm_path(name) if name is not None else Path(path)
        file, mapping, slab, sealed = _open_file(path)
        try:
            return cls(slab, mapping=mapping, file=file, path=path, strategy=strategy, sealed=sealed)
        except BaseException:
            del slab
            _close_mapping(mapping)
            file.close()
            raise

    # What njit code needs

    @property
    def producer(self):
        """The producer's state (opened on first use): pass it to the write kernels.

        A ring has one producer. For a shared ring this takes an exclusive
        lock on the region (``flock``) first, held until :meth:`close` or the
        process ends however it ends, and raises :class:`RingError` while
        another process, or another :class:`Ring` attached to the same
        region, holds it. A child made by ``fork`` shares the open region,
        and with it the lock.
        """
        if self._producer is None:
            self._check_whole()
            self._lock_for_producer()
            state = new_state()
            try:
                self._check(kernels_ring.open_producer(self.slab, state))
                self._check_geometry(state)
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
            self._check_whole()
            state = new_state()
            self._check(kernels_ring.open_consumer(self.slab, index, state))
            self._check_geometry(state)
            self._consumers[index] = state
            if evict is None:
                evict = self.evicts_by_default
        if evict is not None:
            kernels_ring.set_evict(state, evict)
        return state

    def _check_geometry(self, state):
        """Raise when a state was opened on a header other than the one this ring validated."""
        K = kernels_ring
        opened = (int(state[K.STATE_SLOT_SIZE]), int(state[K.STATE_SLOT_MASK]) + 1, int(state[K.STATE_CONSUMERS]))
        if opened != (self.slot_size, self.slot_count, self.consumers):
            state[K.ROLE] = 0
            raise RingCorruptError(
                f"{self.path or 'ring'}: the header changed after it was attached: found slot_size, slot_count, "
                f"consumers = {opened}, attached as {(self.slot_size, self.slot_count, self.consumers)}",
                K.CORRUPT_GEOMETRY)

    @property
    def evicts_by_default(self):
        """Whether a consumer of this ring evicts by default on this machine (:func:`evicts_by_default`)."""
        return evicts_by_default(self.slot_count * self.slot_size, self.consumers, l2_cache_bytes())

    # Writing

    def try_write(self, payload, flags=0, stamp=0):
        """Write one message (bytes-like); ``False`` when the ring is full.

        ``flags`` is a u32 (0 .. 2**32 - 1), ``stamp`` an int64.
        """
        payload, flags, stamp = _as_bytes(payload), _check_flags(flags), _check_stamp(stamp)
        producer = self.producer
        self._check_whole()
        status = kernels_ring.try_write(self.slab, producer, payload, flags, stamp)
        if status == kernels_ring.FULL:
            return False
        self._check(status, producer)
        return True

    def write(self, payload, flags=0, stamp=0, timeout=None):
        """Write one message, waiting while the ring is full.

        Raises ``TimeoutError`` after ``timeout`` seconds (``None`` or
        ``float("inf")``: no limit).
        """
        payload, flags, stamp = _as_bytes(payload), _check_flags(flags), _check_stamp(stamp)
        producer = self.producer
        status = self._wait(lambda slice_ns: kernels_ring.write_wait(
            self.slab, producer, payload, flags, stamp, self.strategy, slice_ns), timeout)
        self._check(status, producer)

    # Reading

    def try_read(self, consumer=0):
        """The next message as ``bytes``, or ``None`` when there is none."""
        state = self.consumer(consumer)
        out = np.empty(self.payload_capacity, dtype=np.uint8)
        self._check_whole()
        length = kernels_ring.try_read(self.slab, state, out)
        if length == kernels_ring.EMPTY:
            return None
        self._check(length, state)
        return out[:length].tobytes()

    def read(self, consumer=0, timeout=None):
        """The next message as ``bytes``, waiting while there is none.

        Raises ``TimeoutError`` after ``timeout`` seconds (``None`` or
        ``float("inf")``: no limit).
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
        self._check_whole()
        return self._check(kernels_ring.pending(self.slab, state), state)

    def free_slots(self):
        """Messages the producer can write without waiting."""
        producer = self.producer
        self._check_whole()
        return self._check(kernels_ring.free_slots(self.slab, producer), producer)

    def wake(self):
        """Wake every thread parked on this ring (both doorbells), so that it looks again at
        what it waits for: after setting a stop or done flag that a parked reader must see."""
        for bell in (kernels_ring.DATA_BELL_OFFSET, kernels_ring.SPACE_BELL_OFFSET):
            futex.doorbell_wake(self._whole_slab(), bell)

    def is_empty(self, consumer=0):
        return self.pending(consumer) == 0

    def is_full(self):
        return self.free_slots() == 0

    @property
    def producer_position(self):
        """Messages published so far."""
        return self._position(int(kernels_ring.producer_position(self._whole_slab())), "producer_position")

    def consumer_position(self, index=0):
        """Messages consumer ``index`` has read so far."""
        if not 0 <= index < self.consumers:
            raise IndexError(f"consumer index {index} out of range 0..{self.consumers - 1}")
        return self._position(int(kernels_ring.consumer_position(self._whole_slab(), index)),
                              f"consumer {index}'s position")

    def _position(self, position, what):
        if position < 0:
            raise RingCorruptError(f"{self.path or 'ring'}: {what} is {position}: positions only grow from 0",
                                   kernels_ring.CORRUPT_POSITION)
        return position

    # Lifetime

    def unlink(self):
        """Remove the name of the region behind the ring (file, shared memory or registry entry), now.

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
        """Unmap the ring; a name this ring created (shared memory, registry entry) is also unlinked.

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

    # The backing's size

    def _check_whole(self):
        """Raise :class:`RingCorruptError` when the backing no longer holds the whole mapping.

        A peer may truncate a file or ``/dev/shm`` backing; touching the lost
        pages would fault. A sealed or private region cannot shrink.
        """
        if self.slab is None:
            raise RingError("the ring is closed")
        if self.sealed:
            return
        size = os.fstat(self._file.fileno()).st_size
        if size < self.slab.size:
            raise RingCorruptError(f"{self.path}: the region shrank to {size} bytes under the ring, which maps "
                                   f"{self.slab.size} bytes; a peer truncated it (a sealed backing, "
                                   f"Ring.create(name=...), cannot shrink)", kernels_ring.CORRUPT_SIZE)

    def _whole_slab(self):
        self._check_whole()
        return self.slab

    # Status codes to exceptions

    def _wait(self, call, timeout):
        """Call a blocking kernel in slices, so that an unlimited wait still answers Ctrl-C."""
        remaining = _timeout_ns(timeout)
        while True:
            self._check_whole()
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
        name = status_name(result)
        if result == K.TOO_LARGE:
            raise ValueError(f"message larger than the room for it: a slot holds "
                             f"{self.payload_capacity} payload bytes ({name})")
        if result in (K.BAD_STATE, K.BAD_ARGUMENT):
            raise RingError(f"ring call rejected its arguments ({name})", result)
        if result in (K.CORRUPT_MAGIC, K.CORRUPT_VERSION, K.CORRUPT_GEOMETRY, K.CORRUPT_SIZE):
            self._check_whole()
            raise RingCorruptError(describe_layout_error(_header_copy(self.slab), self.slab.size, result,
                                                         str(self.path or "ring")), result)
        if K.is_corrupt(result):
            raise RingCorruptError(self._describe_corruption(result, state), result)
        raise RingError(f"ring call failed ({name})", result)

    def _describe_corruption(self, status, state):
        K = kernels_ring
        slab = self._whole_slab()
        if status == K.CORRUPT_POSITION:
            produced = int(K.producer_position(slab))
            consumed = [int(K.consumer_position(slab, i)) for i in range(self.consumers)]
            return (f"ring positions make no sense (CORRUPT_POSITION): producer_position={produced}, "
                    f"consumer_positions={consumed}; expected every consumer position in "
                    f"[producer_position - {self.slot_count}, producer_position]")
        position = int(state[K.STATE_POSITION]) if state is not None else -1
        slot_index = position & (self.slot_count - 1)
        slot = K.control_bytes(self.consumers) + slot_index * self.slot_size
        header = slab[slot:slot + K.SLOT_HEADER_BYTES].copy()  # read once
        length = int(header[0:4].view("<u4")[0])
        sequence = int(header[8:16].view("<i8")[0])
        if status == K.CORRUPT_LENGTH:
            return (f"slot {slot_index} (message {position}) is corrupt (CORRUPT_LENGTH): length field "
                    f"{length}, expected at most {self.payload_capacity}")
        return (f"slot {slot_index} (message {position}) is corrupt (CORRUPT_SEQUENCE): sequence field "
                f"{sequence}, expected {position}")


def _timeout_ns(timeout):
    """A wait's limit in nanoseconds, or ``None`` for no limit (``None`` or infinity)."""
    if timeout is None or timeout == math.inf:
        return None
    if math.isnan(timeout):
        raise ValueError("timeout is NaN: give seconds, or None (or inf) to wait for ever")
    if timeout <= 0:
        return 0
    nanoseconds = timeout * 1e9
    return None if nanoseconds >= _I64_MAX else int(nanoseconds)  # centuries: no limit


def _check_flags(flags):
    """A slot's flags: an int in 0 .. 2**32 - 1 (a u32 field), never cut to fit."""
    flags = int(flags)
    if not 0 <= flags < _U32_LIMIT:
        raise ValueError(f"flags must fit the slot's u32 field (0..{_U32_LIMIT - 1}), got {flags}")
    return flags


def _check_stamp(stamp):
    """A slot's stamp: an int64, never cut to fit."""
    stamp = int(stamp)
    if not _I64_MIN <= stamp <= _I64_MAX:
        raise ValueError(f"stamp must fit the slot's int64 field, got {stamp}")
    return stamp


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
    """The permission bits of a ring's file, shared-memory object or registry entry (0o600 when ringbook made it)."""
    return stat.S_IMODE(os.stat(path).st_mode)
