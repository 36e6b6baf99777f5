"""Wait and notify on a 32-bit word in shared memory: the Linux futex, callable from njit.

A consumer that finds nothing to do spins briefly (:data:`DEFAULT_SPINS` pause
rounds), then *parks* in the kernel on a doorbell word, using no CPU until a
producer rings it. The futex is the shared form (no ``FUTEX_PRIVATE_FLAG``):
the word may live in a mapping shared between processes.

A doorbell is 8 bytes at a 4-aligned byte offset of a uint8 slab:

========  =====  ============================================================
offset    type   field
========  =====  ============================================================
0         u32    sequence: the futex word; a producer adds one when it wakes
4         u32    waiters: consumers that announced they are about to sleep
                 (low 31 bits), and :data:`ASYMMETRIC` (bit 31)
========  =====  ============================================================

A zeroed doorbell is valid (fenced mode, nobody waiting).

Protocol, with no lost wake-up::

    consumer                               producer
    --------                               --------
    spin: check, pause (bounded)           publish (release store)
    ticket = doorbell_prepare(...)         doorbell_ring(...):
        announce: waiters += 1                 fence (fenced mode only)
        read the sequence                      if waiters != 0:
    check again; if ready:                         sequence += 1
        doorbell_cancel(...)                       FUTEX_WAKE all
    else doorbell_sleep(..., ticket):
        FUTEX_WAIT while sequence == ticket
        waiters -= 1

Either the producer's read of ``waiters`` sees the announce (then it bumps the
sequence after publishing, and the consumer either sees the bump before it
sleeps, so ``FUTEX_WAIT`` returns at once, or is woken), or the consumer's
second check sees what was published. That needs a store-load barrier on
both sides. The consumer's is the atomic increment. The producer's costs a
fence per ring in *fenced* mode; in *asymmetric* mode (bit 31 of ``waiters``
set by whoever made the doorbell) the producer pays only a compiler barrier
and a load of a line nobody writes while consumers are awake, and the
consumer about to sleep issues ``membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)``
instead, which runs a full barrier on every CPU running a registered process.
Asymmetric mode requires every producer process to have registered
(:func:`register_asymmetric`, done by the engine); a producer that did not
could lose a wake-up.

A waiter killed while it had announced leaves its count behind: nothing is
lost, but every ring from then on bumps the sequence and makes a
``FUTEX_WAKE`` call that wakes nobody (about a microsecond), until the
region is made anew. Where waiters are other processes, put the doorbell in
memory that goes away with them: a connection's client parks on a page of
its own process (:mod:`ringbook.kernels.connection`), dropped with its last
connection, and a fan-out subscriber on its own ring, dropped when its socket
ends. A per-waiter slot would need the waker to scan the slots on every
ring; resetting the count from outside would race with a live waiter's
announce.

Statuses follow :mod:`ringbook.kernels.status`: :data:`OK`, :data:`TIMEOUT`,
and a negative ``errno`` for a failed system call.
"""

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

from ringbook.kernels.atomics import spin_pause
from ringbook.kernels.clock import monotonic_ns
from ringbook.kernels.jit_options import kernel
from ringbook.kernels.status import OK, TIMEOUT

_MACHINE = platform.machine().lower()

#: System call numbers: (futex, membarrier).
_SYSCALLS = {"x86_64": (202, 324), "amd64": (202, 324), "aarch64": (98, 283), "arm64": (98, 283)}
SYS_FUTEX, SYS_MEMBARRIER = _SYSCALLS.get(_MACHINE, (-1, -1))

FUTEX_WAIT = 0
FUTEX_WAKE = 1
MEMBARRIER_CMD_QUERY = 0
MEMBARRIER_CMD_GLOBAL_EXPEDITED = 1 << 1
MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED = 1 << 2

#: Doorbell fields: byte offsets from the doorbell's start.
SEQUENCE_OFFSET = 0
WAITERS_OFFSET = 4
#: Bytes a doorbell takes.
DOORBELL_BYTES = 8
#: Bit 31 of the waiters word: producers skip the fence, sleepers issue a membarrier.
ASYMMETRIC = 1 << 31
WAITER_MASK = ASYMMETRIC - 1
#: Everyone waiting, for FUTEX_WAKE.
WAKE_ALL = (1 << 31) - 1

#: Pause rounds before a waiter announces and parks (about a microsecond or two).
DEFAULT_SPINS = 100

_EAGAIN, _EINTR, _ETIMEDOUT = 11, 4, 110


def _u32_pointer(context, builder, slab_type, slab_value, offset_type, offset_value):
    array = make_array(slab_type)(context, builder, slab_value)
    offset = context.cast(builder, offset_value, offset_type, types.intp)
    return builder.bitcast(builder.gep(array.data, [offset]), ir.IntType(32).as_pointer())


@intrinsic
def load_u32_at(typingctx, slab, offset):
    """The u32 at byte ``offset`` of a uint8 ``slab`` (acquire), as int64. Unchecked offset."""
    def codegen(context, builder, sig, args):
        pointer = _u32_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.zext(builder.load_atomic(pointer, "acquire", 4), ir.IntType(64))

    return types.int64(slab, offset), codegen


@intrinsic
def fetch_add_u32_at(typingctx, slab, offset, value):
    """Add ``value`` to the u32 at byte ``offset`` (sequentially consistent); return the old value."""
    def codegen(context, builder, sig, args):
        pointer = _u32_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        added = builder.trunc(context.cast(builder, args[2], sig.args[2], types.int64), ir.IntType(32))
        return builder.zext(builder.atomic_rmw("add", pointer, added, "seq_cst"), ir.IntType(64))

    return types.int64(slab, offset, value), codegen


@intrinsic
def full_fence(typingctx):
    """A sequentially consistent fence between threads (x86 ``mfence`` or a locked op)."""
    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _compiler_barrier(typingctx):
    def codegen(context, builder, sig, args):
        builder.fence("seq_cst", "singlethread")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _futex(typingctx, slab, offset, operation, value, timeout_ns):
    """``futex(slab + offset, operation, value, timeout)``: the result or ``-errno``.

    A negative ``timeout_ns`` waits for ever (a null timeout).
    """
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        pointer = _u32_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        operation_value = context.cast(builder, args[2], sig.args[2], types.int64)
        word = context.cast(builder, args[3], sig.args[3], types.int64)
        timeout = context.cast(builder, args[4], sig.args[4], types.int64)
        timespec_type = ir.LiteralStructType([i64, i64])
        timespec = cgutils.alloca_once(builder, timespec_type)
        builder.store(builder.sdiv(timeout, i64(1_000_000_000)), cgutils.gep_inbounds(builder, timespec, 0, 0))
        builder.store(builder.srem(timeout, i64(1_000_000_000)), cgutils.gep_inbounds(builder, timespec, 0, 1))
        timespec_address = builder.select(builder.icmp_signed("<", timeout, i64(0)), i64(0),
                                          builder.ptrtoint(timespec, i64))
        return _syscall_checked(builder, SYS_FUTEX, [builder.ptrtoint(pointer, i64), operation_value,
                                                     word, timespec_address, i64(0), i64(0)])

    return types.int64(slab, offset, operation, value, timeout_ns), codegen


def _syscall_checked(builder, number, arguments):
    """``syscall(number, *arguments)`` through libc: the result, or ``-errno`` when it failed."""
    i64 = ir.IntType(64)
    function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64], var_arg=True),
                                              "syscall")
    errno_location = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.IntType(32).as_pointer(), []), "__errno_location")
    result = cgutils.alloca_once_value(builder, builder.call(function, [i64(number)] + arguments))
    with builder.if_then(builder.icmp_signed("==", builder.load(result), i64(-1)), likely=False):
        builder.store(builder.neg(builder.sext(builder.load(builder.call(errno_location, [])), i64)), result)
    return builder.load(result)


@intrinsic
def _membarrier(typingctx, command):
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        command_value = context.cast(builder, args[0], sig.args[0], types.int64)
        return _syscall_checked(builder, SYS_MEMBARRIER, [command_value, i64(0), i64(0)])

    return types.int64(command), codegen


@kernel
def futex_wait(slab, offset, expected, timeout_ns):
    """Sleep while the u32 at byte ``offset`` of ``slab`` equals ``expected``.

    Returns :data:`OK` when woken, when the word already differed, or on a
    signal (callers check their condition again in every case); :data:`TIMEOUT`
    after ``timeout_ns`` (negative: no limit); another negative ``errno``
    otherwise. ``offset`` must be a multiple of 4 inside the slab (checked).
    """
    if offset < 0 or offset & 3 != 0 or offset + 4 > slab.size:
        return -22  # EINVAL
    result = _futex(slab, offset, FUTEX_WAIT, expected, timeout_ns)
    if result >= 0 or result == -_EAGAIN or result == -_EINTR:
        return OK
    if result == -_ETIMEDOUT:
        return TIMEOUT
    return result


@kernel
def futex_wake(slab, offset, count):
    """Wake up to ``count`` sleepers on the u32 at byte ``offset``: how many woke, or ``-errno``."""
    if offset < 0 or offset & 3 != 0 or offset + 4 > slab.size:
        return -22
    return _futex(slab, offset, FUTEX_WAKE, count, -1)


@kernel
def membarrier(command):
    """``membarrier(command, 0)``: the result or ``-errno`` (``-ENOSYS`` off Linux x86-64/arm64)."""
    if SYS_MEMBARRIER < 0:
        return -38
    return _membarrier(command)


@kernel
def doorbell_prepare(slab, offset):
    """Announce that the caller is about to sleep on the doorbell at ``offset``; return its ticket.

    Check the condition again afterwards: if it holds, :func:`doorbell_cancel`;
    otherwise :func:`doorbell_sleep` with the ticket.
    """
    word = fetch_add_u32_at(slab, offset + WAITERS_OFFSET, 1)
    if word & ASYMMETRIC:
        membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)
    return load_u32_at(slab, offset + SEQUENCE_OFFSET)


@kernel
def doorbell_cancel(slab, offset):
    """Withdraw the announce of :func:`doorbell_prepare` (the condition held after all)."""
    fetch_add_u32_at(slab, offset + WAITERS_OFFSET, -1)


@kernel
def doorbell_sleep(slab, offset, ticket, timeout_ns):
    """Sleep until the doorbell rings after ``ticket``, ``timeout_ns`` passes (negative: no limit),
    or a signal; then withdraw the announce. :data:`OK` or :data:`TIMEOUT` (a negative ``errno``
    on a failed call). Wakes may be spurious: check the condition again."""
    status = futex_wait(slab, offset + SEQUENCE_OFFSET, ticket, timeout_ns)
    fetch_add_u32_at(slab, offset + WAITERS_OFFSET, -1)
    return status


def _waiters_codegen(context, builder, sig, args):
    """IR of :func:`doorbell_waiters`: the waiter count after a store-load barrier."""
    i32 = ir.IntType(32)
    bell = context.cast(builder, args[1], sig.args[1], types.int64)
    waiters_pointer = _u32_pointer(context, builder, sig.args[0], args[0], types.int64,
                                   builder.add(bell, bell.type(WAITERS_OFFSET)))
    builder.fence("seq_cst", "singlethread")  # the caller's publishing stores stay before the load
    word = cgutils.alloca_once_value(builder, builder.load_atomic(waiters_pointer, "acquire", 4))
    fenced = builder.icmp_unsigned("==", builder.and_(builder.load(word), i32(ASYMMETRIC)), i32(0))
    with builder.if_then(fenced, likely=False):
        builder.fence("seq_cst")
        builder.store(builder.load_atomic(waiters_pointer, "acquire", 4), word)
    return builder.zext(builder.and_(builder.load(word), i32(WAITER_MASK)), ir.IntType(64))


@intrinsic
def doorbell_waiters(typingctx, slab, offset):
    """How many announced they sleep on the doorbell at ``offset``, read after a store-load
    barrier (see the module docstring). Call it after publishing: a compiler barrier and a load
    in asymmetric mode, a fence more in fenced mode. Unchecked offset."""
    return types.int64(slab, offset), _waiters_codegen


@kernel
def doorbell_wake(slab, offset):
    """Ring the doorbell unconditionally: bump its sequence and wake every sleeper; how many woke."""
    fetch_add_u32_at(slab, offset + SEQUENCE_OFFSET, 1)
    return futex_wake(slab, offset + SEQUENCE_OFFSET, WAKE_ALL)


@intrinsic
def doorbell_ring(typingctx, slab, offset):
    """After publishing: wake whoever sleeps on the doorbell at ``offset``, only if someone announced.

    Returns how many woke (0, with no system call, when nobody announced). One
    intrinsic with no call on its common path, so that the ring's hot kernels
    keep their reference-count pruning. Unchecked offset (a multiple of 4).
    """
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        woken = cgutils.alloca_once_value(builder, i64(0))
        waiters = _waiters_codegen(context, builder, sig, args)
        with builder.if_then(builder.icmp_unsigned("!=", waiters, i64(0)), likely=False):
            bell = context.cast(builder, args[1], sig.args[1], types.int64)
            sequence = _u32_pointer(context, builder, sig.args[0], args[0], types.int64,
                                    builder.add(bell, i64(SEQUENCE_OFFSET)))
            builder.atomic_rmw("add", sequence, ir.IntType(32)(1), "seq_cst")
            builder.store(_syscall_checked(builder, SYS_FUTEX, [builder.ptrtoint(sequence, i64), i64(FUTEX_WAKE),
                                                                i64(WAKE_ALL), i64(0), i64(0), i64(0)]), woken)
        return builder.load(woken)

    return types.int64(slab, offset), codegen


@kernel
def set_asymmetric(slab, offset, enabled):
    """Set or clear the doorbell's asymmetric mode (only while nobody uses it)."""
    word = load_u32_at(slab, offset + WAITERS_OFFSET)
    if enabled and word & ASYMMETRIC == 0:
        fetch_add_u32_at(slab, offset + WAITERS_OFFSET, ASYMMETRIC)
    elif not enabled and word & ASYMMETRIC != 0:
        fetch_add_u32_at(slab, offset + WAITERS_OFFSET, -ASYMMETRIC)


@kernel
def doorbell_park(slab, offset, ticket, deadline, timeout_ns):
    """:func:`doorbell_sleep` until the monotonic ``deadline`` (``timeout_ns < 0``: no limit):
    :data:`OK` (rung, or woken for nothing: check again) or :data:`TIMEOUT`, the announce
    withdrawn either way."""
    remaining = -1
    if timeout_ns >= 0:
        remaining = deadline - monotonic_ns()
        if remaining <= 0:
            doorbell_cancel(slab, offset)
            return TIMEOUT
    doorbell_sleep(slab, offset, ticket, remaining)
    return OK


@kernel
def wait_counter(slab, doorbell_offset, counter_offset, seen, spins, timeout_ns):
    """Wait until the u32 counter at ``counter_offset`` differs from ``seen``; return its value.

    Spins ``spins`` pause rounds, then announces on the doorbell at
    ``doorbell_offset``, reads the counter again, and parks. The pattern every
    waiter follows (a ring's consumer checks its ring instead of a counter).
    Returns the new value (``>= 0``) or :data:`TIMEOUT` (``timeout_ns``
    negative: no limit).
    """
    deadline = monotonic_ns() + timeout_ns if timeout_ns >= 0 else 0
    for _ in range(spins):
        value = load_u32_at(slab, counter_offset)
        if value != seen:
            return value
        spin_pause()
    while True:
        ticket = doorbell_prepare(slab, doorbell_offset)
        value = load_u32_at(slab, counter_offset)
        if value != seen:
            doorbell_cancel(slab, doorbell_offset)
            return value
        if doorbell_park(slab, doorbell_offset, ticket, deadline, timeout_ns) == TIMEOUT:
            return TIMEOUT


def register_asymmetric():
    """Register this process for asymmetric doorbells; ``True`` when the system allows it.

    Every process that rings an asymmetric doorbell must have registered
    (``MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED``). Idempotent.
    """
    if membarrier(MEMBARRIER_CMD_QUERY) < 0:
        return False
    return membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0
