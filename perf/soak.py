"""A long run of the engine (not in CI): memory flat, no drops, the journal verifies, replay matches.

1. Measures the maximum rate: the synthetic feed unpaced for ``--probe`` seconds, journal on.
2. Runs ``--minutes`` (default 10) paced at half that rate with ``--on-full drop``, sampling this
   process's resident memory (``VmRSS``) every second. Meanwhile a follower in a process of its
   own (:func:`ringbook.engine.replay.follow`), pinned to the cores the engine's book consumer
   does not hold, verifies and replays each raw segment as soon as the engine has sealed it and
   deletes it: the journal on disk stays a few segments long, so half the maximum rate fits a
   disk that could not hold ten minutes of it. The rate is lowered only when even that window
   would not fit in 80% of the disk's free space (it says so).
3. Checks: resident memory grows less than 1 MiB after the warm-up (``--warm-up`` seconds),
   no message dropped, every segment verified, every checkpoint of the engine stream matched by
   the replay, and the replay saw every event the engine applied.

``--out DIR`` writes the journal under ``DIR/soak`` (``run.json`` and the engine stream stay;
raw segments are deleted as they are checked). ``--keep`` keeps the whole raw journal: the
follower then deletes nothing and the rate is lowered, as before, until the whole run's journal
(measured in a short paced run) fits in 80% of the free space. Should the raw journal on disk
ever grow past that (a follower that cannot keep up), the engine is stopped and the soak fails.

Run: ``flock /tmp/ringbook-bench.lock python perf/soak.py [--minutes 10] [--out DIR] [--keep] [--realtime]``.
Exit status 0 when every check holds, 1 otherwise; prints one JSON summary.
"""

import argparse
import json
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ringbook.engine.engine import Engine
from ringbook.engine.journal import DEFAULT_SEGMENT_BYTES, DEFAULT_WRITE_BEHIND_BYTES
from ringbook.engine.scheduler import read_status
from ringbook.engine.system import usable_cores

MIB = 1 << 20
#: Raw segments a deleting follower has on disk at once when it keeps up: the one being written,
#: the one being checked, and room for falling behind by two.
WINDOW_SEGMENTS = 4


def resident_bytes():
    number, _, _ = read_status("/proc/self/status")["VmRSS"].partition(" ")
    return int(number) * 1024


def _probe(out, seconds, rate=None):
    """A short run's report (its journal removed)."""
    with Engine(feed="synthetic", duration=seconds, rate=rate, out=str(out / "probe"), mlock=False) as engine:
        engine.start()
        report = engine.wait()
    shutil.rmtree(out / "probe", ignore_errors=True)
    return report


def _follower(root, delete, nice, cores, ended, results):
    """The follower process: wait for its cores, pin itself, follow the journal, send the report."""
    from ringbook.engine.replay import follow
    try:
        if nice:
            os.nice(nice)
        chosen = cores.get()
        if chosen:
            os.sched_setaffinity(0, chosen)
        report, _, _ = follow(root, ended.is_set, delete=delete)
        report["follow"]["cores"] = sorted(os.sched_getaffinity(0))
        results.put(report)
    except BaseException as error:
        results.put({"error": f"{type(error).__name__}: {error}"})
        raise


def _follower_report(follower, results, timeout):
    """The follower's report, once it has caught up with the ended run; an error if it died first."""
    deadline = time.monotonic() + timeout
    while True:
        alive = follower.is_alive()
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            if not alive:
                return {"error": f"the follower ended without a report (exit code {follower.exitcode})"}
            if time.monotonic() > deadline:
                return {"error": f"no report from the follower within {timeout:.0f} s"}


def _book_cores(engine, timeout=10.0):
    """The cores of the engine's book consumer once it has pinned itself (read from its counters)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        book = engine.stats().get("threads", {}).get("book")
        if book and book["cores"] and book["tid"]:
            return book["cores"]
        time.sleep(0.05)
    return []


def _fit(out, maximum, minutes, keep):
    """The rate: half the maximum, lowered until what the journal needs on disk fits."""
    rate = maximum / 2
    free = shutil.disk_usage(out).free * 0.8
    window = WINDOW_SEGMENTS * DEFAULT_SEGMENT_BYTES + DEFAULT_WRITE_BEHIND_BYTES
    for _ in range(2):
        if keep:
            # Bytes per event depend on the rate (paced packets are smaller): measured at it.
            paced = _probe(out, 3.0, rate=rate)
            needed = rate * minutes * 60 * paced["journal"]["bytes"] / max(paced["events"], 1)
        else:
            needed = window
        if needed <= free:
            break
        print(f"soak: {rate:,.0f} events/s needs {needed / 1e9:.1f} GB of journal on disk and {out} has "
              f"{free / 0.8 / 1e9:.1f} GB free", file=sys.stderr)
        if not keep:
            raise SystemExit("soak: not even a window of a few segments fits on this disk")
        rate *= free / needed
    return rate, free


def main(argv=None):
    from ringbook.engine.replay import _raw_bytes_on_disk
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--probe", type=float, default=5.0)
    parser.add_argument("--warm-up", type=float, default=60.0)
    parser.add_argument("--out", help="journal directory (default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the whole raw journal (the rate is lowered until it fits the disk)")
    parser.add_argument("--realtime", action="store_true", help="the book consumer under SCHED_FIFO")
    parser.add_argument("--follower-nice", type=int, default=19,
                        help="the follower's niceness (default 19): the cores it shares go to the engine's "
                             "feed and flusher first, and the journal on disk grows while it falls behind")
    args = parser.parse_args(argv)
    scratch = None if args.out else tempfile.mkdtemp(prefix="ringbook-soak-")
    out = Path(args.out or scratch)
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "soak"
    context = multiprocessing.get_context("spawn")
    cores, results, ended = context.Queue(), context.Queue(), context.Event()
    follower = None
    cores_sent = False
    try:
        maximum = _probe(out, args.probe)["throughput_eps"]
        rate, budget = _fit(out, maximum, args.minutes, args.keep)
        print(f"soak: {rate:,.0f} events/s ({rate / maximum:.0%} of the maximum, {maximum:,.0f}) "
              f"for {args.minutes:g} minutes, raw segments {'kept' if args.keep else 'deleted once checked'}",
              file=sys.stderr)
        # started first: its imports and kernels load while the engine builds
        follower = context.Process(
            target=_follower, args=(str(journal), not args.keep, args.follower_nice, cores, ended, results),
            name="ringbook-soak-follower")
        follower.start()
        # Preallocated: a list growing once a second is itself a Python allocation, and under
        # mlockall a new allocator arena shows as a whole MiB of resident memory.
        sample_seconds = np.zeros(int(args.minutes * 60) + 600)
        sample_rss = np.zeros(len(sample_seconds), np.int64)
        n_samples = 0
        stopped = None
        peak_seen = 0
        with Engine(feed="synthetic", duration=args.minutes * 60, rate=rate, on_full="drop",
                    out=str(journal), realtime=args.realtime) as engine:
            engine.start()
            started = time.monotonic()
            book_cores = _book_cores(engine)
            cores.put([core for core in usable_cores() if core not in book_cores] or None)
            cores_sent = True
            while not engine.scheduler.done.wait(1.0):
                if n_samples < len(sample_seconds):
                    sample_seconds[n_samples], sample_rss[n_samples] = time.monotonic() - started, resident_bytes()
                    n_samples += 1
                on_disk = _raw_bytes_on_disk(journal)
                peak_seen = max(peak_seen, on_disk)
                if stopped is None and on_disk > budget:
                    stopped = f"the raw journal on disk reached {on_disk / 1e9:.1f} GB: stopped early"
                elif stopped is None and not follower.is_alive():
                    stopped = f"the follower ended early (exit code {follower.exitcode}): stopped early"
                if stopped is not None and not engine.scheduler.done.is_set():
                    print(f"soak: {stopped}", file=sys.stderr)
                    engine.scheduler.request_stop()
            report = engine.wait()
        ended.set()
        followed = _follower_report(follower, results, timeout=max(600.0, args.minutes * 60))
        follower.join(60)
        after_warm_up = sample_rss[:n_samples][sample_seconds[:n_samples] >= args.warm_up]
        growth = int(after_warm_up.max() - after_warm_up[0]) if len(after_warm_up) else None
        summary = {
            "max_rate_eps": maximum, "rate_eps": rate, "rate_share": rate / maximum, "minutes": args.minutes,
            "events": report["events"], "dropped": report["dropped"],
            "journal_bytes_left": report["journal"]["bytes"],
            "latency_ns": report["latency_ns"], "rss_first_bytes": int(sample_rss[0]) if n_samples else None,
            "rss_growth_after_warm_up_bytes": growth, "mlock": report["mlock"],
            "threads": report["threads"], "notes": report["notes"], "stopped_early": stopped,
        }
        if "error" in followed:
            summary["follower_error"] = followed["error"]
            summary["ok"] = False
        else:
            checkpoints = followed["checkpoints"]
            facts = followed["follow"]
            summary.update({
                "verify_ok": followed["verify"]["ok"], "verify_segments": followed["verify"]["segments"],
                "verify_problems": {key: followed["verify"][key] for key in ("corrupt", "torn", "gap_list", "errors")
                                    if followed["verify"][key]},
                "replayed_events": followed["events"],
                "checkpoints": {"engine_reported": report["checkpoints"], **checkpoints},
                "segments_processed": facts["segments"], "segments_while_running": facts["segments_while_running"],
                "bytes_processed": facts["bytes"], "segments_deleted": facts["deleted"],
                "peak_raw_journal_bytes": max(facts["peak_raw_bytes"], peak_seen),
                "follower_cores": facts.get("cores"), "follower_nice": args.follower_nice,
                "follower_waits": facts["waits"],
            })
            summary["ok"] = (stopped is None and growth is not None and growth < MIB and report["dropped"] == 0
                             and followed["verify"]["ok"] and checkpoints["mismatched"] == 0
                             and checkpoints["beyond_end"] == 0
                             and checkpoints["matched"] == checkpoints["total"] == report["checkpoints"]
                             and followed["events"] == report["events"])
        print(json.dumps(summary, indent=1))
        return 0 if summary["ok"] else 1
    finally:
        ended.set()
        if not cores_sent:
            cores.put(None)  # a follower still waiting for its cores: it ends
        if follower is not None and follower.is_alive():
            follower.join(30)
            if follower.is_alive():
                follower.kill()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
