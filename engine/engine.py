"""``ringbook.Engine``: the feed, the ring, the book, the flusher and the journal, run by a scheduler.

::

    with ringbook.Engine({"feed": "synthetic", "duration": 5}) as engine:
        engine.start()
        engine.stats()["throughput_eps"]
        engine.book_snapshot("SYN0003")
    report = engine.report()

From a notebook cell it runs in the background (the workers are threads); the
command line runs it in the foreground (:meth:`Engine.run`), where SIGINT and
SIGTERM drain the rings, flush the journal and end it with its report.
"""

import itertools
import os
import signal
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ringbook.engine import counters as C
from ringbook.engine import pipeline
from ringbook.engine.feeds import packet
from ringbook.engine.feeds.live import FeedContext, open_source
from ringbook.engine.ring import Ring
from ringbook.engine.scheduler import (ObservedThread, Scheduler, Worker, locked_bytes, lock_all_memory, prefault,
                                       unlock_all_memory)
from ringbook.kernels import book as books
from ringbook.kernels import window as kwindow
from ringbook.kernels.clock import calibrate, stamp
from ringbook.kernels.events import EVENT_DTYPE
from ringbook.kernels.hist import Histogram
from ringbook.kernels.summary import Summary
from ringbook.kernels.window import Window

#: What ``ringbook run`` does with no options: the synthetic feed, this long, at this rate.
DEFAULT_DURATION_S = 3.0
DEFAULT_RATE_EPS = 500_000
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)
_names = itertools.count()


@dataclass
class EngineConfig:
    """What an engine runs (the options of ``ringbook run``).

    Attributes
    ----------
    feed : str
        ``synthetic``, ``lobster:PATH``, ``binance:PATH``, ``kalshi:PATH``,
        ``journal:DIR`` or ``udp:HOST:PORT``.
    events : int or None
        Stop after this many events.
    duration : float or None
        Stop after this many seconds.
    out : str or None
        The journal directory (``None``: a fresh ``ringbook-run-<time>`` under
        the current one; ``""``: no journal).
    cpus : list of int or None
        Cores to use (default: every usable one).
    mlock : bool
        ``mlockall`` at start.
    durability : str
        The journal's: ``none``, ``interval`` or ``batch``.
    on_full : str
        ``wait`` or ``drop`` when the raw ring is full.
    rate : float or None
        Synthetic feed: events/s (``None``: as fast as possible).
    speed : float or None
        File and journal feeds: recorded speed times this (``None``: as fast as possible).
    seed, symbols : int
        Synthetic feed.
    ring_slots : int
        Slots of the raw ring (a power of two); 65,536 slots of 1 KiB (64 MiB) by
        default. They are what a consumer may fall behind by (a kernel thread
        preempting the book's, a ``write`` the page cache throttles) before the feed
        waits or drops.
    checkpoint_every : int
        Raw messages between book checkpoints (0: none).
    checkpoint_levels : int
        Levels a side each checkpoint hashes.
    realtime : bool
        Run the book consumer under ``SCHED_FIFO`` on its own core (see
        :class:`~ringbook.engine.scheduler.Worker`): nothing else on the host
        preempts it. Needs root or ``CAP_SYS_NICE``; refused, it says so in the notes.
    segment_bytes : int or None
        The journal's segment size (default: the journal's, 256 MiB); a run whose
        journal is followed and deleted as it goes (:func:`ringbook.engine.replay.follow`)
        keeps about two segments on disk.
    name : str or None
        The counters region's name (default ``run-<pid>-<n>``).
    callback, callback_state
        A user's ``@njit`` function ``callback(book, events, i, state)``, called
        by the book consumer after each event that ends a message.
    """

    feed: str = "synthetic"
    events: int = None
    duration: float = None
    out: str = None
    cpus: list = None
    mlock: bool = True
    durability: str = "none"
    on_full: str = "wait"
    rate: float = None
    speed: float = None
    seed: int = 0
    symbols: int = 16
    ring_slots: int = 65536
    checkpoint_every: int = 10_000
    checkpoint_levels: int = 10
    realtime: bool = False
    segment_bytes: int = None
    name: str = None
    callback: object = None
    callback_state: object = None

    def validate(self):
        if self.on_full not in ("wait", "drop"):
            raise ValueError(f"on_full must be 'wait' or 'drop', got {self.on_full!r}")
        if self.durability not in ("none", "interval", "batch"):
            raise ValueError(f"durability must be none, interval or batch, got {self.durability!r}")
        for name in ("events", "duration", "rate", "speed"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if self.ring_slots < 2 or self.ring_slots & (self.ring_slots - 1):
            raise ValueError(f"ring_slots must be a power of two, at least 2, got {self.ring_slots!r}")


class Engine:
    """The engine (see the module docstring).

    Parameters
    ----------
    config : EngineConfig or dict, optional
    **options
        Fields of :class:`EngineConfig`, overriding ``config``.
    """

    def __init__(self, config=None, **options):
        if isinstance(config, dict):
            options = {**config, **options}
            config = None
        config = EngineConfig() if config is None else config
        known = {f.name for f in fields(EngineConfig)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown engine options: {sorted(unknown)}")
        self.config = EngineConfig(**{**{f.name: getattr(config, f.name) for f in fields(EngineConfig)},
                                      **options})
        self.config.validate()
        self.scheduler = None
        self.error = None
        self._report = None
        self._started = False
        self._closed = False

    # ------------------------------------------------------------ building

    def _build(self):
        config = self.config
        self.source = open_source(config.feed, seed=config.seed, rate=config.rate, speed=config.speed,
                                  symbols=config.symbols)
        self.instruments = self.source.instruments
        self.calibration = calibrate()
        self.ns_per_tick = float(self.calibration.ns_per_tick)
        self.raw_ring = Ring.create(config.ring_slots, packet.SLOT_SIZE, consumers=2)
        self.engine_ring = Ring.create(1024, pipeline.ENGINE_SLOT_SIZE, consumers=1)
        self.book = books.new_book(n_symbols=self.source.n_symbols, depth=2048,
                                   order_capacity=self.source.order_capacity, ticks=self.source.ticks)
        self.histogram = Histogram(lowest=1, highest=60_000_000_000, significant_digits=3)
        self.window = Window(10_000)
        self.summary = Summary()
        self._scratch_window = np.zeros(10_000, np.int64)
        self.control = np.zeros(pipeline.CONTROL_WORDS, np.int64)
        self.events_scratch = np.zeros(packet.MAX_EVENTS, EVENT_DTYPE)
        self.record = np.zeros(pipeline.ENGINE_RECORD_WORDS, np.int64)
        self.top_prices = np.zeros(max(config.checkpoint_levels, 1), np.int64)
        self.top_quantities = np.zeros(max(config.checkpoint_levels, 1), np.int64)
        self.name = config.name or f"run-{os.getpid()}-{next(_names)}"
        self.region = C.CounterRegion(self.name)
        self.counters = self.region.words
        # the journal
        self.out = None
        self.flusher = None
        self.writers = []
        if config.out != "":
            self.out = Path(config.out) if config.out else Path(f"ringbook-run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            self._open_journal()

    def _open_journal(self):
        from ringbook.engine.flusher import Flusher
        from ringbook.engine.journal import JournalWriter
        self.out.mkdir(parents=True, exist_ok=True)
        durability = self.config.durability
        sizes = {} if self.config.segment_bytes is None else {"segment_bytes": int(self.config.segment_bytes)}
        raw = JournalWriter(self.out, "raw", payload="raw", instruments=self.instruments,
                            calibration=self.calibration, durability=durability, **sizes)
        # the engine's own records are few: two chunks behind the disk are plenty
        own = JournalWriter(self.out, "engine", payload="raw", instruments=self.instruments,
                            calibration=self.calibration, durability=durability, write_behind_bytes=8 << 20)
        self.writers = [raw, own]
        self.flusher = Flusher([(self.raw_ring, 1, raw), (self.engine_ring, 0, own)],
                               calibration=self.calibration)
        self._write_run_file()

    def _write_run_file(self):
        """``run.json`` beside the journal: what a replay needs to rebuild the book as the run did."""
        import json
        table = self.instruments.table[:len(self.instruments)]
        description = {
            "feed": self.config.feed, "n_symbols": int(self.source.n_symbols),
            "ticks": [int(t) for t in self.source.ticks], "order_capacity": int(self.source.order_capacity),
            "depth": 2048, "checkpoint_levels": int(self.config.checkpoint_levels),
            "checkpoint_every": int(self.config.checkpoint_every),
            "instruments": [{"name": row["name"].decode(), "price_scale": int(row["price_scale"]),
                             "size_scale": int(row["size_scale"]), "tick": int(row["tick"])} for row in table],
        }
        path = self.out / "run.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(description, indent=1))
        os.replace(temporary, path)

    # ------------------------------------------------------------ workers

    def _feed_body(self, worker):
        try:
            context = FeedContext(
                slab=self.raw_ring.slab, producer=self.raw_ring.producer,
                drop=self.config.on_full == "drop", spin=worker.spins, strategy=worker.strategy,
                control=self.control, counters=self.counters, origin_ticks=int(stamp()),
                ticks_per_ns=float(self.calibration.ticks_per_ns), max_events=self.config.events or 0)
            self.source.run(context)
        finally:
            self.control[pipeline.FEED_DONE] = 1
            self.raw_ring.wake()  # the book consumer may be parked on an empty ring

    def _book_body(self, worker):
        ring, own = self.raw_ring, self.engine_ring
        arguments = (ring.slab, ring.consumer(0, evict=False), self.events_scratch,
                     self.events_scratch.view(np.uint8), self.book, self.histogram.counts,
                     self.histogram.meta, self.window.values, self.window.meta, self.summary.summary, self.ns_per_tick,
                     own.slab, own.producer, self.record, self.record.view(np.uint8),
                     self.config.checkpoint_every, self.top_prices, self.top_quantities, worker.strategy,
                     self.control, self.counters, 100_000_000)
        try:
            while True:
                if self.config.callback is None:
                    status = pipeline.consume(*arguments)
                else:
                    status = pipeline.consume_with_callback(*arguments, self.config.callback,
                                                            self.config.callback_state)
                if status == pipeline.SLICE:
                    continue
                if status < 0:
                    raise RuntimeError(f"book consumer: ring status {status}")
                break
        except BaseException:
            self.control[pipeline.ABORT] = 1  # the feed must not wait on a consumer that is gone
            raise
        finally:
            self.control[pipeline.FEED_DONE + 1] = 1

    def _discard_body(self, worker):
        """The flusher's place when no journal is written: drain both rings."""
        raw = self.raw_ring.consumer(1)
        own = self.engine_ring.consumer(0)
        while True:
            for status in (pipeline.discard(self.raw_ring.slab, raw),
                           pipeline.discard(self.engine_ring.slab, own)):
                if status < 0:
                    raise RuntimeError(f"draining a ring: status {status}")
            if self.control[pipeline.FEED_DONE + 1] and self.raw_ring.pending(1) == 0 \
                    and self.engine_ring.pending(0) == 0:
                return
            if self.control[pipeline.ABORT] and self.control[pipeline.FEED_DONE]:
                return
            time.sleep(0.0002)

    # ------------------------------------------------------------ lifecycle

    def start(self):
        """Build everything, lock memory, start the workers and the scheduler; returns at once."""
        if self._started:
            raise RuntimeError("the engine was started already")
        self._started = True
        self._build()
        self.mlock = {"locked": False, "locked_bytes": locked_bytes(), "error": None, "errno": 0,
                      "limit_bytes": None, "requested": self.config.mlock}
        if self.config.mlock:
            self.mlock.update(lock_all_memory())
        prefault(self.book.prices, self.book.quantities, self.book.ladders, self.book.orders,
                 self.histogram.counts, self.window.values, self.raw_ring.slab, self.engine_ring.slab)
        # compile before the clock starts
        self._warm_up()
        workers = [Worker("book", self._book_body, spins=True, isolated=True,
                          realtime=self.config.realtime), Worker("feed", self._feed_body, spins=True)]
        if self.flusher is None:
            workers.insert(0, Worker("flusher", self._discard_body, spins=False))
        plan = [("feed", self._tell_feed_stop), ("book", None)]
        plan.append(("flusher", None) if self.flusher is None else ("journal", self._stop_flusher))
        if self.flusher is not None:
            self.flusher.start()
            workers.insert(0, ObservedThread("journal", self.flusher._thread))
        self.scheduler = Scheduler(workers, plan, cpus=self.config.cpus, on_tick=self._tick,
                                   finished=self._finished)
        self.region.set_state(C.RUNNING)
        self.started_ns = time.monotonic_ns()
        self.scheduler.start()
        return self

    def _warm_up(self):
        """Compile the loops on throwaway rings, so no compile lands inside a measured run."""
        ring = Ring.create(4, packet.SLOT_SIZE, consumers=2)
        own = Ring.create(4, pipeline.ENGINE_SLOT_SIZE, consumers=1)
        control = np.zeros(pipeline.CONTROL_WORDS, np.int64)
        control[pipeline.FEED_DONE] = 1
        counters = np.zeros(C.WORDS, np.int64)
        strategy = np.array([0, 0, 1000, 1000], np.int64)
        pipeline.publish(ring.slab, ring.producer, np.zeros(packet.HEADER_BYTES, np.uint8),
                         np.zeros(2, np.int64) + np.array([0, packet.HEADER_BYTES]), np.zeros(1, np.int64),
                         np.zeros(0, np.int64), 0, 1.0, False, False, strategy, control, counters)
        histogram, window_ = Histogram(1, 10**6, 2), Window(4)
        scratch = np.zeros(packet.MAX_EVENTS, EVENT_DTYPE)
        summary_array = Summary().summary
        book = books.new_book(1, 4, 16, 4)
        record = np.zeros(pipeline.ENGINE_RECORD_WORDS, np.int64)
        arguments = (ring.slab, ring.consumer(0, evict=False), scratch, scratch.view(np.uint8), book,
                     histogram.counts, histogram.meta, window_.values, window_.meta, summary_array, 1.0,
                     own.slab, own.producer, record, record.view(np.uint8), 0, self.top_prices,
                     self.top_quantities, strategy, control, counters, 1_000_000)
        if self.config.callback is None:
            pipeline.consume(*arguments)
        else:
            pipeline.consume_with_callback(*arguments, self.config.callback, self.config.callback_state)
        pipeline.discard(ring.slab, ring.consumer(1))
        warm_up_source = getattr(self.source, "warm_up", None)
        if warm_up_source is not None:
            warm_up_source()
        # the scheduler's derived counters too: a first call would load their kernels mid-run
        self.started_ns = time.monotonic_ns()
        self._tick()
        if self.flusher is not None:
            self._warm_up_journal()

    def _warm_up_journal(self):
        """One record through a throwaway flusher and journal: its kernels compile here."""
        import tempfile
        from ringbook.engine.flusher import Flusher
        from ringbook.engine.journal import JournalWriter
        with tempfile.TemporaryDirectory(prefix="ringbook-warm-") as directory:
            ring = Ring.create(4, packet.SLOT_SIZE, consumers=1)
            writer = JournalWriter(directory, "raw", payload="raw", calibration=self.calibration)
            flusher = Flusher([(ring, 0, writer)], calibration=self.calibration)
            flusher.start()
            ring.write(np.zeros(packet.HEADER_BYTES, np.uint8))
            flusher.stop(drain=True)
            writer.close()
            ring.close()

    def _tell_feed_stop(self):
        self.control[pipeline.STOP] = 1
        self.region.set_state(C.STOPPING)

    def _stop_flusher(self):
        self.flusher.stop(drain=True)
        for writer in self.writers:
            writer.close()
        if self.flusher.error is not None:
            raise self.flusher.error

    def _finished(self):
        if self.config.duration is not None and \
                time.monotonic_ns() - self.started_ns >= self.config.duration * 1e9:
            return True
        if self.flusher is not None and self.flusher.error is not None:
            return True
        return bool(self.control[pipeline.FEED_DONE + 1])

    def _tick(self):
        """Scheduler thread: the derived counters."""
        words = self.counters
        if words is None:
            return
        elapsed = time.monotonic_ns() - self.started_ns
        words[C.ELAPSED_NS] = elapsed
        words[C.THROUGHPUT_EPS] = int(words[C.BOOK_EVENTS] * 1e9 / elapsed) if elapsed > 0 else 0
        produced = self.raw_ring.producer_position
        words[C.BOOK_LAG] = produced - self.raw_ring.consumer_position(0)
        words[C.FLUSHER_LAG] = produced - self.raw_ring.consumer_position(1)
        if self.flusher is not None:
            words[C.JOURNAL_RECORDS] = self.flusher.records
            words[C.JOURNAL_BYTES] = self.flusher.bytes
            durable = self.flusher.last_durable_sequence[0]  # the raw stream's
            words[C.LAST_DURABLE_SEQUENCE] = -1 if durable is None else durable
        words[C.VMLCK_BYTES] = locked_bytes() or 0
        values = self.histogram.percentiles(PERCENTILES)
        for word, percentile in zip((C.P50, C.P90, C.P99, C.P999, C.MAX), PERCENTILES):
            words[word] = values[percentile]
        words[C.MEAN] = int(self.histogram.mean) if self.histogram.count else 0
        out = np.zeros(3, np.int64)
        kwindow.quantiles(self.window.values, self.window.meta, self._scratch_window,
                          np.array([0.5, 0.95, 0.99]), out)
        words[C.WINDOW_P50], words[C.WINDOW_P95], words[C.WINDOW_P99] = out
        if self.scheduler is not None:
            for index, (name, worker) in enumerate(self.scheduler.workers.items()):
                costs = worker.costs() or {}
                self.region.set_thread(index, name, worker.tid or 0, costs.get("cores", []),
                                       costs.get("minor_faults", 0), costs.get("major_faults", 0),
                                       costs.get("voluntary_switches", 0), costs.get("involuntary_switches", 0))
        words[C.H_HEARTBEAT_NS] = time.time_ns()

    def stop(self):
        """Drain the rings, flush the journal, stop; the report (raises what a worker raised)."""
        if self.scheduler is None:
            raise RuntimeError("the engine was never started")
        self.scheduler.request_stop()
        return self.wait()

    def wait(self, timeout=None):
        """Wait for the engine to end (a bounded feed, ``duration``, or :meth:`stop`); its report.

        Raises
        ------
        ringbook.engine.scheduler.WorkerError
            A worker failed: the engine stopped after flushing what was accepted.
        TimeoutError
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.scheduler.done.wait(0.05):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the engine did not stop within {timeout} s")
        if self._report is None:
            self._finish()
        if self.error is not None:
            raise self.error
        return self._report

    def run(self, on_progress=None):
        """Run in the foreground until done; SIGINT/SIGTERM stop it cleanly. The report.

        ``on_progress(stats)`` is called a few times a second.
        """
        if not self._started:
            self.start()
        previous = {}
        main = threading.current_thread() is threading.main_thread()
        if main:
            for number in (signal.SIGINT, signal.SIGTERM):
                previous[number] = signal.signal(number, self._on_signal)
        try:
            while not self.scheduler.done.wait(0.2):
                if on_progress is not None:
                    on_progress(self.stats())
            return self.wait()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _on_signal(self, number, frame):
        self.signal = number
        self.scheduler.request_stop()

    def _finish(self):
        self.error = self.scheduler.error
        self._tick()
        self.region.set_state(C.FAILED if self.error is not None else C.STOPPED)
        self._report = self._build_report()
        if self.mlock.get("locked"):
            # MCL_FUTURE would lock every later mapping of this process too (a journal
            # read in the same notebook, tens of GB): the lock ends with the run.
            unlock_all_memory()

    # ------------------------------------------------------------ reading

    def stats(self):
        """A snapshot of the live counters: plain numbers, the thread map, the latency histogram."""
        result = C.read(self.name) if self.region.words is not None else {}
        result["histogram"] = Histogram.from_arrays(self.histogram.counts.copy(), self.histogram.meta.copy())
        result["window"] = self.window
        result["events"] = result.get("book_events", 0)
        return result

    def book_snapshot(self, symbol, levels=10):
        """The top ``levels`` of each side of ``symbol`` (a name or an id), fixed point.

        While the engine runs the book keeps changing under the copy; after
        :meth:`stop` it is exact.
        """
        symbol_id = self.instruments.id_of(symbol) if isinstance(symbol, str) else int(symbol)
        row = self.instruments.table[symbol_id]
        result = {"symbol": row["name"].decode(), "price_scale": int(row["price_scale"]),
                  "size_scale": int(row["size_scale"])}
        for side, key in ((1, "bids"), (-1, "asks")):
            prices = np.zeros(levels, np.int64)
            quantities = np.zeros(levels, np.int64)
            n = books.top_levels(self.book, symbol_id, side, prices, quantities)
            result[key] = [(int(p), int(q)) for p, q in zip(prices[:n], quantities[:n])]
        return result

    def report(self):
        """The report of an engine that has ended (see ``ringbook run --json``)."""
        if self._report is None:
            raise RuntimeError("the engine has not ended: call stop() or wait()")
        return self._report

    def _build_report(self):
        words = self.counters
        elapsed_ns = (self.scheduler.stopped_ns or time.monotonic_ns()) - self.started_ns
        events = int(words[C.BOOK_EVENTS])
        values = self.histogram.percentiles(PERCENTILES)
        journal = {"dir": None, "files": [], "records": 0, "bytes": 0, "last_durable_sequence": None}
        if self.out is not None:
            files = sorted(str(path.relative_to(self.out)) for path in self.out.rglob("*") if path.is_file())
            journal.update({"dir": str(self.out.resolve()), "files": files,
                            "bytes": sum((self.out / f).stat().st_size for f in files)})
            journal["records"] = int(self.flusher.records)
            journal["last_durable_sequence"] = self.flusher.last_durable_sequence[0]
            errors = [writer.last_error for writer in self.writers if getattr(writer, "last_error", None)]
            journal["disk_errors"] = sum(getattr(writer, "errors", 0) for writer in self.writers)
            journal["last_disk_error"] = str(errors[-1]) if errors else None
            journal["streams"] = {"raw": {"last_durable_sequence": self.flusher.last_durable_sequence[0]},
                                  "engine": {"last_durable_sequence": self.flusher.last_durable_sequence[1]}}
        threads = self.scheduler.thread_map()
        report = {
            "feed": self.source.description,
            "name": self.name,
            "events": events,
            "messages": int(words[C.BOOK_MESSAGES]),
            "duration_s": elapsed_ns / 1e9,
            "throughput_eps": events * 1e9 / elapsed_ns if elapsed_ns > 0 else 0.0,
            "latency_ns": {"p50": int(values[50.0]), "p90": int(values[90.0]), "p99": int(values[99.0]),
                           "p999": int(values[99.9]), "max": int(values[100.0]),
                           "mean": float(self.histogram.mean) if self.histogram.count else 0.0,
                           "min": int(self.histogram.min) if self.histogram.count else 0,
                           "count": int(self.histogram.count)},
            "latency_window_ns": self.window.percentiles((50.0, 95.0, 99.0)) if len(self.window) else {},
            "dropped": int(words[C.DROPPED_MESSAGES]),
            "dropped_events": int(words[C.DROPPED_EVENTS]),
            "full_waits": int(words[C.FULL_WAITS]),
            "gaps": int(words[C.BOOK_GAPS] + words[C.PACKET_GAPS]),
            "book_gaps": int(words[C.BOOK_GAPS]),
            "packet_gaps": int(words[C.PACKET_GAPS]),
            "reorders": int(words[C.PACKET_REORDERS]),
            "errors": int(words[C.BOOK_ERRORS]),
            "checkpoints": int(words[C.CHECKPOINTS]),
            "resets": int(words[C.RESETS]),
            "journal": journal,
            "threads": threads,
            "page_faults": {"minor": sum(t["minor_faults"] for t in threads.values()),
                            "major": sum(t["major_faults"] for t in threads.values())},
            "context_switches": {"voluntary": sum(t["voluntary_switches"] for t in threads.values()),
                                 "involuntary": sum(t["involuntary_switches"] for t in threads.values())},
            "mlock": {"locked_bytes": locked_bytes(), "error": self.mlock["error"],
                      "requested": self.mlock["requested"], "limit_bytes": self.mlock["limit_bytes"]},
            "notes": list(self.scheduler.notes),
            "stopped_by": {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}.get(getattr(self, "signal", None)),
            "error": None if self.error is None else str(self.error),
        }
        if hasattr(self.source, "report"):
            report.update(self.source.report())
        return report

    def close(self):
        """Stop if running, remove the counters region, unmap the rings."""
        if self._closed:
            return
        self._closed = True
        if self.scheduler is not None and not self.scheduler.done.is_set():
            try:
                self.stop()
            except Exception:
                pass
        if getattr(self, "region", None) is not None:
            self.region.close()
        if getattr(self, "source", None) is not None and hasattr(self.source, "close"):
            self.source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
