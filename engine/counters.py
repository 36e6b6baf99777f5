"""Live counters of a running engine, in a small shared-memory region of their own.

Another process (``ringbook stat``) attaches read-only and sees what the engine
is doing: events, bytes, drops, gaps, each consumer's lag, the journal's
records and ``last_durable_sequence``, latency percentiles, and each worker
thread's core, page faults and context switches. The workers' njit loops write
their own words directly; the scheduler thread writes the derived ones a few
times a second.

Region layout (version 1): ``/dev/shm/ringbook-<name>.counters``, mode 0600,
:data:`WORDS` little-endian int64 words, each writer on cache lines of its own.

=======  ===================================================================
words    what
=======  ===================================================================
0-7      header: magic ``b"RBCOUNTR"``, version, pid, the process's start
         time (clock ticks since boot, ``/proc/<pid>/stat`` field 22: with the
         pid it names one process), state (:data:`STATES`), start wall-clock
         ns, heartbeat wall-clock ns (the scheduler's last update), word count
8-15     feed: messages, events, bytes, dropped messages, dropped events,
         waits on a full ring, packet gaps, packet reorders
16-23    book consumer: messages, events, errors, gaps, checkpoints, resets,
         engine records, drops reported
24-31    book consumer (more): raw position, last latency ns, -, ...
32-39    scheduler: elapsed ns, throughput (events/s), book lag, flusher
         lag, journal records, journal bytes, last durable sequence, VmLck bytes
40-47    latency ns (histogram): p50, p90, p99, p99.9, max, mean; window p50, p95
48-55    window p99, SO_RCVBUF granted, -, ...
64-127   threads: :data:`MAX_THREADS` blocks of 8 words: name (8 bytes of
         ASCII), tid, allowed-core mask, minor faults, major faults,
         voluntary switches, involuntary switches, -
=======  ===================================================================

A reader copies the region once per refresh, validates the copy (magic,
version, word count, state) and uses only the copy: the engine may change the
region at any moment. A region whose pid no longer runs (or runs another
program, started at another time) belongs to a dead engine and says so.
"""

import os
import time
from pathlib import Path

import numpy as np

from ringbook.engine.ring import SHM_DIRECTORY

MAGIC = int.from_bytes(b"RBCOUNTR", "little")
VERSION = 1
WORDS = 128
PREFIX = "ringbook-"
SUFFIX = ".counters"

# header
H_MAGIC, H_VERSION, H_PID, H_PROCESS_START, H_STATE, H_STARTED_NS, H_HEARTBEAT_NS, H_WORDS = range(8)
STARTING, RUNNING, STOPPING, STOPPED, FAILED = range(5)
STATES = {STARTING: "starting", RUNNING: "running", STOPPING: "stopping", STOPPED: "stopped",
          FAILED: "failed"}

# feed (written by the feed's njit loop)
FEED_MESSAGES, FEED_EVENTS, FEED_BYTES, DROPPED_MESSAGES, DROPPED_EVENTS, FULL_WAITS, \
    PACKET_GAPS, PACKET_REORDERS = range(8, 16)
# book consumer (written by its njit loop)
BOOK_MESSAGES, BOOK_EVENTS, BOOK_ERRORS, BOOK_GAPS, CHECKPOINTS, RESETS, ENGINE_RECORDS, \
    DROPS_REPORTED = range(16, 24)
RAW_POSITION, LAST_LATENCY_NS = 24, 25
# scheduler
ELAPSED_NS, THROUGHPUT_EPS, BOOK_LAG, FLUSHER_LAG, JOURNAL_RECORDS, JOURNAL_BYTES, \
    LAST_DURABLE_SEQUENCE, VMLCK_BYTES = range(32, 40)
P50, P90, P99, P999, MAX, MEAN, WINDOW_P50, WINDOW_P95 = range(40, 48)
WINDOW_P99, RCVBUF_BYTES = 48, 49

THREADS = 64
MAX_THREADS = 8
THREAD_WORDS = 8
T_NAME, T_TID, T_CORES, T_MINOR, T_MAJOR, T_VOLUNTARY, T_INVOLUNTARY = range(7)

#: word -> name, for tables and JSON
NAMES = {
    FEED_MESSAGES: "feed_messages", FEED_EVENTS: "feed_events", FEED_BYTES: "feed_bytes",
    DROPPED_MESSAGES: "dropped_messages", DROPPED_EVENTS: "dropped_events", FULL_WAITS: "full_waits",
    PACKET_GAPS: "packet_gaps", PACKET_REORDERS: "packet_reorders",
    BOOK_MESSAGES: "book_messages", BOOK_EVENTS: "book_events", BOOK_ERRORS: "book_errors",
    BOOK_GAPS: "book_gaps", CHECKPOINTS: "checkpoints", RESETS: "resets",
    ENGINE_RECORDS: "engine_records", DROPS_REPORTED: "drops_reported",
    RAW_POSITION: "raw_position", LAST_LATENCY_NS: "last_latency_ns",
    ELAPSED_NS: "elapsed_ns", THROUGHPUT_EPS: "throughput_eps", BOOK_LAG: "book_lag",
    FLUSHER_LAG: "flusher_lag", JOURNAL_RECORDS: "journal_records", JOURNAL_BYTES: "journal_bytes",
    LAST_DURABLE_SEQUENCE: "last_durable_sequence", VMLCK_BYTES: "vmlck_bytes",
    P50: "p50_ns", P90: "p90_ns", P99: "p99_ns", P999: "p999_ns", MAX: "max_ns", MEAN: "mean_ns",
    WINDOW_P50: "window_p50_ns", WINDOW_P95: "window_p95_ns", WINDOW_P99: "window_p99_ns",
    RCVBUF_BYTES: "rcvbuf_bytes",
}


class CountersError(ValueError):
    """A region that is not an engine's counters (it names the field)."""


def region_path(name):
    """Where the counters of engine ``name`` live."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"an engine name is one path component, got {name!r}")
    return SHM_DIRECTORY / f"{PREFIX}{name}{SUFFIX}"


def process_start(pid):
    """The start time of process ``pid`` in clock ticks since boot, or ``None`` when it does not run."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: fields follow the last ')'
    return int(text[text.rindex(")") + 2:].split()[19])


def encode_name(name):
    """A thread name as one int64 word (its first 8 ASCII bytes)."""
    return int.from_bytes(name.encode("ascii", "replace")[:8].ljust(8, b"\0"), "little", signed=True)


def decode_name(word):
    return int(word).to_bytes(8, "little", signed=True).rstrip(b"\0").decode("ascii", "replace")


class CounterRegion:
    """The engine's side: creates the region, owns it, removes it at :meth:`close`.

    Attributes
    ----------
    words : numpy.ndarray
        int64 view of the region: njit loops write into it.
    path : pathlib.Path
    """

    def __init__(self, name):
        self.name = name
        self.path = region_path(name)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, WORDS * 8)
            import mmap
            self._mapping = mmap.mmap(fd, WORDS * 8, flags=mmap.MAP_SHARED,
                                      prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.words = np.frombuffer(self._mapping, np.int64)
        words = self.words
        words[H_VERSION] = VERSION
        words[H_PID] = os.getpid()
        words[H_PROCESS_START] = process_start(os.getpid()) or 0
        words[H_STATE] = STARTING
        words[H_STARTED_NS] = time.time_ns()
        words[H_HEARTBEAT_NS] = time.time_ns()
        words[H_WORDS] = WORDS
        words[H_MAGIC] = MAGIC  # last: the region is complete

    def set_state(self, state):
        self.words[H_STATE] = state
        self.words[H_HEARTBEAT_NS] = time.time_ns()

    def set_thread(self, index, name, tid=0, cores=(), minor=0, major=0, voluntary=0, involuntary=0):
        """Fill thread block ``index``."""
        if not 0 <= index < MAX_THREADS:
            raise IndexError(f"thread block {index} out of range 0..{MAX_THREADS - 1}")
        block = self.words[THREADS + index * THREAD_WORDS:THREADS + (index + 1) * THREAD_WORDS]
        mask = 0
        for core in cores:
            if core < 63:
                mask |= 1 << core
        block[:7] = [encode_name(name), tid, mask, minor, major, voluntary, involuntary]

    def close(self, unlink=True):
        """Unmap the region; remove it unless ``unlink=False``."""
        if unlink:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self.words = None
        try:
            self._mapping.close()
        except BufferError:
            pass  # views remain: the mapping goes with the last of them


def list_regions():
    """Names of the engines whose counters regions exist (running or dead)."""
    try:
        entries = sorted(SHM_DIRECTORY.iterdir())
    except OSError:
        return []
    return [entry.name[len(PREFIX):-len(SUFFIX)] for entry in entries
            if entry.name.startswith(PREFIX) and entry.name.endswith(SUFFIX)]


def read(name):
    """One validated snapshot of engine ``name``'s counters, as a dict.

    The region is copied once; only the copy is read.

    Returns
    -------
    dict
        ``name``, ``pid``, ``state`` ("running", ..., or "dead"), ``alive``,
        ``started_ns``, ``heartbeat_ns``, every counter of :data:`NAMES`, and
        ``threads`` {name: {tid, cores, minor_faults, major_faults,
        voluntary_switches, involuntary_switches}}.

    Raises
    ------
    FileNotFoundError
        No such engine.
    CountersError
        The region is not a counters region of this version.
    """
    path = region_path(name)
    with open(path, "rb") as file:
        data = file.read(WORDS * 8 + 1)
    if len(data) != WORDS * 8:
        raise CountersError(f"{path}: expected {WORDS * 8} bytes, found {len(data)}")
    copy = np.frombuffer(data, np.int64).copy()  # the one read of the shared words
    if copy[H_MAGIC] != MAGIC:
        raise CountersError(f"{path}: magic is {int(copy[H_MAGIC]).to_bytes(8, 'little', signed=True)!r}, "
                            f"expected b'RBCOUNTR' (not a counters region, or still being created)")
    if copy[H_VERSION] != VERSION:
        raise CountersError(f"{path}: counters version {copy[H_VERSION]}, expected {VERSION}")
    if copy[H_WORDS] != WORDS:
        raise CountersError(f"{path}: word count field {copy[H_WORDS]}, expected {WORDS}")
    state = int(copy[H_STATE])
    if state not in STATES:
        raise CountersError(f"{path}: state field {state}, expected one of {sorted(STATES)}")
    pid = int(copy[H_PID])
    alive = pid > 0 and process_start(pid) == int(copy[H_PROCESS_START])
    result = {"name": name, "path": str(path), "pid": pid, "alive": alive,
              "state": STATES[state] if alive or state in (STOPPED, FAILED) else "dead",
              "started_ns": int(copy[H_STARTED_NS]), "heartbeat_ns": int(copy[H_HEARTBEAT_NS])}
    for word, key in NAMES.items():
        result[key] = int(copy[word])
    threads = {}
    for index in range(MAX_THREADS):
        block = copy[THREADS + index * THREAD_WORDS:THREADS + (index + 1) * THREAD_WORDS]
        if block[T_NAME] == 0:
            continue
        mask = int(block[T_CORES])
        threads[decode_name(block[T_NAME])] = {
            "tid": int(block[T_TID]), "cores": [core for core in range(63) if mask >> core & 1],
            "minor_faults": int(block[T_MINOR]), "major_faults": int(block[T_MAJOR]),
            "voluntary_switches": int(block[T_VOLUNTARY]),
            "involuntary_switches": int(block[T_INVOLUNTARY])}
    result["threads"] = threads
    return result
