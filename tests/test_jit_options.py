"""The jit options' dispatcher: a kernel called with constants from other jitted code, and
callees compiled where their caller is, not loaded from the disk cache."""

import numpy as np
import pytest
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


CALLEES_FROM_CACHE = """
import sys
import numpy as np
import ringbook.kernels.book as book
from ringbook.kernels.events import FLAG_BATCH_END, KIND_L2_SET, KIND_L3_ADD, empty_events
from ringbook.kernels.jit_options import KernelDispatcher
from ringbook.kernels.replay import apply_events

new = book.new_book(n_symbols=1, depth=64, order_capacity=16)
if sys.argv[1] == "set_level":
    book.set_level(new, 0, book.BID, 100, 3)
else:
    events = empty_events(2)
    events["kind"] = [KIND_L2_SET, KIND_L3_ADD]
    events["side"] = [1, -1]
    events["price"] = [100, 101]
    events["quantity"] = [1, 1]
    events["order_id"] = [0, 1]
    events["flags"] = FLAG_BATCH_END
    apply_events(new, events, 0, 2)
    loaded = sorted(name for module in (book,) for name, value in vars(module).items()
                    if isinstance(value, KernelDispatcher) and value.stats.cache_hits)
    print(" ".join(loaded) or "none")
"""


@pytest.mark.slow
def test_a_kernel_compiled_from_another_compiles_its_callees_here(tmp_path):
    """A kernel compiled in a process where its callees are in the disk cache compiles them
    again rather than load them: loaded code is machine code, which it cannot inline. The book's
    kernels cached by an earlier process (a set_level) made apply_events' cached code take 1.8
    times as long, for good."""
    import os
    import subprocess
    import sys

    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    run = [sys.executable, "-c", CALLEES_FROM_CACHE]
    subprocess.run([*run, "set_level"], env=environment, check=True, timeout=600)
    assert any(tmp_path.rglob("book.*.nbi"))   # the book's kernels are in the cache
    found = subprocess.run([*run, "apply_events"], env=environment, check=True, timeout=600,
                           capture_output=True, text=True)
    assert found.stdout.split() == ["none"]
