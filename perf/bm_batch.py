"""Research at scale: many files on local processes or Dask, and what the batch layer costs.

Benchmarks (each value is one whole run; compile time is never measured: the
kernels are compiled at import and each worker warms up before timing):

- ``batch_1_worker`` / ``batch_2_workers``: ``snapshot_files`` over 32 files of
  about a second's work each (copies of one LOBSTER day, 10 levels, 1 s), on a
  warmed pool of 1 and of 2 local processes. The ratio is the scaling.
- ``task_overhead_pool`` / ``task_overhead_dask``: 32 tasks that do nothing,
  on a warmed local pool (2 processes) and a local Dask cluster (2 worker
  processes): the time per task is each shard's scheduling and result transfer.
- ``snapshots_lobster`` / ``replay_lobster`` and ``snapshots_binance`` /
  ``replay_binance``: one worker's snapshot kernel (every boundary, 10 levels,
  1 s) against a plain ``apply_events`` of the same events in one process.
- ``shard_lobster`` / ``shard_binance``: one whole shard in a worker: read the
  file, take the snapshots, write the CSV; messages per second are printed. Their
  peers ``file_replay_*`` read the same file and replay it plainly in one process.

The files are the real ones in ``../shared/data`` (or ``$RINGBOOK_SHARED_DATA``),
else synthetic ones of the same formats.

Run: ``python perf/bm_batch.py -o batch.json`` (``-n 2`` for a quick look).
"""

import atexit
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import make_runner, report_ratios

from ringbook.engine import batch, snapshots
from ringbook.engine.check import price_ticks
from ringbook.engine.feeds import synthetic
from ringbook.kernels import book as books
from ringbook.kernels import snapshots as snapshot_kernels
from ringbook.kernels.replay import apply_events

SHARED_DATA = Path(os.environ.get("RINGBOOK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SCRATCH = Path(tempfile.mkdtemp(prefix="ringbook_bm_batch_"))
atexit.register(shutil.rmtree, SCRATCH, True)
FILES = 32
LEVELS = 10
SECOND = 10**9


def input_files():
    """(LOBSTER message file with its orderbook file beside it, Binance capture, origin)."""
    messages = SHARED_DATA / "lobster" / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
    capture = SHARED_DATA / "binance" / "spot_btcusdt_20240808.gz"
    if messages.is_file() and capture.is_file():
        return messages, capture, "shared"
    messages, _ = synthetic.write_lobster(SCRATCH, messages=50_000, levels=1)
    return messages, synthetic.write_binance_capture(SCRATCH / "capture.gz", diffs=20_000), "synthetic"


MESSAGES, CAPTURE, ORIGIN = input_files()


def copies(count):
    """``count`` copies of the LOBSTER pair under distinct tickers: distinct shards, equal work."""
    folder = SCRATCH / "copies"
    folder.mkdir(exist_ok=True)
    paths = []
    orderbook = MESSAGES.with_name(MESSAGES.name.replace("_message_", "_orderbook_"))
    for k in range(count):
        name = f"C{k:02d}" + MESSAGES.name[MESSAGES.name.index("_"):]
        shutil.copyfile(MESSAGES, folder / name)
        shutil.copyfile(orderbook, folder / name.replace("_message_", "_orderbook_"))
        paths.append(folder / name)
    return paths


def source_feed(path):
    feed, orderbook, exchange = batch.read_source(batch.sources([path])[0])
    return feed, orderbook, exchange


def new_book(feed):
    n_symbols = max(len(feed.instruments), 1)
    table = feed.instruments.table
    ticks = np.where(table["tick"][:n_symbols] > 1, table["tick"][:n_symbols], price_ticks(feed.events, n_symbols))
    return books.new_book(n_symbols=n_symbols, depth=4096, order_capacity=2**17, ticks=ticks)


def time_snapshots(loops, feed):
    events = feed.events
    out = snapshots._outputs(snapshot_kernels.boundary_count(events, SECOND), LEVELS)
    total = 0.0
    for _ in range(loops):
        book = new_book(feed)
        cursor = snapshot_kernels.new_cursor()
        started = time.perf_counter()
        snapshot_kernels.take_snapshots(book, 0, events, 0, len(events), SECOND, cursor, *out)
        snapshot_kernels.finish_snapshots(book, 0, SECOND, cursor, *out)
        total += time.perf_counter() - started
    return total


def time_replay(loops, feed):
    events = feed.events
    total = 0.0
    for _ in range(loops):
        book = new_book(feed)
        started = time.perf_counter()
        apply_events(book, events, 0, len(events))
        total += time.perf_counter() - started
    return total


def time_shard(loops, path):
    source = batch.sources([path])[0]
    out = SCRATCH / "shard"
    out.mkdir(exist_ok=True)
    started = time.perf_counter()
    for _ in range(loops):
        batch.snapshot_task(source, str(out), LEVELS, SECOND, "1s", "csv")
    return time.perf_counter() - started


def time_file_replay(loops, path):
    """The peer of a shard: read the same file and replay it, in one process, nothing written."""
    source = batch.sources([path])[0]
    started = time.perf_counter()
    for _ in range(loops):
        feed, _, _ = batch.read_source(source)
        apply_events(new_book(feed), feed.events, 0, len(feed.events))
    return time.perf_counter() - started


def time_batch(loops, runner, paths, out):
    started = time.perf_counter()
    for _ in range(loops):
        batch.run_tasks(runner, batch.snapshot_task,
                        [(source, str(out), LEVELS, SECOND, "1s", "csv") for source in batch.sources(paths)])
    return time.perf_counter() - started


def nothing():
    return 0


def time_overhead(loops, runner, tasks):
    started = time.perf_counter()
    for _ in range(loops):
        batch.run_tasks(runner, nothing, [()] * tasks)
    return time.perf_counter() - started


def main():
    runner = make_runner(loops=1)
    runner.metadata["batch_data_origin"] = ORIGIN
    args = runner.parse_args()
    lobster_feed, _, _ = source_feed(MESSAGES)
    binance_feed, _, _ = source_feed(CAPTURE)
    batch.prepare_worker()
    time_snapshots(1, lobster_feed), time_snapshots(1, binance_feed), time_replay(1, lobster_feed)
    time_shard(1, MESSAGES), time_shard(1, CAPTURE)
    results = {}
    results["snapshots_lobster"] = runner.bench_time_func("snapshots_lobster", time_snapshots, lobster_feed)
    results["replay_lobster"] = runner.bench_time_func("replay_lobster", time_replay, lobster_feed)
    results["snapshots_binance"] = runner.bench_time_func("snapshots_binance", time_snapshots, binance_feed)
    results["replay_binance"] = runner.bench_time_func("replay_binance", time_replay, binance_feed)
    results["shard_lobster"] = runner.bench_time_func("shard_lobster", time_shard, MESSAGES)
    results["shard_binance"] = runner.bench_time_func("shard_binance", time_shard, CAPTURE)
    results["file_replay_lobster"] = runner.bench_time_func("file_replay_lobster", time_file_replay, MESSAGES)
    results["file_replay_binance"] = runner.bench_time_func("file_replay_binance", time_file_replay, CAPTURE)

    out = SCRATCH / "out"
    out.mkdir(exist_ok=True)
    # pyperf runs each benchmark in worker processes of its own (the 7th to 10th here):
    # only those start the pools and the cluster; the main process only spawns them.
    order = ["batch_1_worker", "batch_2_workers", "task_overhead_pool", "task_overhead_dask"]
    first = len(results)

    def wanted(*names):
        return args.worker and args.worker_task in [first + order.index(name) for name in names]

    paths = copies(FILES) if wanted("batch_1_worker", "batch_2_workers") else []
    with contextlib.ExitStack() as stack:
        one = two = dask_runner = None
        if wanted("batch_1_worker"):
            one = stack.enter_context(batch.executor(workers=1))
            batch.run_tasks(one, batch.prepare_worker, [()] * 2)  # start and warm the process
        if wanted("batch_2_workers", "task_overhead_pool"):
            two = stack.enter_context(batch.executor(workers=2))
            batch.run_tasks(two, batch.prepare_worker, [()] * 4)
        if wanted("task_overhead_dask"):
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None))
            dask_runner = stack.enter_context(batch.executor(cluster=stack.enter_context(Client(cluster))))
        results["batch_1_worker"] = runner.bench_time_func("batch_1_worker", time_batch, one, paths, out)
        results["batch_2_workers"] = runner.bench_time_func("batch_2_workers", time_batch, two, paths, out)
        results["task_overhead_pool"] = runner.bench_time_func("task_overhead_pool", time_overhead, two, FILES)
        results["task_overhead_dask"] = runner.bench_time_func("task_overhead_dask", time_overhead, dask_runner,
                                                               FILES)
    if any(value is None for value in results.values()):
        return
    report_ratios(results, [("snapshots_lobster", "replay_lobster"), ("snapshots_binance", "replay_binance"),
                            ("shard_lobster", "file_replay_lobster"), ("shard_binance", "file_replay_binance"),
                            ("batch_2_workers", "batch_1_worker")])
    print()
    print(f"Data: {ORIGIN}; {FILES} files of {len(lobster_feed)} LOBSTER messages each")
    for name, feed in (("lobster", lobster_feed), ("binance", binance_feed)):
        shard = results[f"shard_{name}"].median()
        print(f"  one worker, whole shard ({name}): {len(feed) / shard:,.0f} events/s "
              f"({shard:.3f} s a shard); snapshot kernel {len(feed) / results[f'snapshots_{name}'].median():,.0f}"
              f" events/s, plain replay {len(feed) / results[f'replay_{name}'].median():,.0f} events/s")
    shard = results["batch_1_worker"].median() / FILES
    for name in ("task_overhead_pool", "task_overhead_dask"):
        per_task = results[name].median() / FILES
        print(f"  {name}: {per_task * 1e3:.2f} ms a task, {per_task / shard:.1%} of a {shard:.2f} s shard")


if __name__ == "__main__":
    main()
