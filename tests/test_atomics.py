import threading

import numpy as np
from numba import types

from ringbook.kernels.atomics import (compare_exchange, compiler_barrier, fetch_add, load_acquire,
                             load_relaxed, spin_pause, store_release)
from ringbook.kernels.jit_options import kernel
from tests.llvm_ir import llvm_ir

MESSAGES = 20_000
SPIN_LIMIT = 1 << 31  # a wait that never ends is a failure, not a hang


@kernel
def publish(data, control):
    """Write then publish each message; wait for the reader to acknowledge it."""
    for sequence in range(1, MESSAGES + 1):
        data[0] = sequence * 3
        data[1] = sequence * 7
        store_release(control, 0, sequence)
        spins = 0
        while load_acquire(control, 8) != sequence:
            spin_pause()
            spins += 1
            if spins > SPIN_LIMIT:
                return False
    return True


@kernel
def consume(data, control, errors):
    """Wait for each message, check both words were visible, acknowledge it."""
    for sequence in range(1, MESSAGES + 1):
        spins = 0
        while load_acquire(control, 0) != sequence:
            spin_pause()
            spins += 1
            if spins > SPIN_LIMIT:
                return False
        if data[0] != sequence * 3 or data[1] != sequence * 7:
            errors[0] += 1
        store_release(control, 8, sequence)
    return True


@kernel
def count_up(counter, times):
    for _ in range(times):
        fetch_add(counter, 0, 1)


@kernel
def _exchange_then_read(values):
    found = compare_exchange(values, 0, 5, 9)
    compiler_barrier()
    return found, load_relaxed(values, 0)


def test_ir_has_acquire_load_and_release_store():
    ir = llvm_ir(publish, (types.int64[::1], types.int64[::1]))
    assert "load atomic i64" in ir and "acquire" in ir
    assert any("store atomic i64" in line and "release" in line for line in ir.splitlines())
    assert "pause" in ir


def test_two_threads_exchange_messages_in_order():
    data = np.zeros(2, np.int64)
    control = np.zeros(16, np.int64)  # writer's and reader's words a cache line apart
    errors = np.zeros(1, np.int64)
    results = {}
    reader = threading.Thread(target=lambda: results.update(read=consume(data, control, errors)))
    reader.start()
    results["write"] = publish(data, control)
    reader.join()
    assert results == {"write": True, "read": True}
    assert errors[0] == 0
    assert control[0] == control[8] == MESSAGES


def test_fetch_add_from_two_threads_loses_no_increment():
    counter = np.zeros(1, np.int64)
    threads = [threading.Thread(target=count_up, args=(counter, 200_000)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter[0] == 400_000


def test_compare_exchange_succeeds_only_on_match():
    values = np.array([5], np.int64)
    assert _exchange_then_read(values) == (5, 9)
    assert _exchange_then_read(values) == (9, 9)  # expected 5, found 9: unchanged


def test_int32_elements():
    values = np.zeros(4, np.int32)
    count_up(values, 10)
    assert values[0] == 10 and values[1] == 0
