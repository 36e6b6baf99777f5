"""Where a test run spends its time compiling: an opt-in pytest plugin.

``RINGBOOK_COMPILE_REPORT=20 python -m pytest -n 0`` (with a fresh ``NUMBA_CACHE_DIR`` for a
cold run; ``-n 0``: in this process, not pytest-xdist's workers) listens to Numba's
``numba:compile`` events and prints, at the end of the run, the total compile time, then
the functions and the tests that took most, each function with its number of distinct
signatures. A function's time is its own: the compiles of
its callees, which happen within its own, are counted against them. Only this process
is measured, not the processes the tests start.
"""

import collections
import os
import time

from numba.core import event


class _CompileListener(event.Listener):
    """Adds each compile's own time (less its nested compiles) to its function and test."""

    def __init__(self):
        self.running = []  # [start, time of nested compiles] of each compile under way
        self.by_function = collections.defaultdict(lambda: [0.0, set()])
        self.by_test = collections.Counter()
        self.compiles = 0

    def on_start(self, event_):
        self.running.append([time.perf_counter(), 0.0])

    def on_end(self, event_):
        started, nested = self.running.pop()
        elapsed = time.perf_counter() - started
        if self.running:
            self.running[-1][1] += elapsed
        function = event_.data["dispatcher"].py_func
        entry = self.by_function[f"{function.__module__}.{function.__qualname__}"]
        entry[0] += elapsed - nested
        entry[1].add(str(event_.data["args"]))
        self.by_test[os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]] += elapsed - nested
        self.compiles += 1


_listener = _CompileListener()


def pytest_configure(config):
    event.register("numba:compile", _listener)


def pytest_terminal_summary(terminalreporter):
    event.unregister("numba:compile", _listener)
    rows = int(os.environ.get("RINGBOOK_COMPILE_REPORT") or 20)
    write = terminalreporter.write_line
    terminalreporter.section("Numba compile time")
    total = sum(seconds for seconds, _ in _listener.by_function.values())
    write(f"{total:.1f} s in {_listener.compiles} compiles")
    write("seconds  signatures  function")
    ranked = sorted(_listener.by_function.items(), key=lambda item: -item[1][0])
    for name, (seconds, signatures) in ranked[:rows]:
        write(f"{seconds:7.2f}  {len(signatures):10d}  {name}")
    write("seconds  test")
    for test, seconds in _listener.by_test.most_common(rows):
        write(f"{seconds:7.2f}  {test}")
