"""The ``ringbook`` command's dispatcher (``engine/cli.py``), in real processes."""

import os
import subprocess
import sys

import pytest

ONE_COMMAND = """
import contextlib, io, os
from ringbook.engine import cli
with contextlib.redirect_stdout(io.StringIO()):
    cli.main(["info"])   # loads numpy, numba and their OpenBLAS libraries
print(os.environ.get("OPENBLAS_NUM_THREADS"), len(os.listdir("/proc/self/task")))
"""


@pytest.mark.parametrize("given, expected", [(None, "1"), ("2", "2")])
def test_a_command_starts_no_blas_threads_unless_told_to(given, expected):
    """numpy's OpenBLAS threads spun for about 0.15 s of CPU in every process of a command, the
    workers it starts included (they inherit the variable); a value set by the user is kept."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counts threads in /proc")
    environment = {name: value for name, value in os.environ.items() if name != "OPENBLAS_NUM_THREADS"}
    if given:
        environment["OPENBLAS_NUM_THREADS"] = given
    run = subprocess.run([sys.executable, "-c", ONE_COMMAND], env=environment, capture_output=True, text=True,
                         timeout=120, check=True)
    value, threads = run.stdout.split()
    assert value == expected
    if expected == "1":
        assert threads == "1"    # the command's own thread, no BLAS thread beside it
    elif (os.cpu_count() or 1) > 1:
        assert int(threads) > 1   # the variable is what keeps them away
