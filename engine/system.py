"""What this machine offers the runtime: CPU model, cores, caches, affinity and memory locking.

The scheduler pins threads and locks memory through these functions; ``ringbook
info`` reports them.
"""

import ctypes
import ctypes.util
import mmap
import os
import resource
from pathlib import Path


def cpu_model(path="/proc/cpuinfo"):
    """The CPU's model name, or the machine type when the kernel does not say."""
    try:
        with open(path) as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine


def usable_cores():
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def l2_cache_bytes(core=None, root="/sys/devices/system/cpu"):
    """The size of the level-2 cache of ``core`` (the first usable one by
    default), from Linux's sysfs; ``None`` when the kernel does not say."""
    core = usable_cores()[0] if core is None else core
    caches = Path(root) / f"cpu{core}" / "cache"
    try:
        for index in sorted(caches.glob("index*")):
            if (index / "level").read_text().strip() == "2" and \
                    (index / "type").read_text().strip() in ("Unified", "Data"):
                return _cache_size((index / "size").read_text().strip())
    except (OSError, ValueError):
        pass
    return None


def _cache_size(text):
    """Bytes in a sysfs cache size: ``"1024K"``, ``"2M"`` or plain bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def pin_current_thread(cores):
    """Restrict the calling thread to ``cores`` (Linux: affinity is per thread)."""
    os.sched_setaffinity(0, set(cores))


def memlock_limit():
    """The soft RLIMIT_MEMLOCK in bytes (``None`` when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return None if soft == resource.RLIM_INFINITY else soft


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def lock_memory(address, length):
    """``mlock`` a range so the hot path never takes a page fault. Raises ``OSError``."""
    if _libc().mlock(ctypes.c_void_p(address), ctypes.c_size_t(length)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mlock of {length} bytes failed: {os.strerror(errno)}")


def unlock_memory(address, length):
    _libc().munlock(ctypes.c_void_p(address), ctypes.c_size_t(length))


def can_lock_memory(length=mmap.PAGESIZE):
    """Whether ``mlock`` of ``length`` bytes succeeds here (tried on a scratch page)."""
    scratch = mmap.mmap(-1, length)
    address = ctypes.addressof(ctypes.c_char.from_buffer(scratch))
    try:
        lock_memory(address, length)
    except OSError:
        return False
    else:
        unlock_memory(address, length)
        return True
    finally:
        del address
        scratch.close()


#: glibc's ``mallopt`` parameters, and the thresholds a worker sets: blocks up to 32 MiB (the
#: most glibc allows) come from the heap and are reused, and free heap is kept up to what a
#: task holds and 64 MiB more (a threshold is a C int).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_REUSED_BLOCK = 32 << 20
_KEPT_FREE_HEAP = 64 << 20
_MALLOPT_MAX = (1 << 31) - 1


def reuse_freed_blocks(task_bytes=0):
    """Let glibc's malloc keep and reuse the large blocks a worker frees, ``task_bytes`` being
    about what one of its tasks holds at its peak; returns whether it could (False where
    malloc is not glibc's).

    glibc gives a block over 128 KiB a mapping of its own, faulted in page by page and
    unmapped when freed. It raises that threshold to the largest such block freed so far,
    but gives back free heap beyond twice the threshold: a shard that holds several large
    arrays at once has most of them faulted in anew at every shard. Setting any threshold in
    the environment (Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_``) turns the raising off
    too, and every large array is mapped anew. This sets the thresholds once for the
    process: the largest glibc allows for a reused block, and free heap kept up to
    ``task_bytes`` and 64 MiB more (glibc gives back the free heap beyond that when a task
    ends, and the next task faults it in anew).
    """
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):   # not glibc
        return False
    kept = min(max(task_bytes, 0) + _KEPT_FREE_HEAP, _MALLOPT_MAX)
    return bool(mallopt(_M_MMAP_THRESHOLD, _REUSED_BLOCK) and mallopt(_M_TRIM_THRESHOLD, kept))


def one_blas_thread():
    """One OpenBLAS thread, unless ``OPENBLAS_NUM_THREADS`` is set: for this process if it has
    not loaded numpy yet, and for the processes it starts. ringbook calls no BLAS, and each of
    OpenBLAS's threads spins for a while in every process that loads it (about 0.15 s of CPU a
    process), on the cores the work needs."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def allow_open_files():
    """Raise this process's limit on open files to the most it may have (its hard limit);
    returns the limit now. A file of many symbols has one output open per symbol while it
    streams, and the usual soft limit (1,024) is below the symbols of a market's file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):   # an unlimited hard limit some kernels refuse as a soft one
        return soft
    return hard
