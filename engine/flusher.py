"""The disk flusher: a thread that drains rings into journals, off the hot path.

A flusher is one more consumer of each ring it serves. Its loop takes up to
64 slots of a ring at a time, frames and checksums them into the journal
writer's batch buffer (a nogil njit kernel,
:func:`ringbook.kernels.journal.drain_ring`); the writer's own thread
writes the framed chunks behind it (``write_behind_bytes``), so a ``write``
that blocks does not stop the draining. When every ring is empty it waits with a
:mod:`ringbook.kernels.wait` strategy that never spins (yield, then sleeps
from 20 us doubling to 100 us), so an idle flusher costs little.

The wall clock is read here, once per batch, paired with the TSC: a
record's receive time is that wall clock less the ticks since its slot was
stamped. A slot's flags carry the record kind in their low 8 bits
(:data:`ringbook.kernels.journal.RECORD_DATA` is 0) and the record's flags
above them.

The flusher never blocks a producer: when it falls behind, the ring's
slowest-consumer gating applies and the producer's own policy decides (wait,
or drop and count). :meth:`Flusher.lag` says how far behind it is, and
:attr:`Flusher.records` and :attr:`Flusher.bytes` how much it wrote. A disk
error is retried by the writer (see :class:`ringbook.engine.journal.JournalWriter`):
the batch it holds is written once space returns, nothing lost, nothing
written twice; after a failed ``fdatasync`` it writes the batch again at its
offset before it retries (the kernel may have dropped those pages). Any other
error stops the thread and is kept in :attr:`Flusher.error`.
"""

import threading
import time

from ringbook.kernels import journal as jk
from ringbook.kernels.clock import TSC_INVARIANT, calibrate, tsc_now
from ringbook.kernels.status import status_name
from ringbook.kernels.wait import backoff, wait_strategy

#: Slots taken from one ring per batch.
BATCH_RECORDS = 64


def idle_strategy():
    """The flusher's wait: no spin, a few yields, then sleeps of 20 us doubling to 100 us."""
    return wait_strategy(spins=0, yields=4, min_sleep_ns=20_000, max_sleep_ns=100_000)


class Flusher:
    """One thread that drains ``(ring, consumer_index, writer)`` sources into their journals.

    Parameters
    ----------
    sources : list of (ringbook.engine.ring.Ring, int, ringbook.engine.journal.JournalWriter)
        Each ring's consumer ``consumer_index`` belongs to this flusher; the
        writers are the caller's (the flusher flushes them, never closes them).
    wait : numpy.ndarray, optional
        Wait strategy when every ring is empty; :func:`idle_strategy` by default.
        It must not spin (``spins == 0``).
    calibration : ringbook.kernels.clock.Calibration, optional
        TSC rate used to date records; measured at :meth:`start` when omitted.
    """

    def __init__(self, sources, *, wait=None, calibration=None):
        self.sources = [(ring, int(index), writer) for ring, index, writer in sources]
        if not self.sources:
            raise ValueError("a flusher needs at least one (ring, consumer_index, writer) source")
        self.wait = idle_strategy() if wait is None else wait
        if int(self.wait[0]) != 0:
            raise ValueError("the flusher never spins: give a wait strategy with spins=0")
        self.calibration = calibration
        self._consumers = []
        for ring, index, writer in self.sources:
            self._consumers.append(ring.consumer(index))
            writer.ensure_batch_bytes(BATCH_RECORDS * int(jk.record_size(ring.payload_capacity)))
        self._stop = threading.Event()
        self._drain_on_stop = True
        self._thread = None
        self.records = 0
        self.bytes = 0
        self.batches = 0
        self.error = None
        self.started_ns = None

    def start(self):
        """Start the thread (returns at once)."""
        if self._thread is not None:
            raise RuntimeError("flusher already started")
        if self.calibration is None and TSC_INVARIANT:
            self.calibration = calibrate(max_ms=20)
        self._ns_per_tick = self.calibration.ns_per_tick if self.calibration is not None else 1.0
        self.started_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name="ringbook-flusher", daemon=True)
        self._thread.start()
        return self

    def _drain_once(self):
        """One batch from each source; returns the records written."""
        total = 0
        for (ring, index, writer), consumer in zip(self.sources, self._consumers):
            tsc = int(tsc_now())
            wall = time.time_ns()
            count, nbytes = writer.drain(ring.slab, consumer, BATCH_RECORDS, tsc, wall, self._ns_per_tick)
            if count < 0:
                raise RuntimeError(f"ring {ring.path or '(private)'}, consumer {index}: "
                                   f"{status_name(count)}")
            if count:
                total += count
                self.records += count
                self.bytes += nbytes
                self.batches += 1
        return total

    def _run(self):
        attempt = 0
        try:
            while not self._stop.is_set():
                if self._drain_once():
                    attempt = 0
                    continue
                for _, _, writer in self.sources:
                    writer.poll()
                attempt = backoff(self.wait, attempt)
            if self._drain_on_stop:
                while self._drain_once():
                    pass
            for _, _, writer in self.sources:
                if not writer.closed:
                    writer.flush()
        except BaseException as error:  # kept for the owner: the thread has nobody to raise to
            self.error = error

    def stop(self, drain=True):
        """Stop the thread: with ``drain``, after writing everything the rings hold; then flush
        the writers (closing none). Raises the error that stopped the thread, if any."""
        self._drain_on_stop = drain
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def lag(self):
        """Per source, messages its ring holds that the flusher has not written yet."""
        return [ring.producer_position - ring.consumer_position(index) for ring, index, _ in self.sources]

    def write_rate(self):
        """Records per second since :meth:`start`."""
        if self.started_ns is None:
            return 0.0
        return self.records / max((time.monotonic_ns() - self.started_ns) / 1e9, 1e-9)

    @property
    def last_durable_sequence(self):
        """Per source, its writer's last durable sequence."""
        return [writer.last_durable_sequence for _, _, writer in self.sources]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
