"""Futex wait and notify: the system calls, the doorbell protocol, no lost wake-up under racing
threads and processes, and an idle waiter that uses no CPU."""

import mmap
import os
import threading
import time

import numba
import numpy as np
import pytest

from ringbook.kernels import futex, ring
from ringbook.kernels.status import OK, TIMEOUT

COUNTER = 16   # byte offset of the producer's counter in the test slab
ACK = 32       # the consumer's acknowledgement
BELL_DATA = 0  # doorbell the consumer sleeps on
BELL_ACK = 8   # doorbell the producer sleeps on


def shared_slab(size=64):
    """A zeroed uint8 slab in an anonymous shared mapping: threads and forked children see it."""
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    return np.frombuffer(mapping, dtype=np.uint8)


@numba.njit(nogil=True)
def ping(slab, rounds, spins, timeout_ns):
    """Write 1..rounds to the counter, each time waiting for its acknowledgement; the first
    round whose acknowledgement never came (a lost wake-up), or 0."""
    counter = slab[COUNTER:COUNTER + 4].view(np.uint32)
    for value in range(1, rounds + 1):
        counter[0] = value
        futex.doorbell_ring(slab, BELL_DATA)
        seen = value - 1
        while seen != value:
            seen = futex.wait_counter(slab, BELL_ACK, ACK, seen, spins, timeout_ns)
            if seen == TIMEOUT:
                return value
    return 0


@numba.njit(nogil=True)
def pong(slab, rounds, spins, timeout_ns):
    """Acknowledge each counter value; the first value it waited for in vain, or 0."""
    ack = slab[ACK:ACK + 4].view(np.uint32)
    seen = 0
    while seen != rounds:
        value = futex.wait_counter(slab, BELL_DATA, COUNTER, seen, spins, timeout_ns)
        if value == TIMEOUT:
            return seen + 1
        seen = value
        ack[0] = value
        futex.doorbell_ring(slab, BELL_ACK)
    return 0


@numba.njit
def ring_bell(slab, offset):
    """:func:`futex.doorbell_ring` (an intrinsic) from Python."""
    return futex.doorbell_ring(slab, offset)


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """Both sides compiled before any test races them (a compile would look like a lost wake-up)."""
    ping(shared_slab(), 0, 0, 0)
    pong(shared_slab(), 0, 0, 0)
    futex.wait_counter(shared_slab(), 0, COUNTER, 1, 0, 0)


def test_futex_wait_returns_at_once_when_the_word_differs_and_times_out_otherwise():
    slab = shared_slab()
    slab[:4] = [7, 0, 0, 0]
    assert futex.futex_wait(slab, 0, 6, 1_000_000_000) == OK
    started = time.perf_counter()
    assert futex.futex_wait(slab, 0, 7, 20_000_000) == TIMEOUT
    assert time.perf_counter() - started >= 0.015
    assert futex.futex_wake(slab, 0, 1) == 0  # nobody sleeps


def test_futex_refuses_an_offset_outside_the_slab_or_unaligned():
    slab = shared_slab()
    for offset in (-4, 2, 61, 64):
        assert futex.futex_wait(slab, offset, 0, 0) == -22
        assert futex.futex_wake(slab, offset, 1) == -22


def test_a_sleeper_is_woken_by_another_thread_and_counted():
    slab = shared_slab()
    result = []
    sleeper = threading.Thread(target=lambda: result.append(futex.wait_counter(slab, 0, COUNTER, 0, 0, 5_000_000_000)))
    sleeper.start()
    deadline = time.monotonic() + 5
    while slab[futex.WAITERS_OFFSET] == 0 and time.monotonic() < deadline:
        time.sleep(0.001)  # until it announced
    time.sleep(0.01)
    slab[COUNTER] = 3
    assert ring_bell(slab, 0) in (0, 1)  # 0 only if it had not entered the kernel yet
    sleeper.join(5)
    assert result == [3]
    assert slab[futex.WAITERS_OFFSET] == 0  # the announce was withdrawn


def test_ringing_with_nobody_waiting_makes_no_system_call_and_leaves_the_sequence():
    slab = shared_slab()
    for _ in range(1000):
        assert ring_bell(slab, 0) == 0
    assert slab[:4].view(np.uint32)[0] == 0


def test_asymmetric_mode_is_one_bit_beside_the_waiter_count():
    slab = shared_slab()
    futex.set_asymmetric(slab, 0, True)
    word = slab[4:8].view(np.uint32)
    assert word[0] == futex.ASYMMETRIC
    ticket = futex.doorbell_prepare(slab, 0)
    assert word[0] == futex.ASYMMETRIC + 1 and ticket == 0
    futex.doorbell_cancel(slab, 0)
    futex.set_asymmetric(slab, 0, False)
    assert word[0] == 0


@pytest.mark.parametrize("asymmetric", [False, True], ids=["fenced", "asymmetric"])
def test_no_lost_wake_up_between_racing_threads(asymmetric):
    """Ping-pong where both sides park on every message (no spin): a lost wake-up would
    leave one side asleep past a written value until the 2 s timeout."""
    if asymmetric and not futex.register_asymmetric():
        pytest.skip("membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) is not available here")
    slab = shared_slab()
    futex.set_asymmetric(slab, BELL_DATA, asymmetric)
    futex.set_asymmetric(slab, BELL_ACK, asymmetric)
    rounds = 20_000
    result = {}
    consumer = threading.Thread(target=lambda: result.setdefault("pong", pong(slab, rounds, 0, 2_000_000_000)))
    consumer.start()
    result["ping"] = ping(slab, rounds, 0, 2_000_000_000)
    consumer.join(30)
    assert result == {"ping": 0, "pong": 0}


@pytest.mark.parametrize("spins", [0, futex.DEFAULT_SPINS])
def test_no_lost_wake_up_between_racing_processes(spins):
    futex.register_asymmetric()
    slab = shared_slab()
    futex.set_asymmetric(slab, BELL_DATA, True)
    futex.set_asymmetric(slab, BELL_ACK, True)
    rounds = 20_000
    child = os.fork()
    if child == 0:
        try:
            futex.register_asymmetric()
            os._exit(pong(slab, rounds, spins, 2_000_000_000) != 0)
        finally:
            os._exit(2)
    lost = ping(slab, rounds, spins, 2_000_000_000)
    _, status = os.waitpid(child, 0)
    assert lost == 0
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_idle_sleeper_uses_no_cpu():
    slab = shared_slab()
    usage = {}

    def sleeper():
        before = time.thread_time()
        usage["result"] = futex.wait_counter(slab, 0, COUNTER, 0, futex.DEFAULT_SPINS, 300_000_000)
        usage["cpu"] = time.thread_time() - before

    thread = threading.Thread(target=sleeper)
    thread.start()
    thread.join(5)
    assert usage["result"] == TIMEOUT
    assert usage["cpu"] < 0.01  # of 0.3 s asleep: a spinning waiter would use all of it


def test_membarrier_query_names_the_expedited_command_where_linux_has_it():
    supported = futex.membarrier(futex.MEMBARRIER_CMD_QUERY)
    if supported < 0:
        pytest.skip(f"membarrier unavailable (errno {-supported})")
    assert supported & futex.MEMBARRIER_CMD_GLOBAL_EXPEDITED


@numba.njit(nogil=True)
def ring_consume(slab, consumer, out, strategy, count):
    """Read ``count`` messages with read_wait (2 s each); the messages read before a timeout."""
    for i in range(count):
        length = ring.read_wait(slab, consumer, out, strategy, 2_000_000_000)
        if length < 0 or out[0] != i % 251:
            return i
    return count


@numba.njit(nogil=True)
def ring_produce(slab, producer, payload, strategy, count):
    for i in range(count):
        payload[0] = i % 251
        if ring.write_wait(slab, producer, payload, 0, 0, strategy, 2_000_000_000) != ring.OK:
            return i
    return count


def test_the_ring_parks_both_sides_and_loses_no_wake_up():
    """A 2-slot ring with no spinning: the consumer parks on the data doorbell whenever it is
    empty, the producer on the space doorbell whenever it is full."""
    from ringbook.engine.ring import Ring
    from ringbook.kernels.wait import wait_strategy

    never_spin = wait_strategy(spins=0)
    count = 20_000
    with Ring.create(2, 64) as shared:
        producer, consumer = shared.producer, shared.consumer(0)
        out = np.zeros(64, np.uint8)
        payload = np.zeros(8, np.uint8)
        ring_consume(shared.slab, consumer, out, never_spin, 0)
        ring_produce(shared.slab, producer, payload, never_spin, 0)
        result = []
        reader = threading.Thread(target=lambda: result.append(ring_consume(shared.slab, consumer, out,
                                                                            never_spin, count)))
        reader.start()
        written = ring_produce(shared.slab, producer, payload, never_spin, count)
        reader.join(30)
        assert (written, result) == (count, [count])


def test_a_ring_reader_waiting_on_an_idle_ring_uses_no_cpu():
    from ringbook.engine.ring import Ring

    with Ring.create(8, 64) as shared:
        shared.consumer(0)
        with pytest.raises(TimeoutError):
            shared.read(timeout=0.01)  # compiled
        before = time.thread_time()
        with pytest.raises(TimeoutError):
            shared.read(timeout=0.3)
        assert time.thread_time() - before < 0.02
