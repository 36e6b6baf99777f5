"""The scheduler: a Python thread that starts, watches and stops the engine's workers.

Each worker (the feed, the book consumer, the flusher) is a thread whose hot
loop is a nogil njit function; the scheduler only coordinates. It owns:

- **CPU affinity.** A worker pins itself from inside its own thread (Linux
  affinity is per thread); the scheduler reads every thread's allowed CPUs
  back from ``/proc/self/task/<tid>/status`` and reports the thread -> core
  map. Spinning workers get distinct cores. An *isolated* worker (the book
  consumer, whose wake-ups are the latency the engine reports) keeps its core
  to itself: the other threads, the flusher's and the scheduler's included,
  share the remaining cores. With fewer cores than spinners it says so
  (:attr:`Scheduler.notes`) and gives those workers a wait strategy that never
  spins: never two spinners on one core. Nor a spinner on the flusher's core: when
  no core is left without a spinner, the spinners that are not isolated yield
  instead (:data:`SHARING_STRATEGY`).
- **Memory locking** (:func:`lock_all_memory`): ``mlockall(MCL_CURRENT |
  MCL_FUTURE)`` through ctypes, verified from ``VmLck``; and prefaulting
  (:func:`prefault`) of what the hot path touches.
- **Lifecycle.** :meth:`Scheduler.stop` (a signal, ``Engine.stop()``, the end of a
  bounded feed) runs the stop plan: each step tells a worker to finish and
  joins it before the next, so rings drain into the journal before it closes.
  A worker that raises stops the engine the same way, and the error, with the
  worker's name, is what :meth:`Scheduler.join_result` raises.
- **Per-thread costs.** Minor and major page faults and voluntary and
  involuntary context switches of each worker, from ``/proc/self/task/<tid>/stat``
  and ``status``, at its start and at its end.

The scheduler thread itself never spins: it wakes every ``interval`` seconds.
"""

import ctypes
import ctypes.util
import errno as errno_codes
import mmap
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from ringbook.engine.system import memlock_limit, usable_cores
from ringbook.kernels import wait

MCL_CURRENT = 1
MCL_FUTURE = 2


class MemoryLockWarning(RuntimeWarning):
    """Memory could not be locked: the hot path may take page faults."""


class WorkerError(RuntimeError):
    """A worker raised; ``worker`` names it and ``__cause__`` is its exception."""

    def __init__(self, worker, error):
        super().__init__(f"worker {worker!r} failed: {type(error).__name__}: {error}")
        self.worker = worker
        self.error = error


# ---------------------------------------------------------------- /proc


def read_status(path):
    """``/proc/.../status`` as a dict of its ``Key: value`` lines (``{}`` when unreadable)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def parse_cpu_list(text):
    """``"0-2,5"`` -> ``[0, 1, 2, 5]``."""
    cores = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        cores.extend(range(int(low), int(high or low) + 1))
    return cores


#: ``/proc/<pid>/task/<tid>/stat`` field 41 (policy) by value.
SCHEDULING_POLICIES = {0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle", 6: "deadline"}

#: SCHED_FIFO priority of a realtime worker: the lowest, above every ordinary thread.
REALTIME_PRIORITY = 1


def thread_costs(tid):
    """Faults, switches and allowed cores of thread ``tid`` of this process.

    Returns
    -------
    dict
        ``minor_faults``, ``major_faults`` (``/proc/self/task/<tid>/stat``
        fields 10 and 12), ``voluntary_switches``, ``involuntary_switches``,
        ``cores`` (``Cpus_allowed_list``); ``None`` when the thread is gone.
    """
    base = Path(f"/proc/self/task/{tid}")
    try:
        text = (base / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
    status = read_status(base / "status")
    return {"minor_faults": int(fields[7]), "major_faults": int(fields[9]),
            "policy": SCHEDULING_POLICIES.get(int(fields[38]), fields[38]),
            "voluntary_switches": int(status.get("voluntary_ctxt_switches", 0)),
            "involuntary_switches": int(status.get("nonvoluntary_ctxt_switches", 0)),
            "cores": parse_cpu_list(status.get("Cpus_allowed_list", ""))}


def locked_bytes():
    """``VmLck`` of this process in bytes (``None`` off Linux)."""
    value = read_status("/proc/self/status").get("VmLck")
    if value is None:
        return None
    number, _, unit = value.partition(" ")
    return int(number) * (1024 if unit.strip().lower() == "kb" else 1)


# ---------------------------------------------------------------- memory


def lock_all_memory(flags=MCL_CURRENT | MCL_FUTURE):
    """``mlockall(flags)``; never raises.

    Returns
    -------
    dict
        ``locked`` (bool), ``locked_bytes`` (``VmLck`` afterwards, verified),
        ``error`` (``None``, or what went wrong and how to allow it),
        ``errno``, ``limit_bytes`` (RLIMIT_MEMLOCK, ``None`` when unlimited).

    Warns
    -----
    MemoryLockWarning
        On EPERM (how to allow it), ENOMEM (with the limit), or a system
        without ``mlockall``.
    """
    result = {"locked": False, "locked_bytes": None, "error": None, "errno": 0, "limit_bytes": None}
    if not sys.platform.startswith("linux"):
        result["error"] = f"mlockall is not available on {sys.platform}: memory is not locked"
        warnings.warn(result["error"], MemoryLockWarning, stacklevel=2)
        return result
    result["limit_bytes"] = memlock_limit()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mlockall(ctypes.c_int(flags)) == 0:
        result["locked"] = True
    else:
        code = ctypes.get_errno()
        result["errno"] = code
        limit = result["limit_bytes"]
        limit_text = "unlimited" if limit is None else f"{limit} bytes"
        if code == errno_codes.EPERM:
            result["error"] = ("mlockall: permission denied (EPERM); allow it with the CAP_IPC_LOCK "
                               "capability (e.g. `setcap cap_ipc_lock+ep` on the interpreter) or a "
                               f"higher `ulimit -l` (RLIMIT_MEMLOCK is {limit_text}), or run with --no-mlock")
        elif code == errno_codes.ENOMEM:
            result["error"] = (f"mlockall: the process needs more than RLIMIT_MEMLOCK ({limit_text}) "
                               f"(ENOMEM); raise `ulimit -l` or grant CAP_IPC_LOCK, or run with --no-mlock")
        else:
            result["error"] = f"mlockall failed: {os.strerror(code)} (errno {code})"
        warnings.warn(result["error"], MemoryLockWarning, stacklevel=2)
    result["locked_bytes"] = locked_bytes()
    if result["locked"] and not result["locked_bytes"]:
        result["error"] = "mlockall returned 0 but VmLck is 0: memory is not locked"
    return result


def unlock_all_memory():
    """``munlockall()`` (no-op off Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").munlockall()


def prefault(*arrays):
    """Touch every page of each array (read and write back one byte a page), so
    the hot path takes no first-touch page fault. Contents are unchanged; call
    it before the threads that use the arrays start."""
    for array in arrays:
        if array is None or array.nbytes == 0:
            continue
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        if not raw.flags.writeable:
            continue
        touched = raw[::mmap.PAGESIZE]
        raw[::mmap.PAGESIZE] = touched.copy()


# ---------------------------------------------------------------- workers


class Worker:
    """One worker thread: ``body(worker)`` runs in it, after it pins itself.

    Parameters
    ----------
    name : str
    body : callable
        ``body(worker)``; its hot loop should be a nogil njit function that
        waits with :attr:`strategy`.
    spins : bool
        Whether it spins while waiting (needs a core of its own).
    isolated : bool
        Whether its core is its own alone (only for a spinning worker, and only
        while another core remains for everyone else).
    realtime : bool
        Run it under ``SCHED_FIFO`` (priority 1), so that no ordinary thread of any
        process preempts it; granted only to an isolated worker with a core of its
        own (it then never stalls a thread of the engine), and only where the
        system allows it (root or ``CAP_SYS_NICE``; refusals go to :attr:`note`).

    Attributes
    ----------
    strategy : numpy.ndarray
        The wait strategy it must use (spins only when it has a core of its own).
    cores : list of int
        The cores it pins itself to (set by the scheduler).
    tid : int
    start_costs, end_costs : dict
        :func:`thread_costs` at its start and its end.
    error : BaseException or None
    """

    def __init__(self, name, body, *, spins=False, isolated=False, realtime=False):
        self.name = name
        self.body = body
        self.spins = spins
        self.isolated = isolated
        self.realtime = realtime
        self.note = None
        self.strategy = wait.wait_strategy(spins=0, max_sleep_ns=100_000)
        self.cores = []
        self.tid = None
        self.start_costs = None
        self.end_costs = None
        self.last_costs = None
        self.error = None
        self.on_exit = None  # called in its thread when its body ends (the scheduler looks at once)
        self.thread = threading.Thread(target=self._run, name=f"ringbook-{name}", daemon=True)
        self.started = threading.Event()

    def _run(self):
        self.tid = threading.get_native_id()
        try:
            if self.cores:
                os.sched_setaffinity(0, set(self.cores))  # this thread only
        except OSError as error:
            self.error = error
        if self.realtime:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
            except (OSError, AttributeError) as error:
                self.realtime = False
                self.note = (f"{self.name}: SCHED_FIFO refused ({error}); it runs as an ordinary "
                             f"thread (allow it with CAP_SYS_NICE, e.g. run as root)")
        self.start_costs = thread_costs(self.tid)
        self.last_costs = self.start_costs
        self.started.set()
        try:
            if self.error is None:
                self.body(self)
        except BaseException as error:  # reported by the scheduler, with the worker's name
            self.error = error
        finally:
            self.end_costs = thread_costs(self.tid)
            self.last_costs = self.end_costs or self.last_costs
            if self.on_exit is not None:
                self.on_exit()

    def costs(self):
        """Costs since the worker started (end minus start), and its allowed cores."""
        start, end = self.start_costs, self.end_costs or self.last_costs
        if not start or not end:
            return None
        result = {key: end[key] - start[key] for key in
                  ("minor_faults", "major_faults", "voluntary_switches", "involuntary_switches")}
        result["cores"] = end["cores"]
        result["policy"] = end.get("policy")
        return result

    @property
    def alive(self):
        return self.thread.is_alive()


class ObservedThread(Worker):
    """A thread that another object started (the journal's flusher): the scheduler
    samples its costs and joins it in the stop plan, but does not start or pin it.
    It never spins."""

    def __init__(self, name, thread):
        super().__init__(name, None, spins=False)
        self.thread = thread
        self.tid = thread.native_id
        self.start_costs = thread_costs(self.tid) if self.tid else None
        self.last_costs = self.start_costs
        self.started.set()


#: A worker with a core of its own: spins about 50 us before it parks on a doorbell (or
#: sleeps, capped at 50 us rather than 1 ms), since a message that arrives while it sleeps
#: waits for it.
SPINNER_STRATEGY = wait.wait_strategy(spins=2_000, max_sleep_ns=50_000)

#: A spinner that shares its core with the flusher yields instead of spinning, for about a
#: second before it sleeps: the core goes to the flusher whenever it wakes, and to the
#: spinner at once otherwise (a sleep would leave the ring idle for its tens of microseconds).
SHARING_STRATEGY = wait.wait_strategy(spins=0, yields=1 << 20, max_sleep_ns=100_000)
#: A realtime worker spins only briefly (about 2 us) before it parks: the kernel's RT
#: throttling (``kernel.sched_rt_runtime_us``, 950 ms of every second by default) takes
#: the core away for 50 ms from a SCHED_FIFO thread that never sleeps, and a spinner
#: between messages a few microseconds apart never does.
REALTIME_STRATEGY = wait.wait_strategy(spins=100, max_sleep_ns=50_000)


def assign_cores(workers, cpus=None):
    """Give each spinning worker a core of its own (isolated ones first); everyone else
    shares the cores that no isolated worker holds.

    Returns
    -------
    notes : list of str
        What was decided when cores are fewer than spinners.
    shared : list of int
        The cores of every thread that is not a spinner (the flusher's, the scheduler's).
    """
    cores = sorted(cpus) if cpus else usable_cores()
    spinners = sorted((worker for worker in workers if worker.spins), key=lambda worker: not worker.isolated)
    demoted = []
    notes = []
    shared = list(cores)
    if len(cores) >= len(spinners) and len(cores) >= 2:
        for worker, core in zip(spinners, cores):
            worker.cores = [core]
            worker.strategy = SPINNER_STRATEGY.copy()
        isolated = {worker.cores[0] for worker in spinners if worker.isolated}
        shared = [core for core in cores if core not in isolated] or list(cores)
        if (any(not worker.spins for worker in workers)
                and not set(shared) - {worker.cores[0] for worker in spinners}):
            # The flusher and the scheduler would share a spinner's core: it would hold the
            # core for whole time slices whenever they wake, and the ring fill behind the
            # flusher. So the spinners that are not isolated yield instead.
            demoted = [worker for worker in spinners if not worker.isolated]
            for worker in demoted:
                worker.spins = False
    else:
        if spinners:
            notes.append(f"{len(spinners)} spinning workers ({', '.join(w.name for w in spinners)}) "
                         f"and {len(cores)} core(s) {cores}: they wait with backoff (no spinning), "
                         f"sharing the cores")
        for worker in spinners:
            worker.cores = list(cores)
            worker.spins = False
    for worker in workers:
        if worker.realtime and not (worker.isolated and worker.spins and worker.cores
                                    and worker.cores[0] not in shared):
            worker.realtime = False
            notes.append(f"{worker.name}: no SCHED_FIFO without a core of its own "
                         f"({len(cores)} core(s) {cores})")
        elif worker.realtime:
            worker.strategy = REALTIME_STRATEGY.copy()
    for worker in workers:
        if not worker.spins:
            worker.cores = list(shared)
            if not isinstance(worker, ObservedThread):
                worker.strategy = wait.wait_strategy(spins=0, max_sleep_ns=100_000)
    for worker in demoted:
        worker.strategy = SHARING_STRATEGY.copy()
    return notes, shared


def _pin(tid, cores):
    """Restrict thread ``tid`` (0: the calling thread) to ``cores``; a failure leaves it as it was
    (the thread -> core map read back from /proc shows what holds)."""
    if cores and tid is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(tid, set(cores))
        except OSError:
            pass


class Scheduler(threading.Thread):
    """Starts the workers, watches them and runs the stop plan.

    Parameters
    ----------
    workers : list of Worker
        Started in this order.
    stop_plan : list of (name, callable or None)
        What :meth:`stop` does, in order: call the callable (tell that worker
        to finish), then join the worker of that name.
    cpus : list of int, optional
        The cores to use (default: every usable core).
    on_tick : callable, optional
        Called every ``interval`` seconds on the scheduler thread (counters).
    finished : callable, optional
        ``finished() -> bool``: the engine has nothing more to do (a bounded
        feed ended); the scheduler then runs the stop plan.
    interval : float
    """

    def __init__(self, workers, stop_plan, *, cpus=None, on_tick=None, finished=None, interval=0.1):
        super().__init__(name="ringbook-scheduler", daemon=True)
        self.workers = {worker.name: worker for worker in workers}
        self.stop_plan = stop_plan
        self.on_tick = on_tick
        self.finished = finished
        self.interval = interval
        self.notes, self.shared_cores = assign_cores(workers, cpus)
        self.error = None
        self.stopping = threading.Event()
        self.done = threading.Event()
        self._stop_requested = threading.Event()
        self._look = threading.Event()  # set when a worker ends: look now, not at the next tick
        for worker in workers:
            worker.on_exit = self._look.set
        self.started_ns = None
        self.stopped_ns = None

    def request_stop(self):
        """Ask for the stop plan (safe from a signal handler: sets flags only)."""
        self._stop_requested.set()
        self._look.set()

    def run(self):
        self.started_ns = time.monotonic_ns()
        try:
            _pin(0, self.shared_cores)
            for worker in self.workers.values():
                if isinstance(worker, ObservedThread):
                    _pin(worker.tid, worker.cores)  # started by its owner: pinned from here
                else:
                    worker.thread.start()
                    worker.started.wait(5)
                    if worker.note:
                        self.notes.append(worker.note)
            while not self._stop_requested.is_set():
                self._look.wait(self.interval)
                self._look.clear()
                if self._stop_requested.is_set():
                    break
                self._sample()
                failed = self._failed()
                if failed is not None or (self.finished is not None and self.finished()):
                    break
                if not any(worker.alive for worker in self.workers.values()):
                    break
            self.stopping.set()
            self._run_stop_plan()
            self.stopped_ns = time.monotonic_ns()
            self._sample()
        except BaseException as error:
            self.error = error
        finally:
            self.stopped_ns = self.stopped_ns or time.monotonic_ns()
            failed = self._failed()
            if failed is not None and self.error is None:
                self.error = WorkerError(failed.name, failed.error)
                self.error.__cause__ = failed.error
            self.done.set()

    def _failed(self):
        for worker in self.workers.values():
            if worker.error is not None:
                return worker
        return None

    def _sample(self):
        for worker in self.workers.values():
            if worker.tid is not None and worker.alive:
                costs = thread_costs(worker.tid)
                if costs is not None:
                    worker.last_costs = costs
        if self.on_tick is not None:
            self.on_tick()

    def _run_stop_plan(self):
        for name, tell in self.stop_plan:
            if tell is not None:
                try:
                    tell()
                except BaseException as error:  # keep stopping the others
                    worker = self.workers.get(name)
                    if worker is not None and worker.error is None:
                        worker.error = error
            worker = self.workers.get(name)
            if worker is not None and worker.thread.ident is not None:
                while worker.thread.is_alive():
                    worker.thread.join(self.interval)
                    self._sample()

    def thread_map(self):
        """``{worker name: {core, cores, tid, minor_faults, ...}}`` as read back from /proc."""
        threads = {}
        for name, worker in self.workers.items():
            costs = worker.costs() or {"minor_faults": 0, "major_faults": 0, "voluntary_switches": 0,
                                       "involuntary_switches": 0, "cores": []}
            cores = costs.pop("cores")
            threads[name] = {"core": cores[0] if len(cores) == 1 else None, "cores": cores,
                             "tid": worker.tid, "spins": worker.spins, **costs}
        return threads

    def join_result(self, timeout=None):
        """Wait for the scheduler; raise the first worker's error (:class:`WorkerError`), if any."""
        self.join(timeout)
        if self.error is not None:
            raise self.error
