"""The journal: crash-safe, checksummed, seekable files of what the engine received.

A journal is a directory. Each stream (a feed, a channel) is a series of
segment files ``<root>/<YYYY-MM-DD>/<stream>.<first sequence>.rbj``: the UTC
day of its first record, the stream's name, the sequence of its first record.
A segment ends at midnight UTC (by receive time) or when it reaches
``segment_bytes`` (256 MiB by default). A new segment is written under a
temporary name and renamed once its header is complete, so a segment under
its final name always has a whole header.

Segment header (version 1), little-endian
-----------------------------------------
======  =====  ===============================================================
offset  type   field
======  =====  ===============================================================
0       8 B    magic ``b"RINGBJNL"``
8       u32    format version (1)
12      u32    header size ``H`` in bytes (a multiple of 8): records start at ``H``
16      i64    sequence of the segment's first record
24      i64    creation time, wall clock ns since the Unix epoch
32      u32    metadata length ``M``
36      u32    CRC32C over bytes ``[0, 36)`` and ``[40, 40 + M)``
40      M B    metadata, UTF-8 JSON (below); then zeros up to ``H``
======  =====  ===============================================================

The metadata object: ``stream``; ``payload``: ``"raw"`` (bytes as received)
or ``{"dtype": <numpy descr>, "itemsize": n}`` (records of that dtype);
``instruments``: a list of ``{"symbol", "name", "price_scale", "size_scale",
"tick"}``; ``calibration``: ``{"ticks_per_ns", "wall_ns", "tsc"}`` (the TSC
rate, and a wall clock / TSC pair read when the segment was opened);
``source``: free-form facts about where the data came from (an import names
its format and file). Records follow, laid out as
:mod:`ringbook.kernels.journal` documents.

Sparse index
------------
Beside each segment, ``<stream>.<first sequence>.rbi`` holds every
``index_every``-th record's ``(sequence, offset, greatest receive ns before
it)`` and what a scan of the segment found (its size then, the end of its good
records, the next sequence, receive-time bounds). A reader trusts an index
whose segment size, first sequence and header checksum still match and whose
own checksum is right; otherwise it scans the segment again (checking every
record) and rewrites the index. The writer writes the index when it closes or
rotates a segment.

Recovery
--------
A process that dies mid-write leaves a last record cut short (or zeros, or
garbage, depending on the filesystem). A reader stops at the last good record
and reports the torn tail (where, how many bytes); a writer opening the stream
cuts it off and continues at the next sequence. A bad record *followed by
good ones* is corruption, never a torn tail: the reader raises
:class:`JournalCorruptError` naming the segment and offset, or with
``skip_corrupt=True`` counts it and resumes at the next good record.

Durability
----------
``none``: records are handed to the operating system (one ``write`` per
batch); they survive a crash of the process, not of the machine.
``interval``: also ``fdatasync`` at most every ``interval_ms`` (default 10).
``batch``: ``fdatasync`` after every batch. :attr:`JournalWriter.last_durable_sequence`
is the last record that has reached that level. A failed ``fdatasync`` is
retried after the bytes it may have dropped are written again (see
:class:`JournalWriter`).
"""

import ast
import collections
import datetime as _datetime
import errno
import heapq
import json
import logging
import mmap
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ringbook.engine.files import fsync_path, take_lock, write_atomic
from ringbook.kernels import journal as jk
from ringbook.kernels.clock import tsc_now
from ringbook.kernels.crc32c import checksum
from ringbook.kernels.events import Instruments
from ringbook.kernels.journal import (RECORD_BOOK_RESET, RECORD_CHECKPOINT, RECORD_DATA, RECORD_DISCONNECT,
                                      RECORD_DROPS, RECORD_GAP, RECORD_KIND_NAMES, RECORD_RECONNECT)
from ringbook.kernels.status import EMPTY, OK, status_name
from ringbook.kernels.wait import backoff, wait_strategy

__all__ = ["JournalWriter", "JournalReader", "JournalError", "JournalCorruptError", "Record", "verify",
           "RECORD_DATA", "RECORD_GAP", "RECORD_DISCONNECT", "RECORD_RECONNECT", "RECORD_BOOK_RESET",
           "RECORD_DROPS", "RECORD_CHECKPOINT", "RECORD_KIND_NAMES"]

log = logging.getLogger("ringbook.journal")

MAGIC = b"RINGBJNL"
INDEX_MAGIC = b"RINGBIDX"
FORMAT_VERSION = 1
INDEX_VERSION = 1
HEADER_FIXED_BYTES = 40
SEGMENT_SUFFIX = ".rbj"
INDEX_SUFFIX = ".rbi"
DEFAULT_SEGMENT_BYTES = 256 << 20
DEFAULT_INDEX_EVERY = 1024
#: The framing buffer, and the largest single ``write``: a batch of many records is
#: written in chunks of this size, each handed once to the writing thread.
DEFAULT_BATCH_BYTES = 4 << 20
DURABILITY = ("none", "interval", "batch")
#: Chunks of one append framed and waiting for (or being written by) the writing thread, at most.
WRITES_IN_FLIGHT = 3
#: Bytes a flusher's drains may frame ahead of the disk (:meth:`JournalWriter.drain`): a
#: ``write`` that blocks while the kernel writes back dirty pages then stalls the writing
#: thread, not the ring's consumer.
DEFAULT_WRITE_BEHIND_BYTES = 64 << 20
#: A drained record waits at most this long in a part-filled chunk before it is handed over.
HAND_OVER_AFTER_NS = 1_000_000
#: Errors a writer retries (with back-off) rather than gives up on.
RETRYABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EINTR, errno.EAGAIN})
_STREAM_NAME = re.compile(r"[A-Za-z0-9_\-]{1,128}")
_SEGMENT_NAME = re.compile(r"(?P<stream>[A-Za-z0-9_\-]{1,128})\.(?P<first>[0-9]{1,19})\.rbj")
_DAY_NAME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NS_PER_DAY = 86_400 * 1_000_000_000

# Index file: fixed header, then (sequence, offset, max ns before) int64 triples.
_INDEX_HEADER = np.dtype([
    ("magic", "S8"), ("version", "<u4"), ("every", "<u4"), ("first_sequence", "<i8"),
    ("segment_size", "<i8"), ("valid_end", "<i8"), ("records", "<i8"), ("data_records", "<i8"),
    ("next_sequence", "<i8"), ("first_ns", "<i8"), ("last_ns", "<i8"), ("max_ns", "<i8"),
    ("entries", "<i8"), ("header_crc", "<u4"), ("tail_crc", "<u4"), ("reserved", "<u4"), ("crc", "<u4"),
])
#: An index is trusted only if the checksum of this many last bytes of its segment still matches.
_TAIL_CHECK_BYTES = 4096


def _record_bytes(length):
    """:func:`ringbook.kernels.journal.record_size` in Python (no kernel call per batch)."""
    return jk.RECORD_HEADER_BYTES + ((length + jk.ALIGNMENT - 1) & ~(jk.ALIGNMENT - 1))


def _per_record(value, count, name):
    """``value`` as an int64 array of ``count`` values (one per record), or of one value for every
    record when it is a scalar: nothing is copied out to ``count`` values."""
    array = np.asarray(value)
    if array.ndim == 0:
        return np.full(1, int(array), np.int64)
    if array.shape != (count,) and array.shape != (1,):
        raise ValueError(f"{name}: {array.shape[0] if array.ndim == 1 else array.shape} values for {count} records")
    return np.ascontiguousarray(array, np.int64)


def _tail_crc(buffer, header_bytes):
    start = max(header_bytes, buffer.size - _TAIL_CHECK_BYTES)
    return int(jk.crc32c(buffer, start, buffer.size, 0)) if buffer.size > start else 0


class JournalError(RuntimeError):
    """A journal cannot be read or written as asked; names the file (and offset) concerned."""

    def __init__(self, message, path=None, offset=None):
        self.path = None if path is None else str(path)
        self.offset = offset
        where = self.path or ""
        if offset is not None:
            where += f", offset {offset}"
        super().__init__(f"{where}: {message}" if where else message)


class JournalCorruptError(JournalError):
    """A record with a bad checksum, length or sequence, followed by good ones."""

    def __init__(self, message, path=None, offset=None, status=None):
        super().__init__(message, path, offset)
        self.status = status


@dataclass
class Record:
    """One journal record as read back.

    ``payload`` is a read-only memoryview into the segment's mapping, valid
    while the reader is open (copy it with ``bytes()`` to keep it).
    """

    stream: str
    sequence: int
    receive_tsc: int
    receive_ns: int
    kind: int
    flags: int
    payload: memoryview

    @property
    def kind_name(self):
        return RECORD_KIND_NAMES.get(self.kind, f"kind {self.kind}")


# ------------------------------------------------------------------ names, headers


def check_stream_name(stream):
    if not isinstance(stream, str) or not _STREAM_NAME.fullmatch(stream):
        raise ValueError(f"stream name {stream!r}: use 1-128 letters, digits, '_' or '-'")
    return stream


def utc_day(ns):
    """``YYYY-MM-DD`` of a wall-clock time in ns (UTC)."""
    return time.strftime("%Y-%m-%d", time.gmtime(ns // 1_000_000_000))


def _day_start_ns(ns):
    return ns - ns % _NS_PER_DAY


def segment_path(root, stream, first_sequence, day):
    return Path(root) / day / f"{stream}.{first_sequence}{SEGMENT_SUFFIX}"


def index_path(segment):
    return Path(segment).with_suffix(INDEX_SUFFIX)


def _describe_payload(payload):
    if isinstance(payload, str) and payload == "raw":
        return "raw", None
    dtype = np.dtype(payload)
    return {"dtype": repr(np.lib.format.dtype_to_descr(dtype)), "itemsize": dtype.itemsize}, dtype


def _payload_dtype(description):
    if description == "raw" or description is None:
        return None
    return np.lib.format.descr_to_dtype(ast.literal_eval(description["dtype"]))


def _describe_instruments(instruments):
    if instruments is None:
        return []
    if isinstance(instruments, Instruments):
        rows = instruments.table[:len(instruments)]
        return [{"symbol": int(row["symbol"]), "name": row["name"].decode(),
                 "price_scale": int(row["price_scale"]), "size_scale": int(row["size_scale"]),
                 "tick": int(row["tick"])} for row in rows]
    return [dict(item) for item in instruments]


def _describe_calibration(calibration):
    facts = {"wall_ns": time.time_ns(), "tsc": int(tsc_now()), "ticks_per_ns": None}
    if calibration is not None:
        facts["ticks_per_ns"] = float(calibration.ticks_per_ns)
        facts["source"] = getattr(calibration, "source", None)
    return facts


def encode_header(metadata, first_sequence, created_ns):
    """The bytes of a segment header (see the module docstring)."""
    text = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode()
    size = (HEADER_FIXED_BYTES + len(text) + 7) & ~7
    header = bytearray(size)
    header[0:8] = MAGIC
    header[8:12] = FORMAT_VERSION.to_bytes(4, "little")
    header[12:16] = size.to_bytes(4, "little")
    header[16:24] = int(first_sequence).to_bytes(8, "little", signed=True)
    header[24:32] = int(created_ns).to_bytes(8, "little", signed=True)
    header[32:36] = len(text).to_bytes(4, "little")
    header[40:40 + len(text)] = text
    crc = checksum(bytes(header[40:40 + len(text)]), checksum(bytes(header[0:36])))
    header[36:40] = crc.to_bytes(4, "little")
    return bytes(header)


@dataclass
class SegmentHeader:
    """A decoded segment header."""

    path: str
    first_sequence: int
    created_ns: int
    header_bytes: int
    metadata: dict
    crc: int

    @property
    def stream(self):
        return self.metadata.get("stream")

    @property
    def dtype(self):
        return _payload_dtype(self.metadata.get("payload"))


def decode_header(data, path):
    """Decode and check the header at the start of ``data``; raise :class:`JournalError` when bad."""
    data = memoryview(data)
    if len(data) < HEADER_FIXED_BYTES:
        raise JournalError(f"{len(data)} bytes: shorter than a segment header ({HEADER_FIXED_BYTES})", path, 0)
    if bytes(data[0:8]) != MAGIC:
        raise JournalError(f"not a journal segment (magic {bytes(data[0:8])!r}, expected {MAGIC!r})", path, 0)
    version = int.from_bytes(data[8:12], "little")
    if version != FORMAT_VERSION:
        raise JournalError(f"unknown segment format version {version} (this reads {FORMAT_VERSION})", path, 8)
    size = int.from_bytes(data[12:16], "little")
    length = int.from_bytes(data[32:36], "little")
    if size % 8 or length > size - HEADER_FIXED_BYTES or size > len(data):
        raise JournalError(f"impossible header size {size} (metadata {length} bytes, file {len(data)})", path, 12)
    crc = int.from_bytes(data[36:40], "little")
    found = checksum(bytes(data[40:40 + length]), checksum(bytes(data[0:36])))
    if found != crc:
        raise JournalError(f"header checksum mismatch (stored {crc:#010x}, computed {found:#010x})", path, 36)
    try:
        metadata = json.loads(bytes(data[40:40 + length]).decode())
    except ValueError as error:
        raise JournalError(f"header metadata is not JSON: {error}", path, 40) from None
    return SegmentHeader(str(path), int.from_bytes(data[16:24], "little", signed=True),
                         int.from_bytes(data[24:32], "little", signed=True), size, metadata, crc)


def list_segments(root, stream=None):
    """``{stream: [(first sequence, path), ...]}`` sorted by first sequence, for the segments under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise JournalError("no such journal directory", root)
    found = {}
    for day in sorted(root.iterdir()):
        if not day.is_dir() or not _DAY_NAME.fullmatch(day.name):
            continue
        for path in day.iterdir():
            match = _SEGMENT_NAME.fullmatch(path.name)
            if match is None or (stream is not None and match["stream"] != stream):
                continue
            found.setdefault(match["stream"], []).append((int(match["first"]), path))
    for segments in found.values():
        segments.sort()
    return found


# ------------------------------------------------------------------ scanning a segment


@dataclass
class CorruptRegion:
    """A stretch of bad bytes inside a segment, with good records after it."""

    offset: int
    status: int
    resume_offset: int     # -1: nothing good after it in this segment
    resume_sequence: int
    lost_records: int      # sequences missing between the last good record and the resumption

    def describe(self, path):
        return (f"{path}, offset {self.offset}: {status_name(self.status)}; "
                f"{self.lost_records} record(s) lost, next good record at offset {self.resume_offset}")


@dataclass
class SegmentScan:
    """What is in one segment: its good records, its index, its torn tail or damage."""

    path: Path
    header: SegmentHeader
    size: int
    valid_end: int
    records: int
    data_records: int
    next_sequence: int
    first_ns: int
    last_ns: int
    max_ns: int
    index: np.ndarray
    corrupt: list = field(default_factory=list)
    torn_offset: int = -1     # where the bad tail starts (-1: none)
    torn_status: int = OK

    @property
    def first_sequence(self):
        return self.header.first_sequence

    @property
    def torn_bytes(self):
        return 0 if self.torn_offset < 0 else self.size - self.torn_offset

    @property
    def last_sequence(self):
        return self.next_sequence - 1


def _index_capacity(size, every):
    return size // (jk.RECORD_HEADER_BYTES * every) + 2


def scan_segment(buffer, header, path, index_every=DEFAULT_INDEX_EVERY, resume=None):
    """Check every record of a segment (``buffer``: its bytes as uint8) and index it.

    A bad record followed, later in the segment, by a good record of a later
    sequence is recorded as a :class:`CorruptRegion`; a bad record with
    nothing good after it is the segment's torn tail. With ``resume`` (an
    earlier scan of the same segment, which has grown since), only the bytes
    after its good records are scanned.
    """
    size = buffer.size
    segment = jk.new_segment_state(header.first_sequence, 0, index_every)
    index = np.zeros((_index_capacity(size, index_every), jk.INDEX_COLUMNS), np.int64)
    summary = np.zeros(jk.SCAN_SIZE, np.int64)
    offset = header.header_bytes
    sequence = header.first_sequence
    records = data_records = 0
    first_ns = None
    corrupt = []
    if resume is not None and not resume.corrupt:
        count = len(resume.index)
        index[:count] = resume.index
        segment[jk.SEGMENT_INDEX_COUNT] = count
        if count:
            segment[jk.SEGMENT_NEXT_ENTRY] = resume.index[-1, jk.INDEX_SEQUENCE] + index_every
        segment[jk.SEGMENT_MAX_NS] = resume.max_ns
        segment[jk.SEGMENT_LAST_NS] = resume.last_ns
        offset, sequence = resume.valid_end, resume.next_sequence
        records, data_records = resume.records, max(resume.data_records, 0)
        first_ns = resume.first_ns if resume.records else None
    torn_offset, torn_status = -1, OK
    while True:
        status = jk.scan_records(buffer, offset, size, sequence, segment, index, summary)
        records += int(summary[jk.SCAN_RECORDS])
        data_records += int(summary[jk.SCAN_DATA_RECORDS])
        if first_ns is None and summary[jk.SCAN_RECORDS]:
            first_ns = int(summary[jk.SCAN_FIRST_NS])
        offset = int(summary[jk.SCAN_END])
        sequence = int(summary[jk.SCAN_NEXT_SEQUENCE])
        if status == EMPTY:
            break
        resume = int(jk.find_next_record(buffer, offset + 8, size, sequence))
        if resume < 0:
            torn_offset, torn_status = offset, int(status)
            break
        resumed_sequence = int(jk.record_header(buffer, resume)[1])
        corrupt.append(CorruptRegion(offset, int(status), resume, resumed_sequence, resumed_sequence - sequence))
        offset, sequence = resume, resumed_sequence
    valid_end = offset if torn_offset < 0 else torn_offset
    count = int(segment[jk.SEGMENT_INDEX_COUNT])
    none = jk.INT64_MIN
    return SegmentScan(Path(path), header, size, valid_end, records, data_records, sequence,
                       none if first_ns is None else first_ns,
                       int(segment[jk.SEGMENT_LAST_NS]), int(segment[jk.SEGMENT_MAX_NS]),
                       index[:count].copy(), corrupt, torn_offset, torn_status)


def write_index(scan, buffer, every=DEFAULT_INDEX_EVERY, tail_crc=None):
    """Write ``scan``'s index beside its segment (atomically), ``buffer`` holding the segment's bytes
    (only its last few KiB are read), or ``tail_crc`` given instead. Segments with damage get none."""
    if scan.corrupt:
        return
    header = np.zeros(1, _INDEX_HEADER)
    header["magic"] = INDEX_MAGIC
    header["version"] = INDEX_VERSION
    header["every"] = every
    header["first_sequence"] = scan.first_sequence
    header["segment_size"] = scan.size
    header["valid_end"] = scan.valid_end
    header["records"] = scan.records
    header["data_records"] = scan.data_records
    header["next_sequence"] = scan.next_sequence
    header["first_ns"] = scan.first_ns
    header["last_ns"] = scan.last_ns
    header["max_ns"] = scan.max_ns
    header["entries"] = len(scan.index)
    header["header_crc"] = scan.header.crc
    header["tail_crc"] = _tail_crc(buffer[:scan.size], scan.header.header_bytes) if tail_crc is None else tail_crc
    entries = np.ascontiguousarray(scan.index, dtype="<i8").tobytes()
    header["crc"] = checksum(entries, checksum(header.tobytes()[:-4]))
    try:
        write_atomic(index_path(scan.path), header.tobytes() + entries, durable=False)
    except OSError as error:  # a read-only journal is still readable
        log.debug("cannot write index %s: %s", index_path(scan.path), error)


def read_index(path, header, buffer):
    """The :class:`SegmentScan` an index file stores, or None when missing, damaged or stale
    (``buffer``: the segment's bytes)."""
    size = buffer.size
    try:
        data = Path(index_path(path)).read_bytes()
    except OSError:
        return None
    if len(data) < _INDEX_HEADER.itemsize:
        return None
    fixed = np.frombuffer(data[:_INDEX_HEADER.itemsize], _INDEX_HEADER)[0]
    entries = int(fixed["entries"])
    if (fixed["magic"] != INDEX_MAGIC or fixed["version"] != INDEX_VERSION or entries < 0
            or len(data) != _INDEX_HEADER.itemsize + 24 * entries
            or int(fixed["first_sequence"]) != header.first_sequence or int(fixed["header_crc"]) != header.crc
            or int(fixed["segment_size"]) != size
            or int(fixed["tail_crc"]) != _tail_crc(buffer, header.header_bytes)):
        return None
    body = data[_INDEX_HEADER.itemsize:]
    if checksum(body, checksum(data[:_INDEX_HEADER.itemsize - 4])) != int(fixed["crc"]):
        return None
    valid_end = int(fixed["valid_end"])
    if not header.header_bytes <= valid_end <= size:
        return None
    index = np.frombuffer(body, "<i8").reshape(entries, jk.INDEX_COLUMNS).astype(np.int64)
    return SegmentScan(Path(path), header, size, valid_end, int(fixed["records"]), int(fixed["data_records"]),
                       int(fixed["next_sequence"]), int(fixed["first_ns"]), int(fixed["last_ns"]),
                       int(fixed["max_ns"]), index, [], valid_end if valid_end < size else -1,
                       OK if valid_end == size else jk.CORRUPT_LENGTH)


class _Mapped:
    """A segment file mapped read-only (remapped when it grows)."""

    def __init__(self, path):
        self.path = Path(path)
        self.size = 0
        self.buffer = np.zeros(0, np.uint8)
        self._mapping = None
        self.refresh()

    def refresh(self):
        size = os.path.getsize(self.path)
        if size != self.size:
            with open(self.path, "rb") as file:
                mapping = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ) if size else None
            self._mapping = mapping
            self.buffer = np.frombuffer(mapping, np.uint8) if mapping is not None else np.zeros(0, np.uint8)
            self.size = size
        return self.size

    def close(self):
        self.buffer = None
        self._mapping = None  # views handed out keep the mapping alive until they go


def open_segment(path, index_every=DEFAULT_INDEX_EVERY, use_index=True, save_index=True):
    """Map a segment and return ``(mapping, scan)``, trusting a fresh index or rescanning."""
    mapped = _Mapped(path)
    header = decode_header(mapped.buffer[:max(HEADER_FIXED_BYTES, min(mapped.size, 1 << 20))], path)
    if header.header_bytes > mapped.size:
        raise JournalError("segment shorter than its header", path)
    scan = read_index(path, header, mapped.buffer) if use_index else None
    if scan is None:
        scan = scan_segment(mapped.buffer, header, path, index_every)
        if save_index:
            write_index(scan, mapped.buffer, index_every)
    return mapped, scan


def has_writer(root, stream, locks="/proc/locks"):
    """Whether a process holds ``stream``'s writer lock in journal ``root`` (a live
    :class:`JournalWriter`), read from Linux's ``/proc/locks`` without taking the lock
    (taking it, even for a moment, would refuse a writer starting then). The lock goes
    with the writer's process, however it ends.

    Raises
    ------
    OSError
        ``locks`` cannot be read (not Linux).
    """
    try:
        status = os.stat(Path(root) / f".{check_stream_name(stream)}.lock")
    except FileNotFoundError:
        return False
    wanted = (os.major(status.st_dev), os.minor(status.st_dev), status.st_ino)
    with open(locks) as file:
        for line in file:
            fields = line.split()
            # "1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF"; "1: -> FLOCK ..." waits
            if len(fields) < 6 or fields[1] != "FLOCK":
                continue
            device = fields[5].split(":")
            try:
                if (int(device[0], 16), int(device[1], 16), int(device[2])) == wanted:
                    return True
            except (ValueError, IndexError):
                continue
    return False


# ------------------------------------------------------------------ writer


class JournalWriter:
    """Appends records to one stream of a journal.

    Parameters
    ----------
    root : path-like
        The journal directory (created if missing).
    stream : str
        The stream's name: letters, digits, ``_``, ``-``.
    payload : "raw" or numpy dtype
        Raw bytes as received, or records of this dtype (stored in the header).
    instruments : ringbook.kernels.events.Instruments or list of dict, optional
        The instrument table, stored in every segment header.
    calibration : ringbook.kernels.clock.Calibration, optional
        The TSC calibration, stored in every header.
    durability : {"none", "interval", "batch"}
        See the module docstring.
    interval_ms : float
        At most this long between ``fdatasync`` calls under ``interval``.
    segment_bytes : int
        A segment is closed once it holds this many bytes.
    index_every : int
        Records between sparse index entries.
    batch_bytes : int
        Size of the framing buffer: the largest single ``write`` (4 MiB by default;
        fewer, larger chunks cost fewer hand-overs to the writing thread).
    on_error : callable, optional
        ``on_error(path, error)`` for each disk error that will be retried;
        by default a warning is logged naming the path.
    retry_max_s : float
        Longest wait between retries of a failed write (the first waits 1 ms).
    source : dict, optional
        Facts about the data's origin, stored in the headers.
    retain_bytes : int
        Under ``interval``, how many bytes written since the last successful
        ``fdatasync`` the writer keeps a copy of (see below).

    A failed ``fdatasync`` (``EIO``, ``ENOSPC``, ...) may have dropped the
    pages it was writing: the kernel marks them clean, and a later
    ``fdatasync`` that succeeds does not write them. So after each failure the
    writer writes again, at their offsets, every byte since the last
    successful ``fdatasync`` before it retries. Under ``batch`` those bytes are
    the batch it still holds; under ``interval`` it keeps a copy of up to
    ``retain_bytes`` of them. Records it could not write again are reported
    through ``on_error`` (a :class:`JournalError` naming their sequences) and
    listed in :attr:`not_durable`; :attr:`last_durable_sequence` then stays
    below the first of them.

    Opening a stream that already has segments continues it: a torn tail
    of its last segment is cut (:attr:`recovery` says where and how many
    bytes) and the next record gets the next sequence. One writer per stream:
    a second one gets :class:`JournalError`.
    """

    #: Whether a batch of many chunks writes one chunk while it frames the next (on a second thread).
    _pipeline_writes = True

    def __init__(self, root, stream, *, payload="raw", instruments=None, calibration=None,
                 durability="none", interval_ms=10, segment_bytes=DEFAULT_SEGMENT_BYTES,
                 index_every=DEFAULT_INDEX_EVERY, batch_bytes=DEFAULT_BATCH_BYTES, on_error=None,
                 retry_max_s=1.0, source=None, retain_bytes=64 << 20,
                 write_behind_bytes=DEFAULT_WRITE_BEHIND_BYTES):
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {DURABILITY}, got {durability!r}")
        if segment_bytes < 4096:
            raise ValueError(f"segment_bytes must be at least 4096, got {segment_bytes}")
        if index_every < 1:
            raise ValueError(f"index_every must be positive, got {index_every}")
        self.root = Path(root)
        self.stream = check_stream_name(stream)
        self.durability = durability
        self.interval_ns = int(interval_ms * 1e6)
        self.segment_bytes = int(segment_bytes)
        self.index_every = int(index_every)
        self.on_error = on_error
        self.retry_max_s = retry_max_s
        payload_description, self.dtype = _describe_payload(payload)
        self._metadata = {"stream": stream, "payload": payload_description,
                          "instruments": _describe_instruments(instruments), "source": source or {}}
        self._calibration = calibration
        #: The function that writes bytes to a descriptor (``os.write``); a seam for fault injection.
        self.write_function = os.write
        #: The function that makes a descriptor's data durable (``os.fdatasync``).
        self.sync_function = os.fdatasync
        #: The function that writes bytes again at an offset after a failed sync (``os.pwrite``).
        self.rewrite_function = os.pwrite
        self.retain_bytes = int(retain_bytes)
        # what was written since the last successful fdatasync of the segment:
        # [file offset, bytes (None: not kept), first sequence, last sequence, size]
        self._since_sync = []
        self._kept_bytes = 0
        #: Records that may not be durable: a sync failed and the writer no longer held
        #: their bytes (dicts: ``path``, ``first_sequence``, ``last_sequence``, ``offset``, ``bytes``).
        self.not_durable = []
        self._buffer = np.zeros(max(int(batch_bytes), 4096), np.uint8)
        self._fd = None
        self._path = None
        self._file_size = 0      # bytes written to the segment
        self._planned_size = 0   # bytes framed for it (written, or in a write under way)
        self._spares = []        # framing buffers not in use: some are framed while others are written
        self._executor = None
        self._write_failed = None
        self.write_behind_bytes = int(write_behind_bytes)
        # drain's chunks handed to the writing thread, oldest first: (future, buffer)
        self._behind = collections.deque()
        self._fill = 0              # bytes framed into the buffer by drains and not yet handed over
        self._fill_started_ns = 0   # when the first of them was framed
        self._drain_room = 0        # the most one drain frames: a buffer with less room is handed over
        self._segment_day_end = 0
        self._segment = None
        self._index = None
        self._scratch = np.zeros(1, np.int64)
        self._last_sync_ns = 0
        self._unsynced = False
        self.errors = 0
        self.last_error = None
        self.recovery = None
        self.closed = False
        self.segments_written = 0
        self._last_written = -1
        self._last_durable = -1
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = take_lock(self.root / f".{stream}.lock")
        if self._lock is None:
            raise JournalError(f"stream {stream!r} has a writer already (another process holds its lock)",
                               self.root)
        try:
            self._next_sequence = self._recover()
        except BaseException:
            self._lock.close()
            raise
        self._last_written = self._last_durable = self._next_sequence - 1

    # -- state

    @property
    def next_sequence(self):
        """The sequence the next record gets."""
        return self._next_sequence if self._segment is None else int(self._segment[jk.SEGMENT_NEXT_SEQUENCE])

    @property
    def last_written_sequence(self):
        """The last record handed to the operating system (-1: none)."""
        return self._last_written

    @property
    def last_durable_sequence(self):
        """The last record that has reached the journal's durability (-1: none).

        Under ``none`` that is the last record handed to the operating system;
        under ``interval`` and ``batch`` the last one ``fdatasync`` covered,
        and never past a record listed in :attr:`not_durable`.
        """
        if self.not_durable:
            return min(self._last_durable, self.not_durable[0]["first_sequence"] - 1)
        return self._last_durable

    @property
    def path(self):
        """The segment being written (None before the first record)."""
        return self._path

    def _recover(self):
        # a segment whose header was being written when the process died never got its name, nor
        # an index being saved (``write_atomic``'s temporary file)
        for pattern in (f"*/.{self.stream}.*{SEGMENT_SUFFIX}.tmp", f"*/.{self.stream}.*{INDEX_SUFFIX}.*.tmp"):
            for leftover in self.root.glob(pattern):
                leftover.unlink(missing_ok=True)
        segments = list_segments(self.root, self.stream).get(self.stream, [])
        if not segments:
            return 0
        first, path = segments[-1]
        mapped, scan = open_segment(path, self.index_every, use_index=True, save_index=False)
        try:
            if scan.torn_offset >= 0:
                cut = scan.torn_bytes
                self.recovery = {"path": str(path), "offset": scan.torn_offset, "bytes": cut,
                                 "status": status_name(scan.torn_status), "next_sequence": scan.next_sequence}
                log.warning("journal %s: torn tail cut at offset %d (%d bytes, %s); continuing at sequence %d",
                            path, scan.torn_offset, cut, status_name(scan.torn_status), scan.next_sequence)
            mapped.close()
            if scan.torn_offset >= 0:
                os.truncate(path, scan.valid_end)
                with open(path, "rb") as file:
                    os.fsync(file.fileno())
                scan.size = scan.valid_end
                scan.torn_offset = -1
            if scan.records == 0 and not scan.corrupt:
                # a segment with a header and nothing else: the next one takes its name again
                path.unlink()
                index_path(path).unlink(missing_ok=True)
                return scan.first_sequence
            mapped = _Mapped(path)
            write_index(scan, mapped.buffer, self.index_every)
        finally:
            mapped.close()
        return scan.next_sequence

    # -- segments

    def _open_segment(self, first_ns):
        now = time.time_ns()
        day_ns = first_ns if first_ns is not None else now
        day = utc_day(day_ns)
        sequence = self.next_sequence
        directory = self.root / day
        directory.mkdir(parents=True, exist_ok=True)
        path = segment_path(self.root, self.stream, sequence, day)
        if path.exists():
            raise JournalError("segment already exists (two writers, or a sequence reused)", path)
        metadata = dict(self._metadata, calibration=_describe_calibration(self._calibration), day=day)
        header = encode_header(metadata, sequence, now)
        temporary = directory / f".{path.name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._fd, self._path = fd, temporary
            self._write_all(memoryview(header))
            if self.durability != "none":
                self._since_sync = [[0, header, None, None, len(header)]]
                self._kept_bytes = 0
                self._sync_retrying()
                self._since_sync = []
            os.rename(temporary, path)
            if self.durability != "none":
                fsync_path(directory)
        except BaseException:
            os.close(fd)
            self._fd = None
            raise
        self._path = path
        self._header_crc = int.from_bytes(header[36:40], "little")
        self._header = header
        self._file_size = self._planned_size = len(header)
        self._segment_day_end = _day_start_ns(day_ns) + _NS_PER_DAY
        self._segment = jk.new_segment_state(sequence, len(header), self.index_every)
        capacity = _index_capacity(self.segment_bytes + self._buffer.size + 2 * jk.MAX_PAYLOAD // 1024,
                                   self.index_every) + 16
        self._index = np.zeros((capacity, jk.INDEX_COLUMNS), np.int64)
        self.segments_written += 1

    def _finish_segment(self):
        if self._fd is None:
            return
        if self.durability != "none" and self._unsynced:
            self._sync()
        os.close(self._fd)
        self._fd = None
        self._write_own_index()
        self._next_sequence = int(self._segment[jk.SEGMENT_NEXT_SEQUENCE])
        self._segment = None

    def _write_own_index(self):
        segment = self._segment
        count = int(segment[jk.SEGMENT_INDEX_COUNT])
        header = decode_header(self._header, self._path)
        records = int(segment[jk.SEGMENT_RECORDS])
        scan = SegmentScan(self._path, header, self._file_size, self._file_size, records, -1,
                           int(segment[jk.SEGMENT_NEXT_SEQUENCE]),
                           self._first_ns if records else jk.INT64_MIN, int(segment[jk.SEGMENT_LAST_NS]),
                           int(segment[jk.SEGMENT_MAX_NS]), self._index[:count])
        # Only the segment's last few KiB, read: a mapping of the whole segment would be
        # faulted in (and locked, under the engine's mlockall) to checksum them.
        start = max(header.header_bytes, self._file_size - _TAIL_CHECK_BYTES)
        with open(self._path, "rb") as file:
            tail = np.frombuffer(os.pread(file.fileno(), self._file_size - start, start), np.uint8)
        tail_crc = int(jk.crc32c(tail, 0, tail.size, 0)) if tail.size else 0
        write_index(scan, None, self.index_every, tail_crc=tail_crc)

    def _room(self, first_record_bytes):
        """The framing buffer, cut to what the segment has room for (at least one record)."""
        room = max(self.segment_bytes - self._planned_size, first_record_bytes)
        return self._buffer[:room] if room < self._buffer.size else self._buffer

    def _rotation_due(self, first_ns):
        return self._segment is not None and (self._planned_size >= self.segment_bytes
                                              or (first_ns is not None and first_ns >= self._segment_day_end))

    def _prepare(self, first_ns):
        """Rotate before a batch whose first record has receive time ``first_ns`` if due."""
        if self._rotation_due(first_ns):
            self._finish_segment()
        if self._segment is None:
            self._open_segment(first_ns)
            self._first_ns = first_ns
        self._segment[jk.SEGMENT_BASE] = self._planned_size

    # -- writing

    def _report(self, error, attempt):
        self.errors += 1
        self.last_error = error
        if self.on_error is not None:
            self.on_error(str(self._path), error)
        elif attempt == 0 or attempt % 100 == 0:
            log.warning("journal %s: %s; retrying", self._path, error)

    def _write_all(self, view, offset=None):
        """Write every byte of ``view``, retrying disk errors: at the end of the segment, or at
        ``offset`` (a rewrite)."""
        done = 0
        attempt = 0
        delay = 0.001
        total = len(view)
        start = self._file_size if offset is None else offset
        while done < total:
            try:
                if offset is None:
                    written = self.write_function(self._fd, view[done:])
                else:
                    written = self.rewrite_function(self._fd, view[done:], offset + done)
            except OSError as error:
                if error.errno not in RETRYABLE_ERRNOS:
                    raise JournalError(f"write failed: {error}", self._path, start + done) from error
                written, failure = 0, error
            else:
                failure = OSError(errno.ENOSPC, "no progress writing") if written <= 0 else None
            if failure is not None:
                self._report(failure, attempt)
                attempt += 1
                time.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            done += written
        return total

    def _sync(self):
        self._sync_retrying()
        self._since_sync = []
        self._kept_bytes = 0
        self._last_durable = self._last_written
        self._last_sync_ns = time.monotonic_ns()
        self._unsynced = False

    def _sync_retrying(self):
        """``fdatasync`` until it succeeds; after each failure, write again what it may have dropped."""
        delay = 0.001
        attempt = 0
        while True:
            try:
                self.sync_function(self._fd)
                return
            except OSError as error:
                if error.errno not in RETRYABLE_ERRNOS:
                    raise JournalError(f"fdatasync failed: {error}", self._path) from error
                self._report(error, attempt)
                attempt += 1
                time.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                self._rewrite_since_sync()

    def _keep_for_sync(self, offset, view, first_sequence, last_sequence, copy):
        """Note bytes just written at ``offset`` as not yet synced (with a copy if ``copy`` and
        within ``retain_bytes``; else with ``view`` itself, valid until the next sync)."""
        size = len(view)
        if copy:
            if self._kept_bytes + size <= self.retain_bytes:
                data = bytes(view)
                self._kept_bytes += size
            else:
                data = None
        else:
            data = view
        self._since_sync.append([offset, data, first_sequence, last_sequence, size])

    def _rewrite_since_sync(self):
        """Write every byte since the last successful sync again, at its offset; report what
        the writer no longer holds."""
        for entry in self._since_sync:
            offset, data, first_sequence, last_sequence, size = entry
            if data is None:
                if first_sequence is not None and not any(
                        item["first_sequence"] == first_sequence for item in self.not_durable):
                    self._lost(offset, size, first_sequence, last_sequence)
                continue
            self._write_all(memoryview(data)[:size], offset)

    def _lost(self, offset, size, first_sequence, last_sequence):
        facts = {"path": str(self._path), "first_sequence": first_sequence, "last_sequence": last_sequence,
                 "offset": offset, "bytes": size}
        self.not_durable.append(facts)
        self.not_durable.sort(key=lambda item: item["first_sequence"])
        error = JournalError(f"records {first_sequence} to {last_sequence} may not be durable: fdatasync failed "
                             f"and the writer no longer holds their {size} bytes (retain_bytes "
                             f"{self.retain_bytes})", self._path, offset)
        self.errors += 1
        self.last_error = error
        if self.on_error is not None:
            self.on_error(str(self._path), error)
        else:
            log.error("%s", error)

    def _commit(self, end, buffer=None, last_sequence=None):
        """Write the framed bytes ``buffer[:end]`` (ending with record ``last_sequence``) and
        apply the durability."""
        if end == 0:
            return
        if buffer is None:
            buffer = self._buffer
            self._planned_size += end
        if last_sequence is None:
            last_sequence = int(self._segment[jk.SEGMENT_NEXT_SEQUENCE]) - 1
        view = memoryview(buffer)[:end]
        offset = self._file_size
        self._write_all(view)
        self._file_size += end
        if self.durability != "none":
            # under batch the sync below comes before the buffer is framed into again
            self._keep_for_sync(offset, view, self._last_written + 1, last_sequence,
                                copy=self.durability == "interval")
        self._last_written = last_sequence
        if self.durability == "none":
            self._last_durable = self._last_written
        elif self.durability == "batch":
            self._sync()
        else:
            self._unsynced = True
            if time.monotonic_ns() - self._last_sync_ns >= self.interval_ns:
                self._sync()

    def poll(self):
        """What an idle flusher calls: hand over a chunk whose first record has waited long
        enough, and under ``interval`` sync if records wait and the interval has passed
        (on the writing thread while chunks are under way)."""
        self._reap()
        if self._fill and time.monotonic_ns() - self._fill_started_ns >= HAND_OVER_AFTER_NS:
            self._hand_over()
        if self._unsynced and self._fd is not None and time.monotonic_ns() - self._last_sync_ns >= self.interval_ns:
            if self._behind:
                return      # the writing thread syncs after its next chunk if the interval has passed
            self._sync()

    def _check_open(self):
        if self.closed:
            raise JournalError("writer is closed", self.root)

    def _as_payload(self, payload, kind=RECORD_DATA):
        if self.dtype is not None and kind == RECORD_DATA:
            array = np.asarray(payload)
            if array.dtype != self.dtype:
                if isinstance(payload, (bytes, bytearray, memoryview)) and len(payload) == self.dtype.itemsize:
                    return np.frombuffer(payload, np.uint8)
                raise TypeError(f"stream {self.stream!r} stores {self.dtype}; got {array.dtype}")
            return np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        if isinstance(payload, np.ndarray):
            return np.ascontiguousarray(payload).reshape(-1).view(np.uint8)
        return np.frombuffer(payload, np.uint8) if len(payload) else np.zeros(0, np.uint8)

    def append(self, payload, *, receive_tsc=0, receive_ns=None, kind=RECORD_DATA, flags=0):
        """Append one record and hand it to the operating system (one ``write``); return its sequence.

        ``payload`` is bytes-like (``raw``) or one record of the stream's dtype
        (records of the engine's own kinds take any bytes).
        ``receive_ns`` defaults to the wall clock now. For many records at a
        time use :meth:`append_many` or a :class:`ringbook.engine.flusher.Flusher`.
        """
        self._check_open()
        data = self._as_payload(payload, kind)
        if receive_ns is None:
            receive_ns = time.time_ns()
        if data.size > jk.MAX_PAYLOAD:
            raise ValueError(f"payload of {data.size} bytes is longer than {jk.MAX_PAYLOAD}")
        size = int(jk.record_size(data.size))
        if size > self._buffer.size:
            self._buffer = np.zeros(size, np.uint8)
        self._prepare(receive_ns)
        sequence = int(self._segment[jk.SEGMENT_NEXT_SEQUENCE])
        end = jk.frame(self._buffer, 0, data, 0, data.size, int(receive_tsc), int(receive_ns), int(kind),
                       int(flags), self._segment, self._index)
        if end < 0:
            raise JournalError(f"cannot frame record: {status_name(end)}", self._path)
        self._commit(end)
        return sequence

    def append_many(self, payloads, lengths=None, *, receive_tsc=0, receive_ns=None, kind=RECORD_DATA, flags=0):
        """Append many records, framed in batches of up to ``batch_bytes`` (one ``write`` each).

        ``payloads`` is an array of the stream's dtype, or a 2-D uint8 array
        whose row ``i`` holds ``lengths[i]`` bytes (all of it by default).
        ``receive_tsc``, ``receive_ns``, ``kind`` and ``flags`` are scalars or
        per-record arrays. Returns the first record's sequence.
        """
        self._check_open()
        if self.dtype is not None and getattr(payloads, "dtype", None) == self.dtype:
            rows = np.ascontiguousarray(payloads).reshape(-1).view(np.uint8).reshape(len(payloads), -1)
        else:
            rows = np.ascontiguousarray(payloads, dtype=np.uint8)
            if rows.ndim != 2:
                raise ValueError("payloads must be a 2-D uint8 array or an array of the stream's dtype")
            if self.dtype is not None and rows.shape[1] != self.dtype.itemsize:
                raise TypeError(f"stream {self.stream!r} stores {self.dtype.itemsize}-byte records; "
                                f"got rows of {rows.shape[1]}")
        count, width = rows.shape
        lengths = _per_record(width if lengths is None else lengths, count, "lengths")
        if count and (lengths.min() < 0 or lengths.max() > width):
            raise ValueError("lengths must be between 0 and the row width")
        values = self._per_record_values(count, receive_tsc, receive_ns, kind, flags)
        if self.dtype is not None and count:
            self._check_data_lengths(lengths, values[2], count)
        data = rows.reshape(-1)
        if width == 0:
            # rows of no bytes: every record is a header alone (the kernel wants a positive width)
            data, width = np.zeros(max(count, 1), np.uint8), 1
        longest = _record_bytes(int(lengths.max())) if count else 0
        return self._append_batches(count, longest, values, lambda item: _record_bytes(
            int(lengths[item if lengths.shape[0] > 1 else 0])), lambda out, item, stop: jk.frame_rows(
            out, 0, data, width, lengths, item, stop, values[0], values[1], values[2], values[3],
            self._segment, self._index))

    def _per_record_values(self, count, receive_tsc, receive_ns, kind, flags):
        """``(tscs, stamps, kinds, flags)``: int64 arrays of ``count`` values, or of one for every record."""
        return (_per_record(receive_tsc, count, "receive_tsc"),
                _per_record(time.time_ns() if receive_ns is None else receive_ns, count, "receive_ns"),
                _per_record(kind, count, "kind"), _per_record(flags, count, "flags"))

    def _check_data_lengths(self, lengths, kinds, count):
        """Raise TypeError when a data record's payload is not one item of the stream's dtype."""
        if lengths.min() == lengths.max() == self.dtype.itemsize:
            return
        lengths = np.broadcast_to(lengths, (count,))
        wrong = (np.broadcast_to(kinds, (count,)) == RECORD_DATA) & (lengths != self.dtype.itemsize)
        if wrong.any():
            first = int(np.flatnonzero(wrong)[0])
            raise TypeError(f"stream {self.stream!r} stores {self.dtype.itemsize}-byte records; record "
                            f"{first} has {int(lengths[first])} bytes")

    def _append_batches(self, count, longest, values, first_record_bytes, frame_chunk):
        if count:
            self.ensure_batch_bytes(longest)
        first = self.next_sequence
        self._frame_loop(count, values[1], first_record_bytes, frame_chunk)
        return first if count else self.next_sequence

    def _frame_loop(self, count, stamps, first_record_bytes, frame_chunk):
        """Frame records ``0 .. count`` in buffer-sized chunks and write each chunk once.

        Chunks stop at midnight UTC (``stamps`` are the receive times, one per
        record or one for all) and at the segment's size limit. With more than
        a few chunks, chunks are framed while a second thread writes the ones
        before them, in order (the framing kernel and ``write`` both run
        without the GIL). Up to :data:`WRITES_IN_FLIGHT` framed chunks wait
        while that thread writes another, so it goes from one ``write`` to the
        next without waiting to be woken, and framing, the faster of the two,
        waits only when all are taken.
        """
        if count == 0:
            return
        self._wait_behind()     # a flusher's chunks first: they hold earlier records
        pipelined = self._pipeline_writes and count * first_record_bytes(0) > 2 * self._buffer.size
        if pipelined and self._executor is None:
            from concurrent.futures import ThreadPoolExecutor
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="ringbook-journal-write")
        if pipelined:
            self._spares = [spare for spare in self._spares if spare.size == self._buffer.size]
            while len(self._spares) < WRITES_IN_FLIGHT:
                self._spares.append(np.zeros_like(self._buffer))
        one_stamp = stamps.shape[0] == 1
        pending = collections.deque()  # (future, buffer) of chunks handed to the writing thread, oldest first
        item = 0
        try:
            while item < count:
                first_ns = int(stamps[0 if one_stamp else item])
                if pending and self._rotation_due(first_ns):
                    while pending:
                        self._reclaim(pending)
                self._prepare(first_ns)
                if self._first_ns is None:
                    self._first_ns = first_ns
                stop = count
                if not one_stamp and stamps[count - 1] >= self._segment_day_end:  # a chunk ends at midnight
                    later = np.flatnonzero(stamps[item:] >= self._segment_day_end)
                    stop = item + max(int(later[0]), 1) if len(later) else count
                buffer = self._buffer
                framed, end = frame_chunk(self._room(first_record_bytes(item)), item, stop)
                if framed < 0:
                    raise JournalError(f"cannot frame records: {status_name(framed)}", self._path)
                last = int(self._segment[jk.SEGMENT_NEXT_SEQUENCE]) - 1
                self._planned_size += end
                if pipelined:
                    pending.append((self._executor.submit(self._commit_in_turn, end, buffer, last), buffer))
                    if not self._spares:
                        self._reclaim(pending)
                    self._buffer = self._spares.pop()
                else:
                    self._commit(end, buffer, last)
                item += framed
        finally:
            # every chunk handed over is waited for, even when something failed: the caller
            # gets control back with no write still under way
            failure = None
            while pending:
                try:
                    self._reclaim(pending)
                except BaseException as error:
                    failure = failure or error
            if failure is not None:
                raise failure

    def _reclaim(self, pending):
        """Wait for the oldest chunk in ``pending`` to be written; its buffer is free again."""
        future, buffer = pending.popleft()
        self._spares.append(buffer)
        future.result()

    def _commit_in_turn(self, end, buffer, last_sequence):
        """:meth:`_commit` on the writing thread; refused once a write before it failed (a
        chunk never goes to the file after one that did not)."""
        if self._write_failed is not None:
            raise JournalError(f"not written: an earlier write failed ({self._write_failed})", self._path)
        try:
            self._commit(end, buffer, last_sequence)
        except BaseException as error:
            self._write_failed = error
            raise

    def append_slices(self, data, starts, stops, *, receive_tsc=0, receive_ns=None, kind=RECORD_DATA, flags=0):
        """Append records whose payloads are ``data[starts[i]:stops[i]]`` (``data``: flat uint8,
        e.g. a file's bytes and its lines), framed in batches as :meth:`append_many`.

        Returns the first record's sequence.
        """
        self._check_open()
        data = np.ascontiguousarray(data, np.uint8).reshape(-1)
        starts = np.ascontiguousarray(starts, np.int64).reshape(-1)
        stops = np.ascontiguousarray(stops, np.int64).reshape(-1)
        count = starts.shape[0]
        if stops.shape != starts.shape:
            raise ValueError("starts and stops must have the same length")
        if count and (starts.min() < 0 or stops.max() > data.size or (stops < starts).any()):
            raise ValueError("every slice must lie inside data, with start <= stop")
        values = self._per_record_values(count, receive_tsc, receive_ns, kind, flags)
        if self.dtype is not None and count:
            self._check_data_lengths(stops - starts, values[2], count)
        if data.size == 0:
            data = np.zeros(1, np.uint8)  # slices of no bytes: the kernel still takes an address
        longest = _record_bytes(int((stops - starts).max())) if count else 0
        return self._append_batches(count, longest, values,
                                    lambda item: _record_bytes(int(stops[item] - starts[item])),
                                    lambda out, item, stop: jk.frame_slices(
                                        out, 0, data, starts[:stop], stops[:stop], item, values[0], values[1],
                                        values[2], values[3], self._segment, self._index))

    def drain(self, slab, consumer, max_records, tsc, wall_ns, ns_per_tick):
        """Frame up to ``max_records`` messages of a ring consumer for writing.

        Used by :class:`ringbook.engine.flusher.Flusher`; returns how many
        records were framed, or a negative ring status, and their bytes.

        With ``write_behind_bytes`` (the default), drains fill a chunk that a
        second thread writes once it is full or its first record has waited
        :data:`HAND_OVER_AFTER_NS`; up to ``write_behind_bytes`` of chunks wait
        for the disk before a drain waits for one. Without, each drain is one
        ``write``. Chunks are written in order; :meth:`flush` and :meth:`close`
        wait for every one.
        """
        self._check_open()
        behind = self.write_behind_bytes > 0
        if behind:
            self._reap()
            if self._rotation_due(wall_ns):
                self._wait_behind()     # the segment is finished once every chunk of it is written
        self._prepare(wall_ns)
        if self._first_ns is None:
            self._first_ns = wall_ns
        self._segment[jk.SEGMENT_BASE] = self._planned_size - self._fill  # the file offset of buffer[0]
        start = self._fill
        count, end = jk.drain_ring(slab, consumer, self._buffer, start, max_records, tsc, wall_ns, ns_per_tick,
                                   self._segment, self._index)
        if count > 0 and not behind:
            self._commit(end)
        elif count > 0:
            if start == 0:
                self._fill_started_ns = time.monotonic_ns()
            self._planned_size += end - start
            self._fill = end
            if (self._buffer.size - end < self._drain_room
                    or time.monotonic_ns() - self._fill_started_ns >= HAND_OVER_AFTER_NS):
                self._hand_over()
        return count, max(end - start, 0)

    def _hand_over(self):
        """Give the chunk being filled to the writing thread; take a free buffer, waiting for
        the oldest chunk to be written when ``write_behind_bytes`` are under way."""
        if self._fill == 0:
            return
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="ringbook-journal-write")
        buffer = self._buffer
        self._spares = [spare for spare in self._spares if spare.size == buffer.size]
        if not self._spares and not self._behind:
            # every buffer at once, the first time: the memory then stays what it was after warm-up
            self._spares = [np.zeros_like(buffer) for _ in range(max(self.write_behind_bytes // buffer.size, 2) - 1)]
        last = int(self._segment[jk.SEGMENT_NEXT_SEQUENCE]) - 1
        self._behind.append((self._executor.submit(self._commit_in_turn, self._fill, buffer, last), buffer))
        self._fill = 0
        if not self._spares:
            self._reclaim(self._behind)
        self._buffer = self._spares.pop()

    def _reap(self):
        """Free the buffers of chunks already written; raise a failure of the writing thread."""
        while self._behind and self._behind[0][0].done():
            self._reclaim(self._behind)

    def _wait_behind(self):
        """Hand over the chunk being filled and wait until every chunk is written."""
        self._hand_over()
        while self._behind:
            self._reclaim(self._behind)

    def ensure_batch_bytes(self, nbytes):
        """Grow the framing buffer to at least ``nbytes``, the most one batch frames."""
        self._drain_room = max(self._drain_room, int(nbytes))
        if self._buffer.size < nbytes:
            self._wait_behind()
            self._buffer = np.zeros(int(nbytes), np.uint8)

    def flush(self):
        """Make every record written so far durable as the journal's durability says (``interval``
        and ``batch``: ``fdatasync`` now). Records are written as they are appended."""
        self._check_open()
        self._wait_behind()
        if self._fd is not None and self.durability != "none" and self._unsynced:
            self._sync()

    def sync(self):
        """``fdatasync`` the current segment now, whatever the durability."""
        if self._fd is not None:
            self._sync()

    def close(self):
        """Flush, close the segment, write its index, release the stream."""
        if self.closed:
            return
        try:
            self._wait_behind()
            if self._fd is not None:
                if self.durability != "none":
                    self._sync()
                self._finish_segment()
        finally:
            self.closed = True
            if self._executor is not None:
                self._executor.shutdown()
            self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return (f"JournalWriter({str(self.root)!r}, {self.stream!r}, next_sequence={self.next_sequence}, "
                f"durability={self.durability!r})")


# ------------------------------------------------------------------ reader


class _Stream:
    """One stream's segments, open for reading."""

    def __init__(self, name, segments, index_every, use_index, save_index):
        self.name = name
        self.paths = [path for _, path in segments]
        self.index_every = index_every
        self.use_index = use_index
        self.save_index = save_index
        self.maps = []
        self.scans = []
        for path in self.paths:
            mapped, scan = open_segment(path, index_every, use_index, save_index)
            self.maps.append(mapped)
            self.scans.append(scan)
        self._build_lookup()

    def _build_lookup(self):
        """Stream-wide arrays over the index entries: sequence, segment, offset, max ns before."""
        sequences, segments, offsets, max_before = [], [], [], []
        running = jk.INT64_MIN
        for number, scan in enumerate(self.scans):
            entries = scan.index
            if len(entries):
                sequences.append(entries[:, jk.INDEX_SEQUENCE])
                segments.append(np.full(len(entries), number, np.int64))
                offsets.append(entries[:, jk.INDEX_OFFSET])
                max_before.append(np.maximum(entries[:, jk.INDEX_MAX_NS_BEFORE], running))
            if scan.records:
                running = max(running, scan.max_ns)
        def joined(parts):
            return np.concatenate(parts) if parts else np.zeros(0, np.int64)
        self.index_sequences = joined(sequences)
        self.index_segments = joined(segments)
        self.index_offsets = joined(offsets)
        self.index_max_before = joined(max_before)

    @property
    def first_sequence(self):
        return self.scans[0].first_sequence if self.scans else 0

    @property
    def next_sequence(self):
        return self.scans[-1].next_sequence if self.scans else 0

    def refresh(self):
        """Pick up what a writer added since: a grown last segment, new segments."""
        listed = list_segments(self.paths[0].parent.parent if self.paths else None, self.name).get(self.name, [])
        changed = False
        if self.scans:
            last = len(self.scans) - 1
            if self.maps[last].refresh() != self.scans[last].size:
                mapped = self.maps[last]
                self.scans[last] = scan_segment(mapped.buffer, self.scans[last].header, self.paths[last],
                                                self.index_every, resume=self.scans[last])
                changed = True
        for first, path in listed:
            if path not in self.paths:
                try:
                    mapped, scan = open_segment(path, self.index_every, self.use_index, False)
                except JournalError:
                    continue  # a segment being created
                self.paths.append(path)
                self.maps.append(mapped)
                self.scans.append(scan)
                changed = True
        if changed:
            self._build_lookup()
        return changed

    def locate_sequence(self, sequence):
        """(segment number, offset, sequence) of the index entry at or before ``sequence``."""
        where = int(np.searchsorted(self.index_sequences, sequence, side="right")) - 1
        if where < 0:
            return 0, self.scans[0].header.header_bytes, self.scans[0].first_sequence
        number = int(self.index_segments[where])
        # the sequence may lie in a later segment whose first record has no entry yet
        for later in range(len(self.scans) - 1, number, -1):
            if self.scans[later].first_sequence <= sequence:
                return later, self.scans[later].header.header_bytes, self.scans[later].first_sequence
        return number, int(self.index_offsets[where]), int(self.index_sequences[where])

    def locate_time(self, ns):
        """(segment number, offset, sequence) of the index entry from which the first record with
        receive ns ``>= ns`` is at most one index interval away."""
        where = int(np.searchsorted(self.index_max_before, ns, side="left")) - 1
        if where < 0:
            return 0, self.scans[0].header.header_bytes, self.scans[0].first_sequence
        return int(self.index_segments[where]), int(self.index_offsets[where]), int(self.index_sequences[where])


@dataclass
class PayloadSpan:
    """Records read by :meth:`JournalReader.read_payloads`: payload ``r`` is
    ``data[offsets[r]:offsets[r + 1]]``; ``first_sequence`` is the sequence the read started at
    (a corrupt record skipped on the way leaves a gap after it)."""

    data: np.ndarray
    offsets: np.ndarray
    kinds: np.ndarray
    receive_ns: np.ndarray
    first_sequence: int

    def __len__(self):
        return len(self.kinds)


def _as_ns(moment):
    if moment is None:
        return None
    if isinstance(moment, _datetime.datetime):
        if moment.tzinfo is None:
            raise ValueError(f"{moment!r}: give an aware datetime (UTC is assumed nowhere)")
        delta = moment - _datetime.datetime(1970, 1, 1, tzinfo=_datetime.timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    return int(moment)


class JournalReader:
    """Reads a journal: iterate, seek by sequence or time, read event spans, follow a writer.

    Parameters
    ----------
    root : path-like
        The journal directory.
    stream : str, optional
        One stream; all of them (iterated merged by receive time) when omitted.
    skip_corrupt : bool
        Count corrupt records (:attr:`corrupt_records`, :attr:`corrupt`) and
        go on at the next good one, instead of raising :class:`JournalCorruptError`.
    use_index, save_index : bool
        Trust fresh index files; write the ones rebuilt.

    Opening checks the index of every segment (rebuilding what is missing or
    stale) and finds torn tails (:attr:`torn`); nothing is changed in the
    segments. Iteration starts at the beginning; :meth:`seek` moves it.
    """

    def __init__(self, root, stream=None, *, skip_corrupt=False, use_index=True, save_index=True,
                 index_every=DEFAULT_INDEX_EVERY):
        self.root = Path(root)
        listed = list_segments(self.root, stream)
        if stream is not None and stream not in listed:
            raise JournalError(f"no segments of stream {stream!r}", self.root)
        self.skip_corrupt = skip_corrupt
        self.streams = {name: _Stream(name, segments, index_every, use_index, save_index)
                        for name, segments in sorted(listed.items())}
        self.corrupt = []          # (path, CorruptRegion) met while reading
        self.corrupt_records = 0   # records lost to them
        self._cursors = {name: self._start_of(name) for name in self.streams}

    # -- facts

    @property
    def stream(self):
        if len(self.streams) != 1:
            raise JournalError(f"{len(self.streams)} streams: name one", self.root)
        return next(iter(self.streams))

    @property
    def torn(self):
        """Torn tails found: a list of ``{"path", "offset", "bytes", "status"}``."""
        return [{"path": str(scan.path), "offset": scan.torn_offset, "bytes": scan.torn_bytes,
                 "status": status_name(scan.torn_status)}
                for stream in self.streams.values() for scan in stream.scans if scan.torn_offset >= 0]

    def segments(self, stream=None):
        """The :class:`SegmentScan` of each segment of ``stream``."""
        return list(self.streams[stream or self.stream].scans)

    def first_sequence(self, stream=None):
        return self.streams[stream or self.stream].first_sequence

    def next_sequence(self, stream=None):
        """One past the last good record of ``stream``."""
        return self.streams[stream or self.stream].next_sequence

    def header(self, stream=None):
        """The first segment's :class:`SegmentHeader` of ``stream``."""
        return self.streams[stream or self.stream].scans[0].header

    # -- positions

    def _start_of(self, name):
        scans = self.streams[name].scans
        return [0, scans[0].header.header_bytes, scans[0].first_sequence] if scans else [0, 0, 0]

    def _walk(self, name, cursor, target_sequence, after_ns):
        """Move ``cursor`` forward to the first record with sequence >= target and receive ns >= after_ns."""
        stream = self.streams[name]
        while cursor[0] < len(stream.scans):
            number, offset, sequence = cursor
            scan = stream.scans[number]
            buffer = stream.maps[number].buffer
            offset, sequence = jk.skip_records(buffer, offset, scan.valid_end, sequence, target_sequence,
                                               after_ns, True)
            cursor[1], cursor[2] = int(offset), int(sequence)
            if offset < scan.valid_end:
                if jk.check_record(buffer, offset, scan.valid_end, sequence) > 0:
                    return cursor
                self._damaged(name, cursor)  # resumes or raises
                continue
            if not self._next_segment(name, cursor):
                return cursor
        return cursor

    def _next_segment(self, name, cursor):
        stream = self.streams[name]
        if cursor[0] + 1 >= len(stream.scans):
            return False
        following = stream.scans[cursor[0] + 1]
        if following.first_sequence > cursor[2]:
            self._note_corrupt(name, stream.scans[cursor[0]].path,
                               CorruptRegion(cursor[1], jk.CORRUPT_SEQUENCE, following.header.header_bytes,
                                             following.first_sequence, following.first_sequence - cursor[2]),
                               raise_always=False)
        cursor[0] += 1
        cursor[1] = following.header.header_bytes
        cursor[2] = following.first_sequence
        return True

    def _note_corrupt(self, name, path, region, raise_always=True):
        if not self.skip_corrupt and raise_always:
            raise JournalCorruptError(region.describe(path), path, region.offset, region.status)
        self.corrupt.append((str(path), region))
        self.corrupt_records += max(region.lost_records, 1) if raise_always else 0

    def _damaged(self, name, cursor):
        """A bad record at the cursor, before the segment's good end: raise, or skip to the next good one."""
        stream = self.streams[name]
        number, offset, sequence = cursor
        scan = stream.scans[number]
        buffer = stream.maps[number].buffer
        status = int(jk.check_record(buffer, offset, scan.size, sequence))
        resume = int(jk.find_next_record(buffer, offset + 8, scan.size, sequence))
        if resume < 0:
            # bad bytes up to where the good records were thought to end: the tail is torn there
            region = CorruptRegion(offset, status, -1, sequence, 0)
            self._note_corrupt(name, scan.path, region)
            scan.valid_end = offset
            return
        resumed = int(jk.record_header(buffer, resume)[1])
        self._note_corrupt(name, scan.path, CorruptRegion(offset, status, resume, resumed, resumed - sequence))
        cursor[1], cursor[2] = resume, resumed

    def seek(self, sequence=None, *, time=None, stream=None):
        """Move to the first record with sequence ``>= sequence`` (or receive time ``>= time``:
        ns since the epoch or an aware ``datetime``), in O(log n) through the sparse index.

        With neither, move to the beginning. Applies to every stream unless
        ``stream`` is given. Returns the sequence the cursor stands at (of the
        first stream concerned); at the end that is :meth:`next_sequence`.
        """
        names = [stream] if stream is not None else list(self.streams)
        after_ns = _as_ns(time)
        result = None
        for name in names:
            state = self.streams[name]
            if not state.scans:
                continue
            if after_ns is not None:
                cursor = list(state.locate_time(after_ns))
                target = -1
            elif sequence is not None:
                cursor = list(state.locate_sequence(int(sequence)))
                target = int(sequence)
            else:
                cursor = self._start_of(name)
                target = -1
            self._cursors[name] = self._walk(name, cursor, target, jk.INT64_MIN if after_ns is None else after_ns)
            if result is None:
                result = self._cursors[name][2]
        return result

    def seek_end(self, stream=None):
        """Move past the last good record; returns the next sequence."""
        result = None
        for name in ([stream] if stream else list(self.streams)):
            state = self.streams[name]
            if state.scans:
                last = len(state.scans) - 1
                self._cursors[name] = [last, state.scans[last].valid_end, state.scans[last].next_sequence]
                result = result if result is not None else state.next_sequence
        return result

    def tell(self, stream=None):
        """The sequence of the next record the cursor reads."""
        return self._cursors[stream or self.stream][2]

    # -- records

    def _read_one(self, name):
        """The record at ``name``'s cursor (advancing it), or None at the end."""
        stream = self.streams[name]
        cursor = self._cursors[name]
        while cursor[0] < len(stream.scans):
            number, offset, sequence = cursor
            scan = stream.scans[number]
            buffer = stream.maps[number].buffer
            if offset < scan.valid_end:
                size = int(jk.check_record(buffer, offset, scan.valid_end, sequence))
                if size > 0:
                    length, found, tsc, receive_ns, kind, flags = jk.record_header(buffer, offset)
                    body = offset + jk.RECORD_HEADER_BYTES
                    payload = memoryview(buffer[body:body + int(length)]).toreadonly()
                    cursor[1] = offset + size
                    cursor[2] = sequence + 1
                    return Record(name, int(found), int(tsc), int(receive_ns), int(kind), int(flags), payload)
                self._damaged(name, cursor)
                continue
            if not self._next_segment(name, cursor):
                return None
        return None

    def __iter__(self):
        """Records from the cursor to the end: one stream in order, several merged by receive time."""
        names = list(self.streams)
        if len(names) == 1:
            name = names[0]
            while True:
                record = self._read_one(name)
                if record is None:
                    return
                yield record
        heap = []
        for order, name in enumerate(names):
            record = self._read_one(name)
            if record is not None:
                heap.append((record.receive_ns, order, record.sequence, record))
        heapq.heapify(heap)
        while heap:
            _, order, _, record = heapq.heappop(heap)
            yield record
            following = self._read_one(names[order])
            if following is not None:
                heapq.heappush(heap, (following.receive_ns, order, following.sequence, following))

    def records(self, start=None, stop=None, *, stream=None):
        """Records with ``start <= sequence < stop`` (``start``/``stop``: sequences, or times when
        given as ``datetime``) of one stream."""
        name = stream or self.stream
        if isinstance(start, _datetime.datetime):
            self.seek(time=start, stream=name)
        else:
            self.seek(start, stream=name)
        stop_ns = _as_ns(stop) if isinstance(stop, _datetime.datetime) else None
        while True:
            record = self._read_one(name)
            if record is None:
                return
            if stop_ns is not None and record.receive_ns >= stop_ns:
                return
            if stop_ns is None and stop is not None and record.sequence >= stop:
                return
            yield record

    def read_span(self, count, *, dtype=None, stream=None):
        """Read up to ``count`` data records from the cursor into an array of the stream's dtype.

        Checksums are verified. Returns ``(records, sequences, receive_ns)``;
        records of other kinds are passed over. Stops early at the end.
        """
        name = stream or self.stream
        state = self.streams[name]
        if dtype is None:
            dtype = state.scans[0].header.dtype if state.scans else None
        if dtype is None:
            raise JournalError(f"stream {name!r} holds raw payloads: give dtype", self.root)
        dtype = np.dtype(dtype)
        out = np.empty(count, dtype)
        flat = out.view(np.uint8).reshape(-1)
        sequences = np.empty(count, np.int64)
        receive_ns = np.empty(count, np.int64)
        kinds = np.empty(count, np.int64)
        cursor = self._cursors[name]
        filled = 0
        while filled < count and cursor[0] < len(state.scans):
            number, offset, sequence = cursor
            scan = state.scans[number]
            buffer = state.maps[number].buffer
            rows, offset, sequence, status = jk.read_records(
                buffer, offset, scan.valid_end, sequence, count - filled, dtype.itemsize,
                flat[filled * dtype.itemsize:], sequences[filled:], receive_ns[filled:], kinds[filled:])
            filled += int(rows)
            cursor[1], cursor[2] = int(offset), int(sequence)
            if status == OK:
                break
            if status == jk.BAD_ARGUMENT:
                raise JournalError(f"record {sequence} is not a {dtype.itemsize}-byte {dtype}",
                                   scan.path, int(offset))
            if int(offset) < scan.valid_end:
                self._damaged(name, cursor)
                continue
            if not self._next_segment(name, cursor):
                break
        return out[:filled], sequences[:filled], receive_ns[:filled]

    def read_payloads(self, count, *, max_bytes=32 << 20, stream=None):
        """Read up to ``count`` records of any kind from the cursor, their payloads back to back.

        Checksums are verified; memory is bounded by ``max_bytes`` (or one record, if larger).
        Returns a :class:`PayloadSpan`; an empty one at the end.
        """
        name = stream or self.stream
        state = self.streams[name]
        data = np.empty(max_bytes, np.uint8)
        offsets = np.zeros(count + 1, np.int64)
        kinds = np.empty(count, np.int64)
        receive_ns = np.empty(count, np.int64)
        cursor = self._cursors[name]
        first_sequence = cursor[2]
        filled = 0
        while filled < count and cursor[0] < len(state.scans):
            number, offset, sequence = cursor
            scan = state.scans[number]
            buffer = state.maps[number].buffer
            used = int(offsets[filled])
            rows, offset, sequence, status = jk.read_payloads(
                buffer, offset, scan.valid_end, sequence, count - filled, data[used:], offsets[filled:],
                kinds[filled:], receive_ns[filled:])
            offsets[filled:filled + int(rows) + 1] += used
            filled += int(rows)
            cursor[1], cursor[2] = int(offset), int(sequence)
            if status == OK:
                break
            if status == jk.FULL:
                if filled:
                    break
                length, _, _, _, _, _ = jk.record_header(buffer, int(offset))
                data = np.empty(int(length), np.uint8)  # one record larger than max_bytes
                continue
            if int(offset) < scan.valid_end:
                self._damaged(name, cursor)
                continue
            if not self._next_segment(name, cursor):
                break
        return PayloadSpan(data[:int(offsets[filled])], offsets[:filled + 1], kinds[:filled],
                           receive_ns[:filled], first_sequence)

    def events(self, start=None, stop=None, *, stream=None):
        """Data records with ``start <= sequence < stop`` as one array of the stream's dtype."""
        name = stream or self.stream
        self.seek(start, stream=name)
        end = self.next_sequence(name) if stop is None else min(stop, self.next_sequence(name))
        records, sequences, _ = self.read_span(max(end - self.tell(name), 0), stream=name)
        keep = sequences < end
        return records[keep]

    def tail(self, *, timeout=None, wait=None, stream=None):
        """Records from the cursor, then new ones as a writer appends them (thread or process).

        Between looks it waits with ``wait``, a :mod:`ringbook.kernels.wait`
        strategy (by default no spin: sleeps from 1 ms doubling to 50 ms);
        it stops after ``timeout`` seconds without a new record (``None``: never).
        """
        name = stream or self.stream
        strategy = wait if wait is not None else wait_strategy(spins=0, yields=0, min_sleep_ns=1_000_000,
                                                               max_sleep_ns=50_000_000)
        attempt = 0
        last_seen = time.monotonic()
        while True:
            record = self._read_one(name)
            if record is not None:
                attempt = 0
                last_seen = time.monotonic()
                yield record
                continue
            if timeout is not None and time.monotonic() - last_seen >= timeout:
                return
            attempt = backoff(strategy, attempt)
            self.streams[name].refresh()

    def close(self):
        for stream in self.streams.values():
            for mapped in stream.maps:
                mapped.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# ------------------------------------------------------------------ verify


class VerifyTally:
    """:func:`verify`, one segment at a time: a follower checks each segment as it is sealed.

    :meth:`add` checks one segment (every record, and that it starts where the stream's
    previous segment added here ended); :attr:`report` is :func:`verify`'s report of the
    segments added so far.
    """

    def __init__(self, root):
        self.report = {"root": str(root), "ok": True, "streams": {}, "records": 0, "segments": 0, "bytes": 0,
                       "bad_records": 0, "corrupt": [], "torn_bytes": 0, "torn": [], "gaps": 0, "gap_list": [],
                       "errors": []}
        self._expected = {}  # stream -> the sequence its next segment should start at

    def add(self, name, first, path, last_segment=True, keep_open=False):
        """Check segment ``path`` of stream ``name`` (its name says it starts at sequence ``first``).

        Returns ``(mapping, scan)`` with ``keep_open`` (the caller closes the mapping), else
        ``(None, scan)``; ``(None, None)`` when the segment cannot be read (counted as an error).
        """
        report = self.report
        summary = report["streams"].setdefault(name, {
            "segments": 0, "records": 0, "data_records": 0, "first_sequence": None, "last_sequence": None,
            "first_ns": None, "last_ns": None, "bytes": 0})
        try:
            mapped, scan = open_segment(path, use_index=False, save_index=False)
        except (JournalError, OSError) as error:
            report["errors"].append(str(error))
            report["ok"] = False
            return None, None
        if not keep_open:
            mapped.close()
            mapped = None
        summary["segments"] += 1
        summary["records"] += scan.records
        summary["data_records"] += scan.data_records
        summary["bytes"] += scan.size
        report["records"] += scan.records
        report["segments"] += 1
        report["bytes"] += scan.size
        if scan.header.first_sequence != first:
            report["errors"].append(f"{path}: header says first sequence {scan.header.first_sequence}")
        expected = self._expected.get(name)
        if expected is not None and scan.first_sequence != expected:
            report["gaps"] += 1
            report["gap_list"].append({"stream": name, "path": str(path), "expected": expected,
                                       "found": scan.first_sequence})
        self._expected[name] = scan.next_sequence
        if scan.records:
            if summary["first_sequence"] is None:
                summary["first_sequence"] = scan.first_sequence
                summary["first_ns"] = scan.first_ns
            summary["last_sequence"] = scan.last_sequence
            summary["last_ns"] = scan.last_ns
        for region in scan.corrupt:
            report["bad_records"] += max(region.lost_records, 1)
            report["corrupt"].append({"path": str(path), "offset": region.offset,
                                      "status": status_name(region.status),
                                      "lost_records": region.lost_records,
                                      "resume_offset": region.resume_offset})
        if scan.torn_offset >= 0:
            report["torn_bytes"] += scan.torn_bytes
            report["torn"].append({"path": str(path), "offset": scan.torn_offset, "bytes": scan.torn_bytes,
                                   "status": status_name(scan.torn_status), "last_segment": last_segment})
        report["ok"] = not (report["bad_records"] or report["torn_bytes"] or report["gaps"] or report["errors"])
        return mapped, scan


def segment_spans(mapped, scan, count, max_bytes=32 << 20):
    """The good records of one segment (``mapped``, ``scan``: :func:`open_segment`'s), ``count``
    at a time, as :class:`PayloadSpan` objects; the scan's corrupt regions are passed over (as
    a reader with ``skip_corrupt`` does) and nothing past its good end is read. A span's
    ``data`` is reused by the next one: use each span before asking for the next."""
    buffer = mapped.buffer
    resumes = {region.offset: region for region in scan.corrupt}
    offset, sequence = scan.header.header_bytes, scan.first_sequence
    data = np.empty(max_bytes, np.uint8)
    while offset < scan.valid_end:
        offsets = np.zeros(count + 1, np.int64)
        kinds = np.empty(count, np.int64)
        receive_ns = np.empty(count, np.int64)
        rows, after, next_sequence, status = jk.read_payloads(buffer, offset, scan.valid_end, sequence, count,
                                                              data, offsets, kinds, receive_ns)
        rows = int(rows)
        if rows:
            yield PayloadSpan(data[:int(offsets[rows])], offsets[:rows + 1], kinds[:rows],
                              receive_ns[:rows], sequence)
        offset, sequence = int(after), int(next_sequence)
        if status == jk.FULL and not rows:
            data = np.empty(int(jk.record_header(buffer, offset)[0]), np.uint8)  # one record larger
        elif status not in (OK, jk.FULL) and offset < scan.valid_end:
            region = resumes.get(offset)
            if region is None or region.resume_offset < 0:
                raise JournalError(f"bad record the scan did not find ({status_name(int(status))})",
                                   scan.path, offset)
            offset, sequence = region.resume_offset, region.resume_sequence


def verify(root):
    """Check every record of every segment of a journal.

    Returns
    -------
    dict
        ``ok``, ``streams`` (per stream: ``segments``, ``records``,
        ``first_sequence``, ``last_sequence``, ``first_ns``, ``last_ns``,
        ``bytes``), ``records``, ``segments``, ``bytes``, ``bad_records``
        (records lost to corruption), ``corrupt`` (where), ``torn_bytes``,
        ``torn`` (where), ``gaps`` (sequence gaps between segments),
        ``errors`` (unreadable segments).
    """
    root = Path(root)
    tally = VerifyTally(root)
    for name, segments in sorted(list_segments(root).items()):
        for number, (first, path) in enumerate(segments):
            tally.add(name, first, path, last_segment=number == len(segments) - 1)
    return tally.report
