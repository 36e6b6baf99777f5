"""What every pyperf script in ``perf/`` shares: one ``Runner`` with the versions
and machine in its metadata, and the ratio of each kernel to its peer printed at
the end of the same run.

A script builds its inputs and compiles its njit drivers at import time, so that
each pyperf worker process compiles (or loads from cache) before timing starts
and compile time is never measured.
"""

import platform

import llvmlite
import numba
import numpy
import pyperf

from ringbook.engine.system import cpu_model


def make_runner(**kwargs):
    """A ``pyperf.Runner`` whose results carry numba, llvmlite and numpy versions."""
    runner = pyperf.Runner(**kwargs)
    runner.metadata.update({
        "numba_version": numba.__version__,
        "llvmlite_version": llvmlite.__version__,
        "numpy_version": numpy.__version__,
        "cpu_model_name": cpu_model(),
        "machine": platform.machine(),
    })
    return runner


def report_ratios(benchmarks, pairs):
    """Print ``peer median / ours median`` for each ``(ours, peer)`` name pair.

    ``benchmarks`` maps names to what ``bench_time_func`` returned: a
    ``pyperf.Benchmark`` in the main process, ``None`` in workers (which print
    nothing).
    """
    if any(benchmarks.get(name) is None for pair in pairs for name in pair):
        return
    print()
    print("Ratios (peer median time / ours; higher is better for ours):")
    for ours, peer in pairs:
        ratio = benchmarks[peer].median() / benchmarks[ours].median()
        print(f"  {ours} vs {peer}: {ratio:.2f}x")
