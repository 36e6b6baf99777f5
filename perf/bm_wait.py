"""Waiting: a futex doorbell against the bounded back-off of ``kernels/wait.py`` and a bare spin.

- ``burst_futex`` / ``burst_backoff``: seconds per message through a ring whose
  consumer thread sleeps between bursts of :data:`BURST` messages (the idle gap
  between bursts is not timed: each burst is timed from its first write to the
  consumer having read its last message, so the consumer's wake-up is in it);
  the producer rings the doorbell after every message.

After the pyperf runs, the main process measures, for a spinning, a backing-off
and a futex-parked consumer thread: wake latency (from the producer's
``CLOCK_MONOTONIC`` stamp to the consumer running again, with the consumer idle
for :data:`IDLE_GAP_NS` before each message) at p50/p99, and the CPU an idle
consumer uses (its thread CPU time over wall time while nothing arrives); both go
into the ``-o`` file beside pyperf's figures, where the report judges the idle target.

Cross-thread figures need both cores; on a shared machine they are provisional.
"""

import threading
import time

import numpy as np

from harness import Comparison, Limit, add_values, bench, make_runner, run_subject

from ringbook.engine.ring import Ring
from ringbook.kernels import futex, ring
from ringbook.kernels.atomics import load_acquire, spin_pause, store_release
from ringbook.kernels.clock import monotonic_ns
from ringbook.kernels.hist import Histogram, record
from ringbook.kernels.jit_options import kernel
from ringbook.kernels.wait import backoff, sleep_ns, wait_strategy

BURST = 256
MESSAGE_BYTES = 32
IDLE_GAP_NS = 300_000
LATENCY_SAMPLES = 2_000
IDLE_SECONDS = 1.0
SPIN, BACKOFF, FUTEX = 0, 1, 2
METHODS = {"spin": SPIN, "backoff": BACKOFF, "futex": FUTEX}
BELL = 0        # doorbell in the signal slab
COUNTER = 16    # u32 message counter
STAMP = 24      # i64 stamp of the last message
DONE = 32       # i64 messages the burst consumer has read
#: The back-off of ``kernels/wait.py`` at its defaults.
STRATEGY = wait_strategy()


@kernel
def wait_message(signal, seen, method, strategy, stop):
    """Wait until the counter differs from ``seen``; the new value, or -1 once ``stop[0]`` is set."""
    attempt = 0
    while True:
        value = futex.load_u32_at(signal, COUNTER)
        if value != seen:
            return value
        if load_acquire(stop, 0) != 0:
            return -1
        if method == SPIN:
            spin_pause()
        elif method == BACKOFF:
            attempt = backoff(strategy, attempt)
        elif attempt < futex.DEFAULT_SPINS:
            spin_pause()
            attempt += 1
        else:
            ticket = futex.doorbell_prepare(signal, BELL)
            if futex.load_u32_at(signal, COUNTER) != seen or load_acquire(stop, 0) != 0:
                futex.doorbell_cancel(signal, BELL)
            else:
                futex.doorbell_sleep(signal, BELL, ticket, 100_000_000)


@kernel
def latency_consumer(signal, method, strategy, stop, counts, meta):
    """Record, for each message, now minus the producer's stamp; return how many."""
    seen = 0
    taken = 0
    while True:
        value = wait_message(signal, seen, method, strategy, stop)
        if value < 0:
            return taken
        record(counts, meta, monotonic_ns() - signal[STAMP:STAMP + 8].view(np.int64)[0])
        seen = value
        taken += 1


@kernel
def latency_producer(signal, samples, gap_ns):
    """Send ``samples`` messages ``gap_ns`` apart, each stamped, ringing the doorbell."""
    stamps = signal[STAMP:STAMP + 8].view(np.int64)
    counter = signal[COUNTER:COUNTER + 4].view(np.uint32)
    for i in range(samples):
        sleep_ns(gap_ns)
        stamps[0] = monotonic_ns()
        counter[0] = i + 1
        futex.doorbell_ring(signal, BELL)


@kernel
def burst_consumer(slab, consumer, out, signal, method, strategy, stop, done):
    """Read every message, parking (or backing off) on an empty ring; publish the count read."""
    read = 0
    attempt = 0
    while True:
        length = ring.try_read(slab, consumer, out)
        if length >= 0:
            read += 1
            store_release(done, 0, read)
            attempt = 0
            continue
        if length != ring.EMPTY or load_acquire(stop, 0) != 0:
            return read
        if method == BACKOFF:
            attempt = backoff(strategy, attempt)
        elif attempt < futex.DEFAULT_SPINS:
            spin_pause()
            attempt += 1
        else:
            ticket = futex.doorbell_prepare(signal, BELL)
            if ring.pending(slab, consumer) != 0 or load_acquire(stop, 0) != 0:
                futex.doorbell_cancel(signal, BELL)
            else:
                futex.doorbell_sleep(signal, BELL, ticket, 100_000_000)


@kernel
def burst_producer(slab, producer, payload, signal, done, messages, burst, gap_ns):
    """Write ``messages`` in bursts ``gap_ns`` apart; nanoseconds from each burst's first write
    to the consumer having read its last message, summed."""
    busy_ns = 0
    sent = 0
    while sent < messages:
        sleep_ns(gap_ns)
        started = monotonic_ns()
        count = min(burst, messages - sent)
        for _ in range(count):
            while ring.try_write(slab, producer, payload, 0, 0) == ring.FULL:
                spin_pause()
            futex.doorbell_ring(signal, BELL)
        sent += count
        while load_acquire(done, 0) < sent:
            spin_pause()
        busy_ns += monotonic_ns() - started
    return busy_ns


def new_signal():
    """A signal slab: doorbell, counter, stamp; asymmetric when the system allows it."""
    signal = np.zeros(64, np.uint8)
    futex.set_asymmetric(signal, BELL, futex.register_asymmetric())
    return signal


def burst_run(method, bursts):
    """Seconds spent in ``bursts`` bursts of :data:`BURST` messages, with a consumer thread
    waiting by ``method`` (whole bursts: pyperf's loop count counts bursts, its inner loops
    the messages in one)."""
    signal = new_signal()
    stop = np.zeros(1, np.int64)
    done = np.zeros(1, np.int64)
    with Ring.create(1024, 64) as shared:
        producer, consumer = shared.producer, shared.consumer(0)
        out = np.empty(64, np.uint8)
        thread = threading.Thread(target=burst_consumer, args=(shared.slab, consumer, out, signal, method,
                                                               STRATEGY, stop, done))
        thread.start()
        busy_ns = burst_producer(shared.slab, producer, np.full(MESSAGE_BYTES, 7, np.uint8), signal, done,
                                 bursts * BURST, BURST, IDLE_GAP_NS)
        stop[0] = 1
        futex.doorbell_wake(signal, BELL)
        thread.join()
    return busy_ns / 1e9


def measure_latency(method, samples=LATENCY_SAMPLES):
    """The wake latency histogram (ns) of a consumer waiting by ``method``."""
    signal = new_signal()
    stop = np.zeros(1, np.int64)
    histogram = Histogram(lowest=1, highest=10**10)
    result = []
    thread = threading.Thread(target=lambda: result.append(latency_consumer(
        signal, METHODS[method], STRATEGY, stop, histogram.counts, histogram.meta)))
    thread.start()
    latency_producer(signal, samples, IDLE_GAP_NS)
    time.sleep(0.01)
    stop[0] = 1
    futex.doorbell_wake(signal, BELL)
    thread.join()
    return histogram


def idle_cpu(method, seconds=IDLE_SECONDS):
    """The share of a core a consumer waiting by ``method`` uses while nothing arrives."""
    signal = new_signal()
    stop = np.zeros(1, np.int64)
    used = []

    def consume():
        before = time.thread_time()
        wait_message(signal, 0, METHODS[method], STRATEGY, stop)
        used.append(time.thread_time() - before)

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(seconds)
    stop[0] = 1
    futex.doorbell_wake(signal, BELL)
    thread.join()
    return used[0] / seconds


def compile_all():
    """Compile (or load) every side before timing: a side still compiling looks slow."""
    for method in METHODS.values():
        burst_run(method, 1)
    signal = new_signal()
    stop = np.ones(1, np.int64)
    histogram = Histogram(lowest=1, highest=10**10)
    latency_consumer(signal, 0, STRATEGY, stop, histogram.counts, histogram.meta)
    latency_producer(signal, 0, 0)


BENCHMARKS = {
    "burst_futex": bench(lambda loops: burst_run(FUTEX, loops), inner_loops=BURST),
    "burst_backoff": bench(lambda loops: burst_run(BACKOFF, loops), inner_loops=BURST),
}
#: The most of a core an idle futex-parked consumer may use: "about 0%".
IDLE_CPU_TARGET = 0.01
COMPARISONS = [
    Comparison("burst_futex", "burst_backoff",
               means="messages/s with a consumer that parks between bursts: futex vs the back-off"),
    # Measured after the pyperf runs (see measure_latency and idle_cpu).
    Limit("wait_idle_cpu_futex", at_most=IDLE_CPU_TARGET, unit="x",
          means="share of a core an idle futex-parked consumer uses: about 0 (at most 1%)"),
    Comparison("wait_latency_p50_futex", "wait_latency_p50_backoff", means="wake latency p50: futex vs the back-off"),
    Comparison("wait_latency_p99_futex", "wait_latency_p99_backoff", means="wake latency p99: futex vs the back-off"),
    Comparison("wait_latency_p50_futex", "wait_latency_p50_spin", means="wake latency p50: futex vs a bare spin"),
    Comparison("wait_latency_p99_futex", "wait_latency_p99_spin", means="wake latency p99: futex vs a bare spin"),
]


def main():
    runner = make_runner()
    runner.parse_args()  # --help exits here, before anything compiles
    compile_all()
    runner, results = run_subject("Waiting", BENCHMARKS, COMPARISONS, runner=runner, metadata={
        "wait_burst": str(BURST), "wait_idle_gap_ns": str(IDLE_GAP_NS)})
    if runner.args.worker or any(value is None for value in results.values()):
        return
    print()
    print(f"Wake latency, consumer idle {IDLE_GAP_NS / 1000:g} us before each of {LATENCY_SAMPLES} messages "
          f"(ns), and the CPU an idle consumer uses:")
    print(f"  {'method':>8}  {'p50':>8}  {'p99':>8}  {'p99.9':>8}  {'idle CPU':>9}")
    for method in METHODS:
        histogram = measure_latency(method)
        share = idle_cpu(method, 0.3 if method == "spin" else IDLE_SECONDS)
        p50, p99, p999 = (histogram.value_at_percentile(p) for p in (50.0, 99.0, 99.9))
        print(f"  {method:>8}  {p50:>8}  {p99:>8}  {p999:>8}  {share:>8.1%}")
        for label, nanoseconds in (("p50", p50), ("p99", p99), ("p99.9", p999)):
            # Below the histogram's 1 ns step counts as 1 ns: a ratio needs it above zero.
            add_values(runner, f"wait_latency_{label}_{method}", [max(nanoseconds, 1) * 1e-9])
        add_values(runner, f"wait_idle_cpu_{method}", [share], unit="integer")
    print(f"  (target: futex idle CPU at most {IDLE_CPU_TARGET:.0%})")


if __name__ == "__main__":
    main()
