"""``ringbook info``: what ringbook runs on, and what the machine lets it do."""

import json
import os
import platform
import sys

import llvmlite
import numba
import numpy

import ringbook.engine
from ringbook.engine import system
from ringbook.kernels import clock


def collect():
    """A dict of versions, CPU facts, clock calibration and runtime capabilities."""
    calibration = clock.calibrate()
    return {
        "ringbook": ringbook.engine.__version__,
        "python": platform.python_version(),
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "numpy": numpy.__version__,
        "cpu": system.cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": system.usable_cores(),
        "l2_cache_bytes": system.l2_cache_bytes(),
        "tsc_invariant": clock.TSC_INVARIANT,
        "clock_source": calibration.source,
        "ticks_per_ns": calibration.ticks_per_ns,
        "calibration_error": calibration.relative_error,
        "calibration_ms": calibration.duration_ns / 1e6,
        "memlock_limit_bytes": system.memlock_limit(),
        "mlock_available": system.can_lock_memory(),
        "affinity_available": hasattr(os, "sched_setaffinity"),
        "numba_cache_dir": numba.config.CACHE_DIR or "(beside each module, in __pycache__)",
    }


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    facts = collect()
    if args.json:
        json.dump(facts, sys.stdout)
        sys.stdout.write("\n")
        return 0
    width = max(map(len, facts))
    for key, value in facts.items():
        if key == "ticks_per_ns":
            value = f"{value:.6f}"
        elif key == "calibration_error":
            value = f"{value:.1e}"
        elif key == "calibration_ms":
            value = f"{value:.1f}"
        print(f"{key:<{width}}  {value}")
    return 0
