"""Where a batch's tasks run: one executor seam, worker set-up, retries, progress.

Where tasks run is one :class:`concurrent.futures.Executor` (:func:`executor`):

- ``workers=0``: in this process, one task after another (:class:`SerialExecutor`);
- ``workers=N`` (default: the usable cores): local processes (spawned, so no
  state or thread of this process is inherited), no extra dependency;
- ``cluster=`` a ``dask.distributed.Client`` or a scheduler address
  (``tcp://host:8786``): a Dask cluster's executor (``ringbook[dask]``).

Each worker prepares itself once (:func:`prepare_worker`): Numba's cache goes
to a folder on the worker's own disk (``NUMBA_CACHE_DIR``, unless set; never a
shared filesystem), and the kernels are compiled (or loaded) by a small
warm-up replay before the first task, so no task pays for it. Kernels are
``nogil``; nothing uses ``parallel=True``: the parallelism is across tasks.

What crosses to a worker is pickled with cloudpickle (numba's own copy): a
user's ``@njit`` callback or ``make_state`` defined in a notebook or script
travels by value.

Faults (:func:`run_tasks`): a task whose worker dies (killed, out of memory)
is run again, up to ``attempts`` times in all; Dask does the same for its
workers. Local workers that die before any task ends, in two pools one after
the other, stop the run (:class:`WorkersCannotStart`): a script that starts
them without the ``__main__`` guard makes each worker start workers as it
imports the script. So does a Dask cluster whose workers cannot get ready, or
do not see the inputs and the output folder, before any task. A task that
raises (a malformed file: :class:`~ringbook.engine.feeds.source.FeedError`
naming file, line and field) fails alone, as a :class:`TaskFailure`; the
others finish.
"""

import concurrent.futures
import heapq
import os
import queue
import re
import signal
import sys
import tempfile
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from ringbook.engine.system import allow_open_files, one_blas_thread, reuse_freed_blocks, usable_cores

_prepared = False


def numba_cache_dir():
    """The worker's own Numba cache: ``NUMBA_CACHE_DIR``, else a folder under its temp dir."""
    return os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), f"ringbook-numba-{os.getuid() if hasattr(os, 'getuid') else 0}")


def prepare_worker():
    """Once per worker process: malloc that reuses freed arrays, the most open files allowed, a
    local Numba cache, then compile the kernels on a tiny replay.

    Returns the process id (a Dask ``client.run`` reports it per worker).
    """
    global _prepared
    if _prepared:
        return os.getpid()
    reuse_freed_blocks(_readers_memory())   # else a shard's large arrays are faulted in anew at every shard
    allow_open_files()   # a file of many symbols has an output open for each
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


def _readers_memory():
    """What a task's readers may hold (``RINGBOOK_MEMORY_LIMIT``), most of what a task holds."""
    from ringbook.engine.feeds.source import check_memory_limit

    try:
        return check_memory_limit(None)
    except ValueError:   # a task's reader names the variable and what is wrong with it
        return 0


def _warm_up():
    """Compile the snapshot kernels on a few events: the L2 and L3 paths, a LOBSTER file's
    (its orderbook rows), a growing order table's and the CSV rows'. The
    readers' kernels compile at a worker's first file of their format."""
    import numpy as np

    from ringbook.engine.feeds.lobster import EMPTY_ASK_PRICE, OrderbookFile
    from ringbook.engine.feeds.source import Feed
    from ringbook.engine.snapshots import csv_bytes, snapshot_feed
    from ringbook.kernels.book import new_book
    from ringbook.kernels.events import (FLAG_BATCH_END, KIND_L2_SET, KIND_L3_ADD, Instruments,
                                         empty_events)
    from ringbook.kernels.orders import with_more_order_slots, with_room_for_orders

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
    csv_bytes(snapshot_feed(Feed(events, np.arange(1, 3), instruments, "warm-up"), 0, 10**9, 1))
    events["kind"] = KIND_L3_ADD
    rows = np.arange(2, dtype=np.int64)
    orderbook = OrderbookFile(np.array([[EMPTY_ASK_PRICE], [101]]), np.array([[0], [1]]), np.array([[100], [100]]),
                              np.array([[1], [1]]), rows + 1, rows, "warm-up", [])
    snapshot_feed(Feed(events, rows + 1, instruments, "warm-up", records=rows), 0, 10**9, 1, orderbook=orderbook)
    with_room_for_orders(with_more_order_slots(new_book(n_symbols=1, depth=8, order_capacity=16,
                                                        ticks=np.ones(1, np.int64))))


def _pool_initializer():
    # Ctrl-C is the driver's to handle: it drops the tasks not started and waits for those running,
    # which then end whole (a worker stopped mid-task would leave the pool broken and a file half made).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_blas_thread()   # numpy is not loaded yet when the driver's main module has no file (a notebook)
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


@dataclass
class Runner:
    """An executor with what a run of tasks needs to know of it (see :func:`executor`)."""

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

    def require_paths(self, paths):
        """On a Dask cluster, refuse to start when a worker does not see one of ``paths`` (inputs,
        the output folder's lock): the workers read and write them at the same paths.

        Raises
        ------
        WorkersCannotStart
            Naming the first path a worker does not see, and how many workers miss some.
        """
        paths = list(paths)
        if self.kind != "dask" or not paths:
            return
        missing = self.client.run(_missing_paths, paths)
        unseen = {path for found in missing.values() for path in found}
        if unseen:
            first = next(path for path in paths if path in unseen)
            more = f" (and {len(unseen) - 1} more of the {len(paths)} paths)" if len(unseen) > 1 else ""
            workers = sum(1 for found in missing.values() if found)
            raise WorkersCannotStart(
                f"{workers} of the {len(missing)} Dask workers do not see {first}{more}: the inputs and the "
                "output folder must be on a filesystem the workers share with this process, at the same paths")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        self.close(cancel=exc_type is not None)


def _missing_paths(paths):
    """The paths this process does not see (run on each Dask worker)."""
    return [path for path in paths if not os.path.exists(path)]


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

    Raises
    ------
    WorkersCannotStart
        A Dask worker failed to get ready (ringbook not installed there), naming its error.
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
        try:
            client.run(prepare_worker)
        except Exception as error:  # noqa: BLE001 - Dask hands a worker's error back as a plain Exception
            for owned_client in owned:
                owned_client.close()
            raise WorkersCannotStart(
                f"the Dask workers could not get ready: {error}. Each worker needs ringbook and its "
                "dependencies installed, as this process has them (pip install 'ringbook[dask]')") from None
        workers = sum(int(info.get("nthreads", 1)) for info in client.scheduler_info()["workers"].values())
        return Runner(client.get_executor(pure=False), "dask", workers, client, owned)
    if workers is None:
        workers = len(usable_cores())
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
    """The workers cannot run tasks: local worker processes died before any task ended, in two
    pools one after the other, or a Dask cluster's workers failed to get ready or do not see the
    files."""

    def __init__(self, message=None):
        super().__init__(message or (
            "the worker processes died before any task ended, twice. A script that runs this with worker "
            "processes must do it under `if __name__ == \"__main__\":` (each spawned worker imports the script, "
            "and must not start workers itself). A task that ends its process (out of memory, a callback's "
            "segfault) does so too. workers=0 runs in this process, where the error shows."))


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
