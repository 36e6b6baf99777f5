"""Time to first event: a fresh process imports ringbook and replays one event.

With Numba's compile cache warm (the first run below fills it), each run
starts a new interpreter that imports :mod:`ringbook.kernels.book` and
:mod:`ringbook.kernels.replay`, makes a book for 2048 symbols and replays one L2
event through :func:`ringbook.kernels.replay.replay_events`. Timed per process:

- ``first_event_process``: the whole process, interpreter start to exit,
  measured outside;
- ``first_event_import_and_apply``: inside the process, from before the first
  ringbook import to after the first event is applied.

Target: ``first_event_process`` <= 1 s.

Run: ``python perf/first_event.py -p 2 -n 3 -o perf/results/first_event.json``
(every value is a new process: a few are enough).
"""

import subprocess
import sys
import time
from pathlib import Path

from harness import Limit, bench, run_subject

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


def time_process(loops):
    return sum(run_once()[0] for _ in range(loops))


def time_inside(loops):
    return sum(run_once()[1] for _ in range(loops))


BENCHMARKS = {
    "first_event_process": bench(time_process),
    "first_event_import_and_apply": bench(time_inside),
}
COMPARISONS = [
    Limit("first_event_process", at_most=1.0,
          means="a fresh process imports, makes a book and applies an event within 1 s"),
]


if __name__ == "__main__":
    run_once()                                   # fills the compile cache if it is cold
    run_subject("First event in a fresh process", BENCHMARKS, COMPARISONS)
