"""File readers: ringbook's feeds versus the plain way to read the same file.

Every figure is the time per line of the file, reading it from disk (page
cache) into events:

- ``feeds_binance``: :func:`ringbook.engine.feeds.binance.read_capture` (one njit pass,
  exact fixed point, synced) over an uncompressed Binance capture;
- ``binance_json_peer``: ``json.loads`` of each line's JSON after splitting off
  the receive time, and nothing else (no decimal conversion, no events): a
  lower bound for a per-line Python reader;
- ``feeds_lobster``: :func:`ringbook.engine.feeds.lobster.read_messages` over a LOBSTER
  message file (exact: the time column to ns as fixed point);
- ``lobster_loadtxt_peer``: ``numpy.loadtxt(delimiter=",")`` over the same file
  (floats: inexact times);
- ``feeds_tardis``: :func:`ringbook.engine.feeds.tardis.read_incremental` over a gzip
  tardis.dev ``incremental_book_L2`` file of 400,000 rows (synthetic: the shared sample
  has 15), larger than a block, so read twice (the scales, then the rows);
- ``tardis_pyarrow_peer``: ``pyarrow.csv.read_csv`` of the same file on one thread, as
  one worker has it: typed columns, prices as floats (inexact), no events.

The files are the real ones in ``../shared/data`` (or ``$RINGBOOK_SHARED_DATA``,
as the tests find them; decompressed to a temporary file), or a synthetic market
of the same formats when they are absent. The readers stream: these figures
include reading the file in blocks within the default memory limit.

Run: ``python perf/bm_feeds.py -o perf/results/feeds.json`` (``--fast`` for a quick look).
"""

import atexit
import gzip
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import Comparison, bench, run_subject, tardis_file

from ringbook.engine.feeds import binance, lobster, synthetic, tardis

SHARED_DATA = Path(os.environ.get("RINGBOOK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SCRATCH = Path(tempfile.mkdtemp(prefix="ringbook_bm_feeds_"))
atexit.register(shutil.rmtree, SCRATCH, True)   # each of pyperf's worker processes makes one


def input_files():
    """(uncompressed Binance capture, LOBSTER message file, data origin)."""
    capture = SHARED_DATA / "binance" / "spot_btcusdt_20240808.gz"
    messages = SHARED_DATA / "lobster" / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
    origin = "shared"
    if not (capture.is_file() and messages.is_file()):
        capture = synthetic.write_binance_capture(SCRATCH / "capture.gz", diffs=10_000)
        messages, _ = synthetic.write_lobster(SCRATCH, messages=50_000)
        origin = "synthetic"
    plain = SCRATCH / "capture.txt"
    plain.write_bytes(gzip.decompress(capture.read_bytes()))
    return plain, messages, origin


def count_lines(path):
    with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as file:
        return sum(1 for line in file if line.strip())


def time_read(loops, read, path):
    """``read(path)``, a reader of ours, ``loops`` times."""
    started = time.perf_counter()
    for _ in range(loops):
        read(path)
    return time.perf_counter() - started


def time_json(loops, path):
    started = time.perf_counter()
    for _ in range(loops):
        with open(path, "rb") as file:
            for line in file:
                _, _, document = line.partition(b" ")
                json.loads(document)
    return time.perf_counter() - started


def time_loadtxt(loops, path, header_rows):
    started = time.perf_counter()
    for _ in range(loops):
        np.loadtxt(path, delimiter=",", skiprows=header_rows)
    return time.perf_counter() - started


def time_pyarrow_csv(loops, path):
    from pyarrow import csv

    options = csv.ReadOptions(use_threads=False)
    started = time.perf_counter()
    for _ in range(loops):
        csv.read_csv(path, read_options=options)
    return time.perf_counter() - started


CAPTURE, MESSAGES, ORIGIN = input_files()
TARDIS = tardis_file()
TARDIS_LINES = count_lines(TARDIS)
CAPTURE_LINES = count_lines(CAPTURE)
MESSAGE_LINES = count_lines(MESSAGES)
HEADER_ROWS = 1 if MESSAGES.read_bytes()[:1].isalpha() else 0

# Compile (or load from the cache) and check the readers before timing starts.
assert len(binance.read_capture(CAPTURE)) > CAPTURE_LINES
assert len(lobster.read_messages(MESSAGES)) == MESSAGE_LINES - HEADER_ROWS
assert len(tardis.read_incremental(TARDIS)) >= TARDIS_LINES - 1

BENCHMARKS = {
    "feeds_binance": bench(time_read, binance.read_capture, CAPTURE, inner_loops=CAPTURE_LINES),
    "binance_json_peer": bench(time_json, CAPTURE, inner_loops=CAPTURE_LINES),
    "feeds_lobster": bench(time_read, lobster.read_messages, MESSAGES, inner_loops=MESSAGE_LINES),
    "lobster_loadtxt_peer": bench(time_loadtxt, MESSAGES, HEADER_ROWS, inner_loops=MESSAGE_LINES),
    "feeds_tardis": bench(time_read, tardis.read_incremental, TARDIS, inner_loops=TARDIS_LINES),
    "tardis_pyarrow_peer": bench(time_pyarrow_csv, TARDIS, inner_loops=TARDIS_LINES),
}
COMPARISONS = [
    Comparison("feeds_binance", "binance_json_peer",
               means="faster than a bare json.loads per line (which makes no events)"),
    Comparison("feeds_lobster", "lobster_loadtxt_peer",
               means="faster than numpy.loadtxt (inexact floats)", peer_package="numpy"),
    Comparison("feeds_tardis", "tardis_pyarrow_peer",
               means="gzip tardis incremental_book_L2 into exact events, vs pyarrow.csv on one thread "
                     "(typed columns, inexact floats)", peer_package="pyarrow"),
]

if __name__ == "__main__":
    run_subject("Feed readers", BENCHMARKS, COMPARISONS, metadata={"feeds_data": ORIGIN})
