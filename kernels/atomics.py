"""Atomic operations on integer elements of numpy arrays, callable from njit.

Positions shared between threads or processes (ring cursors over a private
array, an ``mmap`` or POSIX shared memory) are read with acquire and written
with release ordering. A plain load or store is not enough: LLVM may reorder or
cache it. These intrinsics emit LLVM's atomic instructions directly.

All functions take ``(array, index, ...)`` where ``array`` is a C-contiguous
1-D array of a 4- or 8-byte integer dtype and ``index`` an element index. The
index is not bounds-checked: callers pass constants or validated values.

On x86-64 an acquire load and a release store compile to plain ``mov``
instructions; their cost is that the compiler may not move memory accesses
across them.
"""

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

_MACHINE = platform.machine().lower()

#: Whether kernels compile for x86 (cache-control and pause instructions).
X86 = _MACHINE in ("x86_64", "amd64", "i686", "x86")


def _check_array(array, name):
    if not isinstance(array, types.Array) or array.ndim != 1:
        raise TypingError(f"{name}: expected a 1-D integer array, got {array}")
    if not isinstance(array.dtype, types.Integer) or array.dtype.bitwidth not in (32, 64):
        raise TypingError(f"{name}: array dtype must be a 32- or 64-bit integer, got {array.dtype}")
    if array.layout != "C":
        raise TypingError(f"{name}: array must be C-contiguous, got layout {array.layout!r}")


def _element_pointer(context, builder, array_type, array_value, index_type, index_value):
    array = make_array(array_type)(context, builder, array_value)
    index = context.cast(builder, index_value, index_type, types.intp)
    return cgutils.get_item_pointer(context, builder, array_type, array, [index], wraparound=False)


def _load_codegen(pointer_of, ordering, width):
    """Codegen of an atomic load at the pointer ``pointer_of`` finds from (container, where)."""
    def codegen(context, builder, sig, args):
        pointer = pointer_of(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load_atomic(pointer, ordering, width)

    return codegen


def _store_codegen(pointer_of, value_type, ordering, width):
    """Codegen of an atomic store of the third argument, cast to ``value_type``."""
    def codegen(context, builder, sig, args):
        pointer = pointer_of(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        stored = context.cast(builder, args[2], sig.args[2], value_type)
        builder.store_atomic(stored, pointer, ordering, width)
        return context.get_dummy_value()

    return codegen


@intrinsic
def load_acquire(typingctx, array, index):
    """``array[index]`` read with acquire ordering."""
    _check_array(array, "load_acquire")
    return array.dtype(array, index), _load_codegen(_element_pointer, "acquire",
                                                    array.dtype.bitwidth // 8)


@intrinsic
def load_relaxed(typingctx, array, index):
    """``array[index]`` read atomically with no ordering (never torn, never cached)."""
    _check_array(array, "load_relaxed")
    return array.dtype(array, index), _load_codegen(_element_pointer, "monotonic",
                                                    array.dtype.bitwidth // 8)


@intrinsic
def store_release(typingctx, array, index, value):
    """``array[index] = value`` written with release ordering."""
    _check_array(array, "store_release")
    return types.void(array, index, value), _store_codegen(
        _element_pointer, array.dtype, "release", array.dtype.bitwidth // 8)


@intrinsic
def fetch_add(typingctx, array, index, value):
    """Add ``value`` to ``array[index]`` atomically (acquire-release); return the old value."""
    _check_array(array, "fetch_add")
    signature = array.dtype(array, index, value)

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        added = context.cast(builder, args[2], sig.args[2], array.dtype)
        return builder.atomic_rmw("add", pointer, added, "acq_rel")

    return signature, codegen


@intrinsic
def compare_exchange(typingctx, array, index, expected, desired):
    """Set ``array[index]`` to ``desired`` if it equals ``expected`` (acquire-release).

    Returns the value found, so the exchange happened when it equals ``expected``.
    """
    _check_array(array, "compare_exchange")
    signature = array.dtype(array, index, expected, desired)

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        old = context.cast(builder, args[2], sig.args[2], array.dtype)
        new = context.cast(builder, args[3], sig.args[3], array.dtype)
        pair = builder.cmpxchg(pointer, old, new, "acq_rel", "acquire")
        return builder.extract_value(pair, 0)

    return signature, codegen


@intrinsic
def compiler_barrier(typingctx):
    """Stop the compiler from moving memory accesses across this point (no CPU fence)."""

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst", "singlethread")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def spin_pause(typingctx):
    """CPU hint for a spin-wait loop (x86 ``pause``, ARM ``yield``).

    It saves power and frees the sibling hyper-thread; on other CPUs it is only
    a compiler barrier.
    """

    def codegen(context, builder, sig, args):
        module = builder.module
        if X86:
            function = cgutils.get_or_insert_function(
                module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(function, [])
        elif _MACHINE in ("aarch64", "arm64"):
            function = cgutils.get_or_insert_function(
                module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]), "llvm.aarch64.hint")
            builder.call(function, [ir.Constant(ir.IntType(32), 1)])
        else:
            builder.fence("seq_cst", "singlethread")
        return context.get_dummy_value()

    return types.void(), codegen


# Atomics at a byte offset of a uint8 slab: a ring keeps its shared positions
# inside one uint8 region (a private array, a file mapping or shared memory).

def _check_slab(slab, name):
    if not isinstance(slab, types.Array) or slab.ndim != 1 or slab.dtype != types.uint8:
        raise TypingError(f"{name}: expected a 1-D uint8 array, got {slab}")
    if slab.layout != "C":
        raise TypingError(f"{name}: slab must be C-contiguous, got layout {slab.layout!r}")


def _int64_pointer_at(context, builder, slab_type, slab_value, offset_type, offset_value):
    byte_pointer = _element_pointer(context, builder, slab_type, slab_value, offset_type, offset_value)
    return builder.bitcast(byte_pointer, ir.IntType(64).as_pointer())


@intrinsic
def load_acquire_at(typingctx, slab, offset):
    """The int64 at byte ``offset`` of a uint8 ``slab``, read with acquire ordering.

    ``offset`` must be a multiple of 8 and at most ``slab.size - 8``: it is not
    checked.
    """
    _check_slab(slab, "load_acquire_at")
    return types.int64(slab, offset), _load_codegen(_int64_pointer_at, "acquire", 8)


@intrinsic
def load_relaxed_at(typingctx, slab, offset):
    """The int64 at byte ``offset`` of ``slab``, read atomically with no ordering."""
    _check_slab(slab, "load_relaxed_at")
    return types.int64(slab, offset), _load_codegen(_int64_pointer_at, "monotonic", 8)


@intrinsic
def store_release_at(typingctx, slab, offset, value):
    """Write the int64 ``value`` at byte ``offset`` of ``slab`` with release ordering."""
    _check_slab(slab, "store_release_at")
    return types.void(slab, offset, value), _store_codegen(_int64_pointer_at, types.int64,
                                                           "release", 8)
