"""``ringbook run``: the engine's main job, in the foreground, with its report at the end.

With no options it runs the embedded synthetic feed for
:data:`~ringbook.engine.engine.DEFAULT_DURATION_S` seconds at
:data:`~ringbook.engine.engine.DEFAULT_RATE_EPS` events/s into a fresh
journal directory under the current one, and prints the report. SIGINT and
SIGTERM stop it cleanly: the rings drain, the journal is flushed, the report
is printed and the exit status is 0. A worker that fails stops it the same
way; the error names the worker and the exit status is 1.

While it runs: a progress bar on a bounded job (``--events``, a file;
``tqdm`` when installed, the ``progress`` extra, else a plain one), a one-line
live status otherwise; both on stderr, and only when stderr is a terminal.
"""

import json
import sys
import warnings

from ringbook.engine.engine import DEFAULT_DURATION_S, DEFAULT_RATE_EPS, Engine, EngineConfig
from ringbook.engine.scheduler import MemoryLockWarning, WorkerError


def add_arguments(parser):
    parser.add_argument("--feed", default="synthetic",
                        help="synthetic (default), lobster:PATH, binance:PATH, kalshi:PATH, journal:DIR "
                             "or udp:HOST:PORT")
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--events", type=int, help="stop after this many events")
    bound.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--out", help="journal directory (default: a fresh one under the current "
                                      "directory, printed at start); --out '' writes none")
    parser.add_argument("--cpus", help="cores to use, e.g. 0,1 (default: every usable core)")
    parser.add_argument("--no-mlock", action="store_true", help="do not lock memory (mlockall)")
    parser.add_argument("--realtime", action="store_true",
                        help="run the book consumer under SCHED_FIFO on a core of its own (root or CAP_SYS_NICE)")
    parser.add_argument("--durability", choices=("none", "interval", "batch"), default="none",
                        help="journal durability (default none: the page cache)")
    parser.add_argument("--on-full", choices=("wait", "drop"), default="wait",
                        help="when the ring is full: the feed waits (default) or drops and counts")
    parser.add_argument("--rate", type=float, help="synthetic feed: events per second (default: as fast "
                                                   "as possible; with no options at all, "
                                                   f"{DEFAULT_RATE_EPS:,})")
    parser.add_argument("--speed", type=float, help="file and journal feeds: recorded speed times this "
                                                    "(default: as fast as possible)")
    parser.add_argument("--ring-slots", type=int, default=EngineConfig.ring_slots,
                        help="slots of 1 KiB in the raw ring, a power of two (default %(default)s: "
                             "room for a consumer that falls behind; a smaller ring stays in the "
                             "CPU's caches and runs faster unpaced)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic feed seed")
    parser.add_argument("--symbols", type=int, default=16, help="synthetic feed: symbols")
    parser.add_argument("--name", help="the counters' name for `ringbook stat` (default run-<pid>-0)")
    parser.add_argument("--checkpoint-every", type=int, default=10_000,
                        help="raw messages between book checkpoints in the journal (0: none)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--publish", metavar="NAME",
                        help="offer every event the book applies to the subscribers of NAME "
                             "(`ringbook subscribe NAME`)")


def config_from(args):
    """The :class:`EngineConfig` of parsed arguments; the defaults of a bare ``ringbook run``."""
    config = EngineConfig(
        feed=args.feed, events=args.events, duration=args.duration, out=args.out,
        cpus=[int(c) for c in args.cpus.split(",")] if args.cpus else None, mlock=not args.no_mlock, realtime=args.realtime,
        durability=args.durability, on_full=args.on_full, rate=args.rate, speed=args.speed,
        seed=args.seed, symbols=args.symbols, name=args.name, checkpoint_every=args.checkpoint_every,
        ring_slots=args.ring_slots)
    unbounded = config.feed.split(":", 1)[0] in ("synthetic", "udp")
    if unbounded and config.events is None and config.duration is None:
        config.duration = DEFAULT_DURATION_S
        if config.feed == "synthetic" and config.rate is None:
            config.rate = DEFAULT_RATE_EPS
    return config


class Progress:
    """A progress bar (bounded job) or a one-line status, on stderr when it is a terminal."""

    def __init__(self, total, enabled):
        self.total = total
        self.enabled = enabled
        self.bar = None
        self.last = 0
        if enabled and total:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, unit="ev", unit_scale=True, file=sys.stderr)

    def __call__(self, stats):
        if not self.enabled:
            return
        events = stats.get("book_events", 0)
        if self.bar is not None:
            self.bar.update(events - self.last)
            self.last = events
            return
        status = (f"{events:,} events  {stats.get('throughput_eps', 0):,} ev/s  "
                  f"p99 {stats.get('p99_ns', 0) / 1000:,.1f} us  drops {stats.get('dropped_messages', 0)}  "
                  f"lag {stats.get('book_lag', 0)}/{stats.get('flusher_lag', 0)}")
        if self.total:
            status = f"{100 * events / self.total:5.1f}%  " + status
        sys.stderr.write("\r" + status[:120].ljust(120))
        sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")


def text_report(report):
    """The human report."""
    latency = report["latency_ns"]
    journal = report["journal"]
    lines = [f"ringbook run: {report['feed']}",
             f"  events          {report['events']:,} in {report['duration_s']:.2f} s "
             f"({report['throughput_eps']:,.0f} events/s), {report['messages']:,} messages",
             "  latency         " + "  ".join(f"{key} {latency[key] / 1000:,.1f} us"
                                              for key in ("p50", "p90", "p99", "p999", "max")),
             f"  drops           {report['dropped']} messages ({report['dropped_events']} events); "
             f"{report['full_waits']} waits on a full ring",
             f"  gaps            {report['gaps']} (book {report['book_gaps']}, packets {report['packet_gaps']}); "
             f"reorders {report['reorders']}; errors {report['errors']}",
             f"  page faults     {report['page_faults']['minor']} minor, {report['page_faults']['major']} major",
             f"  switches        {report['context_switches']['voluntary']} voluntary, "
             f"{report['context_switches']['involuntary']} involuntary",
             f"  VmLck           {report['mlock']['locked_bytes']} bytes"
             + (f" ({report['mlock']['error']})" if report["mlock"]["error"] else "")]
    for name, thread in report["threads"].items():
        where = f"core {thread['core']}" if thread["core"] is not None else f"cores {thread['cores']}"
        lines.append(f"  thread {name:<8} {where}{' (spins)' if thread.get('spins') else ''}"
                     f"{' (SCHED_FIFO)' if thread.get('policy') == 'fifo' else ''}, "
                     f"faults {thread['minor_faults']}/{thread['major_faults']}, "
                     f"switches {thread['voluntary_switches']}/{thread['involuntary_switches']}")
    for note in report["notes"]:
        lines.append(f"  note            {note}")
    if journal["dir"]:
        lines.append(f"  journal         {journal['dir']}: {len(journal['files'])} files, "
                     f"{journal['records']:,} records, {journal['bytes']:,} bytes, last durable sequence "
                     f"{journal['last_durable_sequence']}")
    if report.get("udp"):
        udp = report["udp"]
        lines.append(f"  udp             {udp['address']}: {udp['packets_received']} packets, SO_RCVBUF "
                     f"{udp['rcvbuf_requested']} requested, {udp['rcvbuf_granted']} granted")
    if report.get("stopped_by"):
        lines.append(f"  stopped by      {report['stopped_by']}")
    if report.get("error"):
        lines.append(f"  ERROR           {report['error']}")
    return "\n".join(lines)


def _publisher(args, config):
    """With ``--publish NAME``: a started :class:`ringbook.engine.fanout.Publisher`, made the book
    consumer's callback; else ``None``."""
    if not getattr(args, "publish", None):
        return None
    from ringbook.engine.fanout import Publisher

    if config.callback is not None:
        raise ValueError("--publish takes the book consumer's callback, which is already set")
    publisher = Publisher(args.publish)  # listens once the engine has compiled its callback
    config.callback, config.callback_state = publisher.engine_state()
    return publisher


def run(args):
    try:
        config = config_from(args)
        publisher = _publisher(args, config)
        engine = Engine(config)
    except (ValueError, TypeError, OSError) as error:
        print(f"ringbook run: {error}", file=sys.stderr)
        return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MemoryLockWarning)
        try:
            engine.start()
        except (OSError, ValueError) as error:
            engine.close()
            if publisher is not None:
                publisher.close()
            print(f"ringbook run: {error}", file=sys.stderr)
            return 2
    for warning in caught:
        print(f"ringbook run: warning: {warning.message}", file=sys.stderr)
    if publisher is not None:
        publisher.start()
        print(f"ringbook run: publishing to subscribers of {args.publish} "
              f"(`ringbook subscribe {args.publish}`)", file=sys.stderr)
    if engine.out is not None:
        print(f"ringbook run: journal {engine.out}", file=sys.stderr)
    print(f"ringbook run: counters {engine.name} (`ringbook stat {engine.name}`)", file=sys.stderr)
    progress = Progress(config.events or getattr(engine.source, "total_events", None),
                        sys.stderr.isatty() and not args.json)
    status = 0
    try:
        report = engine.run(on_progress=progress)
    except WorkerError as error:
        report = engine.report()
        status = 1
        print(f"ringbook run: {error}", file=sys.stderr)
    finally:
        progress.close()
        engine.close()
        if publisher is not None:
            report["published"] = publisher.stats()
            publisher.close()  # subscribers read what is left, then see the end
    if args.json:
        json.dump(report, sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        print(text_report(report))
    sys.stdout.flush()
    return status
