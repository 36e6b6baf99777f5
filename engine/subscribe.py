"""``ringbook subscribe NAME``: print or count the events a publisher offers, until N arrived or it ended."""

import json
import signal
import sys

from ringbook.engine import fanout


def add_arguments(parser):
    parser.add_argument("name", help="the publisher's name (ringbook run --publish NAME)")
    parser.add_argument("--count", type=int, default=None, help="stop after this many events")
    parser.add_argument("--policy", choices=("wait", "drop"), default="drop",
                        help="wait: lossless, paces the publisher; drop (default): lose what does not fit, "
                             "and be told how many")
    parser.add_argument("--timeout", type=float, default=None,
                        help="give up after this many seconds without an event (default: wait for ever)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object at the end (received, dropped, gaps) instead of events")


def run(args):
    try:
        subscriber = fanout.Subscriber(args.name, args.policy)
    except FileNotFoundError:
        print(f"ringbook subscribe: no publisher named {args.name!r}", file=sys.stderr)
        return 2
    stopped = []
    signal.signal(signal.SIGINT, lambda *_: stopped.append(True))
    timed_out = False
    with subscriber:
        while not stopped and (args.count is None or subscriber.received < args.count):
            wanted = 4096 if args.count is None else min(4096, args.count - subscriber.received)
            try:
                events = subscriber.receive(max_events=wanted, timeout=args.timeout if args.timeout else 0.2)
            except TimeoutError:
                if args.timeout:
                    timed_out = True
                    break
                continue
            if len(events) == 0:
                break
            if not args.json:
                for event in events:
                    print(" ".join(f"{field}={event[field]}" for field in events.dtype.names))
        summary = {**subscriber.summary(), "timed_out": timed_out}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"received {summary['received']}, dropped {summary['dropped']}, gaps {summary['gaps']}"
              + (", the stream ended" if summary["ended"] else ""), file=sys.stderr)
    return 0
