"""Ring slots: throughput in one thread, across threads and across processes; one-way latency.

All with 32-byte messages in 64-byte slots:

- ``ring_single_thread``: one thread writes a message and reads it back
  (the seed measured 27.44 M msg/s);
- ``ring_single_thread_batch64``: the same with 64-message batches;
- ``ring_threads`` / ``ring_threads_batch64``: a producer thread and a consumer
  thread, each pinned to its own core;
- ``ring_processes`` / ``ring_processes_batch64``: a producer process and a
  consumer process over POSIX shared memory, each pinned to its own core;
- ``ring_threads_large`` / ``ring_threads_large_evict``: two threads over a
  ring of 65,536 slots (4 MiB), its consumer evicting as the ring decides by
  default on this machine, and evicting always;
- ``ring_threads_two_consumers``: the same ring read by two consumers in the
  consumer's thread, one message at a time and in trailing batches of 64 (a
  book consumer and a disk flusher sharing a core; in one thread, the figure
  is the ring's, not the scheduler's);
- peers, producer and consumer in two processes: ``multiprocessing_queue``,
  ``faster_fifo_queue``, ``posix_ipc_queue``.

Each figure is seconds per message. After the pyperf runs, the main process
measures one-way latency, from the TSC stamp written into a slot header to
the consumer reading it, with one message in flight, alternating a hundred
times over ten seconds with a bare cache-line ping-pong between the same two
cores (the physical limit), and prints both histograms and the spread of each
alternation's ratio.

Cross-core figures need both cores to themselves: on a busy machine they
only show that everything runs.
"""

import atexit
import collections
import multiprocessing
import os
import statistics
import threading
import time
import uuid

import numba
import numpy as np

from harness import Comparison, Limit, add_values, bench, run_subject

import ring_workers as workers
from ringbook.engine.ring import Ring, new_state
from ringbook.engine.system import l2_cache_bytes
from ringbook.kernels import ring
from ringbook.kernels.clock import calibrate
from ringbook.kernels.hist import Histogram

SEED_SINGLE_THREAD = 27.44e6  # msg/s, the seed's one-thread write+read
SLOT_COUNT = 4096
SLOT_SIZE = 64
LARGE_SLOT_COUNT = 65536  # 4 MiB of slots: more than the L2 cache of most cores
PRODUCER_CORE, CONSUMER_CORE = 0, 1
LATENCY_SAMPLES = 200_000
LATENCY_BUDGET_S = 2.0
#: The host moves the two vCPUs every 0.1-0.2 s (sometimes onto one physical
#: core); alternations spread over ten seconds see the placements it offers,
#: where back to back they all fall within one.
LATENCY_ROUNDS = 100
LATENCY_SPACING_S = 0.1


def _message():
    return np.full(workers.MESSAGE_BYTES, 7, np.uint8)


def _batch():
    payloads = np.tile(_message(), (workers.BATCH, 1))
    return payloads, np.full(workers.BATCH, workers.MESSAGE_BYTES, np.int64)


class Benchmarks:
    """Inputs and compiled drivers, built before the runner starts timing."""

    def __init__(self):
        self.private = Ring.create(SLOT_COUNT, SLOT_SIZE)
        self.large = Ring.create(LARGE_SLOT_COUNT, SLOT_SIZE)
        self.shared_by_two = Ring.create(LARGE_SLOT_COUNT, SLOT_SIZE, consumers=2)
        self.strategy = workers.THROUGHPUT_STRATEGY
        self.payload = _message()
        self.out = np.zeros(SLOT_SIZE, np.uint8)
        self.payloads, self.lengths = _batch()
        self.outs = np.zeros_like(self.payloads)
        self.out_lengths = np.zeros_like(self.lengths)
        self.children = {}
        self._compile()

    def _compile(self):
        shared = self.private
        workers.write_then_read(shared.slab, shared.producer, shared.consumer(0), self.payload, self.out, 1)
        workers.write_then_read_batches(shared.slab, shared.producer, shared.consumer(0), self.payloads,
                                        self.lengths, self.outs, self.out_lengths, 1)
        two = self.shared_by_two
        workers.consume_and_trail(two.slab, two.consumer(0), two.consumer(1), self.out, self.outs,
                                  self.out_lengths, 0, self.strategy)
        for produce, consume in ((workers.produce, workers.consume),
                                 (workers.produce_batches, workers.consume_batches)):
            if produce is workers.produce:
                produce(shared.slab, shared.producer, self.payload, 1, self.strategy)
                consume(shared.slab, shared.consumer(0), self.out, 1, self.strategy)
            else:
                produce(shared.slab, shared.producer, self.payloads, self.lengths, 1, self.strategy)
                consume(shared.slab, shared.consumer(0), self.outs, self.out_lengths, 1, self.strategy)

    # One thread

    def single_thread(self, loops):
        shared = self.private
        producer, consumer = shared.producer, shared.consumer(0)
        ring.set_evict(consumer, False)  # one core writes and reads: keep its lines
        started = time.perf_counter()
        workers.write_then_read(shared.slab, producer, consumer, self.payload, self.out, loops)
        return time.perf_counter() - started

    def single_thread_batch(self, loops):
        shared = self.private
        producer, consumer = shared.producer, shared.consumer(0)
        ring.set_evict(consumer, False)
        started = time.perf_counter()
        workers.write_then_read_batches(shared.slab, producer, consumer, self.payloads, self.lengths,
                                        self.outs, self.out_lengths, loops)
        return time.perf_counter() - started

    # Two threads

    def _threads(self, loops, batched, shared=None, evict=True):
        """``loops`` messages from a producer thread to a consumer thread.

        Consumer 0 evicts as ``evict`` says. With two consumers in ``shared``,
        the consumer thread reads as both (:func:`ring_workers.consume_and_trail`),
        consumer 1 evicting as the ring decides by default.
        """
        shared = shared or self.private
        producer, consumer = shared.producer, shared.consumer(0, evict=evict)
        results = []

        def consumer_side():
            workers.pin(CONSUMER_CORE)
            if shared.consumers == 2:
                results.append(workers.consume_and_trail(shared.slab, consumer, shared.consumer(1), self.out,
                                                         self.outs, self.out_lengths, loops, self.strategy))
            elif batched:
                results.append(workers.consume_batches(shared.slab, consumer, self.outs, self.out_lengths,
                                                       loops, self.strategy))
            else:
                results.append(workers.consume(shared.slab, consumer, self.out, loops, self.strategy))

        previous = workers.pin(PRODUCER_CORE)
        try:
            thread = threading.Thread(target=consumer_side)
            started = time.perf_counter()
            thread.start()
            if batched:
                status = workers.produce_batches(shared.slab, producer, self.payloads, self.lengths,
                                                 loops, self.strategy)
            else:
                status = workers.produce(shared.slab, producer, self.payload, loops, self.strategy)
            thread.join()
            elapsed = time.perf_counter() - started
        finally:
            workers.unpin(previous)
        if status != 0 or results[0] < 0:
            raise RuntimeError(f"ring threads failed: {status}, {results}")
        return elapsed

    def threads(self, loops):
        return self._threads(loops, batched=False)  # evicting again: the one-thread runs turned it off

    def threads_batch(self, loops):
        return self._threads(loops * workers.BATCH, batched=True)

    def threads_large(self, loops):
        return self._threads(loops, batched=False, shared=self.large, evict=self.large.evicts_by_default)

    def threads_large_evict(self, loops):
        return self._threads(loops, batched=False, shared=self.large, evict=True)

    def threads_two_consumers(self, loops):
        return self._threads(loops, batched=False, shared=self.shared_by_two,
                             evict=self.shared_by_two.evicts_by_default)

    # Two processes

    def _child(self, kind):
        """A consumer process of ``kind``, started on first use and stopped at exit."""
        if kind in self.children:
            return self.children[kind]
        context = multiprocessing.get_context("spawn")
        if kind.startswith("ring"):
            name = f"ringbook-bm-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            transport = Ring.create(SLOT_COUNT, SLOT_SIZE, name=name)
            channel = name
        elif kind == "multiprocessing":
            transport = channel = context.Queue()
        elif kind == "faster_fifo":
            import faster_fifo
            transport = channel = faster_fifo.Queue(max_size_bytes=1 << 20)
        else:
            import posix_ipc
            name = f"/ringbook-bm-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            transport = posix_ipc.MessageQueue(name, posix_ipc.O_CREX, mode=0o600,
                                               max_messages=_mqueue_limit(),
                                               max_message_size=workers.MESSAGE_BYTES)
            channel = name
        ours, theirs = context.Pipe()
        process = context.Process(target=workers.serve, args=(kind, theirs, channel, CONSUMER_CORE),
                                  daemon=True)
        process.start()
        if ours.recv() != "ready":
            raise RuntimeError(f"{kind} consumer did not start")
        if kind.startswith("ring"):
            transport.unlink()  # both sides have it mapped: leave no name behind

        def stop():
            try:
                ours.send(None)
            except OSError:
                pass
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
            if kind.startswith("ring"):
                transport.close()
            elif kind == "posix_ipc":
                transport.close()
                transport.unlink()

        atexit.register(stop)
        self.children[kind] = (ours, transport)
        return self.children[kind]

    def _processes(self, kind, loops, send):
        connection, transport = self._child(kind)
        previous = workers.pin(PRODUCER_CORE)
        try:
            connection.send(loops)
            started = time.perf_counter()
            send(transport, loops)
            result = connection.recv()
            elapsed = time.perf_counter() - started
        finally:
            workers.unpin(previous)
        if result < 0:
            raise RuntimeError(f"{kind} consumer failed: {result}")
        return elapsed

    def processes(self, loops):
        def send(shared, count):
            workers.produce(shared.slab, shared.producer, self.payload, count, self.strategy)
        return self._processes("ring", loops, send)

    def processes_batch(self, loops):
        def send(shared, count):
            workers.produce_batches(shared.slab, shared.producer, self.payloads, self.lengths, count,
                                    self.strategy)
        return self._processes("ring_batch", loops, send)

    def multiprocessing_queue(self, loops):
        message = bytes(self.payload)

        def send(queue, count):
            for _ in range(count):
                queue.put(message)
        return self._processes("multiprocessing", loops, send)

    def faster_fifo_queue(self, loops):
        message = bytes(self.payload)

        def send(queue, count):
            for _ in range(count):
                queue.put(message, timeout=60)
        return self._processes("faster_fifo", loops, send)

    def posix_ipc_queue(self, loops):
        message = bytes(self.payload)

        def send(queue, count):
            for _ in range(count):
                queue.send(message)
        return self._processes("posix_ipc", loops, send)


def _mqueue_limit(default=10):
    """The most messages a POSIX queue may hold here (``fs.mqueue.msg_max``), at most 1024."""
    try:
        with open("/proc/sys/fs/mqueue/msg_max") as limit:
            return min(1024, int(limit.read()))
    except (OSError, ValueError):
        return default


# Latency

def _compile(function, *args):
    """Compile (or load) ``function`` for these arguments without running it."""
    function.compile(tuple(numba.typeof(argument) for argument in args))


def _run_pair(first, first_args, second, second_args):
    """``first`` on the producer core in this thread, ``second`` on the consumer core in another."""
    results = {}

    def second_side():
        workers.pin(CONSUMER_CORE)
        results["second"] = second(*second_args)

    thread = threading.Thread(target=second_side)
    previous = workers.pin(PRODUCER_CORE)
    try:
        thread.start()
        results["first"] = first(*first_args)
        thread.join()
    finally:
        workers.unpin(previous)
    return results["first"], results["second"]


#: Percentiles the latency target applies to, and the most the ring may take
#: over the ping-pong at each, in the median alternation.
TARGET_PERCENTILES = (50.0, 99.0)
TARGET_RATIO = 2.0

Latency = collections.namedtuple("Latency", "taken ring pingpong calibration round_ratios")


def measure_latency(samples=LATENCY_SAMPLES, budget_s=LATENCY_BUDGET_S, rounds=LATENCY_ROUNDS,
                    spacing_s=LATENCY_SPACING_S):
    """One-way latency through the ring and by ping-pong, in ticks: a :class:`Latency`.

    The two alternate ``rounds`` times, ``spacing_s`` apart, so that both see
    the same placements of the machine's virtual cores, and as many of them
    as the host offers. ``ring`` and ``pingpong`` pool every round;
    ``round_ratios`` maps each of :data:`TARGET_PERCENTILES` to the ring's
    value over the ping-pong's in each round where the ping-pong's was above
    zero: the target is read in their median, and their spread shows how far
    the host moves a ratio within one run.
    ``taken`` counts the samples of each side, -1 if a spin gave up; each
    side runs for at most ``budget_s`` seconds in all.
    """
    calibration = calibrate()
    ring_pooled, pingpong_pooled, ring_round, pingpong_round = (Histogram(lowest=1, highest=10**10)
                                                                for _ in range(4))
    lines = new_state()  # two cache lines of int64: [0] and [8]
    per_round = samples // rounds
    budget_ns = int(budget_s * 1e9) // rounds
    ring_sent, pings = [], []
    round_ratios = {percentile: [] for percentile in TARGET_PERCENTILES}
    with Ring.create(64, SLOT_SIZE) as shared:
        producer, consumer = shared.producer, shared.consumer(0)
        payload = _message()
        ring_sides = (workers.latency_producer, (shared.slab, producer, payload, per_round, budget_ns),
                      workers.latency_consumer, (shared.slab, consumer, ring_round.counts, ring_round.meta))
        pingpong_sides = (workers.ping, (lines, per_round, budget_ns),
                          workers.pong, (lines, pingpong_round.counts, pingpong_round.meta))
        # Compile (or load) every side first: a side still compiling looks stuck.
        for function, args in (ring_sides[:2], ring_sides[2:], pingpong_sides[:2], pingpong_sides[2:]):
            _compile(function, *args)
        legs = [(ring_sides, ring_sent), (pingpong_sides, pings)]
        for index in range(rounds):
            if index:
                time.sleep(spacing_s)
            ring_round.reset()
            pingpong_round.reset()
            lines[:] = 0  # ping's last store was -1 (stop); pong starts from 0
            # Each side goes first in every other round: neither always follows the other.
            for sides, sent in (legs if index % 2 == 0 else legs[::-1]):
                sent.append(_run_pair(*sides)[0])
            for percentile, ratios in round_ratios.items():
                pingpong_value = pingpong_round.value_at_percentile(percentile)
                if pingpong_value > 0:  # below one clock step otherwise
                    ratios.append(ring_round.value_at_percentile(percentile) / pingpong_value)
            ring_pooled.merge(ring_round)
            pingpong_pooled.merge(pingpong_round)
    taken = tuple(-1 if min(counts) < 0 else sum(counts) for counts in (ring_sent, pings))
    return Latency(taken, ring_pooled, pingpong_pooled, calibration, round_ratios)


def print_latency(latency):
    """Both latency distributions, percentile by percentile, and their ratios."""
    ring_histogram, pingpong_histogram, calibration = latency.ring, latency.pingpong, latency.calibration
    print()
    print(f"One-way latency, one message in flight, core {PRODUCER_CORE} -> core {CONSUMER_CORE} "
          f"({calibration.source} ticks, {calibration.ticks_per_ns:.3f} per ns); samples: "
          f"ring {ring_histogram.count}, ping-pong {pingpong_histogram.count}"
          + ("" if min(latency.taken) >= 0 else "  [a spin gave up: figures incomplete]"))
    print(f"  {'percentile':>10}  {'ring ns':>10}  {'ping-pong ns':>12}  {'ratio':>6}")
    for percentile in (0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0):
        ring_ns = calibration.to_ns(ring_histogram.value_at_percentile(percentile))
        pingpong_ns = calibration.to_ns(pingpong_histogram.value_at_percentile(percentile))
        ratio = f"{ring_ns / pingpong_ns:.2f}" if pingpong_ns > 0 else "-"  # below one clock step
        print(f"  {percentile:>10g}  {ring_ns:>10.0f}  {pingpong_ns:>12.0f}  {ratio:>6}")
    print("  the ratio in each alternation, median (lowest-highest):")
    for percentile, ratios in latency.round_ratios.items():
        if ratios:
            above = sum(ratio > TARGET_RATIO for ratio in ratios)
            print(f"  {percentile:>10g}  {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) "
                  f"of {len(ratios)}, {above} above {TARGET_RATIO:g}x")
    # Pooled, a percentile near the share of the host's slowest placement
    # tips with a few samples; each alternation compares like with like.
    print(f"  (target: ring <= {TARGET_RATIO:g}x ping-pong at p50 and p99, in the median alternation)")


def benchmark_table(benchmarks):
    """Every pyperf benchmark of the subject, by name."""
    batch = workers.BATCH
    return {
        "ring_single_thread": bench(benchmarks.single_thread),
        f"ring_single_thread_batch{batch}": bench(benchmarks.single_thread_batch, inner_loops=batch),
        "ring_threads": bench(benchmarks.threads),
        f"ring_threads_batch{batch}": bench(benchmarks.threads_batch, inner_loops=batch),
        "ring_threads_large": bench(benchmarks.threads_large),
        "ring_threads_large_evict": bench(benchmarks.threads_large_evict),
        "ring_threads_two_consumers": bench(benchmarks.threads_two_consumers),
        "ring_processes": bench(benchmarks.processes),
        f"ring_processes_batch{batch}": bench(benchmarks.processes_batch),
        "multiprocessing_queue": bench(benchmarks.multiprocessing_queue),
        "faster_fifo_queue": bench(benchmarks.faster_fifo_queue),
        "posix_ipc_queue": bench(benchmarks.posix_ipc_queue),
    }


_BATCH = f"batch{workers.BATCH}"
COMPARISONS = [
    Limit("ring_single_thread", at_most=1 / 54.88e6, means="one thread: at least 54.9 M msg/s"),
    Comparison(f"ring_single_thread_{_BATCH}", "ring_single_thread", means="batches of 64 vs single, one thread"),
    Limit("ring_threads", at_most=1 / 50e6, means="two threads: at least 50 M msg/s"),
    Comparison(f"ring_threads_{_BATCH}", "ring_threads", means="batches of 64 vs single, two threads"),
    Comparison("ring_threads_large", "ring_threads_large_evict",
               means="4 MiB ring: evicting as the ring decides vs always"),
    Comparison("ring_threads_large", "ring_threads_two_consumers",
               means="4 MiB ring: one consumer vs two in one thread"),
    Limit("ring_processes", at_most=1 / 50e6, means="two processes: at least 50 M msg/s"),
    Comparison(f"ring_processes_{_BATCH}", "ring_processes", means="batches of 64 vs single, two processes"),
    Comparison("ring_processes", "multiprocessing_queue", at_least=100,
               means="faster than multiprocessing.Queue across processes"),
    Comparison("ring_processes", "faster_fifo_queue", at_least=50,
               means="faster than faster-fifo across processes", peer_package="faster-fifo"),
    Comparison("ring_processes", "posix_ipc_queue", at_least=50,
               means="faster than a POSIX message queue", peer_package="posix-ipc"),
    Comparison(f"ring_processes_{_BATCH}", "posix_ipc_queue",
               means="batches of 64 vs a POSIX message queue", peer_package="posix-ipc"),
    # Measured after the pyperf runs (see measure_latency); values are per alternation.
    Limit("ring_latency_p50_vs_pingpong", at_most=TARGET_RATIO, unit="x",
          means="one-way latency p50, ring over a bare ping-pong, median alternation"),
    Limit("ring_latency_p99_vs_pingpong", at_most=TARGET_RATIO, unit="x",
          means="the same at p99"),
]


def store_latency(runner, latency):
    """The latency measurement's figures, added to the runner's output file."""
    to_seconds = latency.calibration.to_ns(1) * 1e-9
    for percentile in TARGET_PERCENTILES:
        label = f"p{percentile:g}"
        add_values(runner, f"ring_latency_{label}_vs_pingpong", latency.round_ratios[percentile],
                   unit="integer")
        for side, histogram in (("ring", latency.ring), ("pingpong", latency.pingpong)):
            add_values(runner, f"{side}_latency_{label}",
                       [histogram.value_at_percentile(percentile) * to_seconds])


def main():
    benchmarks = Benchmarks()
    runner, results = run_subject("Ring slots", benchmark_table(benchmarks), COMPARISONS, metadata={
        "ring_message_bytes": workers.MESSAGE_BYTES,
        "ring_slots": f"{SLOT_COUNT} x {SLOT_SIZE} B",
        "ring_large_slots": f"{LARGE_SLOT_COUNT} x {SLOT_SIZE} B",
        "l2_cache_bytes": str(l2_cache_bytes()),
        "ring_large_evicts": str(benchmarks.large.evicts_by_default),
    })
    if all(result is not None for result in results.values()):
        print()
        print("Messages per second (median):")
        for name, result in results.items():
            print(f"  {name}: {1 / result.median() / 1e6:.2f} M msg/s")
        ratio = 1 / results["ring_single_thread"].median() / SEED_SINGLE_THREAD
        print(f"  ring_single_thread vs the seed's {SEED_SINGLE_THREAD / 1e6} M msg/s: {ratio:.2f}x")
    if not runner.args.worker:
        latency = measure_latency()
        print_latency(latency)
        store_latency(runner, latency)


if __name__ == "__main__":
    main()
