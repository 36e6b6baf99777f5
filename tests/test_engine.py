"""The engine in this process: synthetic feed end to end, a user's callback, a failing worker,
backpressure, counters, a real exchange file against `ringbook check`'s book, memory locking."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

import ringbook
from ringbook.engine import counters as C
from ringbook.engine import pipeline
from ringbook.engine.engine import Engine, EngineConfig
from ringbook.engine.scheduler import WorkerError, assign_cores, Worker, parse_cpu_list, thread_costs
from ringbook.kernels import book as books

from ringbook.engine import journal

REPORT_KEYS = {"events", "throughput_eps", "latency_ns", "dropped", "gaps", "journal", "threads", "mlock"}


def run_engine(tmp_path, **options):
    options.setdefault("mlock", False)
    options.setdefault("out", str(tmp_path / "journal"))
    with Engine(**options) as engine:
        engine.start()
        report = engine.wait(timeout=120)
        return engine, report


@pytest.mark.slow
def test_synthetic_end_to_end_and_replay(tmp_path, monkeypatch):
    engine, report = run_engine(tmp_path, events=30_000, checkpoint_every=500, seed=3)
    assert REPORT_KEYS <= set(report)
    assert set(report["latency_ns"]) >= {"p50", "p90", "p99", "p999", "max"}
    assert set(report["journal"]) >= {"dir", "files", "records", "bytes", "last_durable_sequence"}
    assert set(report["mlock"]) >= {"locked_bytes", "error"}
    # a bounded job: every packet published reached the book, and its last packet may overshoot by a message
    assert 30_000 <= report["events"] < 30_000 + 15
    assert report["latency_ns"]["count"] == report["messages"]
    assert 0 < report["latency_ns"]["p50"] <= report["latency_ns"]["p99"] <= report["latency_ns"]["max"]
    assert report["dropped"] == 0 and report["errors"] == 0
    for name in ("feed", "book"):
        thread = report["threads"][name]
        assert {"core", "minor_faults", "major_faults", "voluntary_switches", "involuntary_switches"} <= set(thread)
    if len(os.sched_getaffinity(0)) >= 2:
        assert report["threads"]["feed"]["core"] != report["threads"]["book"]["core"]
        assert report["threads"]["feed"]["core"] is not None
        # the book consumer's core is its own: the journal's flusher runs elsewhere
        assert report["threads"]["book"]["core"] not in report["threads"]["journal"]["cores"]
    # the journal holds every raw message, and a replay reproduces every checkpoint
    from ringbook.engine.replay import replay
    result, book, _ = replay(report["journal"]["dir"])
    assert result["verify"]["ok"]
    assert result["events"] == report["events"]
    assert result["packets"] == report["messages"]
    assert result["checkpoints"]["matched"] == report["checkpoints"] >= report["messages"] // 500 - 1 > 20
    assert result["checkpoints"]["mismatched"] == 0
    assert result["gap_detail"]["book"] == report["book_gaps"]
    levels = np.zeros(50, np.int64), np.zeros(50, np.int64)
    assert pipeline.book_hash(book, *levels) == pipeline.book_hash(engine.book, *levels)
    # read in many small spans (as a long run's journal is), the replay is the same
    from ringbook.engine import replay as replay_module
    monkeypatch.setattr(replay_module, "SPAN_RECORDS", 97)
    again, book_again, _ = replay(report["journal"]["dir"])
    assert {key: again[key] for key in ("events", "packets", "records", "gaps", "checkpoints")} == \
        {key: result[key] for key in ("events", "packets", "records", "gaps", "checkpoints")}
    assert pipeline.book_hash(book_again, *levels) == pipeline.book_hash(book, *levels)


@pytest.mark.slow
def test_same_seed_same_book(tmp_path):
    first, _ = run_engine(tmp_path / "a", events=5000, seed=11, out="")
    second, _ = run_engine(tmp_path / "b", events=5000, seed=11, out="")
    third, _ = run_engine(tmp_path / "c", events=5000, seed=12, out="")
    assert first.book_snapshot("SYN0001") == second.book_snapshot("SYN0001")
    levels = np.zeros(20, np.int64), np.zeros(20, np.int64)
    assert pipeline.book_hash(first.book, *levels) == pipeline.book_hash(second.book, *levels)
    assert pipeline.book_hash(first.book, *levels) != pipeline.book_hash(third.book, *levels)


#: ``strategy``'s state: messages seen, the most bid levels seen, the message count at which it
#: raises (0: never), busy-work iterations per message, and the busy work's result.
MESSAGES, MOST_LEVELS, FAIL_AT, SPIN, SPUN = range(5)


@njit
def strategy(book, events, i, state):
    """The one callback of these tests: each new callback compiles the book loop again."""
    state[MESSAGES] += 1
    # int64, as the engine passes symbols: level_count is compiled once
    state[MOST_LEVELS] = max(state[MOST_LEVELS], books.level_count(book, np.int64(events[i].symbol), 1))
    if state[MESSAGES] == state[FAIL_AT]:
        raise ValueError("strategy failed on purpose")
    total = 0
    for k in range(state[SPIN]):
        total += k ^ state[SPUN]
    state[SPUN] = total & 7


def strategy_state(fail_at=0, spin=0):
    state = np.zeros(5, np.int64)
    state[FAIL_AT], state[SPIN] = fail_at, spin
    return state


def test_user_callback_runs_in_the_loop(tmp_path):
    state = strategy_state()
    _, report = run_engine(tmp_path, events=5000, out="", callback=strategy, callback_state=state)
    assert state[MESSAGES] == report["messages"]  # every synthetic message ends with FLAG_BATCH_END
    assert state[MOST_LEVELS] > 0


def test_raising_worker_stops_the_engine_after_flushing(tmp_path):
    state = strategy_state(fail_at=2000)
    with Engine(feed="synthetic", events=10**9, rate=200_000, mlock=False, out=str(tmp_path / "j"),
                callback=strategy, callback_state=state) as engine:
        engine.start()
        with pytest.raises(WorkerError, match="worker 'book' failed: ValueError: strategy failed on purpose"):
            engine.wait(timeout=60)
        report = engine.report()
    assert report["error"] and "book" in report["error"]
    # everything the feed put into the ring reached the journal
    verified = journal.verify(tmp_path / "j")
    assert verified["ok"]
    assert verified["streams"]["raw"]["records"] == engine.raw_ring.producer_position


def test_drop_policy_counts_and_journals_drops(tmp_path):
    state = strategy_state(spin=20_000)
    engine, report = run_engine(tmp_path, events=40_000, on_full="drop", ring_slots=64,
                                callback=strategy, callback_state=state)
    assert report["dropped"] > 0
    assert report["events"] + report["dropped_events"] >= 40_000
    from ringbook.engine.replay import replay
    result, _, _ = replay(report["journal"]["dir"])
    assert result["drops"] == report["dropped"]
    assert result["events"] == report["events"]
    assert result["checkpoints"]["mismatched"] == 0


def test_on_full_wait_loses_nothing(tmp_path):
    state = strategy_state(spin=5_000)
    _, report = run_engine(tmp_path, events=20_000, on_full="wait", ring_slots=64, out="",
                           callback=strategy, callback_state=state)
    assert report["dropped"] == 0 and report["full_waits"] > 0
    assert 20_000 <= report["events"] < 20_015


def test_counters_from_another_process(tmp_path):
    with Engine(feed="synthetic", duration=30, rate=100_000, mlock=False, out="", name=f"t{os.getpid()}") as engine:
        engine.start()
        import time
        deadline = time.monotonic() + 20
        while engine.stats()["book_events"] < 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        listed = subprocess.run([sys.executable, "-m", "ringbook.engine.cli", "stat", engine.name, "--json"],
                                capture_output=True, text=True, timeout=60)
        stats = engine.stats()
        engine.stop()
    assert listed.returncode == 0, listed.stderr
    seen = json.loads(listed.stdout)
    assert seen["state"] == "running" and seen["alive"] and seen["pid"] == os.getpid()
    assert 0 < seen["book_events"] <= stats["book_events"]
    assert {"feed", "book"} <= set(seen["threads"])
    assert stats["histogram"].count > 0
    assert not C.region_path(engine.name).exists()  # removed at close


def test_a_dead_engines_counters_are_recognised(tmp_path):
    name = f"dead{os.getpid()}"
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from ringbook.engine.counters import CounterRegion, RUNNING\n"
        f"r = CounterRegion({name!r}); r.set_state(RUNNING); print('up', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        assert C.read(name)["state"] == "running"
        child.kill()
        child.wait()
        snapshot = C.read(name)
        assert snapshot["state"] == "dead" and not snapshot["alive"]
    finally:
        child.kill()
        try:
            os.unlink(C.region_path(name))
        except FileNotFoundError:
            pass


def test_counters_reader_refuses_what_is_not_a_region(tmp_path):
    name = f"junk{os.getpid()}"
    path = C.region_path(name)
    path.write_bytes(b"\x00" * (C.WORDS * 8))
    try:
        with pytest.raises(C.CountersError, match="magic"):
            C.read(name)
        path.write_bytes(b"\x00" * 10)
        with pytest.raises(C.CountersError, match="expected 1024 bytes, found 10"):
            C.read(name)
    finally:
        os.unlink(path)


def assert_same_levels(book, expected, n_symbols):
    """Every level of both sides of every symbol, each side holding some."""
    for symbol in range(n_symbols):
        for side in (1, -1):
            want = np.zeros(8192, np.int64), np.zeros(8192, np.int64)
            got = np.zeros(8192, np.int64), np.zeros(8192, np.int64)
            held = books.top_levels(expected, symbol, side, *want)
            assert books.top_levels(book, symbol, side, *got) == held > 0
            assert (want[0][:held] == got[0][:held]).all() and (want[1][:held] == got[1][:held]).all()


@pytest.mark.slow
def test_binance_capture_ends_with_checks_book(shared_data, tmp_path):
    from ringbook.engine.check import price_ticks
    from ringbook.engine.feeds import binance
    from ringbook.kernels.replay import replay_events
    path = shared_data / "binance" / "spot_btcusdt_20240808.gz"
    engine, report = run_engine(tmp_path, feed=f"binance:{path}", out="")
    feed = binance.read_capture(path)
    n_symbols = max(len(feed.instruments), 1)
    expected = books.new_book(n_symbols=n_symbols, depth=2048, order_capacity=16,
                              ticks=price_ticks(feed.events, n_symbols))
    replay_events(expected, feed.events)
    assert report["events"] == len(feed.events)
    assert_same_levels(engine.book, expected, n_symbols)


@pytest.mark.parametrize("name", ["AAPL_2012-06-21_34200000_57600000_message_10.csv",
                                  "AMZN_2012-06-21_34200000_57600000_message_1.csv"])
def test_lobster_file_ends_with_replays_book(shared_data, tmp_path, name):
    """Every message through the ring into the book: the book a plain replay of the file makes,
    in an order table sized by the file's adds."""
    from ringbook.engine.feeds import lobster
    from ringbook.kernels.orders import order_slots_for
    from ringbook.kernels.replay import replay_events
    path = shared_data / "lobster" / name
    engine, report = run_engine(tmp_path, feed=f"lobster:{path}", out="")
    feed = lobster.read_messages(path)
    assert report["events"] == len(feed.events)
    assert order_slots_for(feed.events) <= len(engine.book.orders) < 2 * order_slots_for(feed.events)
    expected = books.new_book(n_symbols=1, depth=engine.book.prices.shape[2], order_capacity=order_slots_for(feed.events),
                              ticks=feed.instruments.table["tick"][:1])
    replay_events(expected, feed.events)
    assert_same_levels(engine.book, expected, 1)


def test_engine_is_exported():
    assert ringbook.Engine is Engine


def test_cores_fewer_than_spinners_means_no_spinning():
    workers = [Worker("feed", None, spins=True), Worker("book", None, spins=True), Worker("flusher", None)]
    notes, shared = assign_cores(workers, cpus=[0])
    assert notes and "no spinning" in notes[0]
    assert shared == [0]
    assert all(not worker.spins and worker.strategy[0] == 0 for worker in workers)
    workers = [Worker("feed", None, spins=True), Worker("book", None, spins=True)]
    assert assign_cores(workers, cpus=[0, 1]) == ([], [0, 1])
    assert [worker.cores for worker in workers] == [[0], [1]]
    assert all(worker.strategy[0] > 0 for worker in workers)


@pytest.mark.parametrize("cpus, book, feed, others", [([0, 1], [0], [1], [1]),
                                                       ([0, 1, 2, 3], [0], [1], [1, 2, 3]),
                                                       ([0], [0], [0], [0])])
def test_an_isolated_worker_keeps_its_core(cpus, book, feed, others):
    workers = [Worker("flusher", None), Worker("feed", None, spins=True),
               Worker("book", None, spins=True, isolated=True)]
    _, shared = assign_cores(workers, cpus=cpus)
    assert [worker.cores for worker in workers] == [others, feed, book]
    assert shared == others


def test_thread_costs_read_back_this_thread():
    import threading
    costs = thread_costs(threading.get_native_id())
    assert costs["cores"] == sorted(os.sched_getaffinity(0))
    assert parse_cpu_list("0-2,5") == [0, 1, 2, 5]


MLOCK_CHILD = (
    "import json, resource, sys, warnings\n"
    "resource.setrlimit(resource.RLIMIT_MEMLOCK, (int(sys.argv[1]), int(sys.argv[1])))\n"
    "from ringbook.engine.scheduler import lock_all_memory, MemoryLockWarning\n"
    "with warnings.catch_warnings(record=True) as caught:\n"
    "    warnings.simplefilter('always')\n"
    "    result = lock_all_memory()\n"
    "result['warned'] = [str(w.message) for w in caught if w.category is MemoryLockWarning]\n"
    "print(json.dumps(result))\n")


def _child_without_ipc_lock(limit):
    command = [sys.executable, "-c", MLOCK_CHILD, str(limit)]
    if os.geteuid() == 0:
        setpriv = "/usr/bin/setpriv"
        if not os.path.exists(setpriv):
            pytest.skip("root without setpriv: cannot drop CAP_IPC_LOCK for the child")
        command = [setpriv, "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock"] + command
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "setpriv" in done.stderr:
        pytest.skip(f"setpriv refused: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_mlock_eperm_says_how_to_allow_it():
    result = _child_without_ipc_lock(0)
    assert not result["locked"] and result["errno"] == 1
    assert "CAP_IPC_LOCK" in result["error"] and "ulimit -l" in result["error"]
    assert result["warned"] == [result["error"]]
    assert result["locked_bytes"] == 0


@pytest.mark.slow
def test_mlock_enomem_names_the_limit():
    result = _child_without_ipc_lock(64 * 1024)
    assert not result["locked"] and result["errno"] == 12
    assert "65536 bytes" in result["error"]
    assert result["locked_bytes"] == 0


@pytest.mark.parametrize("span_records", [65_536, 333])
def test_journal_feed_replays_a_run(tmp_path, monkeypatch, span_records):
    """Read in one span or in many (as a long journal is), the run is the same again."""
    from ringbook.engine import replay as replay_module
    monkeypatch.setattr(replay_module, "SPAN_RECORDS", span_records)
    first, report = run_engine(tmp_path, events=8000, seed=5, out=str(tmp_path / "first"))
    again, second = run_engine(tmp_path, feed=f"journal:{tmp_path / 'first'}", out=str(tmp_path / "second"))
    assert second["events"] == report["events"] and second["messages"] == report["messages"]
    levels = np.zeros(20, np.int64), np.zeros(20, np.int64)
    assert pipeline.book_hash(first.book, *levels) == pipeline.book_hash(again.book, *levels)
    _, bounded = run_engine(tmp_path, feed=f"journal:{tmp_path / 'first'}", out="", events=3000)
    assert 3000 <= bounded["events"] < 3000 + 15


@pytest.mark.slow
def test_full_disk_during_a_run_loses_nothing(tmp_path, small_filesystem):
    """A real 16 MiB tmpfs, filled during the run and freed a moment later."""
    import threading
    disk = small_filesystem("16m")
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler.write_bytes(b"\0" * (free - 1_000_000))  # room for about 1 MB of journal
    freed = threading.Timer(2.0, filler.unlink)
    freed.start()
    engine, report = run_engine(tmp_path, events=60_000, rate=100_000, out=str(disk / "j"))
    freed.join()
    assert report["journal"]["disk_errors"] > 0 and "No space left" in report["journal"]["last_disk_error"]
    assert report["dropped"] == 0
    from ringbook.engine.replay import replay
    result, _, _ = replay(disk / "j")
    assert result["verify"]["ok"]
    assert result["events"] == report["events"] >= 60_000
    assert result["checkpoints"]["mismatched"] == 0
    assert result["checkpoints"]["matched"] == report["checkpoints"]


def _fifo_allowed():
    """Whether this process may run a thread under SCHED_FIFO (tried in a throwaway thread)."""
    import threading
    allowed = []

    def attempt():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            allowed.append(True)
        except (OSError, AttributeError):
            pass

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    return bool(allowed)


def test_realtime_book_consumer(tmp_path):
    _, report = run_engine(tmp_path, events=5000, out="", realtime=True)
    book, feed = report["threads"]["book"], report["threads"]["feed"]
    assert feed["policy"] == "other"  # only the book consumer asks
    if len(os.sched_getaffinity(0)) < 2:
        assert book["policy"] == "other" and any("no SCHED_FIFO" in note for note in report["notes"])
    elif _fifo_allowed():
        assert book["policy"] == "fifo"
        assert not report["notes"]
    else:
        assert book["policy"] == "other" and any("SCHED_FIFO refused" in note for note in report["notes"])


def test_realtime_needs_a_core_of_its_own():
    workers = [Worker("feed", None, spins=True), Worker("book", None, spins=True, isolated=True, realtime=True)]
    notes, _ = assign_cores(workers, cpus=[0])
    assert not workers[1].realtime and any("no SCHED_FIFO" in note for note in notes)
    workers = [Worker("feed", None, spins=True), Worker("book", None, spins=True, isolated=True, realtime=True)]
    notes, _ = assign_cores(workers, cpus=[0, 1])
    assert workers[1].realtime and not notes
    # it parks after a short spin: RT throttling stops a SCHED_FIFO thread that never sleeps
    assert 0 < workers[1].strategy[0] < workers[0].strategy[0]


def test_memory_lock_ends_with_the_run(tmp_path):
    """mlockall(MCL_FUTURE) would lock every later mapping of the process (a journal read
    afterwards): the engine releases it when the run ends."""
    from ringbook.engine.scheduler import locked_bytes
    _, report = run_engine(tmp_path, events=3000, out="", mlock=True)
    if report["mlock"]["error"] is None:
        assert report["mlock"]["locked_bytes"] > 0
    assert locked_bytes() in (0, None)


def test_no_spinner_on_the_flushers_core():
    """On two cores the flusher shares the feed's core: the feed waits with backoff there.
    With a third core the flusher has one without a spinner, and the feed spins."""
    workers = [Worker("flusher", None), Worker("feed", None, spins=True),
               Worker("book", None, spins=True, isolated=True)]
    notes, shared = assign_cores(workers, cpus=[0, 1])
    assert not notes and shared == [1]
    assert [(worker.cores, worker.spins) for worker in workers] == [([1], False), ([1], False), ([0], True)]
    assert workers[1].strategy[0] == 0 and workers[1].strategy[1] > 1000   # yields, does not sleep
    workers = [Worker("flusher", None), Worker("feed", None, spins=True),
               Worker("book", None, spins=True, isolated=True)]
    notes, shared = assign_cores(workers, cpus=[0, 1, 2])
    assert not notes and workers[1].spins and workers[1].cores == [1] and workers[1].strategy[0] > 0


def test_ring_slots_from_the_command_line():
    import argparse

    from ringbook.engine import run as run_cli
    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    assert run_cli.config_from(parser.parse_args(["--ring-slots", "8192"])).ring_slots == 8192
    assert run_cli.config_from(parser.parse_args([])).ring_slots == EngineConfig().ring_slots == 65536
    with pytest.raises(ValueError, match="ring_slots must be a power of two"):
        EngineConfig(ring_slots=1000).validate()
