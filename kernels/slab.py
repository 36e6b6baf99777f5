"""Plain loads, stores and copies at byte offsets of a uint8 slab, callable from njit.

A ring keeps its headers inside one C-contiguous 1-D uint8 region (a private
array, a file mapping or shared memory). Its shared *positions* are read and
written with the ordered atomics of :mod:`ringbook.kernels.atomics`; the fields
they publish (slot lengths, flags, stamps, the geometry) are plain loads and
stores, ordered by those atomics. Integers are little-endian and may sit at
any byte offset.

Nothing here checks an offset: the caller keeps every access inside the slab.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

from ringbook.kernels.atomics import X86

#: Bytes of a cache line, the unit :func:`evict_lines` works in.
CACHE_LINE = 64


def _pointer_at(context, builder, sig, args, width):
    array = make_array(sig.args[0])(context, builder, args[0])
    offset = context.cast(builder, args[1], sig.args[1], types.intp)
    byte_pointer = cgutils.get_item_pointer(context, builder, sig.args[0], array, [offset],
                                            wraparound=False)
    return builder.bitcast(byte_pointer, ir.IntType(width).as_pointer())


@intrinsic
def load_u32(typingctx, slab, offset):
    """The unsigned 32-bit integer at byte ``offset`` of ``slab``, as an int64."""
    def codegen(context, builder, sig, args):
        value = builder.load(_pointer_at(context, builder, sig, args, 32), align=1)
        return builder.zext(value, ir.IntType(64))

    return types.int64(slab, offset), codegen


@intrinsic
def load_i64(typingctx, slab, offset):
    """The int64 at byte ``offset`` of ``slab``."""
    def codegen(context, builder, sig, args):
        return builder.load(_pointer_at(context, builder, sig, args, 64), align=1)

    return types.int64(slab, offset), codegen


@intrinsic
def store_u32(typingctx, slab, offset, value):
    """Store the low 32 bits of ``value`` at byte ``offset`` of ``slab``."""
    def codegen(context, builder, sig, args):
        stored = builder.trunc(context.cast(builder, args[2], sig.args[2], types.int64), ir.IntType(32))
        builder.store(stored, _pointer_at(context, builder, sig, args, 32), align=1)
        return context.get_dummy_value()

    return types.void(slab, offset, value), codegen


@intrinsic
def store_i64(typingctx, slab, offset, value):
    """Store the int64 ``value`` at byte ``offset`` of ``slab``."""
    def codegen(context, builder, sig, args):
        stored = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store(stored, _pointer_at(context, builder, sig, args, 64), align=1)
        return context.get_dummy_value()

    return types.void(slab, offset, value), codegen


@intrinsic
def evict_lines(typingctx, slab, offset, length):
    """Write the cache lines of ``length`` bytes from ``offset`` back to memory
    and drop them from every cache (x86 ``clflush``; nothing elsewhere).

    The data is unchanged: a hint. A flush outside the mapping faults, so the
    caller keeps the range inside the slab. The loop over lines is here, not
    in the kernels: a loop around a call there cost them their
    reference-count pruning.
    """
    def codegen(context, builder, sig, args):
        if X86:
            pointer = _pointer_at(context, builder, sig, args[:2], 8)
            count = context.cast(builder, args[2], sig.args[2], types.intp)
            lines = builder.udiv(builder.add(count, count.type(CACHE_LINE - 1)), count.type(CACHE_LINE))
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [pointer.type]), "llvm.x86.sse2.clflush")
            with cgutils.for_range(builder, lines) as loop:
                line = builder.gep(pointer, [builder.mul(loop.index, count.type(CACHE_LINE))])
                builder.call(function, [line])
        return context.get_dummy_value()

    return types.void(slab, offset, length), codegen


#: Copies up to this many bytes are an inline loop of 8-byte words; longer
#: ones call ``memmove``, whose call costs more than it saves on small ones.
INLINE_COPY_BYTES = 128


@intrinsic
def copy_bytes(typingctx, source, source_offset, target, target_offset, length):
    """Copy ``length`` bytes between C-contiguous uint8 arrays at flat offsets.

    The two ranges must not overlap (a ring copies between its slab and a
    caller's buffer).
    """
    for array in (source, target):
        if not (isinstance(array, types.Array) and array.dtype == types.uint8 and array.layout == "C"):
            raise TypingError(f"copies are between C-contiguous uint8 arrays, got {array}")

    def codegen(context, builder, sig, args):
        def byte_pointer(array_type, array_value, offset_type, offset_value):
            data = make_array(array_type)(context, builder, array_value).data
            return builder.gep(data, [context.cast(builder, offset_value, offset_type, types.intp)])

        source_pointer = byte_pointer(sig.args[0], args[0], sig.args[1], args[1])
        target_pointer = byte_pointer(sig.args[2], args[2], sig.args[3], args[3])
        count = context.cast(builder, args[4], sig.args[4], types.intp)
        word_type = ir.IntType(64).as_pointer()
        is_small = builder.icmp_signed("<=", count, count.type(INLINE_COPY_BYTES))
        with builder.if_else(is_small) as (small, large):
            with small:
                words = builder.lshr(count, count.type(3))
                with cgutils.for_range(builder, words) as loop:
                    offset = builder.shl(loop.index, count.type(3))
                    word = builder.load(builder.bitcast(builder.gep(source_pointer, [offset]), word_type), align=1)
                    builder.store(word, builder.bitcast(builder.gep(target_pointer, [offset]), word_type), align=1)
                done = builder.shl(words, count.type(3))
                with cgutils.for_range(builder, builder.sub(count, done)) as loop:
                    offset = builder.add(done, loop.index)
                    builder.store(builder.load(builder.gep(source_pointer, [offset])),
                                  builder.gep(target_pointer, [offset]))
            with large:
                cgutils.raw_memmove(builder, target_pointer, source_pointer, count, 1)
        return context.get_dummy_value()

    return types.void(source, source_offset, target, target_offset, length), codegen
