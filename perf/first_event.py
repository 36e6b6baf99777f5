"""Time to first event: a fresh process imports ringbook and replays one event.

With Numba's compile cache warm (the first run below fills it), each run
starts a new interpreter that imports :mod:`ringbook.kernels.book` and
:mod:`ringbook.kernels.replay`, makes a book for 2048 symbols and replays one L2
event through :func:`ringbook.kernels.replay.replay_events`. Printed per run:

- ``process``: the whole process, interpreter start to exit, measured outside;
- ``import+first``: inside the process, from before the first ringbook import
  to after the first event is applied.

Target: ``process`` <= 1 s.

Run: ``python perf/first_event.py [runs]`` (5 by default).
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import time
started = time.perf_counter()
from ringbook.kernels.book import best_bid, new_book
from ringbook.kernels.events import BID, FLAG_BATCH_END, KIND_L2_SET, empty_events
from ringbook.kernels.replay import replay_events
book = new_book()
events = empty_events(1)
events[0]["kind"], events[0]["side"], events[0]["flags"] = KIND_L2_SET, BID, FLAG_BATCH_END
events[0]["price"], events[0]["quantity"] = 100, 5
replay_events(book, events)
assert best_bid(book, 0) == (100, 5)
print(time.perf_counter() - started)
"""


def run_once():
    started = time.perf_counter()
    output = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    return time.perf_counter() - started, float(output.strip().splitlines()[-1])


def main(runs=5):
    run_once()                                   # fills the compile cache if it is cold
    results = [run_once() for _ in range(runs)]
    for process, inside in results:
        print(f"process {process:.3f} s   import+first {inside:.3f} s")
    print(f"median: process {statistics.median(p for p, _ in results):.3f} s, "
          f"import+first {statistics.median(i for _, i in results):.3f} s (target: process <= 1 s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
