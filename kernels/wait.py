"""Waiting without burning a core: bounded spin, then yield, then sleep with back-off.

A thread that spins needs a core of its own. When spinning threads outnumber
cores, a spinner can hold the very core the thread it waits for needs, and
throughput collapses by 30-100x. So every wait in ringbook is bounded:

1. ``spins`` rounds of :func:`~ringbook.kernels.atomics.spin_pause` (tens of ns each:
   the cheapest wake-up, for a partner running on another core);
2. ``yields`` rounds of ``sched_yield`` (gives the core to whoever is ready);
3. ``nanosleep``, starting at ``min_sleep_ns`` and doubling up to
   ``max_sleep_ns``, so a consumer of an idle ring wakes at most about
   ``1 / max_sleep_ns`` times a second.

The rule: **spinning threads never outnumber cores.** A strategy with
``spins = 0`` never spins; :func:`wait_strategy`'s defaults spin briefly (a
few microseconds) and are safe on a 2-core machine shared with other work.

A strategy is an int64 array of four numbers, so njit code can carry it::

    strategy = wait_strategy(spins=1000, yields=10, max_sleep_ns=1_000_000)
    attempt = 0
    while not ready():
        attempt = backoff(strategy, attempt)
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ringbook.kernels.atomics import spin_pause
from ringbook.kernels.jit_options import kernel

#: Indices into a wait strategy array.
SPINS, YIELDS, MIN_SLEEP_NS, MAX_SLEEP_NS = 0, 1, 2, 3

#: Default strategy: about 5 us of spinning, a few yields, then sleeps of
#: 1 us doubling to 1 ms (an idle waiter wakes about 1000 times a second and
#: uses about 2% of a core under KVM).
DEFAULT_SPINS = 200
DEFAULT_YIELDS = 8
DEFAULT_MIN_SLEEP_NS = 1_000
DEFAULT_MAX_SLEEP_NS = 1_000_000


def wait_strategy(spins=DEFAULT_SPINS, yields=DEFAULT_YIELDS,
                  min_sleep_ns=DEFAULT_MIN_SLEEP_NS, max_sleep_ns=DEFAULT_MAX_SLEEP_NS):
    """A wait strategy for :func:`backoff`: int64 ``[spins, yields, min_sleep_ns, max_sleep_ns]``.

    Parameters
    ----------
    spins : int
        Pause-hint rounds before yielding; 0 never spins (use it when spinning
        threads would outnumber cores).
    yields : int
        ``sched_yield`` rounds before sleeping.
    min_sleep_ns, max_sleep_ns : int
        First sleep and the cap of its doubling.
    """
    values = [spins, yields, min_sleep_ns, max_sleep_ns]
    if min(values) < 0 or min_sleep_ns < 1 or max_sleep_ns < min_sleep_ns:
        raise ValueError(f"wait strategy wants spins, yields >= 0 and "
                         f"1 <= min_sleep_ns <= max_sleep_ns, got {values}")
    return np.array(values, dtype=np.int64)


@intrinsic
def _sched_yield(typingctx):
    def codegen(context, builder, sig, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(function, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _nanosleep(typingctx, nanoseconds):
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        timespec_type = ir.LiteralStructType([i64, i64])
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.IntType(32), [timespec_type.as_pointer(), timespec_type.as_pointer()]),
            "nanosleep")
        duration = context.cast(builder, args[0], sig.args[0], types.int64)
        timespec = cgutils.alloca_once(builder, timespec_type)
        builder.store(builder.sdiv(duration, i64(1_000_000_000)),
                      cgutils.gep_inbounds(builder, timespec, 0, 0))
        builder.store(builder.srem(duration, i64(1_000_000_000)),
                      cgutils.gep_inbounds(builder, timespec, 0, 1))
        builder.call(function, [timespec, ir.Constant(timespec_type.as_pointer(), None)])
        return context.get_dummy_value()

    return types.void(nanoseconds), codegen


@kernel
def yield_now():
    """Give the core to another ready thread (``sched_yield``)."""
    _sched_yield()


@kernel
def sleep_ns(nanoseconds):
    """Sleep about ``nanoseconds`` (``nanosleep``; the kernel's timer slack adds ~50 us)."""
    if nanoseconds > 0:
        _nanosleep(nanoseconds)


@kernel
def backoff(strategy, attempt):
    """Wait once, as the ``attempt``-th step of ``strategy``; return ``attempt + 1``.

    Steps ``0 .. spins-1`` pause, the next ``yields`` yield, later ones sleep
    ``min_sleep_ns * 2**k`` capped at ``max_sleep_ns``.
    """
    spins = strategy[SPINS]
    if attempt < spins:
        spin_pause()
    elif attempt < spins + strategy[YIELDS]:
        _sched_yield()
    else:
        doublings = min(attempt - spins - strategy[YIELDS], 62)
        longest = strategy[MAX_SLEEP_NS]
        first = strategy[MIN_SLEEP_NS]
        # Compare before shifting, so that the doubling never overflows.
        _nanosleep(longest if first > (longest >> doublings) else first << doublings)
    return attempt + 1
