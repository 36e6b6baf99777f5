"""``ringbook subscribe NAME``: print or count the records a publisher offers (events, and the
top-of-book changes of the engine's callback), until N arrived or it ended."""

import json
import signal
import sys

from ringbook.engine import fanout


def add_arguments(parser):
    parser.add_argument("name", help="the publisher's name (ringbook run --publish NAME)")
    parser.add_argument("--count", type=int, default=None,
                        help="stop after this many records (events and top-of-book changes)")
    parser.add_argument("--policy", choices=("wait", "drop"), default="drop",
                        help="wait: lossless, paces the publisher; drop (default): lose what does not fit, "
                             "and be told how many")
    parser.add_argument("--timeout", type=float, default=None,
                        help="give up after this many seconds without an event (default: wait for ever)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object at the end (received, events, tops, dropped, gaps) "
                             "instead of the records")


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
                events, tops = subscriber.receive_batch(max_records=wanted,
                                                        timeout=args.timeout if args.timeout else 0.2)
            except TimeoutError:
                if args.timeout:
                    timed_out = True
                    break
                continue
            if subscriber.ended:
                break
            if not args.json:
                _print_records(subscriber, events, tops)
        summary = {**subscriber.summary(), "timed_out": timed_out}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"received {summary['received']} ({summary['events']} events, {summary['tops']} top-of-book), "
              f"dropped {summary['dropped']}, gaps {summary['gaps']}"
              + (", the stream ended" if summary["ended"] else ""), file=sys.stderr)
    return 0


def _print_records(subscriber, events, tops):
    """One line per record, in the stream's order: ``event ...`` or ``top ...`` and its fields."""
    next_event = next_top = 0
    for kind in subscriber.kinds:
        if kind == fanout.kfan.RECORD_TOP:
            record, label = tops[next_top], "top"
            next_top += 1
        else:
            record, label = events[next_event], "event"
            next_event += 1
        print(label, " ".join(f"{field}={record[field]}" for field in record.dtype.names))
