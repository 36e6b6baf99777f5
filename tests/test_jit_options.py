"""The jit options' dispatcher: a kernel called with constants from other jitted code."""

import numpy as np
from numba import types

from ringbook.kernels.jit_options import KernelDispatcher, kernel, kernel_with_callback

# Uncached (kernel_with_callback's options), so that each process compiles them and their
# signatures are there to read: a cached caller would load without compiling its callee.


@kernel_with_callback
def signed_pick(values, side, negate):
    return -values[side] if negate else values[side]


@kernel_with_callback
def picks_with_constants(values):
    return signed_pick(values, 0, False) * 10 + signed_pick(values, 1, True)


@kernel_with_callback
def tuple_item(items, index):
    return items[index]


@kernel_with_callback
def needs_a_literal_index(values):
    # a constant index into a heterogeneous tuple types only as a literal
    return tuple_item((values[0], len(values)), 1) + tuple_item((values[0], len(values)), 0)


def test_every_decorator_makes_the_kernel_dispatcher():
    assert isinstance(signed_pick, KernelDispatcher) and isinstance(kernel(lambda: 0), KernelDispatcher)


def test_constant_arguments_share_one_compilation_for_their_plain_types():
    values = np.array([7, 3], np.int64)
    assert picks_with_constants(values) == 67
    assert signed_pick.signatures == [(types.int64[::1], types.int64, types.boolean)]


def test_a_callee_that_needs_the_literal_still_compiles_for_it():
    assert needs_a_literal_index(np.array([4.0])) == 5.0
    assert all(isinstance(signature[1], types.IntegerLiteral) for signature in tuple_item.signatures)
