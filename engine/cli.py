"""The ``ringbook`` command line.

Each subcommand lives in its own module, which offers ``add_arguments(parser)``
and ``run(args) -> int`` (the exit status); this module only dispatches.
"""

import argparse
import importlib
import sys

from ringbook.engine.system import one_blas_thread

#: subcommand -> (module, one-line help)
COMMANDS = {
    "info": ("ringbook.engine.info", "versions, CPU, TSC calibration, mlock and affinity"),
    "check": ("ringbook.engine.check", "replay a LOBSTER or Binance file, verify the book against the exchange"),
    "run": ("ringbook.engine.run", "run the engine: feed -> ring -> book -> journal, with its report"),
    "replay": ("ringbook.engine.replay", "verify a run's journal, rebuild its book, check every checkpoint"),
    "stat": ("ringbook.engine.stat", "a running engine's live counters, from another process"),
    "send": ("ringbook.engine.send", "send the engine's packets over UDP (synthetic or a file)"),
    "journal": ("ringbook.engine.journal_cli", "journals: info, verify, cat, export, import"),
    "snapshots": ("ringbook.engine.snapshots", "book snapshots at interval boundaries of many files, locally or on Dask"),
    "ipc": ("ringbook.engine.ipc_cli", "serve shared-memory connections; the many-client scale test"),
    "subscribe": ("ringbook.engine.subscribe", "print or count the events a running engine publishes"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="ringbook", description="Numba-JIT market data engine.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(subparsers.add_parser(name, help=help_text, description=help_text))
        subparsers.choices[name].set_defaults(run=module.run)
    return parser


def main(argv=None):
    one_blas_thread()   # before the subcommand loads numpy: for this process and its workers
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
