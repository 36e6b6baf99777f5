"""``ringbook send (synthetic|FILE) --to HOST:PORT``: the engine's packets over UDP, for testing a receiver."""

import json
import sys

from ringbook.engine.feeds.udp import parse_address, send


def add_arguments(parser):
    parser.add_argument("source", help="synthetic, or a file as lobster:PATH, binance:PATH or kalshi:PATH")
    parser.add_argument("--to", required=True, help="HOST:PORT")
    parser.add_argument("--rate", type=float, default=200_000,
                        help="events per second (default 200,000; 0: as fast as possible)")
    parser.add_argument("--events", type=int, help="stop after this many events (synthetic: default 100,000)")
    parser.add_argument("--skip-every", type=int, default=0,
                        help="leave out every k-th packet on purpose (the receiver counts gaps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--symbols", type=int, default=16)
    parser.add_argument("--json", action="store_true")


def run(args):
    try:
        result = send(args.source, parse_address(args.to), rate=args.rate or None, events=args.events,
                      skip_every=args.skip_every, seed=args.seed, symbols=args.symbols)
    except (OSError, ValueError) as error:
        print(f"ringbook send: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"sent {result['packets']} packets ({result['events']} events) to {args.to} in "
              f"{result['seconds']:.2f} s; skipped {result['skipped']}")
    return 0
