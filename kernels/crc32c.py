"""CRC32C (Castagnoli), callable from njit: the SSE4.2 ``crc32`` instruction, or tables.

The checksum of the journal's records. :func:`crc32c` follows the usual
convention (initial value and final value inverted, reflected polynomial
``0x82F63B78``), so ``crc32c(buffer, 0, n, 0)`` equals what other CRC32C
libraries return, and a checksum can be continued over a second range by
passing the first one as ``seed``.

Where the CPU has SSE4.2 (x86-64 since 2008), the kernel feeds 8 bytes at a
time to the ``crc32`` instruction through an llvmlite intrinsic. The
instruction takes 3 cycles and can start one a cycle, so long buffers are cut
into three interleaved streams whose checksums are combined afterwards with a
precomputed "shift by one block" table; short buffers (records) take one
stream. Elsewhere the same kernel name is a slicing-by-8 table loop.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

from ringbook.kernels.atomics import X86
from ringbook.kernels.clock import CPU_FLAGS
from ringbook.kernels.jit_options import inline_kernel, kernel, llvm_inline_kernel

#: The reflected Castagnoli polynomial.
POLYNOMIAL = 0x82F63B78

#: Whether :func:`crc32c` uses the CPU's ``crc32`` instruction.
HARDWARE = X86 and "sse4_2" in CPU_FLAGS

#: Bytes of each of the three interleaved streams of a long buffer.
BLOCK_BYTES = 4096


def _byte_table():
    table = np.zeros((8, 256), np.uint32)
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ (POLYNOMIAL if value & 1 else 0)
        table[0, byte] = value
    for k in range(1, 8):
        previous = table[k - 1]
        table[k] = (previous >> 8) ^ table[0][previous & 0xFF]
    return table


def _apply(matrix, vector):
    result = 0
    bit = 0
    while vector:
        if vector & 1:
            result ^= matrix[bit]
        vector >>= 1
        bit += 1
    return result


def _square(matrix):
    return [_apply(matrix, matrix[bit]) for bit in range(32)]


def _shift_table(nbytes):
    """Tables ``T[k][b]``: the CRC state ``b << 8k`` advanced over ``nbytes`` zero bytes.

    The state's update is linear over GF(2): advancing over zeros is a 32x32
    bit matrix, the one-bit step raised to the power ``8 * nbytes`` by squaring.
    """
    one_bit = [POLYNOMIAL] + [1 << (bit - 1) for bit in range(1, 32)]
    power = None
    step = one_bit
    remaining = 8 * nbytes
    while remaining:
        if remaining & 1:
            power = step if power is None else [_apply(step, column) for column in power]
        remaining >>= 1
        if remaining:
            step = _square(step)
    table = np.zeros((4, 256), np.uint32)
    for k in range(4):
        for byte in range(256):
            table[k, byte] = _apply(power, byte << (8 * k))
    return table


#: Slicing-by-8 tables: ``TABLE[0]`` is the classic byte table.
TABLE = _byte_table()
#: Advances a CRC state over :data:`BLOCK_BYTES` zero bytes (combines the streams).
SHIFT_TABLE = _shift_table(BLOCK_BYTES)


def pointer_at(context, builder, array_type, array_value, offset_type, offset_value):
    """Codegen: the pointer to byte ``offset`` of a 1-D uint8 array, unchecked."""
    array = make_array(array_type)(context, builder, array_value)
    offset = context.cast(builder, offset_value, offset_type, types.intp)
    return cgutils.get_item_pointer(context, builder, array_type, array, [offset], wraparound=False)


def _byte_pointer(context, builder, sig, args):
    return pointer_at(context, builder, sig.args[0], args[0], sig.args[1], args[1])


@intrinsic
def load_u64(typingctx, buffer, offset):
    """The little-endian uint64 at byte ``offset`` of a uint8 array, unaligned, unchecked."""
    def codegen(context, builder, sig, args):
        pointer = builder.bitcast(_byte_pointer(context, builder, sig, args), ir.IntType(64).as_pointer())
        return builder.load(pointer, align=1)

    return types.uint64(buffer, offset), codegen


@intrinsic
def load_u32(typingctx, buffer, offset):
    """The little-endian uint32 at byte ``offset`` of a uint8 array, unaligned, unchecked."""
    def codegen(context, builder, sig, args):
        pointer = builder.bitcast(_byte_pointer(context, builder, sig, args), ir.IntType(32).as_pointer())
        return builder.zext(builder.load(pointer, align=1), ir.IntType(64))

    return types.int64(buffer, offset), codegen


def _crc32_step(name, width):
    """Codegen of one ``crc32`` instruction over a ``width``-bit value (LLVM intrinsic ``name``)."""
    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        state_type = ir.IntType(64) if width == 64 else i32
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(state_type, [state_type, ir.IntType(width)]), name)
        state = context.cast(builder, args[0], sig.args[0], types.uint32)
        value = context.cast(builder, args[1], sig.args[1], types.uint64)
        if width == 64:
            state = builder.zext(state, state_type)
        else:
            value = builder.trunc(value, ir.IntType(width))
        result = builder.call(function, [state, value])
        return builder.trunc(result, i32) if width == 64 else result

    return codegen


@intrinsic
def _crc32_u64(typingctx, state, word):
    """One ``crc32 r64, r/m64`` step: the 32-bit state advanced over 8 bytes."""
    return types.uint32(state, word), _crc32_step("llvm.x86.sse42.crc32.64.64", 64)


@intrinsic
def _crc32_u32(typingctx, state, word):
    """One ``crc32 r32, r/m32`` step: the state advanced over 4 bytes."""
    return types.uint32(state, word), _crc32_step("llvm.x86.sse42.crc32.32.32", 32)


@intrinsic
def _crc32_u8(typingctx, state, byte):
    """One ``crc32 r32, r/m8`` step: the state advanced over one byte."""
    return types.uint32(state, byte), _crc32_step("llvm.x86.sse42.crc32.32.8", 8)


@inline_kernel
def _shift_block(state, shift_table):
    return (shift_table[0, state & 0xFF] ^ shift_table[1, (state >> 8) & 0xFF]
            ^ shift_table[2, (state >> 16) & 0xFF] ^ shift_table[3, state >> 24])


@llvm_inline_kernel
def _update_hardware(state, buffer, start, stop, shift_table):
    state = np.uint32(state)
    position = start
    triple = 3 * BLOCK_BYTES
    while stop - position >= triple:
        first = state
        second = np.uint32(0)
        third = np.uint32(0)
        for word in range(position, position + BLOCK_BYTES, 8):
            first = _crc32_u64(first, load_u64(buffer, word))
            second = _crc32_u64(second, load_u64(buffer, word + BLOCK_BYTES))
            third = _crc32_u64(third, load_u64(buffer, word + 2 * BLOCK_BYTES))
        state = np.uint32(_shift_block(np.uint32(_shift_block(first, shift_table) ^ second), shift_table)
                          ^ third)
        position += triple
    while stop - position >= 8:
        state = _crc32_u64(state, load_u64(buffer, position))
        position += 8
    if stop - position >= 4:
        state = _crc32_u32(state, load_u32(buffer, position))
        position += 4
    while position < stop:
        state = _crc32_u8(state, buffer[position])
        position += 1
    return state


@kernel
def _update_table(state, buffer, start, stop, table):
    state = np.uint32(state)
    position = start
    while stop - position >= 8:
        word = load_u64(buffer, position) ^ np.uint64(state)
        state = np.uint32(table[7, word & 0xFF] ^ table[6, (word >> 8) & 0xFF]
                          ^ table[5, (word >> 16) & 0xFF] ^ table[4, (word >> 24) & 0xFF]
                          ^ table[3, (word >> 32) & 0xFF] ^ table[2, (word >> 40) & 0xFF]
                          ^ table[1, (word >> 48) & 0xFF] ^ table[0, word >> 56])
        position += 8
    while position < stop:
        state = np.uint32(table[0, (state ^ buffer[position]) & 0xFF] ^ (state >> 8))
        position += 1
    return state


@kernel
def crc32c_table(buffer, start, stop, seed):
    """:func:`crc32c` by slicing-by-8 tables, on any CPU."""
    state = np.uint32(seed) ^ np.uint32(0xFFFFFFFF)
    return np.uint32(_update_table(state, buffer, start, stop, TABLE) ^ np.uint32(0xFFFFFFFF))


if HARDWARE:
    @kernel
    def crc32c(buffer, start, stop, seed):
        """The CRC32C of ``buffer[start:stop]`` (a 1-D C-contiguous uint8 array), continuing ``seed``.

        ``seed`` is the CRC32C of what came before (0 for none). The range is
        not checked: ``0 <= start <= stop <= buffer.size`` is the caller's to
        keep. Returns a uint32.
        """
        state = np.uint32(seed) ^ np.uint32(0xFFFFFFFF)
        return np.uint32(_update_hardware(state, buffer, start, stop, SHIFT_TABLE) ^ np.uint32(0xFFFFFFFF))
else:
    crc32c = crc32c_table


@llvm_inline_kernel
def update_word_table(state, word):
    """:func:`update_word` by the slicing-by-8 tables, on any CPU."""
    word = np.uint64(word) ^ np.uint64(state)
    return np.uint32(TABLE[7, word & 0xFF] ^ TABLE[6, (word >> 8) & 0xFF]
                     ^ TABLE[5, (word >> 16) & 0xFF] ^ TABLE[4, (word >> 24) & 0xFF]
                     ^ TABLE[3, (word >> 32) & 0xFF] ^ TABLE[2, (word >> 40) & 0xFF]
                     ^ TABLE[1, (word >> 48) & 0xFF] ^ TABLE[0, word >> 56])


@llvm_inline_kernel
def update_half_word_table(state, word):
    """:func:`update_half_word` by the tables, on any CPU."""
    word = (np.uint64(word) & np.uint64(0xFFFFFFFF)) ^ np.uint64(state)
    return np.uint32(TABLE[3, word & 0xFF] ^ TABLE[2, (word >> 8) & 0xFF]
                     ^ TABLE[1, (word >> 16) & 0xFF] ^ TABLE[0, (word >> 24) & 0xFF])


if HARDWARE:
    @llvm_inline_kernel
    def update_word(state, word):
        """The raw CRC32C state (not inverted) advanced over the 8 little-endian bytes of ``word``.

        For checksumming bytes a kernel holds in registers (a record header
        it is about to store) without reading them back from memory.
        """
        return _crc32_u64(np.uint32(state), np.uint64(word))

    @llvm_inline_kernel
    def update_half_word(state, word):
        """The raw CRC32C state advanced over the low 4 little-endian bytes of ``word``."""
        return _crc32_u32(np.uint32(state), np.uint64(word))
else:
    @llvm_inline_kernel
    def update_word(state, word):
        """The raw CRC32C state (not inverted) advanced over the 8 little-endian bytes of ``word``."""
        return update_word_table(np.uint32(state), np.uint64(word))

    @llvm_inline_kernel
    def update_half_word(state, word):
        """The raw CRC32C state advanced over the low 4 little-endian bytes of ``word``."""
        return update_half_word_table(np.uint32(state), np.uint64(word))


def checksum(data, seed=0):
    """CRC32C of a bytes-like object (Python convenience around :func:`crc32c`)."""
    array = data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    array = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
    return int(crc32c(array, 0, array.size, seed))
