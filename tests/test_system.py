import resource
import subprocess
import sys

import pytest

from ringbook.engine import system


def fake_caches(root, core, caches):
    """A sysfs ``cpu<core>/cache`` tree of ``(level, type, size)`` entries."""
    for number, (level, kind, size) in enumerate(caches):
        index = root / f"cpu{core}" / "cache" / f"index{number}"
        index.mkdir(parents=True)
        (index / "level").write_text(f"{level}\n")
        (index / "type").write_text(f"{kind}\n")
        (index / "size").write_text(f"{size}\n")


@pytest.mark.parametrize("size, expected", [("1024K", 1 << 20), ("2M", 2 << 20), ("524288", 1 << 19)])
def test_l2_cache_size_is_read_from_sysfs(tmp_path, size, expected):
    fake_caches(tmp_path, 3, [(1, "Data", "32K"), (1, "Instruction", "32K"), (2, "Unified", size),
                              (3, "Unified", "32768K")])
    assert system.l2_cache_bytes(3, root=tmp_path) == expected


@pytest.mark.parametrize("caches", [[], [(1, "Data", "32K"), (3, "Unified", "32768K")],
                                    [(2, "Unified", "lots")], [(2, "Instruction", "512K")]])
def test_l2_cache_size_is_none_when_the_kernel_does_not_say(tmp_path, caches):
    fake_caches(tmp_path, 0, caches)
    assert system.l2_cache_bytes(0, root=tmp_path) is None


def test_l2_cache_size_of_this_machine_is_plausible_or_unknown():
    size = system.l2_cache_bytes()
    assert size is None or 64 << 10 <= size <= 64 << 20


FAULTS_OF_FREED_ARRAYS = """
import resource, sys
import numpy as np
from ringbook.engine import system

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        held = [np.ones(size) for size in (1 << 20, 1 << 20, 1 << 19, 1 << 19)]   # a shard's: 8, 8, 4, 4 MiB
        del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
print(faults(), system.reuse_freed_blocks(), faults())
"""


@pytest.mark.parametrize("environment", [{"MALLOC_TRIM_THRESHOLD_": "65536"}, {}])
def test_a_worker_reuses_the_large_arrays_it_frees(environment):
    """With glibc's own thresholds a task holding several large arrays at once had most of
    them faulted in anew each time (a LOBSTER shard took a third longer); Dask's nanny starts
    its workers with MALLOC_TRIM_THRESHOLD_=65536, and then every array was (twice as long)."""
    import os
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc")
    clean = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    run = subprocess.run([sys.executable, "-c", FAULTS_OF_FREED_ARRAYS], env={**clean, **environment},
                         capture_output=True, text=True, timeout=120, check=True)
    before, changed, after = run.stdout.split()
    pages = 20 * (24 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert changed == "True"
    assert int(before) > pages // 8    # mapped or given back, and faulted in anew
    assert int(after) < pages // 20    # reused


FAULTS_OF_A_LARGE_TASK = """
import resource
import numpy as np
from ringbook.engine import system

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        held = [np.ones(2 << 20) for _ in range(6)]   # a task of 96 MiB: six arrays of 16 MiB
        del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

system.reuse_freed_blocks()
faults()
before = faults()
system.reuse_freed_blocks(128 << 20)
faults()
print(before, faults())
"""


def test_a_task_larger_than_the_kept_heap_reuses_it_when_its_size_is_given():
    """A task of 96 MiB gave back its heap beyond 64 MiB at its end, for the next to fault in
    anew (a 10-level LOBSTER shard took 74 ms instead of 45 ms in a worker that had taken
    other shards first); told a task's size, a process keeps that much free heap."""
    import os
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc")
    clean = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    run = subprocess.run([sys.executable, "-c", FAULTS_OF_A_LARGE_TASK], env=clean, capture_output=True,
                         text=True, timeout=120, check=True)
    before, after = (int(count) for count in run.stdout.split())
    pages = 10 * (96 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert before > pages // 40    # given back at each task's end, and faulted in anew
    assert after < pages // 200    # kept and reused


def test_allow_open_files_raises_the_soft_limit_to_the_hard_one():
    """In a real process whose soft limit on open files is 64: the call raises it to the hard limit."""
    script = ("import resource\n"
              "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
              "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
              "from ringbook.engine.system import allow_open_files\n"
              "limit = allow_open_files()\n"
              "print(limit, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n")
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    limit, soft, hard = (int(value) for value in found.stdout.split())
    assert limit == soft and (soft == hard or hard == resource.RLIM_INFINITY and soft == 64)
