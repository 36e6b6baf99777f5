"""Many files: the same bytes from this process, local processes, an in-process Dask LocalCluster
and a real `dask scheduler` with two `dask worker` processes on loopback; a SIGKILLed worker;
a malformed file among good ones; a rerun that resumes; `ringbook check` over many files."""

import contextlib
import functools
import gzip
import itertools
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import blake3
import numba
import numpy as np
import pytest

from ringbook.engine import batch, cli, snapshots, tasks
from ringbook.engine.snapshots import CSV_PIECE
from ringbook.engine.feeds import journal as feeds_journal
from ringbook.engine.feeds import lobster, synthetic
from ringbook.engine.feeds.source import Feed
from ringbook.engine.inputs import Source, content_hash, detect_format, read_source, sources, stream_source
from ringbook.kernels.book import BookError, best_ask, best_bid, imbalance
from ringbook.kernels.events import KIND_L3_ADD, Instruments, empty_events

ROOT = Path(__file__).resolve().parents[1]
TARDIS_ROWS = "".join(
    f"ex,TST,{1_600_000_000_000_000 + 137_000 * k},{1_600_000_000_000_100 + 137_000 * k},"
    f"{'true' if k < 3 else 'false'},{'bid' if k % 2 else 'ask'},{100 + (k % 7) * (1 if k % 2 else -1) + (0 if k % 2 else 20)}.5,"
    f"{k % 4}\n" for k in range(300))


def make_inputs(directory, lobster_files=3):
    """Synthetic LOBSTER pairs, a Binance capture and a tardis file: every reader, several shards."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(lobster_files):
        message, _ = synthetic.write_lobster(directory, messages=1500, levels=5, seed=k, ticker=f"S{k}")
        paths.append(message)
    paths.append(synthetic.write_binance_capture(directory / "capture.gz", diffs=300))
    tardis = directory / "deribit_incremental_book_L2_TST.csv"
    tardis.write_text("exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n" + TARDIS_ROWS)
    paths.append(tardis)
    return paths


def folder_bytes(directory):
    return {path.name: path.read_bytes() for path in sorted(Path(directory).iterdir()) if path.name != batch.LOCK}


@numba.njit
def spread_and_imbalance(book, events, i, state):
    """At every trade: the spread and the top-5 imbalance, summed and counted."""
    symbol = events[i].symbol
    bid, _ = best_bid(book, symbol)
    ask, _ = best_ask(book, symbol)
    if bid > 0 and 0 < ask < 2**62:
        state[0] += ask - bid
        state[1] += 1
        value = imbalance(book, symbol, 5)
        if value == value:
            state[2] += int(value * 1_000_000)


def make_state(events):
    return np.zeros(3, np.int64)


def add(first, second):
    return first + second


# ---------------------------------------------------------------- a real Dask cluster

def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def dask_processes(logs, workers=2, worker_environment=None, worker_prefix=()):
    """`dask scheduler` and ``workers`` `dask worker` processes on 127.0.0.1, run in ``logs`` (which
    receives their output), each worker's command after ``worker_prefix``: the scheduler's address."""
    distributed = pytest.importorskip("distributed")
    address = f"tcp://127.0.0.1:{free_port()}"
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                                   "--port", address.rsplit(":", 1)[1], "--no-dashboard"], cwd=logs,
                                  env=environment, stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT)]
    for k in range(workers):
        processes.append(subprocess.Popen(
            [*worker_prefix, sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-dashboard",
             "--name", f"worker-{k}"], cwd=logs, env={**environment, **(worker_environment or {})},
            stdout=open(logs / f"worker-{k}.log", "w"), stderr=subprocess.STDOUT))
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1: the scheduler's address."""
    with dask_processes(tmp_path_factory.mktemp("dask")) as address:
        yield address


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """Snapshots and callback results from this process, one file after another."""
    out = tmp_path_factory.mktemp("serial")
    report = batch.snapshot_files(inputs, out, levels=10, interval="1s", workers=0)
    assert report.ok and len(report.done) == len(inputs)
    states = batch.replay_files(inputs, spread_and_imbalance, make_state, workers=0)
    return folder_bytes(out), states


def assert_same_states(found, expected):
    assert list(found) == list(expected)
    for key in expected:
        assert np.array_equal(found[key], expected[key]), key


@pytest.mark.slow
def test_local_processes_same_bytes(inputs, reference, tmp_path):
    expected_files, expected_states = reference
    batch.snapshot_files(inputs, tmp_path, levels=10, interval="1s", workers=2)
    assert folder_bytes(tmp_path) == expected_files
    assert_same_states(batch.replay_files(inputs, spread_and_imbalance, make_state, workers=2), expected_states)
    total = batch.replay_files(inputs, spread_and_imbalance, make_state, reduce=add, workers=2)
    assert np.array_equal(total, sum(expected_states.values()))


def test_one_input_given_alone_is_one_input(inputs, reference, tmp_path):
    """A path given as a string or Path, not in a list, is one input (a string was read as its
    characters, each a file that did not exist)."""
    _, expected_states = reference
    path = inputs[0]
    states = batch.replay_files(str(path), spread_and_imbalance, make_state, workers=0)
    assert_same_states(states, {key: value for key, value in expected_states.items() if key[0] == str(path)})
    assert batch.snapshot_files(Path(path), tmp_path, levels=2, workers=0).done == [str(path)]
    files, totals = batch.check_files(str(path), workers=0)
    assert [entry["file"] for entry in files] == [str(path)] and totals["mismatches"] == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_a_task_that_returns_none_is_a_result(workers):
    """None is a task's result like any other, not a sign that its pool broke (it was taken for
    one, and each task ran three times, then failed)."""
    with tasks.executor(workers) as runner:
        assert tasks.run_tasks(runner, time.sleep, [(0,)] * 6) == [None] * 6


STATE_BYTES = 8 << 20


@numba.njit
def count_events(book, events, i, state):
    state[0] += 1


def large_state(events, slow_events=-1):
    """8 MiB of state; a while to make for the shard of ``slow_events`` events."""
    if len(events) == slow_events:
        time.sleep(1.0)
    return np.zeros(STATE_BYTES // 8, np.int64)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_reduce_holds_a_few_states_at_a_time(tmp_path, workers):
    """A fold over many shards lets each state go once folded, and later shards wait for a
    slow first one: 16 shards' states of 8 MiB each were all held until the end."""
    paths = [synthetic.write_lobster(tmp_path, messages=300 if k == 0 else 200, levels=2, seed=k,
                                     ticker=f"D{k}")[0] for k in range(16)]
    sizes = [len(read_source(source)[0].events) for source in sources(paths)]
    assert sizes[0] not in sizes[1:]
    make_state = functools.partial(large_state, slow_events=sizes[0])
    batch.replay_files(paths[1:2], count_events, large_state, workers=0)   # compiled before tracing
    tracemalloc.start()
    try:
        total = batch.replay_files(paths, count_events, make_state, reduce=add, workers=workers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total[0] == sum(sizes)
    assert peak < 10 * STATE_BYTES, peak / STATE_BYTES   # 4 waiting or in flight, one in transit, the fold


@pytest.mark.slow
def test_in_process_dask_local_cluster_same_bytes(inputs, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    expected_files, expected_states = reference
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        batch.snapshot_files(inputs, tmp_path, levels=10, interval="1s", cluster=client)
        assert_same_states(batch.replay_files(inputs, spread_and_imbalance, make_state, cluster=client),
                           expected_states)
    assert folder_bytes(tmp_path) == expected_files


@pytest.mark.slow
def test_real_dask_scheduler_and_workers_same_bytes(inputs, reference, tmp_path, dask_cluster):
    """The CLI and the Python API against `dask scheduler` + two `dask worker` processes."""
    expected_files, expected_states = reference
    status = subprocess.run([sys.executable, "-m", "ringbook.engine.cli", "snapshots", *map(str, inputs),
                             "--levels", "10", "--interval", "1s", "--out", str(tmp_path / "cli"),
                             "--cluster", dask_cluster, "--no-progress"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert status.returncode == 0, status.stderr
    assert folder_bytes(tmp_path / "cli") == expected_files
    batch.snapshot_files(inputs, tmp_path / "api", levels=10, interval="1s", cluster=dask_cluster)
    assert folder_bytes(tmp_path / "api") == expected_files
    assert_same_states(batch.replay_files(inputs, spread_and_imbalance, make_state, cluster=dask_cluster),
                       expected_states)


def faults_of_freed_arrays():
    """This process's ``MALLOC_TRIM_THRESHOLD_``, and the page faults of 50 arrays of 1 MiB, each freed at once."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        np.ones(1 << 17)
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.slow
def test_dask_workers_reuse_freed_arrays(dask_cluster):
    """Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536, under which glibc maps each
    array over 128 KiB anew and faults it in: a shard took twice as long on a Dask worker as on a
    local one. A prepared worker reuses them."""
    distributed = pytest.importorskip("distributed")
    with distributed.Client(dask_cluster) as client, tasks.executor(cluster=client):
        found = client.run(faults_of_freed_arrays)
    assert len(found) == 2
    pages = 50 * (1 << 20) // os.sysconf("SC_PAGE_SIZE")
    for threshold, faults in found.values():
        assert threshold == "65536"   # the nanny's
        assert faults < pages // 20


def test_a_worker_keeps_the_free_heap_its_readers_may_hold(monkeypatch, tmp_path):
    """A prepared worker tells malloc what a task's readers may hold (RINGBOOK_MEMORY_LIMIT),
    so that a task of that size reuses the heap the last one freed (see test_system)."""
    kept = []
    monkeypatch.setattr(tasks, "reuse_freed_blocks", kept.append)
    monkeypatch.setattr(tasks, "_warm_up", lambda: None)
    monkeypatch.setattr(tasks, "_prepared", False)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    for limit, expected in (("128M", 128 << 20), ("3G", 3 << 30), ("not a size", 0)):
        monkeypatch.setenv("RINGBOOK_MEMORY_LIMIT", limit)
        tasks._prepared = False
        tasks.prepare_worker()
        assert kept.pop() == expected


_A_NOTEBOOKS_WORKER = textwrap.dedent("""
    import os
    from ringbook.engine import tasks
    with tasks.executor(workers=1) as pool:
        print(*tasks.run_tasks(pool, os.getenv, [("OPENBLAS_NUM_THREADS",)]),
              len(tasks.run_tasks(pool, os.listdir, [("/proc/self/task",)])[0]))
""")


def test_a_notebooks_local_worker_starts_no_blas_threads():
    """A pool started where the main module has no file (a notebook, ``python -c``): its workers
    load numpy only once prepared, so they start with one OpenBLAS thread (each of which spun
    about 0.15 s of CPU in every worker)."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counts threads in /proc")
    environment = {name: value for name, value in os.environ.items() if name != "OPENBLAS_NUM_THREADS"}
    run = subprocess.run([sys.executable, "-c", _A_NOTEBOOKS_WORKER], env=environment, capture_output=True,
                         text=True, timeout=300, check=True)
    assert run.stdout.split() == ["1", "1"]   # the variable, and the worker's one thread


_COMPILED_BY_A_SHARD = textwrap.dedent("""
    import sys, tempfile
    from pathlib import Path
    from ringbook.engine import batch, snapshots, tasks
    from ringbook.engine.inputs import sources
    from ringbook.kernels import orders, snapshots as kernels

    def compiled():
        return {(module.__name__, name): len(dispatcher.signatures) for module in (snapshots, kernels, orders)
                for name, dispatcher in vars(module).items() if hasattr(dispatcher, "signatures")}

    tasks.prepare_worker()
    warm = compiled()
    for path in sys.argv[1:]:
        batch.snapshot_task(sources([Path(path)])[0], tempfile.mkdtemp(), 10, 10**9, "1s", "csv")
    print(sorted(name for key, count in compiled().items() if count != warm[key] for name in key[1:]))
""")


@pytest.mark.slow   # a fresh process compiles the kernels when the disk cache is cold: 25 s
def test_a_prepared_worker_compiles_no_snapshot_kernel_for_its_shards(shared_data):
    """The warm-up compiles what a shard runs (LOBSTER's reconciled replay and a growing order table
    included): a first shard on a worker does not stop to compile them. Only its reader's kernels
    are left to compile."""
    paths = [shared_data / "lobster/AMZN_2012-06-21_34200000_57600000_message_1.csv",
             shared_data / "binance/spot_btcusdt_20240808.gz"]
    found = subprocess.run([sys.executable, "-c", _COMPILED_BY_A_SHARD, *map(str, paths)], capture_output=True,
                           text=True, timeout=600, env={**os.environ, "RINGBOOK_MEMORY_LIMIT": "256K"})
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"


def whole_file_shards(source, out_dir, levels, interval_ns, interval_text, format):
    """The reference of a streamed shard: its file read whole, its symbols taken one after another."""
    from ringbook.kernels.snapshots import time_span

    feed, orderbook, exchange = read_source(source)
    shards = []
    for symbol, events in batch.symbol_events(feed):
        pieces = snapshots.snapshot_pieces(feed, symbol, interval_ns, levels, exchange=exchange, orderbook=orderbook)
        name = feed.instruments.name_of(symbol)
        output = snapshots.output_name(source.name, name, levels, interval_text, format)
        tally = snapshots.Tally()
        snapshots.write_snapshots(tally.passing(pieces), Path(out_dir) / output, format, durable=False)
        _, earliest, latest = time_span(events)
        shards.append(batch._shard_entry(name, output, tally, len(events), earliest, latest,
                                         None if orderbook is None else orderbook.levels))
    return shards


def shard_outputs(task, source, folder, format):
    """``(manifest entries of the shards, {output: bytes})`` of one of the shard paths of a task."""
    folder.mkdir()
    shards = task(source, folder, 5, 10**9, "1s", format)
    return shards, {shard["output"]: (folder / shard["output"]).read_bytes() for shard in shards}


@pytest.mark.parametrize("format", ["csv", "npz", "parquet"])
@pytest.mark.parametrize("memory_limit", ["1M", None])
def test_a_streamed_shard_is_the_shard_of_the_whole_file(shared_data, tmp_path, monkeypatch, format, memory_limit):
    """A Binance capture, a tardis file (of one symbol or two), a LOBSTER file (with its orderbook
    file beside it), a Kalshi file (ten markets) or a journal's streams is taken as it streams:
    the same shards, byte for byte, as from the whole file read first, also when it comes in
    hundreds of chunks."""
    if format == "parquet":
        pytest.importorskip("pyarrow")
    if memory_limit:
        monkeypatch.setenv("RINGBOOK_MEMORY_LIMIT", memory_limit)
    tardis = tmp_path / "deribit_incremental_book_L2_TST.csv"
    tardis.write_text("exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n" + TARDIS_ROWS)
    two = tmp_path / "deribit_incremental_book_L2_TWO.csv"
    two.write_text("exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
                   + "".join(f"{row}\n{row.replace('ex,TST,', 'ex,OTH,')}\n" for row in TARDIS_ROWS.splitlines()))
    journal = tmp_path / "journal"   # a stream of each, streamed from its capture written back to a file
    for kind, capture in (("binance", shared_data / "binance/spot_btcusdt_20240808.gz"),
                          ("kalshi", shared_data / "kalshi/kalshi_ticker.jsonl")):
        feeds_journal.import_capture(kind, capture, journal)
    paths = [shared_data / "binance/spot_btcusdt_20240808.gz", tardis, two, shared_data / "kalshi/kalshi_ticker.jsonl",
             synthetic.write_binance_capture(tmp_path / "capture.gz", diffs=3000),
             *sorted((shared_data / "lobster").glob("*_message_*.csv")),
             synthetic.write_lobster(tmp_path, messages=20_000)[0], journal]
    for k, source in enumerate(sources(paths)):
        whole = shard_outputs(whole_file_shards, source, tmp_path / f"whole{k}", format)
        streamed = shard_outputs(batch._streamed_shards, source, tmp_path / f"streamed{k}", format)
        assert streamed == whole and whole[0][0]["rows"] > 0
    for path, symbols in ((tardis, 1), (two, 2)):
        assert len(shard_outputs(whole_file_shards, sources([path])[0], tmp_path / path.stem, format)[0]) == symbols


@pytest.mark.parametrize("more_decimals_at", [None, 290])
def test_a_tardis_shard_reads_its_file_once_unless_a_later_block_has_more_decimals(tmp_path, monkeypatch,
                                                                                   more_decimals_at):
    """A snapshot shard of a tardis file takes its first block's scales and reads the file once.
    Where a later block has more decimals, what it wrote is discarded and the file read again,
    scales first: either way the outputs of the whole file, and nothing else in the folder."""
    from ringbook.engine.feeds import tardis

    limit = 2**17    # blocks of 8 KiB: the file is two, the second of its last 24 rows
    monkeypatch.setenv("RINGBOOK_MEMORY_LIMIT", str(limit))
    rows = TARDIS_ROWS.splitlines()
    if more_decimals_at is not None:
        rows[more_decimals_at] = rows[more_decimals_at].replace(".5,", ".25,")
    path = tmp_path / "deribit_incremental_book_L2_TST.csv"
    path.write_text(tardis.HEADER + "\n" + "\n".join(rows) + "\n")
    source = sources([path])[0]
    expected = shard_outputs(whole_file_shards, source, tmp_path / "whole", "csv")
    passes = []
    real = tardis.iter_blocks
    monkeypatch.setattr(tardis, "iter_blocks", lambda path, memory_limit: (
        passes.append(memory_limit) if memory_limit == limit else None) or real(path, memory_limit))
    out = tmp_path / "task"
    out.mkdir()
    entry = batch.snapshot_task(source, str(out), 5, 10**9, "1s", "csv")
    assert len(passes) == (1 if more_decimals_at is None else 3)
    assert entry["shards"] == expected[0]
    assert {file.name: file.read_bytes() for file in out.iterdir()} == expected[1]


def test_a_malformed_line_met_while_streaming_fails_the_shard_and_leaves_nothing(shared_data, tmp_path,
                                                                                  monkeypatch):
    """The reader's error (file, line, field) as from the whole file, after chunks were written out."""
    monkeypatch.setenv("RINGBOOK_MEMORY_LIMIT", "256K")
    lines = gzip.open(shared_data / "binance/spot_btcusdt_20240808.gz", "rt").read().splitlines()
    lines[-10] = lines[-10].replace('"b":', '"b":[["x"', 1)
    bad = tmp_path / "data" / "bad_btcusdt.gz"
    bad.parent.mkdir()
    bad.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    assert len(list(itertools.islice(stream_source(sources([bad])[0])[0], 3))) == 3
    report = batch.snapshot_files([bad], tmp_path / "out", levels=5, workers=0)
    [(path, failure)] = report.failed
    assert (path, failure.line, failure.field) == (str(bad), len(lines) - 9, "json")
    assert failure.error == f"{bad}, line {len(lines) - 9}, field 'json': not the expected JSON"
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [batch.LOCK, batch.MANIFEST]


def test_a_book_error_met_in_a_later_chunk_names_the_files_line(tmp_path, monkeypatch):
    """A LOBSTER add of an order id already in the book, thousands of lines in: its messages
    replayed as they stream in small chunks fail naming the file and its line. A shard with the
    orderbook file takes the file's rows, with no book: that line is ``ringbook check``'s to report."""
    monkeypatch.setenv("RINGBOOK_MEMORY_LIMIT", "256K")
    messages, orderbook = synthetic.write_lobster(tmp_path, messages=20_000)
    lines, rows = messages.read_text().splitlines(), orderbook.read_text().splitlines()
    add = next(k for k in range(15_000, len(lines)) if lines[k].split(",")[1] == "1")
    lines.insert(add + 1, lines[add])   # the same add again, with its orderbook row
    rows.insert(add + 1, rows[add])
    messages.write_text("\n".join(lines) + "\n")
    orderbook.write_text("\n".join(rows) + "\n")
    assert batch.snapshot_files([messages], tmp_path / "with_rows", levels=2, workers=0).ok
    assert len(list(lobster.iter_messages(messages))) > 2
    chunks = lobster.iter_messages(messages)
    with pytest.raises(BookError) as error:
        list(snapshots.stream_pieces(chunks, 10**9, 2))
    assert str(error.value) == f"{messages}, line {add + 2}: order id already in the book"


def test_a_file_of_several_symbols_streams_in_one_pass(tmp_path, monkeypatch):
    """A second symbol met in a later chunk: the file's shards, one per symbol, are those of the
    whole file, byte for byte, and nothing else is left behind."""
    monkeypatch.setenv("RINGBOOK_MEMORY_LIMIT", "256K")
    other = TARDIS_ROWS.replace("ex,TST,", "ex,OTH,")
    path = tmp_path / "deribit_incremental_book_L2_TWO.csv"
    path.write_text("exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
                    + TARDIS_ROWS * 40 + other + TARDIS_ROWS + other)
    source = sources([path])[0]
    assert len(list(stream_source(source)[0])) > 2
    entry = batch.snapshot_task(source, str(tmp_path), 5, 10**9, "1s", "csv")
    assert [shard["symbol"] for shard in entry["shards"]] == ["TST", "OTH"]
    whole = shard_outputs(whole_file_shards, source, tmp_path / "whole", "csv")
    assert entry["shards"] == whole[0]
    assert {shard["output"]: (tmp_path / shard["output"]).read_bytes() for shard in entry["shards"]} == whole[1]
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []


_MANY_SYMBOLS = textwrap.dedent("""
    import resource, sys
    from ringbook.engine import batch
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))   # below the file's symbols
    report = batch.snapshot_files([sys.argv[1]], sys.argv[2], levels=2, workers=0)
    print(len(report.entries[sys.argv[1]]["shards"]), report.ok)
""")


def test_a_file_of_more_symbols_than_the_open_file_limit(tmp_path):
    """One pass keeps an output open for each of a file's symbols: a worker raises its soft limit
    on open files (here 64) to its hard limit, and a file of 150 symbols gives its 150 shards."""
    path = tmp_path / "deribit_incremental_book_L2_OPTIONS.csv"
    rows = TARDIS_ROWS.splitlines()[:20]
    path.write_text("exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n" + "".join(
        f"{row.replace('ex,TST,', f'ex,S{k},')}\n" for row in rows for k in range(150)))
    import resource
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1024:
        pytest.skip("this machine's hard limit on open files is below the test's symbols")
    found = subprocess.run([sys.executable, "-c", _MANY_SYMBOLS, str(path), str(tmp_path / "out")],
                           capture_output=True, text=True, timeout=600)
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.split() == ["150", "True"]
    assert len(list((tmp_path / "out").glob("*.csv"))) == 150


@pytest.mark.parametrize("kind", ["binance", "lobster", "tardis of two symbols",
                                  pytest.param("journal of a binance capture", marks=pytest.mark.slow)])
def test_a_streamed_shard_holds_a_chunk_not_the_file(tmp_path, monkeypatch, kind):
    """The memory a file's shards take is its reader's bound, not the file's size: the whole file
    read first held several times as much here, and grows with the file. A journal stream is
    streamed from its capture written back to a temporary file."""
    limit = 2 << 20
    monkeypatch.setenv("RINGBOOK_MEMORY_LIMIT", str(limit))
    book = 0   # bytes of the book's order table: the stream's is at most 4 slots a live order
    if kind.startswith("journal"):
        capture = synthetic.write_binance_capture(tmp_path / "capture.gz", diffs=40_000)
        path = tmp_path / "journal"
        feeds_journal.import_capture("binance", capture, path)
    elif kind == "binance":
        path = synthetic.write_binance_capture(tmp_path / "capture.gz", diffs=40_000)
    elif kind.startswith("tardis"):
        path = tmp_path / "deribit_incremental_book_L2_TWO.csv"
        path.write_text("exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n" + "".join(
            f"{row}\n{row.replace('ex,TST,', 'ex,OTH,')}\n" for row in TARDIS_ROWS.splitlines()) * 150)
    else:
        path, _ = synthetic.write_lobster(tmp_path, messages=80_000)
        book = 4 * 32 * np.count_nonzero(lobster.read_messages(path).events["kind"] == KIND_L3_ADD)
    source = sources([path])[0]
    peaks = {}
    for task in (batch.snapshot_task, whole_file_shards):
        out = tmp_path / task.__name__
        out.mkdir()
        task(source, str(out), 5, 10**9, "1s", "csv")   # compiled before tracing
        tracemalloc.start()
        try:
            task(source, str(out), 5, 10**9, "1s", "csv")
            peaks[task.__name__] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # The readers' bound (LOBSTER's two files half of it each), the CSV writer's buffer, the book.
    assert peaks["snapshot_task"] < 2 * limit + CSV_PIECE + book, peaks
    assert peaks["snapshot_task"] * 4 < peaks["whole_file_shards"], peaks


@pytest.mark.slow
@pytest.mark.parametrize("format", ["parquet", "npz"])
def test_parquet_and_npz_same_bytes_across_executors(inputs, tmp_path, format):
    if format == "parquet":
        pytest.importorskip("pyarrow")
    batch.snapshot_files(inputs, tmp_path / "serial", levels=3, interval="500ms", format=format, workers=0)
    batch.snapshot_files(inputs, tmp_path / "processes", levels=3, interval="500ms", format=format, workers=2)
    files = folder_bytes(tmp_path / "serial")
    assert sum(name.endswith("." + format) for name in files) == len(inputs)
    assert folder_bytes(tmp_path / "processes") == files


# ---------------------------------------------------------------- faults

def stall_first_shard(marker_directory, events):
    """make_state that, the first time any worker calls it, records its pid and waits to be killed."""
    marker = Path(marker_directory) / "started"
    try:
        descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return make_state(events)
    os.write(descriptor, str(os.getpid()).encode())
    os.close(descriptor)
    time.sleep(120)
    return make_state(events)


def kill_when_started(marker_directory, killed):
    marker = Path(marker_directory) / "started"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text():
            pid = int(marker.read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("where, reduce", [("processes", None), ("processes", add), ("dask", None)])
def test_sigkilled_worker_is_retried_with_identical_results(inputs, reference, tmp_path, where, reduce, request):
    _, expected_states = reference
    killed = []
    killer = threading.Thread(target=kill_when_started, args=(tmp_path, killed))
    killer.start()
    where_to = {"workers": 2} if where == "processes" else {"cluster": request.getfixturevalue("dask_cluster")}
    states = batch.replay_files(inputs, spread_and_imbalance, functools.partial(stall_first_shard, str(tmp_path)),
                                reduce=reduce, **where_to)
    killer.join()
    assert len(killed) == 1 and killed[0] != os.getpid()
    if reduce is None:
        assert_same_states(states, expected_states)
    else:   # the shards in flight when the pool broke ran again, and were folded once each
        assert np.array_equal(states, sum(expected_states.values()))


def test_a_script_without_the_main_guard_is_told_so(inputs, tmp_path):
    """Spawned workers import the script that started them; one that calls replay_files at its
    top level makes each worker start workers, and die. The run stops after two pools died
    with nothing done, and says why (each shard ran three times, then failed as "its worker
    process died")."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        import numba
        import numpy as np
        import ringbook

        @numba.njit
        def count(book, events, i, state):
            state[0] += 1

        def make_state(events):
            return np.zeros(1, np.int64)

        ringbook.replay_files({[str(path) for path in inputs[:2]]!r}, count, make_state, workers=2)
    """))
    started = time.monotonic()
    run = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    # The traceback's last line; multiprocessing's resource tracker may warn after it, from its own process.
    told = [line for line in run.stderr.splitlines() if line.startswith("ringbook.engine.tasks.WorkersCannotStart")]
    assert told and told[-1].startswith(
        "ringbook.engine.tasks.WorkersCannotStart: the worker processes died before any task")
    assert 'under `if __name__ == "__main__":`' in told[-1]
    assert time.monotonic() - started < 120


def living_in_group(group):
    """Processes of a process group that still run (a zombie has ended: only its exit status is left)."""
    living = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            living.append(int(stat_file.parent.name))
    return living


@pytest.mark.slow
def test_ctrl_c_stops_the_run_and_a_rerun_finishes_it(shared_data, tmp_path):
    """SIGINT to the command and its workers (a terminal's Ctrl-C): it ends soon with status 130,
    leaves no worker, no partial file and no record of a file not done; a rerun does the rest."""
    inputs = []
    for k in range(16):
        for kind in ("message", "orderbook"):
            name = f"C{k:02d}_2012-06-21_34200000_57600000_{kind}_1.csv"
            shutil.copyfile(shared_data / f"lobster/AMZN_2012-06-21_34200000_57600000_{kind}_1.csv", tmp_path / name)
        inputs.append(str(tmp_path / f"C{k:02d}_2012-06-21_34200000_57600000_message_1.csv"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ringbook.engine.cli", "snapshots", *inputs, "--levels", "1",
               "--interval", "100ms", "--out", str(out), "--workers", "2", "--no-progress"]
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / batch.MANIFEST).exists() and time.monotonic() < deadline:   # the first file done
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGINT)
    stopped = time.monotonic()
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert time.monotonic() - stopped < 10
    time.sleep(0.5)
    assert living_in_group(run.pid) == []          # no worker left
    assert not [path.name for path in out.iterdir() if path.name.endswith(".tmp")]
    recorded = json.loads((out / batch.MANIFEST).read_text())["files"]
    assert 1 <= len(recorded) < len(inputs)
    for entry in recorded.values():
        assert entry["status"] == "done" and (out / entry["shards"][0]["output"]).exists()
    report = batch.snapshot_files(inputs, out, levels=1, interval="100ms", workers=2)
    assert report.ok and sorted(report.skipped) == sorted(recorded) and len(report.done) == len(inputs) - len(recorded)
    rows = {shard["rows"] for entry in report.entries.values() for shard in entry["shards"]}
    assert len(rows) == 1 and rows.pop() > 200_000    # the same day each time, whole


@pytest.mark.slow
def test_malformed_file_fails_alone(inputs, reference, tmp_path, capsys):
    bad = malformed_tardis(inputs, tmp_path)
    status = cli.main(["snapshots", *map(str, inputs[:2]), str(bad), str(inputs[2]), "--levels", "10",
                       "--out", str(tmp_path / "out"), "--workers", "2"])
    out, err = capsys.readouterr()
    assert status == 1
    assert "snapshots" in err and "4/4" in err   # the progress bar counts the failed file too
    assert f"FAILED {bad}, line 42, field 'side': must be bid or ask" in out
    manifest = json.loads((tmp_path / "out" / batch.MANIFEST).read_text())
    entry = manifest["files"][str(bad)]
    assert entry["status"] == "failed" and (entry["error"]["line"], entry["error"]["field"]) == (42, "side")
    written = folder_bytes(tmp_path / "out")
    expected_files, _ = reference
    for name, data in written.items():
        if name != batch.MANIFEST:
            assert data == expected_files[name]
    assert len(written) == 3 + 1


def malformed_tardis(inputs, directory):
    """A copy of the tardis input whose line 42 has side ``buy``."""
    bad = Path(directory) / "deribit_incremental_book_L2_BAD.csv"
    lines = (Path(inputs[-1]).read_text()).splitlines()
    lines[41] = lines[41].replace(",bid,", ",buy,").replace(",ask,", ",buy,")
    bad.write_text("\n".join(lines) + "\n")
    return bad


def test_replay_files_with_a_malformed_file_keeps_the_others(inputs, reference, tmp_path):
    _, expected_states = reference
    bad = malformed_tardis(inputs, tmp_path)
    with pytest.raises(batch.ReplayError) as raised:
        batch.replay_files([*inputs[:2], bad, *inputs[2:]], spread_and_imbalance, make_state, workers=0)
    assert f"1 of the files failed:\n  {bad}, line 42, field 'side': must be bid or ask" in str(raised.value)
    [(path, failure)] = raised.value.failures
    assert path == str(bad) and (failure.file, failure.line, failure.field) == (str(bad), 42, "side")
    assert_same_states(raised.value.results, expected_states)
    with pytest.raises(batch.ReplayError) as raised:
        batch.replay_files([bad, *inputs], spread_and_imbalance, make_state, reduce=add, workers=0)
    assert np.array_equal(raised.value.results, sum(expected_states.values()))   # the others' fold


@numba.njit
def mistyped_callback(book, events, i, state):
    state[0] += 1.5 * "x"


def missing_key_state(events):
    return {}["shard"]


@pytest.mark.parametrize("callback, state, kind", [(mistyped_callback, make_state, "TypingError"),
                                                   (spread_and_imbalance, missing_key_state, "KeyError")])
def test_a_users_error_is_named_by_its_type(inputs, callback, state, kind):
    """A user's callback that does not compile, or make_state that raises, fails every shard
    with the error's type and message (a KeyError's message alone is ``'shard'``)."""
    with pytest.raises(batch.ReplayError) as raised:
        batch.replay_files(inputs[:2], callback, state, workers=0)
    assert [path for path, _ in raised.value.failures] == [str(Path(path).resolve()) for path in inputs[:2]]
    for _, failure in raised.value.failures:
        assert failure.kind == kind and failure.error.startswith(f"{kind}: ") and "\x1b" not in failure.error
    if kind == "KeyError":
        assert f"{inputs[0]}: KeyError: 'shard'" in str(raised.value)


@pytest.mark.slow
def test_rerun_resumes_and_force_redoes(tmp_path):
    inputs = make_inputs(tmp_path / "in", lobster_files=2)
    out = tmp_path / "out"
    first = batch.snapshot_files(inputs, out, levels=5, workers=0)
    assert len(first.done) == len(inputs) and first.ok
    files = folder_bytes(out)
    manifest = json.loads(files[batch.MANIFEST])
    entry = manifest["files"][str(inputs[0])]
    assert entry["size"] == inputs[0].stat().st_size
    assert entry["blake3"] == blake3.blake3(inputs[0].read_bytes()).hexdigest()
    assert entry["shards"][0]["rows"] > 0 and entry["status"] == "done"
    assert entry["shards"][0]["first_boundary_ns"] >= entry["shards"][0]["first_event_ns"]
    # One output lost: only its input is redone, to the same bytes.
    lost = out / entry["shards"][0]["output"]
    lost.unlink()
    again = batch.snapshot_files(inputs, out, levels=5, workers=0)
    assert again.done == [str(inputs[0])] and len(again.skipped) == len(inputs) - 1
    assert folder_bytes(out) == files
    # An input that changed is redone; --force redoes everything.
    Path(inputs[-1]).write_text(Path(inputs[-1]).read_text() + TARDIS_ROWS.splitlines()[-1].replace(
        "1600000040", "1600000041") + "\n")
    assert batch.snapshot_files(inputs, out, levels=5, workers=0).done == [str(inputs[-1])]
    # So is a LOBSTER input whose orderbook file changed (the snapshots are reconciled with it).
    orderbook = Path(entry["orderbook"])
    os.utime(orderbook, ns=(orderbook.stat().st_atime_ns, orderbook.stat().st_mtime_ns + 10**9))
    assert batch.snapshot_files(inputs, out, levels=5, workers=0).done == [str(inputs[0])]
    # And one whose orderbook file is gone: it fails, naming the file (a book not seeded from it
    # would be wrong from the first row), until the file is back.
    orderbook.rename(orderbook.with_name("elsewhere.csv"))
    report = batch.snapshot_files(inputs, out, levels=5, workers=0)
    [(key, failure)] = report.failed
    assert key == str(inputs[0]) and report.done == [] and f"no orderbook file {orderbook.name}" in failure.error
    orderbook.with_name("elsewhere.csv").rename(orderbook)
    assert batch.snapshot_files(inputs, out, levels=5, workers=0).done == [str(inputs[0])]
    assert len(batch.snapshot_files(inputs, out, levels=5, workers=0, force=True).done) == len(inputs)
    # Other options are another run: nothing is skipped.
    assert len(batch.snapshot_files(inputs, out, levels=6, workers=0).done) == len(inputs)


def test_redo_is_unrecorded_before_its_outputs_are_rewritten(tmp_path):
    """The manifest a crash mid-redo leaves (inputs to redo forgotten, their outputs rewritten but
    not yet synced or recorded) makes the next run redo exactly those inputs."""
    inputs = make_inputs(tmp_path / "in", lobster_files=2)
    out = tmp_path / "out"
    assert batch.snapshot_files(inputs, out, levels=5, workers=0).ok
    files = folder_bytes(out)
    options = {"levels": 5, "interval": "1s", "format": "csv"}
    manifest = batch.Manifest(out, options)
    redo = sources(inputs[:2])
    manifest.forget(redo)
    saved = json.loads((out / batch.MANIFEST).read_text())
    assert set(saved["files"]) == {str(path) for path in inputs[2:]}
    # A worker rewrote an output (atomically, not synced) when the machine stopped.
    for source in redo:
        batch.snapshot_task(source, str(out), 5, 10**9, "1s", "csv")
    again = batch.snapshot_files(inputs, out, levels=5, workers=0)
    assert again.done == [str(path) for path in inputs[:2]] and len(again.skipped) == len(inputs) - 2
    assert folder_bytes(out) == files
    # Forgetting what is not recorded changes nothing (and writes nothing).
    before = (out / batch.MANIFEST).stat().st_mtime_ns
    batch.Manifest(out, {**options, "levels": 6}).forget(redo)
    assert (out / batch.MANIFEST).stat().st_mtime_ns == before


def test_outputs_and_manifest_written_atomically_without_strays(tmp_path):
    inputs = make_inputs(tmp_path / "in", lobster_files=1)
    out = tmp_path / "out"
    out.mkdir()
    # What a run killed mid-write left: removed by the next run; a file of the user's is not.
    (out / ".capture.gz.0123456789ab.tmp").write_bytes(b"torn")
    (out / "notes.tmp").write_bytes(b"mine")
    umask = os.umask(0o027)
    try:
        report = batch.snapshot_files(inputs, out, levels=3, workers=0)
    finally:
        os.umask(umask)
    assert report.ok
    names = sorted(path.name for path in out.iterdir())
    assert [name for name in names if name.endswith(".tmp")] == ["notes.tmp"]
    assert len(names) == 3 + sum(len(entry["shards"]) for entry in report.entries.values())   # manifest, lock
    # Modes as a new file's under the umask (others in the group read them), not a temporary file's.
    assert {stat.S_IMODE((out / name).stat().st_mode) for name in names if name != "notes.tmp"} == {0o640}


def test_manifest_saved_at_intervals_and_at_the_end(tmp_path, monkeypatch):
    """Thousands of inputs: saving the whole manifest after each would cost more than they do."""
    monkeypatch.setattr(batch.Manifest, "SAVE_EVERY", 3600.0)
    manifest = batch.Manifest(tmp_path, {"levels": 1})
    inputs = [Source(f"/data/day{k}.csv", "tardis") for k in range(50)]
    for source in inputs:
        manifest.record(source, {"status": "done", "shards": []})
    def saved():
        return list(json.loads((tmp_path / batch.MANIFEST).read_text())["files"])
    assert saved() == [inputs[0].key]                 # the first at once, the others at the next save
    manifest.flush()
    assert saved() == sorted(source.key for source in inputs)
    before = (tmp_path / batch.MANIFEST).stat().st_mtime_ns
    manifest.flush()                                  # nothing new: nothing written
    assert (tmp_path / batch.MANIFEST).stat().st_mtime_ns == before


def test_a_workers_leftover_is_removed_when_the_run_ends(tmp_path, monkeypatch):
    """A worker killed mid-write leaves its temporary file; its shard runs again under another name."""
    inputs = make_inputs(tmp_path / "in", lobster_files=1)
    task = batch.snapshot_task

    def killed_once_mid_write(source, out_dir, *options):
        stray = Path(out_dir) / f".{Path(source.path).name}.0123456789ab.tmp"
        if not stray.exists():
            stray.write_bytes(b"torn")
        return task(source, out_dir, *options)

    monkeypatch.setattr(batch, "snapshot_task", killed_once_mid_write)
    assert batch.snapshot_files(inputs, tmp_path / "out", levels=3, workers=0).ok
    assert not [path.name for path in (tmp_path / "out").iterdir() if path.name.endswith(".tmp")]


def test_a_full_disk_fails_the_files_that_do_not_fit_and_a_rerun_does_them(tmp_path, small_filesystem):
    """A real small filesystem filled during the run: the outputs that fit are done and recorded, the
    others fail naming their file, nothing partial is left, and once there is room a rerun does the rest."""
    inputs = make_inputs(tmp_path / "in", lobster_files=3)
    options = {"levels": 25, "interval": "10ms", "workers": 0}
    assert batch.snapshot_files(inputs, tmp_path / "reference", **options).ok
    expected = folder_bytes(tmp_path / "reference")
    disk = small_filesystem("16m")
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler.write_bytes(bytes(free - sum(map(len, expected.values())) // 2))   # room for about half
    out = disk / "out"
    report = batch.snapshot_files(inputs, out, **options)
    assert report.done and report.failed
    for path, failure in report.failed:
        assert failure.error.startswith("OSError: [Errno 28] No space left on device") and str(out) in failure.error
    assert not [path.name for path in out.iterdir() if path.name.endswith(".tmp")]
    written = folder_bytes(out)
    recorded = json.loads(written.pop(batch.MANIFEST))["files"]
    assert {key for key, entry in recorded.items() if entry["status"] == "done"} == set(report.done)
    assert all(written[name] == expected[name] for name in written)
    filler.unlink()
    again = batch.snapshot_files(inputs, out, **options)
    assert again.ok and sorted(again.skipped) == sorted(report.done)
    assert {name: data for name, data in folder_bytes(out).items() if name != batch.MANIFEST} == {
        name: data for name, data in expected.items() if name != batch.MANIFEST}


def test_one_run_at_a_time_writes_to_a_folder(tmp_path):
    inputs = make_inputs(tmp_path / "in", lobster_files=1)
    (tmp_path / "out").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from ringbook.engine.files import take_lock
        lock = take_lock({str(tmp_path / "out" / batch.LOCK)!r})
        print("held", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ValueError, match="another run is writing snapshots to this folder"):
            batch.snapshot_files(inputs, tmp_path / "out", levels=3, workers=0)
        assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [batch.LOCK]
    finally:
        holder.kill()
        holder.wait()
    assert batch.snapshot_files(inputs, tmp_path / "out", levels=3, workers=0).ok   # released with its process


# ---------------------------------------------------------------- inputs and `ringbook check`

def test_formats_and_lobster_pairs(tmp_path):
    inputs = make_inputs(tmp_path, lobster_files=1)
    assert [detect_format(path) for path in inputs] == ["lobster", "binance", "tardis"]
    orderbook = str(inputs[0]).replace("_message_", "_orderbook_")
    found = sources([orderbook, *inputs])
    assert [source.path for source in found] == [str(path) for path in inputs]
    assert found[0].orderbook == orderbook
    with pytest.raises(ValueError, match="cannot tell"):
        (tmp_path / "x.txt").write_text("hello\n")
        detect_format(tmp_path / "x.txt")


def test_an_input_given_twice_is_one_input(tmp_path):
    inputs = make_inputs(tmp_path, lobster_files=1)
    again = tmp_path / "again"
    again.symlink_to(tmp_path)
    found = sources([inputs[1], inputs[2], inputs[1], again / inputs[2].name])
    assert [source.path for source in found] == [str(inputs[1]), str(inputs[2])]


def test_inputs_of_one_file_name_are_refused_before_any_output(tmp_path):
    """Their outputs would share names: the last written would replace the first's."""
    inputs = make_inputs(tmp_path / "a", lobster_files=1)
    copy = tmp_path / "b" / inputs[-1].name
    copy.parent.mkdir()
    copy.write_bytes(inputs[-1].read_bytes())
    gzipped = tmp_path / "c" / (inputs[-1].name + ".gz")
    gzipped.parent.mkdir()
    gzipped.write_bytes(gzip.compress(inputs[-1].read_bytes()))
    out = tmp_path / "out"
    for other in (copy, gzipped):
        with pytest.raises(ValueError, match=f"{inputs[-1]} and {other} would write outputs of the same names"):
            batch.snapshot_files([*inputs, other], out, levels=3, workers=0)
        assert folder_bytes(out) == {}
    # Against the inputs the folder's manifest records: refused while the first one's file exists ...
    assert batch.snapshot_files(inputs, out, levels=3, workers=0).ok
    done = folder_bytes(out)
    with pytest.raises(ValueError, match="whose outputs this folder holds"):
        batch.snapshot_files([copy], out, levels=3, workers=0)
    assert folder_bytes(out) == done
    # ... and taken as moved once it is gone: its entry forgotten, its outputs the new input's.
    inputs[-1].unlink()
    report = batch.snapshot_files([copy], out, levels=3, workers=0)
    assert report.ok and str(inputs[-1]) not in report.entries
    manifest = json.loads((out / batch.MANIFEST).read_text())
    assert str(copy) in manifest["files"] and str(inputs[-1]) not in manifest["files"]
    assert str(inputs[0]) in manifest["files"]


def test_symbol_events_by_symbol_and_one_instruments_as_they_are():
    events = empty_events(6)
    events["symbol"] = [1, 0, 1, 3, 1, 0]
    instruments = Instruments(4)
    for name in "ABCD":
        instruments.intern(name)
    split = batch.symbol_events(Feed(events, np.arange(6) + 1, instruments, "x"))
    assert [symbol for symbol, _ in split] == [0, 1, 3]
    for symbol, part in split:
        assert part.tolist() == events[events["symbol"] == symbol].tolist()
    one = Instruments(1)
    one.intern("A")
    alone = empty_events(3)
    assert batch.symbol_events(Feed(alone, np.arange(3) + 1, one, "x"))[0][1] is alone
    assert batch.symbol_events(Feed(alone[:0], np.arange(0), one, "x")) == []


def test_content_hash_is_blake3_of_the_files_in_order(tmp_path):
    # Sizes around the reused read buffer (1 MiB): a read that kept stale bytes would show.
    data = np.random.default_rng(5).integers(0, 256, 3 * 2**20 + 7, np.uint8).tobytes()
    cuts = [0, 2**20 - 1, 2**20 + 1, 2**20 + 1, len(data)]   # one file is empty
    paths = []
    for k, (start, stop) in enumerate(zip(cuts, cuts[1:])):
        paths.append(tmp_path / f"part{k}")
        paths[-1].write_bytes(data[start:stop])
    assert content_hash(paths) == blake3.blake3(data).hexdigest()
    assert content_hash(paths[::-1]) != blake3.blake3(data).hexdigest()
    assert content_hash([]) == blake3.blake3(b"").hexdigest()


@pytest.mark.parametrize("text, ns", [("1s", 10**9), ("250ms", 250 * 10**6), ("1m", 60 * 10**9), ("5us", 5000)])
def test_parse_interval(text, ns):
    assert batch.parse_interval(text) == ns


@pytest.mark.parametrize("text", ["0s", "1", "1.5s", "500ns", "-1s"])
def test_parse_interval_rejects(text):
    with pytest.raises(ValueError):
        batch.parse_interval(text)


@pytest.mark.slow
def test_check_many_files_lines_and_totals(tmp_path, capsys):
    inputs = make_inputs(tmp_path, lobster_files=2)[:3]
    status = cli.main(["check", *map(str, inputs), "--workers", "0", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and [entry["file"] for entry in report["files"]] == [str(path) for path in inputs]
    assert report["totals"] == {name: sum(entry[name] for entry in report["files"])
                                for name in ("events", "checked", "mismatches", "gaps")}
    assert report["totals"]["checked"] > 3000 and report["totals"]["mismatches"] == 0
    status = cli.main(["check", *map(str, inputs), "--workers", "0"])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert status == 0 and len(lines) == 4 and lines[-1].startswith("TOTAL    3 files: events ")
    assert "3/3" in captured.err and "check" in captured.err   # the progress bar, on stderr
    assert cli.main(["check", *map(str, inputs), "--workers", "0", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    # A folder: what it holds that has an exchange's truth (the tardis file has none).
    assert cli.main(["check", str(tmp_path), "--json"]) == 0
    assert [entry["file"] for entry in json.loads(capsys.readouterr().out)["files"]] == sorted(map(str, inputs))
    # A malformed file is reported on its own line; the others are still checked.
    bad = tmp_path / "BAD_2012-06-21_34200000_57600000_message_5.csv"
    rows = Path(inputs[0]).read_text().splitlines()
    rows[9] = rows[9].replace(",", ";", 1)
    bad.write_text("\n".join(rows) + "\n")
    status = cli.main(["check", str(bad), *map(str, inputs), "--workers", "0"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 2 and lines[0].startswith(f"ERROR    {bad}, line 10")
    assert sum(line.startswith("OK ") for line in lines) == 3


@pytest.mark.slow
def test_check_on_a_real_dask_cluster_reports_as_in_one_process(inputs, dask_cluster):
    """`ringbook check --cluster` against `dask scheduler` + two `dask worker` processes: the same
    report as in one process, a malformed file's error included."""
    bad = Path(inputs[0]).with_name("BAD_2012-06-21_34200000_57600000_message_5.csv")
    rows = Path(inputs[0]).read_text().splitlines()
    rows[9] = rows[9].replace(",", ";", 1)
    bad.write_text("\n".join(rows) + "\n")
    try:
        runs = [subprocess.run([sys.executable, "-m", "ringbook.engine.cli", "check", str(bad), *map(str, inputs),
                                *where, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
                for where in (["--workers", "0"], ["--cluster", dask_cluster])]
    finally:
        bad.unlink()
    assert [run.returncode for run in runs] == [2, 2], runs[1].stderr
    serial, cluster = (json.loads(run.stdout) for run in runs)
    assert cluster == serial
    assert serial["files"][0]["line"] == 10 and "error" in serial["files"][0]
    assert serial["totals"]["checked"] > 0 and serial["totals"]["mismatches"] == 0


@pytest.mark.slow
def test_dask_workers_without_ringbook_are_named_in_one_line(inputs, tmp_path):
    """A cluster whose workers cannot import ringbook: the command says so in one line and exits 2
    (it was Dask's traceback ending in `Exception: ImportError(...)`)."""
    missing = tmp_path / "site" / "ringbook"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError(\"No module named 'ringbook'\")\n")
    with dask_processes(tmp_path, workers=1, worker_environment={"PYTHONPATH": str(missing.parent)}) as address:
        run = subprocess.run([sys.executable, "-m", "ringbook.engine.cli", "snapshots", str(inputs[0]),
                              "--cluster", address, "--out", str(tmp_path / "out"), "--no-progress"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [
        "ringbook snapshots: the Dask workers could not get ready: ImportError(\"No module named 'ringbook'\"). "
        "Each worker needs ringbook and its dependencies installed, as this process has them "
        "(pip install 'ringbook[dask]')"]
    assert not (tmp_path / "out" / batch.MANIFEST).exists()


def hidden_from_the_worker(folder):
    """A command prefix that runs a process in a mount namespace of its own, with an empty tmpfs
    over ``folder``: it does not see what this process sees there (skips where not allowed)."""
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              'mount -t tmpfs tmpfs "$0" && exec "$@"', str(folder)]
    if os.geteuid() != 0 or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("a mount namespace of its own for a process needs root and unshare")
    return prefix


@pytest.mark.slow
def test_dask_workers_that_do_not_see_the_files_are_told_before_any_shard(tmp_path):
    """A worker that does not share the inputs' filesystem (here: its own empty tmpfs over their
    folder). Each shard failed with `No such file or directory`; the run now stops before any
    shard, saying what the workers must see. The output folder is checked the same way."""
    inputs = make_inputs(tmp_path / "data", lobster_files=1)
    out = tmp_path / "out"
    prefix = hidden_from_the_worker(tmp_path / "data")
    with dask_processes(tmp_path, workers=1, worker_prefix=prefix) as address:
        run = subprocess.run([sys.executable, "-m", "ringbook.engine.cli", "snapshots", *map(str, inputs),
                              "--cluster", address, "--out", str(out), "--no-progress"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        with pytest.raises(tasks.WorkersCannotStart, match="1 of the 1 Dask workers do not see "):
            batch.replay_files(inputs, spread_and_imbalance, make_state, cluster=address)
    first = sources(inputs)[0].path
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [
        f"ringbook snapshots: 1 of the 1 Dask workers do not see {first} (and 3 more of the 5 paths): the "
        "inputs and the output folder must be on a filesystem the workers share with this process, at the "
        "same paths"]
    assert not (out / batch.MANIFEST).exists()
    with dask_processes(tmp_path, workers=1, worker_prefix=hidden_from_the_worker(out)) as address:
        run = subprocess.run([sys.executable, "-m", "ringbook.engine.cli", "snapshots", *map(str, inputs),
                              "--cluster", address, "--out", str(out), "--no-progress"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and f"do not see {out / batch.LOCK}: " in run.stderr


@pytest.mark.slow
def test_callback_defined_in_a_script_reaches_workers(tmp_path):
    """A callback in ``__main__`` (a script or a notebook) is not importable: it travels by value."""
    inputs = make_inputs(tmp_path / "in", lobster_files=1)
    script = tmp_path / "research.py"
    script.write_text(textwrap.dedent(f"""
        import numba, numpy as np
        import ringbook
        from ringbook.kernels.book import best_bid

        @numba.njit
        def count_bids(book, events, i, state):
            price, _ = best_bid(book, events[i].symbol)
            if price > 0:
                state[0] += 1

        if __name__ == "__main__":
            states = ringbook.replay_files({[str(p) for p in inputs]!r}, count_bids,
                                           lambda events: np.zeros(1, np.int64), workers=2)
            print(sorted(int(state[0]) for state in states.values()))
    """))
    found = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert found.returncode == 0, found.stderr
    counts = json.loads(found.stdout.strip().splitlines()[-1])
    assert len(counts) == len(inputs) and min(counts) > 0


def test_a_lobster_file_shows_the_levels_of_its_orderbook_file(shared_data, tmp_path, capsys):
    """Asked for more levels than a LOBSTER file shows, the run says which of its snapshots' levels
    are empty; the manifest has the levels each shard shows."""
    amzn, aapl = (shared_data.resolve() / "lobster" / f"{name}_2012-06-21_34200000_57600000_message_{levels}.csv"
                  for name, levels in (("AMZN", 1), ("AAPL", 10)))   # a run names its inputs by their real paths
    assert cli.main(["snapshots", str(amzn), str(aapl), "--levels", "10", "--out", str(tmp_path),
                     "--workers", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert (f"{amzn}: its orderbook file shows 1 level a side: levels 2 to 10 of its snapshots are empty "
            "(LOBSTER leaves out their messages)") in out.splitlines()
    assert str(aapl) not in out
    entries = json.loads((tmp_path / batch.MANIFEST).read_text())["files"]
    assert [entries[str(path)]["shards"][0]["levels_shown"] for path in (amzn, aapl)] == [1, 10]
