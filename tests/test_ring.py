import ctypes
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import types

from ringbook.engine import ring as engine_ring
from ringbook.engine.ring import (Ring, RingCorruptError, RingError, RingLayoutError, evicts_by_default, new_state,
                         region_mode)
from ringbook.kernels import ring
from ringbook.kernels.jit_options import kernel
from ringbook.kernels.slab import copy_bytes, load_i64, load_u32, store_i64, store_u32
from ringbook.kernels.wait import wait_strategy
from tests import ring_fuzz
from tests.llvm_ir import allocation_calls, function_body
from tests.naive import NaiveRing
from tests.ring_child import MESSAGE_BYTES, consume, pattern, produce

CHILD = Path(__file__).with_name("ring_child.py")
TIMEOUT_NS = 10_000_000_000  # a wait that never ends is a failure, not a hang


def shm_name():
    return f"ringbook-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def open_pair(slot_count=8, slot_size=64, consumers=1):
    """A formatted private slab, its producer state and its consumers' states."""
    slab = np.zeros(ring.region_bytes(slot_size, slot_count, consumers), np.uint8)
    assert ring.format_slab(slab, slot_size, slot_count, consumers) == ring.OK
    producer = new_state()
    assert ring.open_producer(slab, producer) == ring.OK
    readers = []
    for index in range(consumers):
        readers.append(new_state())
        assert ring.open_consumer(slab, index, readers[-1]) == ring.OK
    return slab, producer, readers


def message(index, length=MESSAGE_BYTES):
    return np.frombuffer((pattern(index) * 4)[:length], np.uint8).copy()


# Layout

def test_header_fields_sit_at_the_documented_offsets():
    slab, _, _ = open_pair(slot_count=16, slot_size=128, consumers=3)
    assert bytes(slab[0:8]) == b"RINGBOOK"
    u32 = slab[8:32].view("<u4")
    assert list(u32[:5]) == [ring.VERSION, 128, 16, 3, 24]
    control, region = slab[32:48].view("<u8")
    assert control == 64 * (2 + 3) and region == control + 16 * 128 == slab.size


def test_slot_header_and_positions_sit_at_the_documented_offsets():
    slab, producer, (reader,) = open_pair(slot_count=4, slot_size=64)
    for index in range(6):
        assert ring.try_write(slab, producer, message(index, 10), 7, 1000 + index) == ring.OK
        out = np.zeros(64, np.uint8)
        assert ring.try_read(slab, reader, out) == 10
    assert slab[64:72].view("<i8")[0] == 6 and slab[128:136].view("<i8")[0] == 6
    slot = 192 + (5 & 3) * 64  # message 5
    length, flags = slab[slot:slot + 8].view("<u4")
    sequence, stamp = slab[slot + 8:slot + 24].view("<i8")
    assert (length, flags, sequence, stamp) == (10, 7, 5, 1005)
    assert bytes(slab[slot + 24:slot + 34]) == bytes(message(5, 10))


@pytest.mark.parametrize("slot_size, slot_count, consumers", [
    (16, 8, 1), (48, 8, 1), (64, 1, 1), (64, 6, 1), (64, 8, 0), (64, 8, 33)])
def test_bad_geometry_is_refused(slot_size, slot_count, consumers):
    assert ring.check_geometry(slot_size, slot_count, consumers) == ring.BAD_ARGUMENT
    with pytest.raises(ValueError, match="geometry"):
        Ring.create(slot_count, slot_size, consumers)


@kernel
def _slab_round_trip(slab, offset, value):
    store_u32(slab, offset, value)
    store_i64(slab, offset + 4, -value)
    return load_u32(slab, offset), load_i64(slab, offset + 4)


@kernel
def _copy(source, source_offset, target, target_offset, length):
    copy_bytes(source, source_offset, target, target_offset, length)


@pytest.mark.parametrize("offset", [0, 1, 3, 8, 13])
def test_slab_loads_and_stores_are_little_endian_at_any_offset(offset):
    slab = np.zeros(32, np.uint8)
    assert _slab_round_trip(slab, offset, 0x1_2345_6789) == (0x2345_6789, -0x1_2345_6789)
    assert bytes(slab[offset:offset + 4]) == (0x2345_6789).to_bytes(4, "little")
    assert bytes(slab[offset + 4:offset + 12]) == (-0x1_2345_6789).to_bytes(8, "little", signed=True)


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 127, 128, 129, 1000])
def test_copy_bytes_copies_exactly_the_range(length):
    source = np.arange(1100, dtype=np.uint8)
    target = np.zeros(1100, np.uint8)
    _copy(source, 5, target, 11, length)
    expected = np.zeros(1100, np.uint8)
    expected[11:11 + length] = source[5:5 + length]
    assert (target == expected).all()


# One thread: behaviour against the reference

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["write", "read0", "read1", "batch_write", "batch_read"]),
                          st.integers(0, 48)), max_size=60))
def test_operations_match_the_naive_ring(operations):
    slab, producer, readers = open_pair(slot_count=4, slot_size=64, consumers=2)
    naive = NaiveRing(4, 40, consumers=2)
    written = 0
    for operation, size in operations:
        if operation == "write":
            payload = message(written, size)
            status = ring.try_write(slab, producer, payload, 0, 0)
            if size > 40:
                assert status == ring.TOO_LARGE
                continue
            expected = naive.write(bytes(payload))
            assert status == (ring.OK if expected else ring.FULL)
            written += expected
        elif operation == "batch_write":
            count = size % 5
            payloads = np.zeros((count, 40), np.uint8)
            lengths = np.arange(count, dtype=np.int64) * 7
            for row in range(count):
                payloads[row] = message(written + row, 40)
            done = ring.write_batch(slab, producer, payloads, lengths, 0, 0)
            assert done == min(count, naive.free_slots())
            for row in range(done):
                assert naive.write(bytes(payloads[row, :lengths[row]]))
            written += done
        elif operation == "batch_read":
            payloads = np.zeros((size % 5, 40), np.uint8)
            lengths = np.zeros(size % 5, np.int64)
            done = ring.read_batch(slab, readers[0], payloads, lengths)
            assert done == min(size % 5, naive.pending(0))
            for row in range(done):
                assert bytes(payloads[row, :lengths[row]]) == naive.read(0)
        else:
            consumer = int(operation[-1])
            out = np.zeros(40, np.uint8)
            length = ring.try_read(slab, readers[consumer], out)
            expected = naive.read(consumer)
            if expected is None:
                assert length == ring.EMPTY
            else:
                assert bytes(out[:length]) == expected
        for consumer in range(2):
            assert ring.pending(slab, readers[consumer]) == naive.pending(consumer)
        assert ring.free_slots(slab, producer) == naive.free_slots()


def test_full_and_empty_and_positions():
    with Ring.create(4, 64) as shared:
        assert shared.is_empty() and not shared.is_full()
        for index in range(4):
            assert shared.try_write(pattern(index))
        assert shared.is_full() and not shared.try_write(b"late")
        assert shared.producer_position == 4 and shared.consumer_position(0) == 0
        assert [shared.read() for _ in range(4)] == [pattern(i) for i in range(4)]
        assert shared.try_read() is None and shared.consumer_position(0) == 4


def test_slowest_consumer_gates_the_producer():
    with Ring.create(2, 64, consumers=2) as shared:
        assert shared.try_write(b"a") and shared.try_write(b"b")
        assert shared.read(0) == b"a" and shared.read(0) == b"b"
        assert not shared.try_write(b"c")  # consumer 1 has read nothing yet
        assert shared.read(1) == b"a"
        assert shared.try_write(b"c")
        assert [shared.read(1), shared.read(1), shared.read(0)] == [b"b", b"c", b"c"]


def test_peek_is_a_view_and_does_not_advance():
    slab, producer, (reader,) = open_pair()
    assert ring.try_write(slab, producer, message(3, 20), 5, 77) == ring.OK
    length, view, flags, stamp = ring.peek(slab, reader)
    assert (length, flags, stamp) == (20, 5, 77) and bytes(view) == bytes(message(3, 20))
    assert np.shares_memory(view, slab)
    assert ring.peek(slab, reader)[0] == 20  # still there
    assert ring.release(slab, reader) == ring.OK
    assert ring.peek(slab, reader)[0] == ring.EMPTY and ring.release(slab, reader) == ring.EMPTY


def test_peek_header_is_peek_without_the_view():
    slab, producer, (reader,) = open_pair()
    assert ring.peek_header(slab, reader) == (ring.EMPTY, 0, 0)
    assert ring.try_write(slab, producer, message(4, 12), 9, 123) == ring.OK
    assert ring.peek_header(slab, reader) == (12, 9, 123)
    assert ring.peek_header(slab, reader) == (12, 9, 123)      # not consumed
    length, view, flags, stamp = ring.peek(slab, reader)
    assert (length, flags, stamp) == (12, 9, 123) and bytes(view) == bytes(message(4, 12))
    assert ring.release(slab, reader) == ring.OK
    assert ring.peek_header(slab, reader)[0] == ring.EMPTY


def test_too_large_for_the_reader_leaves_the_message():
    slab, producer, (reader,) = open_pair()
    assert ring.try_write(slab, producer, message(1, 30), 0, 0) == ring.OK
    assert ring.try_read(slab, reader, np.zeros(10, np.uint8)) == ring.TOO_LARGE
    out = np.zeros(30, np.uint8)
    assert ring.try_read(slab, reader, out) == 30 and bytes(out) == bytes(message(1, 30))


def test_states_are_checked():
    slab, producer, (reader,) = open_pair()
    other, _, _ = open_pair(slot_count=16)
    out = np.zeros(64, np.uint8)
    assert ring.try_read(slab, producer, out) == ring.BAD_STATE
    assert ring.try_write(slab, reader, out[:4], 0, 0) == ring.BAD_STATE
    assert ring.try_write(other, producer, out[:4], 0, 0) == ring.BAD_STATE
    assert ring.try_read(slab, np.zeros(4, np.int64), out) == ring.BAD_STATE
    assert ring.open_consumer(slab, 1, new_state()) == ring.BAD_ARGUMENT


@pytest.mark.parametrize("slot_size", [32, 64, 256])
@pytest.mark.parametrize("evict", [True, False])
def test_evicting_consumer_reads_the_same_messages(slot_size, evict):
    """Eviction is a cache hint: every way of reading returns the same bytes."""
    capacity = slot_size - ring.SLOT_HEADER_BYTES
    slab, producer, (reader,) = open_pair(slot_count=4, slot_size=slot_size)
    assert reader[ring.STATE_EVICT] == 1  # on when opened
    assert ring.set_evict(reader, evict) == ring.OK and reader[ring.STATE_EVICT] == int(evict)
    out = np.zeros(capacity, np.uint8)
    batch, lengths = np.zeros((3, capacity), np.uint8), np.zeros(3, np.int64)
    for lap in range(5):    # past the end of the ring: slots are written again
        sent = [message(lap * 3 + i, (lap * 7 + i * 5) % (capacity + 1)) for i in range(3)]
        for payload in sent:
            assert ring.try_write(slab, producer, payload, 0, 0) == ring.OK
        assert ring.try_read(slab, reader, out) == sent[0].size
        assert bytes(out[:sent[0].size]) == bytes(sent[0])
        length, view, _, _ = ring.peek(slab, reader)
        assert bytes(view) == bytes(sent[1])
        assert ring.release(slab, reader) == ring.OK
        assert ring.try_write(slab, producer, sent[0], 0, 0) == ring.OK
        assert ring.read_batch(slab, reader, batch, lengths) == 2
        assert [bytes(batch[i, :lengths[i]]) for i in range(2)] == [bytes(sent[2]), bytes(sent[0])]


@pytest.mark.parametrize("evict", [1, 0])
@pytest.mark.parametrize("next_written", [True, False])
def test_a_consumer_evicts_a_slot_only_when_behind(evict, next_written):
    """Caught up, it keeps the line it will wait on a lap later (see set_evict)."""
    expected = ring.SLOT_HEADER_BYTES + 40 if evict and next_written else 0
    assert ring._evicted_bytes(evict, 40, next_written) == expected


def test_set_evict_takes_only_a_consumer():
    slab, producer, (reader,) = open_pair()
    assert ring.set_evict(producer, False) == ring.BAD_STATE
    assert ring.set_evict(new_state(), False) == ring.BAD_STATE
    assert ring.set_evict(np.zeros(4, np.int64), False) == ring.BAD_STATE
    assert ring.set_evict(reader, False) == ring.OK


@pytest.mark.parametrize("slot_bytes, consumers, l2_bytes, expected", [
    (1 << 20, 1, 1 << 20, True),     # fits the L2 cache: the line would still be there a lap later
    (2 << 20, 1, 1 << 20, False),    # outgrows it: the line has left by then
    (1 << 30, 1, None, True),        # cache unknown: evict, as the kernels do
    (4 << 10, 2, 1 << 20, False),    # several consumers: one's eviction sends the others to memory
])
def test_eviction_by_default_follows_the_ring_and_the_l2_cache(slot_bytes, consumers, l2_bytes, expected):
    assert evicts_by_default(slot_bytes, consumers, l2_bytes) is expected


def test_ring_consumers_evict_as_the_ring_decides_unless_told(monkeypatch):
    monkeypatch.setattr(engine_ring, "l2_cache_bytes", lambda: 64 << 10)
    with Ring.create(1024, 64) as fits, Ring.create(2048, 64) as outgrows, Ring.create(16, 64, 2) as shared:
        assert (fits.evicts_by_default, outgrows.evicts_by_default, shared.evicts_by_default) == (True, False, False)
        assert fits.consumer(0)[ring.STATE_EVICT] == 1
        assert outgrows.consumer(0)[ring.STATE_EVICT] == 0
        assert [shared.consumer(i)[ring.STATE_EVICT] for i in (0, 1)] == [0, 0]
        assert shared.consumer(1, evict=True)[ring.STATE_EVICT] == 1     # told, once opened too
        assert fits.consumer(0, evict=False)[ring.STATE_EVICT] == 0
        assert fits.consumer(0)[ring.STATE_EVICT] == 0                   # and it stays so


def guarded_slab(size):
    """A slab of ``size`` bytes that ends where an inaccessible page begins:
    any access past its end, a cache flush included, kills the process."""
    page = mmap.PAGESIZE
    pages = -(-size // page) + 1
    mapping = mmap.mmap(-1, pages * page)
    start = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    libc = ctypes.CDLL(None, use_errno=True)
    guard = ctypes.c_void_p(start + (pages - 1) * page)
    assert libc.mprotect(guard, ctypes.c_size_t(page), 0) == 0, ctypes.get_errno()
    return np.frombuffer(mapping, np.uint8, count=size, offset=(pages - 1) * page - size)


def test_release_after_the_length_was_corrupted_evicts_only_inside_the_slab():
    slot_size, slot_count = 256, 4
    slab = guarded_slab(ring.region_bytes(slot_size, slot_count, 1))
    assert ring.format_slab(slab, slot_size, slot_count, 1) == ring.OK
    producer, reader = new_state(), new_state()
    assert ring.open_producer(slab, producer) == ring.OK
    assert ring.open_consumer(slab, 0, reader) == ring.OK
    out = np.zeros(slot_size, np.uint8)
    for index in range(slot_count - 1):
        assert ring.try_write(slab, producer, message(index, 40), 0, 0) == ring.OK
        assert ring.try_read(slab, reader, out) == 40
    # The last slot ends against the guard page.
    assert ring.try_write(slab, producer, message(9, 40), 0, 0) == ring.OK
    assert ring.peek(slab, reader)[0] == 40
    # A message after it: the reader is behind, so releasing evicts.
    assert ring.try_write(slab, producer, message(10, 40), 0, 0) == ring.OK
    last = slab.size - slot_size
    slab[last:last + 4] = 0xFF     # its length now says 4 GiB
    assert ring.release(slab, reader) == ring.OK
    assert ring.peek(slab, reader)[0] == 40


@pytest.mark.slow
def test_hot_kernels_allocate_nothing_and_take_no_references():
    slab, state, buffer = types.uint8[::1], types.int64[::1], types.uint8[::1]
    matrix, lengths = types.uint8[:, ::1], types.int64[::1]
    signatures = {
        ring.try_write: (slab, state, buffer, types.int64, types.int64),
        ring.try_read: (slab, state, buffer),
        ring.write_batch: (slab, state, matrix, lengths, types.int64, types.int64),
        ring.read_batch: (slab, state, matrix, lengths),
        ring.peek_header: (slab, state),
    }
    for function, signature in signatures.items():
        assert allocation_calls(function, signature) == []
        # Reference counting costs six atomic operations a call.
        assert "NRT_incref" not in function_body(function, signature), function.__name__


@kernel
def _write_many(slab, producer, payload, count):
    """A user's loop: one try_write per message."""
    written = 0
    for index in range(count):
        payload[0] = index & 255
        written += ring.try_write(slab, producer, payload) == ring.OK
    return written


def test_try_write_is_inlined_into_a_callers_loop_without_reference_counting():
    slab, state, buffer = types.uint8[::1], types.int64[::1], types.uint8[::1]
    body = function_body(_write_many, (slab, state, buffer, types.int64))
    calls = [line for line in body.splitlines() if "call " in line]
    assert not any("try_write" in line for line in calls)
    # The caller takes its three arrays once, on entry; none inside the loop.
    assert sum("NRT_incref" in line for line in calls) <= 3
    # And it still writes what the kernel writes.
    slab_array, producer, consumers = open_pair(slot_count=8)
    written = _write_many(slab_array, producer, np.zeros(8, np.uint8), 10)
    assert written == 8
    out = np.zeros(64, np.uint8)
    assert [ring.try_read(slab_array, consumers[0], out) == 8 and out[0] for _ in range(8)] == list(range(8))


# Safety: corruption is reported, never followed

def test_corrupt_length_and_sequence_are_reported():
    with Ring.create(4, 64) as shared:
        shared.write(b"hello")
        slot = ring.control_bytes(1)
        shared.slab[slot:slot + 4].view("<u4")[0] = 1000
        with pytest.raises(RingCorruptError, match="length field 1000, expected at most 40"):
            shared.read(timeout=1)
        shared.slab[slot:slot + 4].view("<u4")[0] = 5
        shared.slab[slot + 8:slot + 16].view("<i8")[0] = 9
        with pytest.raises(RingCorruptError, match="sequence field 9, expected 0"):
            shared.read(timeout=1)


@pytest.mark.parametrize("producer_position", [100, -1])
def test_impossible_producer_position_is_reported_by_the_consumer(producer_position):
    with Ring.create(4, 64) as shared:
        shared.consumer(0)
        shared.write(b"x")
        shared.slab[64:72].view("<i8")[0] = producer_position  # a ring ahead, or negative
        assert shared.read(timeout=1) == b"x"  # complete by its slot's own sequence
        with pytest.raises(RingCorruptError, match="positions make no sense"):
            shared.read(timeout=1)  # no complete slot: the producer position is consulted


def test_a_waiting_consumer_reads_the_producer_position_once_every_64_polls():
    """Empty polls look at the next slot only; every 64th also at the producer's
    line, which is how a corrupt position still gets reported."""
    with Ring.create(8, 64) as shared:
        consumer = shared.consumer(0)
        out = np.zeros(64, np.uint8)
        shared.slab[64:72].view("<i8")[0] = 1000            # corrupt, and never read...
        statuses = [ring.try_read(shared.slab, consumer, out) for _ in range(ring.POSITION_CHECK_POLLS)]
        assert statuses[:-1] == [ring.EMPTY] * (ring.POSITION_CHECK_POLLS - 1)
        assert statuses[-1] == ring.CORRUPT_POSITION        # ...until the 64th poll


@pytest.mark.parametrize("consumer_position", [5, -3])
def test_impossible_consumer_position_is_reported_by_the_producer(consumer_position):
    with Ring.create(4, 64) as shared:
        shared.write(b"x")
        shared.slab[128:136].view("<i8")[0] = consumer_position  # ahead of the producer, or negative
        with pytest.raises(RingCorruptError, match=r"consumer_positions=\[%d\]" % consumer_position):
            shared.free_slots()
        for _ in range(3):
            shared.try_write(b"y")
        with pytest.raises(RingCorruptError, match="positions make no sense"):
            shared.try_write(b"z")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, ring_fuzz.REGION - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, 7))
def test_corrupted_bytes_never_lead_outside_the_slab(corruptions, messages_before):
    ring_fuzz.exercise(corruptions, messages_before)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, ring_fuzz.REGION - 1), st.integers(0, 255)), max_size=8),
       st.integers(0, 2 * len(ring_fuzz._SIZES)), st.one_of(st.none(), st.binary(max_size=40)))
def test_attaching_a_corrupted_file_raises_only_ring_errors(tmp_path_factory, corruptions, size_choice, registry):
    ring_fuzz.exercise_attach(str(tmp_path_factory.mktemp("attach")), corruptions, size_choice, registry)


@pytest.mark.slow
@pytest.mark.parametrize("target, runs", [("kernels", 3000), ("attach", 1000)])
def test_coverage_guided_fuzzing_finds_nothing_in_a_short_run(tmp_path, target, runs):
    pytest.importorskip("atheris")
    fuzz = subprocess.run([sys.executable, str(Path(ring_fuzz.__file__)), f"--target={target}", f"-runs={runs}",
                           "-seed=1", f"-artifact_prefix={tmp_path}/"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RINGBOOK_FUZZ_DIR": str(tmp_path)})   # libFuzzer's exit cleans nothing
    assert fuzz.returncode == 0, fuzz.stderr[-2000:]
    assert f"Done {runs} runs" in fuzz.stderr


# Threads

@kernel
def _produce_and_report(slab, producer, first, count, strategy, result):
    result[0] = produce(slab, producer, first, count, strategy, TIMEOUT_NS)


def test_producer_and_consumer_threads_exchange_every_message_in_order():
    with Ring.create(64, 64) as shared:
        count = 20_000
        written = np.zeros(1, np.int64)
        producer = threading.Thread(target=_produce_and_report,
                                    args=(shared.slab, shared.producer, 0, count, shared.strategy, written))
        reader = shared.consumer(0)
        producer.start()
        bad = consume(shared.slab, reader, count, shared.strategy, TIMEOUT_NS)
        producer.join()
        assert written[0] == count and bad == -1
        assert shared.is_empty()


def test_idle_consumer_uses_little_cpu():
    with Ring.create(8, 64) as shared:
        reader = shared.consumer(0)
        out = np.zeros(64, np.uint8)
        measured = {}

        def wait_on_idle_ring():
            cpu, wall = time.thread_time(), time.perf_counter()
            measured["status"] = ring.read_wait(shared.slab, reader, out, shared.strategy, 1_000_000_000)
            measured["cpu"], measured["wall"] = time.thread_time() - cpu, time.perf_counter() - wall

        thread = threading.Thread(target=wait_on_idle_ring)
        thread.start()
        thread.join()
        assert measured["status"] == ring.TIMEOUT and measured["wall"] >= 1.0
        assert measured["cpu"] < 0.2 * measured["wall"]  # a resource bound, not a speed


def test_blocking_calls_time_out():
    with Ring.create(2, 64) as shared:
        with pytest.raises(TimeoutError):
            shared.read(timeout=0.01)
        shared.write(b"1")
        shared.write(b"2")
        with pytest.raises(TimeoutError):
            shared.write(b"3", timeout=0.01)


def test_wait_strategy_is_validated():
    with pytest.raises(ValueError):
        wait_strategy(min_sleep_ns=10, max_sleep_ns=5)


# Backing: files and shared memory

def test_shared_memory_is_private_to_its_owner_and_unlinked_on_close():
    name = shm_name()
    with Ring.create(8, 64, name=name) as shared:
        assert region_mode(shared.path) == 0o600
        with pytest.raises(FileExistsError):
            Ring.create(8, 64, name=name)
    assert not Path("/dev/shm", name).exists()


def test_unlinked_shared_memory_stays_usable_by_those_attached():
    name = shm_name()
    with Ring.create(8, 64, name=name) as shared, Ring.attach(name=name) as attached:
        shared.unlink()
        assert not Path("/dev/shm", name).exists()
        shared.write(b"still here")
        assert attached.read(timeout=1) == b"still here"
        with pytest.raises(FileNotFoundError):
            Ring.attach(name=name)


def test_file_ring_survives_and_attaches(tmp_path):
    path = tmp_path / "ring.buf"
    with Ring.create(8, 64, path=path) as shared:
        shared.write(b"kept")
    assert region_mode(path) == 0o600
    with Ring.attach(path=path) as again:
        assert again.read(timeout=1) == b"kept"


@pytest.mark.parametrize("offset, value, match", [
    (0, b"XINGBOOK", r"expected magic b'RINGBOOK', found b'XINGBOOK'"),
    (8, (2).to_bytes(4, "little"), "version 2, expected 1"),
    (16, (3).to_bytes(4, "little"), "slot_count=3"),
])
def test_attach_refuses_a_mismatched_header(tmp_path, offset, value, match):
    path = tmp_path / "ring.buf"
    Ring.create(8, 64, path=path).close()
    with open(path, "r+b") as region:
        region.seek(offset)
        region.write(value)
    with pytest.raises(RingLayoutError, match=match):
        Ring.attach(path=path)


def test_attach_refuses_a_truncated_region(tmp_path):
    path = tmp_path / "ring.buf"
    Ring.create(8, 64, path=path).close()
    os.truncate(path, 500)
    with pytest.raises(RingLayoutError, match="truncated: expected 704 bytes, found 500"):
        Ring.attach(path=path)
    os.truncate(path, 100)
    with pytest.raises(RingLayoutError, match="expected at least 192 bytes"):
        Ring.attach(path=path)


# Processes

def _child(*arguments):
    return subprocess.Popen([sys.executable, str(CHILD), *map(str, arguments)],
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_second_process_reads_every_message():
    name = shm_name()
    count = 5_000
    with Ring.create(256, 64, name=name) as shared:
        child = _child("consume", name, count)
        try:
            written = produce(shared.slab, shared.producer, 0, count, shared.strategy, TIMEOUT_NS)
            output, _ = child.communicate(timeout=60)
        finally:
            child.kill()
        assert written == count and output.split() == ["ok", str(count)]


@pytest.mark.slow
def test_producer_killed_mid_message_leaves_every_complete_message(tmp_path):
    path = tmp_path / "ring.buf"
    Ring.create(16, 64, path=path).close()
    complete = 11
    child = _child("produce-then-stall", path, complete)
    try:
        assert child.stdout.readline().strip() == "stalled"
        with Ring.attach(path=path) as second, pytest.raises(RingError, match="has a producer already"):
            second.producer  # the child is still the producer
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    with Ring.attach(path=path) as shared:
        assert shared.producer_position == complete
        assert [shared.try_read() for _ in range(complete)] == [pattern(i) for i in range(complete)]
        assert shared.try_read() is None  # the torn message is invisible
        assert shared.try_write(b"after") and shared.read(timeout=1) == b"after"  # a new producer resumes


def test_a_shared_ring_has_one_producer_at_a_time(tmp_path):
    with Ring.create(16, 64, path=tmp_path / "ring.buf") as first, Ring.attach(path=first.path) as second:
        assert first.try_write(b"one")
        with pytest.raises(RingError, match=f"{first.path}: the ring has a producer already"):
            second.try_write(b"two")
        assert second.consumer(0) is not None and second.read(timeout=1) == b"one"  # reading is not writing
        first.close()  # releases the lock
        assert second.try_write(b"two") and second.read(timeout=1) == b"two"
    with Ring.create(16, 64) as private:
        assert private.producer is private.producer  # a private ring has no lock to take


def test_a_new_producer_resumes_after_complete_but_unpublished_messages():
    slab, producer, (reader,) = open_pair(slot_count=8)
    for index in range(3):
        assert ring.try_write(slab, producer, message(index), 0, 0) == ring.OK
    slab[64:72].view("<i8")[0] = 1  # as if killed before publishing positions 2 and 3
    out = np.zeros(64, np.uint8)
    assert [ring.try_read(slab, reader, out) for _ in range(4)] == [32, 32, 32, ring.EMPTY]
    resumed = new_state()
    assert ring.open_producer(slab, resumed) == ring.OK
    assert resumed[ring.STATE_POSITION] == 3 and ring.producer_position(slab) == 3
    assert ring.try_write(slab, resumed, message(3), 0, 0) == ring.OK
    assert ring.try_read(slab, reader, out) == 32 and bytes(out[:32]) == bytes(message(3))


@pytest.mark.slow
def test_producer_killed_at_a_random_moment_leaves_a_readable_ring():
    name = shm_name()
    with Ring.create(64, 64, name=name) as shared:
        child = _child("produce-forever", name)
        received = []
        try:
            assert child.stdout.readline().strip() == "started"
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                message_read = shared.try_read()
                if message_read is not None:
                    received.append(message_read)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        while (message_read := shared.try_read()) is not None:
            received.append(message_read)
        assert len(received) == shared.producer_position > 0
        assert received == [pattern(i) for i in range(len(received))]
