"""Many files at once: shards, one executor seam, worker set-up, retries, manifest, progress.

A *shard* is a (file, symbol): the unit of output and of the manifest. The
symbols of a file are known only once it is read, so one task reads one file
(with its LOBSTER orderbook file, matched by name) and produces every shard of it.

Where tasks run is one :class:`concurrent.futures.Executor` (:func:`executor`):

- ``workers=0``: in this process, one task after another (:class:`SerialExecutor`);
- ``workers=N`` (default: the usable cores): local processes (spawned, so no
  state or thread of this process is inherited), no extra dependency;
- ``cluster=`` a ``dask.distributed.Client`` or a scheduler address
  (``tcp://host:8786``): a Dask cluster's executor (``ringbook[dask]``).

Each worker prepares itself once (:func:`prepare_worker`): Numba's cache goes
to a folder on the worker's own disk (``NUMBA_CACHE_DIR``, unless set; never a
shared filesystem), and the kernels are compiled (or loaded) by a small
warm-up replay before the first shard, so no shard pays for it. Kernels are
``nogil``; nothing uses ``parallel=True``: the parallelism is across shards.

What crosses to a worker is pickled with cloudpickle (numba's own copy): a
user's ``@njit`` callback or ``make_state`` defined in a notebook or script
travels by value.

Durability: a worker writes each output atomically (a temporary file, then a
rename) but does not sync it; the driver syncs an input's outputs and their
folder before the manifest records the input as done, and un-records an input
(durably) before its outputs are written again. So the manifest never says
done of an output that a crash of the machine could lose or leave short, and
the syncs overlap the workers' next shards instead of stalling them. The
manifest is saved at most once a second as inputs finish (and at the end, or
when the run is stopped): after a crash, a rerun redoes the inputs finished
since its last save.

Faults: a task whose worker dies (killed, out of memory) is run again, up to
``attempts`` times in all; Dask does the same for its workers. Local workers
that die before any task ends, in two pools one after the other, stop the run
(:class:`WorkersCannotStart`): a script that starts them without the
``__main__`` guard makes each worker start workers as it imports the script.
A task that raises (a malformed file: :class:`~ringbook.engine.feeds.source.FeedError`
naming file, line and field) fails alone; the others finish.
"""

import concurrent.futures
import heapq
import json
import os
import queue
import re
import signal
import sys
import tempfile
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import blake3

#: Formats a file can be read in, and how :func:`detect_format` tells them apart. A
#: ``journal`` is a directory written by :class:`ringbook.engine.journal.JournalWriter`:
#: each of its streams imported from a capture (``ringbook journal import``) is an input.
FORMATS = ("lobster", "binance", "tardis", "kalshi", "journal")
_LOBSTER_NAME = re.compile(r"_(message|orderbook)_\d+\.csv(\.gz)?$")
_TARDIS_HEADER = b"exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"
#: The exchange column of the snapshot files, per format (tardis files name their own).
EXCHANGES = {"lobster": "nasdaq", "binance": "binance", "kalshi": "kalshi"}


# ---------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Source:
    """One input file (or journal stream) and what it is read with."""

    path: str
    format: str
    orderbook: str = None   # LOBSTER: the orderbook file beside the message file
    stream: str = None      # a journal's stream

    @property
    def name(self):
        return Path(self.path).name if self.stream is None else f"{Path(self.path).name}.{self.stream}"

    @property
    def key(self):
        """What names the input in the manifest and in results: the path, ``#stream`` for a journal's."""
        return self.path if self.stream is None else f"{self.path}#{self.stream}"


def _first_line(path):
    import gzip

    with open(path, "rb") as file:
        head = file.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as file:
        return file.readline(4096)


def detect_format(path):
    """``lobster``, ``binance``, ``tardis``, ``kalshi`` (from the name and first line) or
    ``journal`` (a directory of journal segments).

    Raises
    ------
    ValueError
        When none fits, naming the file.
    """
    if _LOBSTER_NAME.search(Path(path).name):
        return "lobster"
    if Path(path).is_dir():
        from ringbook.engine.journal import list_segments

        if list_segments(path):
            return "journal"
        raise ValueError(f"{path}: a directory without journal segments")
    line = _first_line(path).strip()
    if line.startswith(_TARDIS_HEADER):
        return "tardis"
    if re.match(rb"^\d+ \{", line):
        return "binance"
    if line.startswith(b"{") and (b'"ticker"' in line or b'"trade"' in line):
        return "kalshi"
    raise ValueError(f"{path}: cannot tell its format (LOBSTER, Binance capture, tardis, Kalshi)")


def sources(paths, format=None, folder_formats=None):
    """The :class:`Source` of each input, LOBSTER message files paired with their orderbook files.

    A LOBSTER orderbook file among the inputs is taken as its message file's
    companion, not as an input; a message file's orderbook file is found by
    name (``_message_`` -> ``_orderbook_``) among the inputs or beside it.
    A journal directory gives one input per stream, in name order; a stream
    imported from a LOBSTER message file finds its orderbook file by the
    original file's name, among the inputs, in the journal or beside it.
    An input given twice (or by two paths to one file) is one input.
    A folder that is not a journal stands for the inputs under it (:func:`_expand_folders`),
    of ``folder_formats`` only when given.
    Unreadable or unknown inputs raise ``ValueError`` (or ``OSError``).
    """
    found = []
    paths = list(dict.fromkeys(str(Path(path).resolve())   # each input once
                               for path in _expand_folders(as_inputs(paths), format, folder_formats)))
    given = set(paths)
    kinds = {path: format or detect_format(path) for path in paths}
    journals = {path: _journal_sources(path, given) for path, kind in kinds.items() if kind == "journal"}
    claimed = {source.orderbook for streams in journals.values() for source in streams}
    for path in paths:
        kind = kinds[path]
        if kind == "journal":
            found.extend(journals[path])
        elif kind == "lobster":
            name = Path(path).name
            if "_orderbook_" in name:
                if str(Path(path).with_name(name.replace("_orderbook_", "_message_"))) in given or path in claimed:
                    continue  # its message file's companion
                raise ValueError(f"{path}: a LOBSTER orderbook file without its message file")
            companion = Path(path).with_name(name.replace("_message_", "_orderbook_"))
            found.append(Source(path, kind, str(companion) if companion.exists() else None))
        else:
            found.append(Source(path, kind))
    return found


def as_inputs(paths):
    """A list of inputs: one path (or :class:`Source`) given alone is a list of one, not a
    string's characters."""
    return [paths] if isinstance(paths, (str, os.PathLike, Source)) else list(paths)


def _expand_folders(paths, format=None, formats=None):
    """The paths, each folder that is not a journal replaced by what is under it, in name order:
    the journals (as folders) and the files of a format this module tells (every file when
    ``format`` is given), hidden ones left out; of ``formats`` only, when given. A folder with
    none of them raises ``ValueError``."""
    for path in paths:
        if not is_folder_of_inputs(path):
            yield path
            continue
        found = []
        for folder, folders, files in os.walk(path):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in list(folders):
                if not is_folder_of_inputs(Path(folder) / name):
                    folders.remove(name)   # a journal: an input, not a folder of inputs
                    if formats is None or "journal" in formats:
                        found.append(Path(folder) / name)
            for name in sorted(files):
                kind = format or _format_or_none(Path(folder) / name)
                if not name.startswith(".") and kind is not None and (formats is None or kind in formats):
                    found.append(Path(folder) / name)
        if not found:
            raise ValueError(f"{path}: a folder without inputs (LOBSTER, Binance captures, tardis, Kalshi, "
                             f"journals)")
        yield from sorted(found)


def is_folder_of_inputs(path):
    """A folder that is not a journal: it stands for the inputs under it."""
    from ringbook.engine.journal import list_segments

    return Path(path).is_dir() and not list_segments(path)


def _format_or_none(path):
    try:
        return detect_format(path)
    except (ValueError, OSError):
        return None


def _journal_sources(root, given):
    """A :class:`Source` per stream of the journal at ``root``.

    A stream that was not imported from a capture is still listed: its task
    fails with the journal's error, naming it.
    """
    from ringbook.engine.feeds import journal as feeds_journal
    from ringbook.engine.journal import JournalError, list_segments

    found = []
    for stream in sorted(list_segments(root)):
        try:
            _, facts = feeds_journal.source_of(root, stream)
        except JournalError:
            found.append(Source(root, "journal", stream=stream))
            continue
        orderbook = None
        original = str(facts.get("file", ""))
        if facts["format"] == "lobster" and "_message_" in original:
            name = original.replace("_message_", "_orderbook_")
            places = [Path(path) for path in given if Path(path).name in (name, name + ".gz")]
            places += [Path(root) / name, Path(root) / (name + ".gz"), Path(root).parent / name,
                       Path(root).parent / (name + ".gz")]
            orderbook = next((str(place) for place in places if place.is_file()), None)
        found.append(Source(root, "journal", orderbook, stream))
    return found


def read_source(source):
    """``(feed, orderbook or None, exchange)`` for a :class:`Source`."""
    from ringbook.engine.feeds import binance, kalshi, lobster, tardis
    from ringbook.engine.feeds.source import FeedError

    if source.format == "journal":
        return _read_journal(source)
    if source.format == "lobster":
        if source.orderbook is None:
            # Its messages refer to orders resting before the file starts: a book not seeded
            # from the orderbook file would be wrong from the first row, silently.
            wanted = Path(source.path).name.replace("_message_", "_orderbook_")
            raise FeedError(source.path, None, f"no orderbook file {wanted} beside it or among the inputs (the "
                            "book is seeded from it: LOBSTER's messages refer to orders resting before the file)")
        return lobster.read_messages(source.path), lobster.read_orderbook(source.orderbook), EXCHANGES["lobster"]
    if source.format == "binance":
        return binance.read_capture(source.path), None, EXCHANGES["binance"]
    if source.format == "tardis":
        return tardis.read_incremental(source.path), None, tardis.exchange_of(source.path)
    if source.format == "kalshi":
        return kalshi.read_messages(source.path), None, EXCHANGES["kalshi"]
    raise ValueError(f"unknown format {source.format!r}")


def _read_journal(source):
    """A journal stream read as the capture it was imported from (written back to a temporary
    file, then read by that format's reader); errors name the journal and stream."""
    from ringbook.engine.feeds import journal as feeds_journal
    from ringbook.engine.feeds.source import FeedError

    with tempfile.TemporaryDirectory(prefix="ringbook-batch-") as directory:
        format, path = feeds_journal.materialize(source.path, directory, source.stream)
        try:
            feed, orderbook, exchange = read_source(Source(str(path), format, source.orderbook))
        except FeedError as error:
            raise FeedError(f"{source.path} (stream {source.stream}, a {format} capture)", error.line,
                            error.reason, error.field, error.partial) from None
    feed.path = source.key
    return feed, orderbook, exchange


def source_facts(source, hash=True):
    """:func:`file_facts` of an input; for a journal stream, of its segments together
    (bytes added, the latest mtime, one hash over them in order). A LOBSTER orderbook
    file adds its ``orderbook_size`` and ``orderbook_mtime_ns``: the snapshots depend on it too."""
    if source.stream is None:
        facts = file_facts(source.path, hash)
        if source.orderbook:
            stat = os.stat(source.orderbook)
            facts.update(orderbook_size=stat.st_size, orderbook_mtime_ns=stat.st_mtime_ns)
        return facts
    from ringbook.engine.journal import list_segments

    segments = [path for _, path in list_segments(source.path, source.stream).get(source.stream, [])]
    stats = [os.stat(path) for path in segments]
    facts = {"size": sum(stat.st_size for stat in stats), "mtime_ns": max((stat.st_mtime_ns for stat in stats),
                                                                          default=0)}
    if hash:
        facts["blake3"] = content_hash(segments)
    return facts


def file_facts(path, hash=True):
    """``{"size", "mtime_ns", "blake3"}`` of a file."""
    stat = os.stat(path)
    facts = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if hash:
        facts["blake3"] = content_hash([path])
    return facts


def content_hash(paths):
    """BLAKE3 of the files' bytes, one after another, as hex.

    A cryptographic hash, like SHA-256, at several times its speed. The files are
    read into one reused buffer: a new block each read would cost more than hashing it.
    """
    digest = blake3.blake3()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    for path in paths:
        with open(path, "rb", buffering=0) as file:
            while read := file.readinto(buffer):
                digest.update(view[:read])
    return digest.hexdigest()


# ---------------------------------------------------------------- workers

_prepared = False


def numba_cache_dir():
    """The worker's own Numba cache: ``NUMBA_CACHE_DIR``, else a folder under its temp dir."""
    return os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), f"ringbook-numba-{os.getuid() if hasattr(os, 'getuid') else 0}")


def prepare_worker():
    """Once per worker process: a local Numba cache, then compile the kernels on a tiny replay.

    Returns the process id (a Dask ``client.run`` reports it per worker).
    """
    global _prepared
    if _prepared:
        return os.getpid()
    if not os.environ.get("NUMBA_CACHE_DIR"):
        os.environ["NUMBA_CACHE_DIR"] = numba_cache_dir()
        try:
            from numba.core import config

            config.reload_config()
        except ImportError:  # pragma: no cover - numba is a dependency
            pass
    _warm_up()
    _prepared = True
    return os.getpid()


def _warm_up():
    """Compile the snapshot kernels (L2 and L3 paths) on a few events."""
    import numpy as np

    from ringbook.engine.snapshots import snapshot_feed
    from ringbook.engine.feeds.source import Feed
    from ringbook.kernels.events import (FLAG_BATCH_END, KIND_L2_SET, KIND_L3_ADD, Instruments,
                                         empty_events)

    instruments = Instruments(capacity=1)
    instruments.intern("WARMUP", 2, 0, 1)
    events = empty_events(2)
    events["kind"] = [KIND_L2_SET, KIND_L3_ADD]
    events["side"] = [1, -1]
    events["price"] = [100, 101]
    events["quantity"] = [1, 1]
    events["order_id"] = [0, 1]
    events["exchange_ns"] = [10**9, 2 * 10**9]
    events["flags"] = FLAG_BATCH_END
    snapshot_feed(Feed(events, np.arange(1, 3), instruments, "warm-up"), 0, 10**9, 1)


def _pool_initializer():
    # Ctrl-C is the driver's to handle: it drops the tasks not started and waits for those running,
    # which then end whole (a worker stopped mid-task would leave the pool broken and a file half made).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    prepare_worker()


class SerialExecutor(concurrent.futures.Executor):
    """Runs each task in this process when it is submitted: the reference the others must equal."""

    def submit(self, function, /, *args, **kwargs):
        future = concurrent.futures.Future()
        try:
            future.set_result(function(*args, **kwargs))
        except BaseException as error:  # the caller reads it from the future
            future.set_exception(error)
        return future


def usable_cores():
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class Runner:
    """An executor with what the batch needs to know of it (see :func:`executor`)."""

    executor: concurrent.futures.Executor
    kind: str                       # "serial", "processes" or "dask"
    workers: int
    client: object = None
    _owned: list = field(default_factory=list)

    def restart(self):
        """A fresh process pool after a worker died (a broken pool takes no more tasks)."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = _process_pool(self.workers)

    def close(self, cancel=False):
        """Wait for the tasks submitted, or (``cancel``) drop those not started: a run stopped
        midway (Ctrl-C) ends as soon as the tasks running end."""
        if cancel and self.kind == "dask":
            self.executor.shutdown(wait=False)
        elif cancel:
            self.executor.shutdown(wait=True, cancel_futures=True)
        else:
            self.executor.shutdown(wait=True)
        for owned in reversed(self._owned):
            owned.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        self.close(cancel=exc_type is not None)


def _process_pool(workers):
    import multiprocessing

    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_pool_initializer)


def executor(workers=None, cluster=None):
    """The :class:`Runner` for ``workers`` local processes or a Dask ``cluster``.

    Parameters
    ----------
    workers : int, optional
        0: this process; N: N spawned processes; None: the usable cores.
    cluster : str or dask.distributed.Client, optional
        A Dask scheduler address or a client; every worker is prepared
        (:func:`prepare_worker`) before tasks run.
    """
    if cluster is not None:
        try:
            from distributed import Client
        except ImportError:
            raise ImportError("a Dask cluster needs ringbook[dask]: pip install 'ringbook[dask]'") from None
        owned = []
        client = cluster
        if not isinstance(cluster, Client):
            client = Client(cluster)
            owned.append(client)
        client.run(prepare_worker)
        workers = sum(int(info.get("nthreads", 1)) for info in client.scheduler_info()["workers"].values())
        return Runner(client.get_executor(pure=False), "dask", workers, client, owned)
    if workers is None:
        workers = usable_cores()
    if workers == 0:
        prepare_worker()
        return Runner(SerialExecutor(), "serial", 0)
    return Runner(_process_pool(workers), "processes", workers)


class _Progress:
    """A tqdm bar across tasks when tqdm is installed and wanted, else nothing."""

    def __init__(self, total, enabled, description):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=description, unit="file", file=sys.stderr)

    def update(self):
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


_TERMINAL_STYLE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class TaskFailure:
    """A task that raised: where and why."""

    error: str
    kind: str
    file: str = None
    line: int = None
    field: str = None

    @classmethod
    def of(cls, error):
        text = _TERMINAL_STYLE.sub("", str(error))   # numba's errors come in bold, for a terminal
        if not type(error).__module__.startswith("ringbook."):
            # A reader's or the book's error says what it is; another (from a user's callback or
            # make_state, numba, the system) is named by its type, as a traceback names it.
            text = f"{type(error).__name__}: {text}"
        failure = cls(text, type(error).__name__)
        for name in ("path", "line", "field"):
            value = getattr(error, name, None)
            if value is not None:
                setattr(failure, "file" if name == "path" else name, value)
        return failure


def failure_line(label, name, error):
    """A report's line for an input that failed: the error alone when it names the input
    first, as a reader's error does (``path, line 2, field 'size': ...``)."""
    named = error.startswith((f"{name},", f"{name}:"))
    return f"{label} {error}" if named else f"{label} {name}: {error}"


def _guarded(function, *arguments):
    """Run a task on its worker; an error becomes a :class:`TaskFailure` there.

    The exception itself does not travel back: one with a constructor of its
    own (``FeedError``) cannot be unpickled, which would break a process pool.
    """
    try:
        return function(*arguments)
    except Exception as error:  # noqa: BLE001 - a task's error is its own
        return TaskFailure.of(error)


def run_tasks(runner, function, arguments, *, attempts=3, progress=False, description="files",
              on_result=None, ahead=None):
    """Run ``function(*arguments[k])`` for every k on the runner.

    Each result is handed over (or stored) and let go as its task ends. Pools
    and clusters are given every task at once (a worker never waits for the
    driver, which syncs outputs between results; a Dask scheduler balances
    them, an adaptive cluster grows by them), this process one at a time.
    Given ``ahead``, no task starts ``ahead`` places or more past the first
    unfinished one: results to be taken in input order then wait few at a
    time. A task that raises gives a :class:`TaskFailure` in its place. A task
    whose process died is run again (up to ``attempts`` runs; every task in
    flight when a local pool breaks counts one), then fails as ``WorkerDied``.

    Returns
    -------
    list or None
        The results in input order; or, given ``on_result``, None: each result
        is handed to ``on_result(k, result)`` in the driver as its task finishes,
        and not kept.

    Raises
    ------
    WorkersCannotStart
        Two local pools in a row died before any task ended (a script without
        the ``__main__`` guard): retrying would only repeat it.
    """
    results = [None] * len(arguments) if on_result is None else None
    runs = [0] * len(arguments)
    waiting = list(range(len(arguments)))   # a heap: the first task to start is always the earliest
    in_flight = {}
    ended = queue.SimpleQueue()   # futures as they end: each is waited for once, however many run
    window = 1 if runner.kind == "serial" else len(arguments)   # serial: a task runs as it is submitted
    horizon = len(arguments) if ahead is None else ahead
    finished_tasks = bytearray(len(arguments))
    first_unfinished = 0
    broken = False   # a local pool whose worker died takes no more tasks: restart it once drained
    any_ended = False   # a task of this run has ended in a worker
    pools_lost = 0      # pools that broke before any task ended
    bar = _Progress(len(arguments), progress, description)
    try:
        while waiting or in_flight:
            if broken and not in_flight:
                pools_lost += not any_ended
                if pools_lost == 2:
                    raise WorkersCannotStart()
                runner.restart()
                broken = False
            while (waiting and len(in_flight) < window and waiting[0] < first_unfinished + horizon
                   and not broken):
                k = heapq.heappop(waiting)
                runs[k] += 1
                future = runner.executor.submit(_guarded, function, *arguments[k])
                in_flight[future] = k
                future.add_done_callback(ended.put)
            future = ended.get()
            k = in_flight.pop(future)
            result = _result_of(future)
            if result is _POOL_BROKEN:   # every task in the pool ends so
                broken = True
                if runs[k] < attempts:
                    heapq.heappush(waiting, k)
                    continue
                result = TaskFailure("its worker process died", "WorkerDied")
            else:
                any_ended = True
            if on_result is None:
                results[k] = result
            else:
                on_result(k, result)
            finished_tasks[k] = 1
            while first_unfinished < len(arguments) and finished_tasks[first_unfinished]:
                first_unfinished += 1
            bar.update()
    finally:
        bar.close()
    return results


class WorkersCannotStart(RuntimeError):
    """Worker processes died before any task ended, in two pools one after the other."""

    def __init__(self):
        super().__init__(
            "the worker processes died before any task ended, twice. A script that runs this with worker "
            "processes must do it under `if __name__ == \"__main__\":` (each spawned worker imports the script, "
            "and must not start workers itself). A task that ends its process (out of memory, a callback's "
            "segfault) does so too. workers=0 runs in this process, where the error shows.")


_POOL_BROKEN = object()


def _result_of(future):
    """A finished task's result (a :class:`TaskFailure` when it raised), or ``_POOL_BROKEN``
    when its local process pool broke."""
    try:
        return future.result()
    except BrokenProcessPool:
        return _POOL_BROKEN
    except Exception as error:  # noqa: BLE001 - a task's error is its own
        if type(error).__name__ == "KilledWorker":
            return TaskFailure(str(error), "WorkerDied")
        return TaskFailure.of(error)


# ---------------------------------------------------------------- manifest

MANIFEST = "manifest.json"
LOCK = ".ringbook-snapshots.lock"   # held by the run writing to the folder


class Manifest:
    """``manifest.json`` in the output folder: every input and its shards.

    ``{"version": 1, "options": {...}, "files": {input: {"size", "mtime_ns",
    "blake3", ["orderbook_size", "orderbook_mtime_ns",] "format", "orderbook", "stream",
    "status", "error", "shards": [{"symbol", "output", "rows", "first_boundary_ns",
    "last_boundary_ns", "first_event_ns", "last_event_ns", "events"}]}}}``, an input named
    by its path (``path#stream`` for a journal's stream, whose facts are those of its
    segments). Written atomically and synced, at most once a second as inputs finish (see
    :meth:`record`); an input is recorded as done only once its outputs are synced (see the
    module docstring).
    """

    #: Seconds at least between saves as inputs finish (and ten times the last save's time):
    #: saving the whole manifest after each of thousands of inputs would cost more than they do.
    SAVE_EVERY = 1.0

    def __init__(self, directory, options):
        self.path = Path(directory) / MANIFEST
        self.options = options
        self.files = {}
        self._unsaved = False
        self._next_save = 0.0
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved.get("options") == options:
                self.files = saved.get("files", {})

    def is_done(self, source, directory):
        """True when the input is unchanged (size and mtime, its orderbook file's too) and every one
        of its outputs exists."""
        entry = self.files.get(source.key)
        if entry is None or entry.get("status") != "done":
            return False
        facts = source_facts(source, hash=False)
        if entry.get("orderbook") != source.orderbook or any(entry.get(name) != value
                                                              for name, value in facts.items()):
            return False
        return all((Path(directory) / shard["output"]).exists() for shard in entry["shards"])

    def sources(self):
        """The recorded inputs, as :class:`Source`."""
        return [Source(key[: -len(entry["stream"]) - 1] if entry.get("stream") else key, entry.get("format"),
                       entry.get("orderbook"), entry.get("stream")) for key, entry in self.files.items()]

    def refuse_shared_names(self, inputs):
        """Refuse inputs whose outputs would take the names of another input's (one file name in two
        folders, or ``x.csv`` beside ``x.csv.gz``): the last written would replace the first's.

        Inputs recorded earlier count too, but one whose file is gone is taken as moved: it is
        forgotten, and its outputs are the new input's to write.
        """
        from ringbook.engine.snapshots import output_stem

        keys = {source.key for source in inputs}
        gone = [source for source in self.sources()
                if source.key not in keys and not os.path.exists(source.path)]
        self.forget(gone)
        recorded = [source for source in self.sources() if source.key not in keys]
        claims = {}
        for source in [*recorded, *inputs]:
            other = claims.setdefault(output_stem(source.name), source)
            if other.key != source.key:
                earlier = " (whose outputs this folder holds)" if other in recorded else ""
                raise ValueError(f"{other.key}{earlier} and {source.key} would write outputs of the same names "
                                 f"({output_stem(source.name)}.*): rename one, or write them to different "
                                 f"output folders")

    def record(self, source, entry):
        """Record an input, saved with those recorded since the last save once it is time
        (:data:`SAVE_EVERY`) or at :meth:`flush`: after a crash, a rerun redoes the inputs
        recorded since."""
        self.files[source.key] = entry
        self._unsaved = True
        if time.monotonic() >= self._next_save:
            self.save()

    def flush(self):
        """Save what is recorded and not saved yet."""
        if self._unsaved:
            self.save()

    def forget(self, sources):
        """Un-record the inputs (saved at once) before their outputs are written again: a crash
        mid-write then leaves them to be redone, never recorded as done with a torn output."""
        forgotten = [self.files.pop(source.key) for source in sources if source.key in self.files]
        if forgotten:
            self.save()

    def save(self):
        from ringbook.engine.files import write_atomic

        started = time.monotonic()
        text = json.dumps({"version": 1, "options": self.options, "files": self.files}, indent=1,
                          sort_keys=True)
        write_atomic(self.path, (text + "\n").encode())
        self._unsaved = False
        self._next_save = time.monotonic() + max(self.SAVE_EVERY, 10 * (time.monotonic() - started))


# ---------------------------------------------------------------- snapshots of many files

_INTERVAL = re.compile(r"^(\d+)(ns|us|µs|ms|s|m|min|h)$")
_UNIT_NS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
            "min": 60 * 10**9, "h": 3600 * 10**9}


def parse_interval(text):
    """``"1s"``, ``"100ms"``, ``"5m"`` ... -> ns (a whole number of µs)."""
    match = _INTERVAL.match(str(text).strip())
    if not match or int(match[1]) <= 0:
        raise ValueError(f"interval {text!r}: a positive whole number with a unit (ns, us, ms, s, m, h)")
    interval = int(match[1]) * _UNIT_NS[match[2]]
    if interval % 1000:
        raise ValueError(f"interval {text!r}: must be a whole number of µs (timestamps are µs)")
    return interval


def symbol_events(feed):
    """``[(symbol, its events)]`` for each symbol a feed has events of, by id; the events
    of a feed of one instrument as they are (neither counted nor copied)."""
    import numpy as np

    events = feed.events
    if len(feed.instruments) <= 1:
        return [(0, events)] if len(events) else []
    symbols = events["symbol"]
    # The symbols present, by counting: a sort of every event would cost more.
    return [(symbol, events[symbols == symbol]) for symbol in np.flatnonzero(np.bincount(symbols)).tolist()]


def snapshot_task(source, out_dir, levels, interval_ns, interval_text, format):
    """One file's shards: read it, take each symbol's snapshots, write each shard's file.

    Runs on a worker. Returns the manifest entry of the file. Each output is
    written atomically but not synced: the driver syncs them before it records
    the entry (see the module docstring).
    """
    prepare_worker()
    from ringbook.engine import snapshots
    from ringbook.kernels.snapshots import time_span

    facts = source_facts(source)
    feed, orderbook, exchange = read_source(source)
    shards = []
    for symbol, events in symbol_events(feed):
        pieces = snapshots.snapshot_pieces(feed, symbol, interval_ns, levels, exchange=exchange,
                                           orderbook=orderbook)
        name = feed.instruments.name_of(symbol)
        output = snapshots.output_name(source.name, name, levels, interval_text, format)
        tally = snapshots.Tally()
        snapshots.write_snapshots(tally.passing(pieces), Path(out_dir) / output, format, durable=False)
        _, earliest, latest = time_span(events)
        shards.append({"symbol": name, "output": output, "rows": tally.rows, "events": len(events),
                       "first_boundary_ns": tally.first_boundary, "last_boundary_ns": tally.last_boundary,
                       "first_event_ns": int(earliest) if earliest else None,
                       "last_event_ns": int(latest) if latest else None})
    return {**facts, "format": source.format, "orderbook": source.orderbook, "stream": source.stream,
            "status": "done", "error": None, "shards": shards}


@dataclass
class BatchReport:
    """What a batch run did."""

    done: list = field(default_factory=list)       # inputs processed now
    skipped: list = field(default_factory=list)    # inputs already done (rerun)
    failed: list = field(default_factory=list)     # (input, TaskFailure)
    entries: dict = field(default_factory=dict)    # input -> manifest entry

    @property
    def ok(self):
        return not self.failed


def snapshot_files(paths, out_dir, *, levels=25, interval="1s", format="csv", workers=None,
                   cluster=None, force=False, progress=False, input_format=None, attempts=3):
    """Snapshots of every (file, symbol) shard of ``paths`` into ``out_dir``, with a manifest.

    A rerun skips inputs whose shards are done (unchanged size and mtime,
    outputs present, same options); ``force`` redoes them. An input is
    recorded as done only once its outputs are synced, and an input to redo
    is un-recorded before its outputs are written again (see the module
    docstring): after a crash, a rerun redoes whatever might be torn.

    Returns
    -------
    BatchReport
    """
    from ringbook.engine.files import remove_temporary_files, take_lock
    from ringbook.engine.snapshots import FORMATS as OUTPUT_FORMATS

    if format not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {format!r}")
    if levels < 1:
        raise ValueError(f"levels must be positive, got {levels}")
    interval_ns = parse_interval(interval)
    if format == "parquet":
        import pyarrow  # noqa: F401 - fail here, not on every worker
    inputs = sources(paths, input_format)   # bad inputs are refused before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = take_lock(out_dir / LOCK)
    if lock is None:
        raise ValueError(f"{out_dir}: another run is writing snapshots to this folder")
    with lock:
        remove_temporary_files(out_dir)   # a run killed mid-write leaves them
        try:
            return _snapshot_files(inputs, out_dir, levels, interval, interval_ns, format, workers, cluster,
                                   force, progress, attempts)
        finally:
            remove_temporary_files(out_dir)   # and so does a worker killed mid-write, its shard run again


def _snapshot_files(inputs, out_dir, levels, interval, interval_ns, format, workers, cluster, force, progress,
                    attempts):
    """:func:`snapshot_files` in a folder it holds the lock of."""
    from ringbook.engine.files import sync_files

    manifest = Manifest(out_dir, {"levels": levels, "interval": interval, "format": format})
    manifest.refuse_shared_names(inputs)
    report = BatchReport()
    todo = []
    for source in inputs:
        if not force and manifest.is_done(source, out_dir):
            report.skipped.append(source.key)
            report.entries[source.key] = manifest.files[source.key]
        else:
            todo.append(source)

    manifest.forget(todo)

    def finished(k, result):
        source = todo[k]
        if not isinstance(result, TaskFailure):
            try:
                sync_files(out_dir, [shard["output"] for shard in result["shards"]])
            except OSError as error:
                result = TaskFailure.of(error)
        if isinstance(result, TaskFailure):
            try:
                facts = source_facts(source, hash=False)
            except OSError:
                facts = {}
            entry = {**facts, "format": source.format, "orderbook": source.orderbook, "stream": source.stream,
                     "status": "failed", "error": result.__dict__, "shards": []}
            report.failed.append((source.key, result))
        else:
            entry = result
            report.done.append(source.key)
        report.entries[source.key] = entry
        manifest.record(source, entry)

    if todo:
        try:
            with executor(workers, cluster) as runner:
                run_tasks(runner, snapshot_task,
                          [(source, str(out_dir.resolve()), levels, interval_ns, interval, format)
                           for source in todo],
                          attempts=attempts, progress=progress, description="snapshots", on_result=finished)
        finally:
            manifest.flush()   # what is done is recorded, also when the run is stopped
    order = {source.key: k for k, source in enumerate(inputs)}
    report.done.sort(key=order.get)
    report.failed.sort(key=lambda failure: order[failure[0]])
    return report


# ---------------------------------------------------------------- a user's callback over many files

_callables = {}


def _load_callables(payload):
    """Unpickle the user's functions once per process and keep them, so each compiles once."""
    key = blake3.blake3(payload).hexdigest()
    if key not in _callables:
        import pickle

        _callables[key] = pickle.loads(payload)
    return _callables[key]


def replay_task(source, payload, every):
    """Replay one file's symbols with the user's callback; ``[(symbol, state)]``. Runs on a worker."""
    prepare_worker()
    from ringbook.engine.check import feed_ticks
    from ringbook.engine.feeds import lobster
    from ringbook.kernels import book as books
    from ringbook.kernels.orders import order_slots_for
    from ringbook.kernels.replay import replay_events

    callback, make_state = _load_callables(payload)
    feed, orderbook, _ = read_source(source)
    results = []
    n_symbols = max(len(feed.instruments), 1)
    ticks = feed_ticks(feed, n_symbols)
    for symbol, events in symbol_events(feed):
        book = books.new_book(n_symbols=n_symbols, depth=4096, order_capacity=order_slots_for(events), ticks=ticks)
        if orderbook is not None and len(events):
            books.check_status(books.load_snapshot(book, symbol, *lobster.levels_before_first(orderbook, events[0]),
                                                   0), "seeding the book")
        state = make_state(events)
        replay_events(book, events, callback, state, every)
        results.append((feed.instruments.name_of(symbol), state))
    return results


class ReplayError(RuntimeError):
    """Some shards failed; ``failures`` lists ``(input, TaskFailure)`` and ``results`` the rest
    (or their fold, given ``reduce``)."""

    def __init__(self, failures, results):
        self.failures = failures
        self.results = results
        lines = [failure_line(" ", path, failure.error) for path, failure in failures]   # indented
        super().__init__(f"{len(failures)} of the files failed:\n" + "\n".join(lines))


def replay_files(sources_or_paths, callback, make_state, every=None, reduce=None, *, workers=None,
                 cluster=None, progress=False, input_format=None, attempts=3):
    """Replay every (file, symbol) shard with a user's ``@njit`` callback, anywhere.

    Parameters
    ----------
    sources_or_paths : str, Path or Source, or a list of them
        Input files, journals or folders of them (LOBSTER message files are
        seeded from their orderbook files, found by name).
    callback : numba dispatcher
        ``callback(book, events, i, state)``, as for :func:`ringbook.kernels.replay.replay`.
    make_state : callable
        ``make_state(events) -> state``, called on the worker for each shard
        with the shard's events (a numpy array); the state numba passes to the
        callback (arrays, a tuple of arrays).
    every : int, optional
        ``EVERY_EVENT`` (default) or ``EVERY_BATCH`` of :mod:`ringbook.kernels.replay`.
    reduce : callable, optional
        ``reduce(a, b) -> state``, folded over the shards' states in input
        order as they arrive (deterministic: merge exactly, e.g. add counts),
        so only a few states are held at once; None returns every shard's state.
    workers, cluster
        Where to run (see :func:`executor`).

    Returns
    -------
    dict or object
        ``{(input, symbol): state}`` in input order (the input's path; ``path#stream`` for a
        journal's stream), or the fold of the states.

    Raises
    ------
    ReplayError
        When shards failed (``error.results``: the others' results, or their fold).
    """
    from numba import cloudpickle  # numba's own copy: no extra dependency

    from ringbook.kernels.replay import EVERY_EVENT

    every = EVERY_EVENT if every is None else every
    sources_or_paths = as_inputs(sources_or_paths)
    # Paths are resolved together (a LOBSTER orderbook file among them is its message file's
    # companion); a journal gives a source per stream. Sources given as such stay in place.
    paths = [str(item) for item in sources_or_paths if not isinstance(item, Source)]
    found = {}
    for source in sources(paths, input_format):
        found.setdefault(source.path, []).append(source)
    inputs = []
    for item in sources_or_paths:
        if isinstance(item, Source):
            inputs.append(item)
            continue
        path = str(Path(item).resolve())
        inside = [key for key in found if key.startswith(path + os.sep)] if Path(path).is_dir() else []
        for key in [path, *inside]:   # a file, a journal, or the inputs under a folder
            inputs.extend(found.pop(key, []))
    payload = cloudpickle.dumps((callback, make_state))
    fold = _InputOrderFold(inputs, reduce)
    with executor(workers, cluster) as runner:
        # Folding, a shard starts at most two a worker past the first unfinished one: the states
        # waiting for an earlier shard's stay few (a slow shard may leave a worker idle meanwhile).
        ahead = None if reduce is None else 2 * max(runner.workers, 1)
        run_tasks(runner, replay_task, [(source, payload, every) for source in inputs],
                  attempts=attempts, progress=progress, description="replay", on_result=fold.add, ahead=ahead)
    if fold.failures:
        raise ReplayError(fold.failures, fold.result())
    return fold.result()


class _InputOrderFold:
    """Shards' states as their tasks finish, kept per shard or folded by ``reduce`` in input
    order; a state folded is let go (a year of shards is never in memory at once)."""

    def __init__(self, inputs, reduce):
        self.inputs = inputs
        self.reduce = reduce
        self.states = {}            # (input, symbol) -> state, when not reducing
        self.merged = None          # the fold of the first ``folded`` states, when reducing
        self.folded = 0
        self.failures = []
        self._early = {}            # finished before an earlier input: k -> outcome
        self._next = 0

    def add(self, k, outcome):
        self._early[k] = outcome
        while self._next in self._early:
            source, outcome = self.inputs[self._next], self._early.pop(self._next)
            self._next += 1
            if isinstance(outcome, TaskFailure):
                self.failures.append((source.key, outcome))
                continue
            for symbol, state in outcome:
                if self.reduce is None:
                    self.states[(source.key, symbol)] = state
                else:
                    self.merged = self.reduce(self.merged, state) if self.folded else state
                    self.folded += 1

    def result(self):
        return self.states if self.reduce is None else self.merged


# ---------------------------------------------------------------- ringbook check over many files

#: What ``ringbook check`` has an exchange's truth for (a folder's other files are not checked).
CHECKED_FORMATS = ("lobster", "binance", "journal")


def check_task(source):
    """``ringbook check`` of one file on a worker: its result's dict."""
    prepare_worker()
    from ringbook.engine import check

    if source.format == "lobster":
        return check.check_lobster(source.path, source.orderbook).to_dict()
    if source.format == "binance":
        return check.check_binance(source.path).to_dict()
    if source.format == "journal":
        result = check.check_journal(source.path, source.orderbook, stream=source.stream).to_dict()
        return {**result, "stream": source.stream}
    raise ValueError(f"{source.path}: no exchange truth to check a {source.format} file against")


TOTALS = ("events", "checked", "mismatches", "gaps")


def check_files(paths, *, workers=None, cluster=None, progress=False, input_format=None):
    """Check many files (LOBSTER with their orderbook files, matched by name; Binance captures).

    Returns
    -------
    files : list of dict
        Per input, in input order: the check's result (as ``--json`` prints
        it), or ``{"file", "error", ...}`` for a file that could not be read.
    totals : dict
        ``events``, ``checked``, ``mismatches``, ``gaps`` added over the files.
    """
    inputs = sources(paths, input_format, folder_formats=CHECKED_FORMATS)
    with executor(workers, cluster) as runner:
        outcomes = run_tasks(runner, check_task, [(source,) for source in inputs], progress=progress,
                             description="check")
    files = []
    for source, outcome in zip(inputs, outcomes):
        if isinstance(outcome, TaskFailure):
            problem = {"format": source.format, "file": source.path, "error": outcome.error}
            if source.stream is not None:
                problem["stream"] = source.stream
            if outcome.line is not None:
                problem.update({"error_file": outcome.file, "line": outcome.line, "field": outcome.field})
            files.append(problem)
        else:
            files.append(outcome)
    totals = {name: sum(entry.get(name, 0) for entry in files) for name in TOTALS}
    return files, totals


def run_check(args):
    """``ringbook check FILES... [--workers N | --cluster ADDRESS] [--json]``: one line per file, totals."""
    try:
        files, totals = check_files(args.files, workers=args.workers, cluster=args.cluster,
                                    progress=not (args.json or args.no_progress),
                                    input_format=args.format)
    except (ValueError, OSError, ImportError, WorkersCannotStart) as error:
        print(f"ringbook check: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ringbook check: interrupted", file=sys.stderr)
        return 130
    if args.json:
        json.dump({"files": files, "totals": totals}, sys.stdout)
        sys.stdout.write("\n")
    else:
        for entry in files:
            name = entry["file"] + (f" (stream {entry['stream']})" if entry.get("stream") else "")
            if "error" in entry:
                print(failure_line("ERROR   ", name, entry["error"]))
            else:
                print(f"{'OK' if entry['mismatches'] == 0 else 'MISMATCH':8} {name}: "
                      + ", ".join(f"{name} {entry[name]}" for name in TOTALS))
        print(f"TOTAL    {len(files)} files: " + ", ".join(f"{name} {totals[name]}" for name in TOTALS))
    if any("error" in entry for entry in files):
        return 2
    return 1 if totals["mismatches"] else 0
