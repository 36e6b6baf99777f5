import os
from pathlib import Path

import pytest

from ringbook.engine.tasks import numba_cache_dir

# One Numba cache for the tests, their subprocesses and the local pools' workers (the workers'
# own folder): a kernel one of them compiled the others load, on a cold run too.
os.environ["NUMBA_CACHE_DIR"] = numba_cache_dir()

#: Real exchange data beside the project (read-only ground truth); see its README.
SHARED_DATA = Path(os.environ.get("RINGBOOK_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    """The ``../shared/data`` folder, or a skip when this machine lacks it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real exchange data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def small_filesystem(tmp_path):
    """``mount(size)``: a real tmpfs of ``size`` (``"1m"``, ``"16m"``) under the test's folder, unmounted
    after the test; a skip where this machine does not let the tests mount one."""
    import subprocess

    mounted = []

    def mount(size):
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        path = tmp_path / f"tmpfs{len(mounted)}"
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"mount -t tmpfs is not allowed here: {result.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


if os.environ.get("RINGBOOK_COMPILE_REPORT"):
    pytest_plugins = ["tests.compile_report"]  # where a run spends its time compiling
