"""Hot-path time: the CPU time-stamp counter, calibrated against CLOCK_MONOTONIC.

``tsc_now()`` reads the counter (``llvm.readcyclecounter``: ``rdtsc`` on x86-64)
in a few nanoseconds with no system call. ``stamp()`` is what kernels use to
timestamp events: the TSC where the CPU says it is invariant (``constant_tsc``
and ``nonstop_tsc``), else ``CLOCK_MONOTONIC`` in nanoseconds. ``calibrate()``
measures how many ticks make a nanosecond; a :class:`Calibration` converts
ticks to nanoseconds in Python, and its ``ns_per_tick`` goes into njit code
through :func:`ticks_to_ns`.

Wall-clock time is never read here: it belongs at the disk boundary.
"""

import time
from dataclasses import dataclass

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ringbook.kernels.jit_options import kernel

_CLOCK_MONOTONIC = 1  # Linux <time.h>


def _read_cpu_flags(path="/proc/cpuinfo"):
    try:
        with open(path) as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


CPU_FLAGS = _read_cpu_flags()

#: The TSC ticks at a constant rate whatever the frequency or sleep state of the
#: core, so it can measure time. Read once at import.
TSC_INVARIANT = {"constant_tsc", "nonstop_tsc"} <= CPU_FLAGS


@intrinsic
def _read_cycle_counter(typingctx):
    def codegen(context, builder, sig, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(64), []), "llvm.readcyclecounter")
        return builder.call(function, [])

    return types.int64(), codegen


@intrinsic
def _clock_gettime_ns(typingctx, clock_id):
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        timespec_type = ir.LiteralStructType([i64, i64])
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.IntType(32), [ir.IntType(32), timespec_type.as_pointer()]),
            "clock_gettime")
        timespec = cgutils.alloca_once(builder, timespec_type)
        clock = context.cast(builder, args[0], sig.args[0], types.int32)
        builder.call(function, [clock, timespec])
        seconds = builder.load(cgutils.gep_inbounds(builder, timespec, 0, 0))
        nanoseconds = builder.load(cgutils.gep_inbounds(builder, timespec, 0, 1))
        return builder.add(builder.mul(seconds, i64(1_000_000_000)), nanoseconds)

    return types.int64(clock_id), codegen


@kernel
def tsc_now():
    """The CPU's time-stamp counter, in ticks."""
    return _read_cycle_counter()


@kernel
def monotonic_ns():
    """``CLOCK_MONOTONIC`` in nanoseconds (the clock of ``time.perf_counter_ns``)."""
    return _clock_gettime_ns(_CLOCK_MONOTONIC)


@kernel
def stamp():
    """The hot-path timestamp in ticks: the TSC if invariant, else monotonic ns."""
    if TSC_INVARIANT:
        return _read_cycle_counter()
    return _clock_gettime_ns(_CLOCK_MONOTONIC)


@kernel
def ticks_to_ns(ticks, ns_per_tick):
    """A duration in ticks as nanoseconds (``ns_per_tick`` from a :class:`Calibration`)."""
    return ticks * ns_per_tick


@kernel
def _paired_sample(attempts):
    """(ticks, ns, window): the tightest of ``attempts`` stamp/monotonic pairs.

    The monotonic reading is bracketed by two stamps; the narrower the bracket,
    the less we know the two clocks were read at different instants.
    """
    best_ticks = 0
    best_ns = 0
    best_window = 1 << 62
    for _ in range(attempts):
        before = stamp()
        ns = _clock_gettime_ns(_CLOCK_MONOTONIC)
        after = stamp()
        window = after - before
        if window < best_window:
            best_window = window
            best_ticks = before + window // 2
            best_ns = ns
    return best_ticks, best_ns, best_window


@dataclass(frozen=True)
class Calibration:
    """Ticks of :func:`stamp` versus ``CLOCK_MONOTONIC`` nanoseconds.

    Attributes
    ----------
    source : str
        ``"tsc"``, or ``"monotonic"`` when the CPU lacks an invariant TSC (then
        a tick is a nanosecond).
    ticks_per_ns : float
        Rate of the tick counter.
    ns_per_tick : float
        ``1 / ticks_per_ns``: pass it to :func:`ticks_to_ns` from njit code.
    origin_ticks, origin_ns : int
        A pair of readings taken at the same instant, to map a stamp to
        ``CLOCK_MONOTONIC``.
    relative_error : float
        Bound on the rate's relative error at the end of calibration.
    rounds : int
        How many sample pairs were taken.
    duration_ns : int
        How long calibration took.
    """

    source: str
    ticks_per_ns: float
    origin_ticks: int
    origin_ns: int
    relative_error: float
    rounds: int
    duration_ns: int

    @property
    def ns_per_tick(self):
        return 1.0 / self.ticks_per_ns

    def to_ns(self, ticks):
        """A duration (or array of durations) in ticks, as nanoseconds (float)."""
        return ticks * self.ns_per_tick

    def to_monotonic_ns(self, ticks):
        """A stamp as ``CLOCK_MONOTONIC`` nanoseconds (int)."""
        return self.origin_ns + round((ticks - self.origin_ticks) * self.ns_per_tick)


def calibrate(max_ms=50.0, target_error=1e-6, min_ms=5.0):
    """Measure the tick rate of :func:`stamp` against ``CLOCK_MONOTONIC``.

    It takes paired readings of both clocks in rounds, each pair the tightest
    of several attempts, and refines the rate from the first pair to the
    latest until the error bound (the two pairs' uncertainty over the time
    between them) falls below ``target_error``, or ``max_ms`` has passed.

    Parameters
    ----------
    max_ms : float
        Upper bound on the time spent (the default keeps start-up short).
    target_error : float
        Relative error at which to stop early.
    min_ms : float
        Lower bound on the span measured, against a lucky early estimate.

    Returns
    -------
    Calibration
    """
    if not TSC_INVARIANT:
        origin_ticks = stamp()
        return Calibration("monotonic", 1.0, origin_ticks, origin_ticks, 0.0, 1, 0)
    _paired_sample(1)  # load or compile before the clock starts
    started = time.perf_counter_ns()
    origin_ticks, origin_ns, origin_window = _paired_sample(64)
    deadline = started + int(max_ms * 1e6)
    rounds, ticks_per_ns, error = 1, 0.0, float("inf")
    while True:
        pause_until = time.perf_counter_ns() + 1_000_000
        while time.perf_counter_ns() < pause_until:
            pass
        ticks, ns, window = _paired_sample(64)
        rounds += 1
        span_ns = ns - origin_ns
        ticks_per_ns = (ticks - origin_ticks) / span_ns
        # Each pair is uncertain by half its bracket, in ticks.
        error = (origin_window + window) / 2 / (ticks - origin_ticks)
        now = time.perf_counter_ns()
        if span_ns >= min_ms * 1e6 and error <= target_error:
            break
        if now >= deadline:
            break
    return Calibration("tsc", ticks_per_ns, origin_ticks, origin_ns, error, rounds,
                       time.perf_counter_ns() - started)
