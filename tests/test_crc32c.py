"""CRC32C kernels against the reference package and a bitwise reference."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ringbook.kernels import crc32c as kc
from tests.llvm_ir import allocation_calls
from tests.naive import naive_crc32c

crc32c_reference = pytest.importorskip("crc32c", reason="the crc32c package (dev extra) is the reference")


def test_known_value():
    # the check value of CRC-32C (iSCSI) on "123456789"
    assert kc.checksum(b"123456789") == 0xE3069283
    assert naive_crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("kernel", [kc.crc32c, kc.crc32c_table], ids=["crc32c", "table"])
def test_every_length_to_4096_equals_reference(kernel):
    rng = np.random.default_rng(4096)
    data = rng.integers(0, 256, 4096 + 64, dtype=np.uint8)
    for length in range(4097):
        start = int(rng.integers(0, 64))  # unaligned starts too
        expected = crc32c_reference.crc32c(data[start:start + length].tobytes())
        assert kernel(data, start, start + length, 0) == expected, (length, start)


@pytest.mark.parametrize("length", [3 * kc.BLOCK_BYTES - 1, 3 * kc.BLOCK_BYTES, 3 * kc.BLOCK_BYTES + 1,
                                    7 * kc.BLOCK_BYTES + 5, 1 << 20])
def test_long_buffers_through_interleaved_streams(length):
    data = np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8)
    expected = crc32c_reference.crc32c(data.tobytes())
    assert kc.crc32c(data, 0, length, 0) == expected
    assert kc.crc32c_table(data, 0, length, 0) == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_continuing_a_checksum(first, second):
    data = np.frombuffer(first + second, np.uint8)
    seed = kc.crc32c(data, 0, len(first), 0)
    assert kc.crc32c(data, len(first), data.size, seed) == crc32c_reference.crc32c(first + second)
    assert kc.crc32c(data, 0, data.size, 0) == naive_crc32c(first + second)


def test_hardware_path_is_used_where_the_cpu_has_it():
    flags = open("/proc/cpuinfo").read()
    assert kc.HARDWARE == ("sse4_2" in flags and kc.X86)
    if kc.HARDWARE:
        assert kc.crc32c is not kc.crc32c_table


def test_shift_table_advances_over_zero_blocks():
    # state advanced over BLOCK_BYTES zeros, bit by bit, for a few states
    for state in (1, 0x80000000, 0xDEADBEEF):
        value = state
        for _ in range(8 * kc.BLOCK_BYTES):
            value = (value >> 1) ^ (kc.POLYNOMIAL if value & 1 else 0)
        shifted = 0
        for k in range(4):
            shifted ^= int(kc.SHIFT_TABLE[k, (state >> (8 * k)) & 0xFF])
        assert shifted == value


def test_allocates_nothing():
    import numba
    signature = (numba.types.uint8[::1], numba.types.int64, numba.types.int64, numba.types.int64)
    assert allocation_calls(kc.crc32c, signature) == []


@pytest.mark.parametrize("update, update_half", [(kc.update_word, kc.update_half_word),
                                                 (kc.update_word_table, kc.update_half_word_table)],
                         ids=["crc32c", "table"])
def test_word_updates_equal_the_package(update, update_half):
    # a state fed word by word from registers equals the checksum of those bytes
    rng = np.random.default_rng(8)
    for _ in range(200):
        count = int(rng.integers(0, 12))
        words = rng.integers(0, 2**63, count, dtype=np.int64) * np.int64(rng.choice([-1, 1]))
        half = int(rng.integers(0, 2**32))
        state = update_half(np.uint32(0xFFFFFFFF), half)
        for word in words:
            state = update(state, word)
        data = half.to_bytes(4, "little") + words.astype("<i8").tobytes()
        assert int(state) ^ 0xFFFFFFFF == crc32c_reference.crc32c(data)
        assert int(state) ^ 0xFFFFFFFF == naive_crc32c(data)
