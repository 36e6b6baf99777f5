"""A long run of the engine (not in CI): memory flat, no drops, the journal verifies, replay matches.

1. Measures the maximum rate: the synthetic feed unpaced for ``--probe`` seconds, journal on.
2. Runs ``--minutes`` (default 10) paced at half that rate with ``--on-full drop`` (less when
   the journal, measured in a short paced run, would not fit in 80% of the disk's free
   space: it says so), sampling this process's resident memory (``VmRSS``) every second.
3. Checks: resident memory grows less than 1 MiB after the warm-up (``--warm-up`` seconds),
   no message dropped, ``verify`` clean, every checkpoint of the replay matched.

Run: ``flock /tmp/ringbook-bench.lock python perf/soak.py [--minutes 10] [--out DIR] [--realtime]``.
Exit status 0 when every check holds, 1 otherwise; prints one JSON summary.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ringbook.engine.engine import Engine
from ringbook.engine.journal import verify
from ringbook.engine.replay import replay
from ringbook.engine.scheduler import read_status

MIB = 1 << 20


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--probe", type=float, default=5.0)
    parser.add_argument("--warm-up", type=float, default=60.0)
    parser.add_argument("--out", help="journal directory (default: a temporary one, removed)")
    parser.add_argument("--realtime", action="store_true", help="the book consumer under SCHED_FIFO")
    args = parser.parse_args(argv)
    scratch = None if args.out else tempfile.mkdtemp(prefix="ringbook-soak-")
    out = Path(args.out or scratch)
    try:
        maximum = _probe(out, args.probe)["throughput_eps"]
        rate = maximum / 2
        # The journal must fit: at half a fast machine's rate ten minutes are over 100 GB. Bytes
        # per event depend on the rate (paced packets are smaller), so they are measured at it.
        free = shutil.disk_usage(out).free * 0.8
        for _ in range(2):
            paced = _probe(out, 3.0, rate=rate)
            bytes_per_event = paced["journal"]["bytes"] / max(paced["events"], 1)
            needed = rate * args.minutes * 60 * bytes_per_event
            if needed <= free:
                break
            print(f"soak: {rate:,.0f} events/s would write {needed / 1e9:.0f} GB and {out} has "
                  f"{free / 0.8 / 1e9:.0f} GB free", file=sys.stderr)
            rate *= free / needed
        print(f"soak: {rate:,.0f} events/s ({rate / maximum:.0%} of the maximum, {maximum:,.0f}) "
              f"for {args.minutes:g} minutes", file=sys.stderr)
        samples = []
        with Engine(feed="synthetic", duration=args.minutes * 60, rate=rate, on_full="drop",
                    out=str(out / "soak"), realtime=args.realtime) as engine:
            engine.start()
            started = time.monotonic()
            while not engine.scheduler.done.wait(1.0):
                samples.append((time.monotonic() - started, resident_bytes()))
            report = engine.wait()
        after_warm_up = [rss for seconds, rss in samples if seconds >= args.warm_up]
        growth = (max(after_warm_up) - after_warm_up[0]) if after_warm_up else None
        verified = verify(out / "soak")
        replayed, _, _ = replay(out / "soak")
        summary = {
            "max_rate_eps": maximum, "rate_eps": rate, "rate_share": rate / maximum, "minutes": args.minutes,
            "journal_bytes": report["journal"]["bytes"],
            "events": report["events"], "dropped": report["dropped"],
            "latency_ns": report["latency_ns"], "rss_first_bytes": samples[0][1] if samples else None,
            "rss_growth_after_warm_up_bytes": growth, "verify_ok": verified["ok"],
            "checkpoints": replayed["checkpoints"], "mlock": report["mlock"],
            "threads": report["threads"], "notes": report["notes"],
        }
        summary["ok"] = (growth is not None and growth < MIB and report["dropped"] == 0 and verified["ok"]
                         and replayed["checkpoints"]["mismatched"] == 0
                         and replayed["checkpoints"]["matched"] == report["checkpoints"])
        print(json.dumps(summary, indent=1))
        return 0 if summary["ok"] else 1
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
