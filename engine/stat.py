"""``ringbook stat [NAME] [--watch]``: a running engine's counters, from another process, read-only.

Without NAME: the only engine whose counters exist, or the list of them.
A region whose engine died (its pid gone, or reused by another process) is
shown as ``dead``; ``--remove-dead`` deletes such regions.
"""

import json
import os
import sys
import time

from ringbook.engine import counters as C


def add_arguments(parser):
    parser.add_argument("name", nargs="?", help="the engine's name (see `ringbook run`'s output)")
    parser.add_argument("--watch", action="store_true", help="refresh every --interval seconds until Ctrl-C")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--remove-dead", action="store_true", help="delete the regions of dead engines")


def table(snapshot):
    """The live table of one snapshot."""
    s = snapshot
    lines = [f"engine {s['name']}  pid {s['pid']}  {s['state']}  up {s['elapsed_ns'] / 1e9:,.1f} s",
             f"  events      {s['book_events']:,} applied / {s['feed_events']:,} fed   "
             f"{s['throughput_eps']:,} ev/s   {s['feed_bytes']:,} bytes",
             f"  drops       {s['dropped_messages']} messages ({s['dropped_events']} events)   "
             f"gaps {s['book_gaps']} book, {s['packet_gaps']} packets   reorders {s['packet_reorders']}",
             f"  lag         book {s['book_lag']}   flusher {s['flusher_lag']}",
             f"  journal     {s['journal_records']:,} records  {s['journal_bytes']:,} bytes  "
             f"last durable {s['last_durable_sequence']}",
             f"  latency     p50 {s['p50_ns'] / 1e3:,.1f} us  p90 {s['p90_ns'] / 1e3:,.1f}  "
             f"p99 {s['p99_ns'] / 1e3:,.1f}  p99.9 {s['p999_ns'] / 1e3:,.1f}  max {s['max_ns'] / 1e3:,.1f}"
             f"  (last 10,000: p99 {s['window_p99_ns'] / 1e3:,.1f} us)",
             f"  VmLck       {s['vmlck_bytes']:,} bytes   checkpoints {s['checkpoints']}"]
    for name, thread in s["threads"].items():
        lines.append(f"  {name:<10} tid {thread['tid']}  cores {thread['cores']}  faults "
                     f"{thread['minor_faults']}/{thread['major_faults']}  switches "
                     f"{thread['voluntary_switches']}/{thread['involuntary_switches']}")
    return "\n".join(lines)


def run(args):
    names = C.list_regions()
    if args.remove_dead:
        for name in names:
            try:
                if C.read(name)["state"] == "dead":
                    os.unlink(C.region_path(name))
                    print(f"removed {C.region_path(name)}")
            except (OSError, C.CountersError):
                pass
        return 0
    name = args.name
    if name is None:
        if not names:
            print("ringbook stat: no engine counters found", file=sys.stderr)
            return 1
        if len(names) > 1:
            for other in names:
                try:
                    snapshot = C.read(other)
                    print(f"{other:<24} pid {snapshot['pid']:<8} {snapshot['state']}")
                except (OSError, C.CountersError) as error:
                    print(f"{other:<24} unreadable: {error}")
            return 0
        name = names[0]
    while True:
        try:
            snapshot = C.read(name)
        except FileNotFoundError:
            print(f"ringbook stat: no engine named {name!r} (running: {', '.join(names) or 'none'})",
                  file=sys.stderr)
            return 1
        except C.CountersError as error:
            print(f"ringbook stat: {error}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(snapshot))
        else:
            if args.watch:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(table(snapshot))
        sys.stdout.flush()
        if not args.watch or snapshot["state"] in ("dead", "stopped", "failed"):
            return 0
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
