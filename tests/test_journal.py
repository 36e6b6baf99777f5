"""The journal: framing against a struct reference, files, seeks, recovery, corruption."""

import datetime
import os
import shutil
import threading
import time

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ringbook.engine.journal import (SEGMENT_SUFFIX, JournalCorruptError, JournalError, JournalReader, JournalWriter,
                                     decode_header, index_path, list_segments, read_index, scan_segment, verify,
                                     write_index)
from ringbook.kernels import journal as jk
from ringbook.kernels.events import EVENT_DTYPE, Instruments
from tests.llvm_ir import allocation_calls
from tests.naive import naive_frame_many, naive_record, naive_seek

DAY_NS = 86_400 * 10**9
BASE_NS = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z


def payload_of(sequence):
    return bytes([sequence % 251]) * (sequence % 29) + sequence.to_bytes(8, "little")


def write_journal(root, count, *, stream="feed", times=None, **options):
    times = [BASE_NS + 1000 * i for i in range(count)] if times is None else times
    with JournalWriter(root, stream, **options) as writer:
        for sequence in range(count):
            writer.append(payload_of(sequence), receive_tsc=sequence * 3, receive_ns=times[sequence],
                          kind=sequence % 7, flags=sequence)
    return [(sequence, times[sequence]) for sequence in range(count)]


def only_segment(root):
    (segments,) = list_segments(root).values()
    return [path for _, path in segments]


# ---------------------------------------------------------------- kernels

@pytest.mark.parametrize("length", list(range(20)) + [63, 64, 65, 1000])
@pytest.mark.parametrize("kind", [jk.RECORD_DATA, jk.RECORD_DROPS])
def test_frame_equals_struct_reference(length, kind):
    payload = np.arange(length, dtype=np.uint8)
    out = np.full(2048, 0xAB, np.uint8)
    segment = jk.new_segment_state(41, 0, 1024)
    index = np.zeros((4, 3), np.int64)
    end = jk.frame(out, 8, payload, 0, length, 123, -5, kind, 0xFEDCBA98, segment, index)
    expected = naive_record(payload.tobytes(), 41, 123, -5, kind, 0xFEDCBA98)
    assert end == 8 + len(expected) and end % 8 == 0
    assert out[8:end].tobytes() == expected
    assert jk.check_record(out, 8, end, 41) == len(expected)
    assert jk.check_record(out, 8, end, 42) == jk.CORRUPT_SEQUENCE
    assert jk.check_record(out, 8, end - 1, 41) == jk.CORRUPT_LENGTH
    assert segment[jk.SEGMENT_NEXT_SEQUENCE] == 42


def test_frame_refuses_what_does_not_fit():
    out = np.zeros(64, np.uint8)
    segment = jk.new_segment_state(0, 0, 1)
    index = np.zeros((1, 3), np.int64)
    assert jk.frame(out, 0, np.zeros(25, np.uint8), 0, 25, 0, 0, 0, 0, segment, index) == jk.TOO_LARGE
    assert jk.frame(out, 3, np.zeros(1, np.uint8), 0, 1, 0, 0, 0, 0, segment, index) == jk.BAD_ARGUMENT
    assert segment[jk.SEGMENT_NEXT_SEQUENCE] == 0


def test_every_length_and_alignment_checksums_as_the_package():
    # the checksum is fed from registers while the record is stored: it must equal the
    # checksum of the stored bytes for every tail length and every source alignment
    crc32c_package = pytest.importorskip("crc32c")
    data = np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8)
    starts, stops = [], []
    for length in range(0, 200):
        for alignment in range(8):
            starts.append(8 * length + alignment)
            stops.append(8 * length + alignment + length)
    starts, stops = np.array(starts, np.int64), np.array(stops, np.int64)
    out = np.zeros(int(sum(jk.record_size(n) for n in stops - starts)), np.uint8)
    segment = jk.new_segment_state(7, 0, 1024)
    one = np.full(1, -3, np.int64)
    index = np.zeros((8, 3), np.int64)
    count, end = jk.frame_slices(out, 0, data, starts, stops, 0, one, one, one, one, segment, index)
    assert (count, end) == (len(starts), out.size)
    offset = 0
    for number, (start, stop) in enumerate(zip(starts, stops)):
        size = int(jk.record_size(stop - start))
        record = out[offset:offset + size].tobytes()
        assert int.from_bytes(record[:4], "little") == crc32c_package.crc32c(record[4:])
        assert record == naive_record(data[start:stop].tobytes(), 7 + number, -3, -3, 0xFFFD, 0xFFFFFFFD)
        offset += size


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_frame_rows_and_slices_equal_records_framed_one_by_one(data):
    count = data.draw(st.integers(0, 40))
    width = data.draw(st.integers(1, 70))
    every = data.draw(st.integers(1, 5))
    first_sequence = data.draw(st.integers(0, 10**12))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    rows = rng.integers(0, 256, (count, width), dtype=np.uint8)

    def per_record(low, high):
        if data.draw(st.booleans()):  # one value for every record
            value = int(rng.integers(low, high))
            return np.full(1, value, np.int64), [value] * count
        values = rng.integers(low, high, count, dtype=np.int64)
        return values, values.tolist()

    lengths, length_list = per_record(0, width + 1)
    tscs, tsc_list = per_record(-2**62, 2**62)
    stamps, stamp_list = per_record(-2**62, 2**62)
    kinds, kind_list = per_record(0, 1 << 16)
    flags, flag_list = per_record(0, 1 << 32)
    payloads = [rows[i, :length_list[i]].tobytes() for i in range(count)]
    base = 8 * data.draw(st.integers(0, 1000))
    expected, expected_index = naive_frame_many(payloads, first_sequence, tsc_list, stamp_list, kind_list,
                                                flag_list, every, base)
    capacity = data.draw(st.integers(jk.RECORD_HEADER_BYTES + 8 * ((width + 7) // 8), 2000))
    flat = rows.reshape(-1)
    starts = np.arange(count, dtype=np.int64) * width
    stops = starts + (np.broadcast_to(lengths, (count,)) if count else starts)

    def frame_all(frame_chunk):
        segment = jk.new_segment_state(first_sequence, base, every)
        index = np.zeros((count + 1, 3), np.int64)
        written = bytearray()
        item = 0
        while item < count:
            segment[jk.SEGMENT_BASE] = base + len(written)
            out = np.zeros(capacity, np.uint8)
            framed, end = frame_chunk(out, item, segment, index)
            assert framed > 0 and end <= capacity
            written += out[:end].tobytes()
            item += framed
        return bytes(written), segment, index

    for frame_chunk in (
            lambda out, item, segment, index: jk.frame_rows(out, 0, flat, width, lengths, item, count, tscs, stamps,
                                                            kinds, flags, segment, index),
            lambda out, item, segment, index: jk.frame_slices(out, 0, flat, starts, stops, item, tscs, stamps,
                                                              kinds, flags, segment, index)):
        written, segment, index = frame_all(frame_chunk)
        assert written == expected
        entries = int(segment[jk.SEGMENT_INDEX_COUNT])
        assert [tuple(row) for row in index[:entries].tolist()] == expected_index
        assert segment[jk.SEGMENT_NEXT_SEQUENCE] == first_sequence + count
        assert segment[jk.SEGMENT_RECORDS] == count
        if count:
            assert segment[jk.SEGMENT_MAX_NS] == max(stamp_list)
            assert segment[jk.SEGMENT_LAST_NS] == stamp_list[-1]


def test_frame_slices_stops_at_a_bad_slice_keeping_the_records_before():
    data = np.arange(100, dtype=np.uint8)
    starts = np.array([0, 10, 20, 95, 30], np.int64)
    stops = np.array([10, 20, 30, 101, 40], np.int64)  # the fourth runs past the data
    out = np.zeros(4096, np.uint8)
    segment = jk.new_segment_state(5, 0, 1)
    index = np.zeros((8, 3), np.int64)
    one = np.zeros(1, np.int64)
    status, end = jk.frame_slices(out, 0, data, starts, stops, 0, one, one, one, one, segment, index)
    assert status == jk.BAD_ARGUMENT and end == 3 * 56
    assert segment[jk.SEGMENT_NEXT_SEQUENCE] == 8 and segment[jk.SEGMENT_RECORDS] == 3
    assert segment[jk.SEGMENT_INDEX_COUNT] == 3
    assert jk.check_record(out, 2 * 56, end, 7) == 56


def test_frame_kernels_refuse_short_per_record_arrays_and_long_rows():
    rows = np.zeros(40, np.uint8)
    out = np.zeros(4096, np.uint8)
    segment = jk.new_segment_state(0, 0, 1)
    index = np.zeros((8, 3), np.int64)
    one, two = np.zeros(1, np.int64), np.zeros(2, np.int64)
    assert jk.frame_rows(out, 0, rows, 10, one, 0, 4, two, one, one, one, segment, index)[0] == jk.BAD_ARGUMENT
    assert jk.frame_rows(out, 0, rows, 10, np.full(1, 11, np.int64), 0, 3, one, one, one, one, segment,
                         index)[0] == jk.BAD_ARGUMENT
    assert jk.frame_rows(out, 0, rows, 0, one, 0, 1, one, one, one, one, segment, index)[0] == jk.BAD_ARGUMENT
    assert jk.frame_slices(out, 4, rows, one, one, 0, one, one, one, one, segment, index)[0] == jk.BAD_ARGUMENT
    assert segment[jk.SEGMENT_NEXT_SEQUENCE] == 0
    # four rows of 10 bytes, then a fifth past the end of the table
    status, end = jk.frame_rows(out, 0, rows, 10, np.full(1, 10, np.int64), 0, 5, one, one, one, one, segment, index)
    assert (status, end) == (jk.BAD_ARGUMENT, 4 * 56)
    assert segment[jk.SEGMENT_NEXT_SEQUENCE] == 4


def test_record_kinds_are_fixed():
    assert (jk.RECORD_DATA, jk.RECORD_GAP, jk.RECORD_DISCONNECT, jk.RECORD_RECONNECT, jk.RECORD_BOOK_RESET,
            jk.RECORD_DROPS, jk.RECORD_CHECKPOINT) == (0, 1, 2, 3, 4, 5, 6)


def test_zeros_never_check():
    assert jk.check_record(np.zeros(64, np.uint8), 0, 64, -1) == jk.CORRUPT_CHECKSUM


@pytest.mark.parametrize("kernel, signature", [
    (jk.frame, (numba.types.uint8[::1], numba.types.int64, numba.types.uint8[::1], numba.types.int64,
                numba.types.int64, numba.types.int64, numba.types.int64, numba.types.int64, numba.types.int64,
                numba.types.int64[::1], numba.types.int64[:, ::1])),
    (jk.check_record, (numba.types.uint8[::1], numba.types.int64, numba.types.int64, numba.types.int64)),
    (jk.frame_slices, (numba.types.uint8[::1], numba.types.int64, numba.types.uint8[::1], numba.types.int64[::1],
                       numba.types.int64[::1], numba.types.int64) + (numba.types.int64[::1],) * 5
     + (numba.types.int64[:, ::1],)),
    (jk.frame_rows, (numba.types.uint8[::1], numba.types.int64, numba.types.uint8[::1], numba.types.int64,
                     numba.types.int64[::1], numba.types.int64, numba.types.int64) + (numba.types.int64[::1],) * 5
     + (numba.types.int64[:, ::1],)),
    (jk.drain_ring, (numba.types.uint8[::1], numba.types.int64[::1], numba.types.uint8[::1], numba.types.int64,
                     numba.types.int64, numba.types.int64, numba.types.int64, numba.types.float64,
                     numba.types.int64[::1], numba.types.int64[:, ::1])),
])
def test_hot_kernels_allocate_nothing(kernel, signature):
    assert allocation_calls(kernel, signature) == []


# ---------------------------------------------------------------- files

def test_round_trip_raw(tmp_path):
    records = write_journal(tmp_path, 300)
    with JournalReader(tmp_path) as reader:
        read = list(reader)
    assert [r.sequence for r in read] == [s for s, _ in records]
    for record in read:
        assert bytes(record.payload) == payload_of(record.sequence)
        assert record.receive_tsc == record.sequence * 3
        assert record.kind == record.sequence % 7 and record.flags == record.sequence
        assert record.payload.readonly
    assert verify(tmp_path)["ok"]


def test_segment_names_header_and_rotation(tmp_path):
    instruments = Instruments()
    instruments.intern("BTCUSDT", price_scale=2, size_scale=5, tick=1)
    with JournalWriter(tmp_path, "btc", instruments=instruments, segment_bytes=4096, index_every=8,
                       source={"format": "test"}) as writer:
        for sequence in range(400):
            writer.append(b"y" * 40, receive_ns=BASE_NS + sequence)
    segments = list_segments(tmp_path)["btc"]
    assert len(segments) > 5
    assert not list(tmp_path.rglob("*.tmp"))
    expected_first = 0
    for first, path in segments:
        assert path.parent.name == "2023-11-14" and path.name == f"btc.{first}.rbj"
        assert first == expected_first
        data = path.read_bytes()
        header = decode_header(data, path)
        assert header.first_sequence == first and header.stream == "btc"
        assert header.metadata["instruments"][0] == {"symbol": 0, "name": "BTCUSDT", "price_scale": 2,
                                                     "size_scale": 5, "tick": 1}
        assert header.metadata["payload"] == "raw" and header.metadata["source"] == {"format": "test"}
        assert {"wall_ns", "tsc", "ticks_per_ns"} <= set(header.metadata["calibration"])
        assert len(data) < 4096 + 200
        assert index_path(path).exists()
        expected_first += (len(data) - header.header_bytes) // 80
    assert expected_first == 400


def test_rotation_at_midnight_utc(tmp_path):
    midnight = (BASE_NS // DAY_NS + 1) * DAY_NS
    times = [midnight - 3 + i for i in range(6)]
    write_journal(tmp_path, 6, times=times)
    segments = list_segments(tmp_path)["feed"]
    assert [(first, path.parent.name) for first, path in segments] == [(0, "2023-11-14"), (3, "2023-11-15")]


def test_rotation_at_midnight_in_append_many(tmp_path):
    midnight = (BASE_NS // DAY_NS + 1) * DAY_NS
    with JournalWriter(tmp_path, "ev", payload=EVENT_DTYPE) as writer:
        writer.append_many(np.zeros(10, EVENT_DTYPE), receive_ns=midnight - 5 + np.arange(10))
    segments = list_segments(tmp_path)["ev"]
    assert [(first, path.parent.name) for first, path in segments] == [(0, "2023-11-14"), (5, "2023-11-15")]


def test_events_round_trip_and_span(tmp_path):
    events = np.zeros(5000, EVENT_DTYPE)
    events["price"] = np.arange(5000) * 7
    events["kind"] = 1
    with JournalWriter(tmp_path, "ev", payload=EVENT_DTYPE, segment_bytes=64 << 10) as writer:
        writer.append_many(events[:2500], receive_ns=BASE_NS + np.arange(2500))
        writer.append(b"\x05" + bytes(7), kind=jk.RECORD_DROPS, receive_ns=BASE_NS + 2500)
        writer.append_many(events[2500:], receive_ns=BASE_NS + 2501 + np.arange(2500))
    with JournalReader(tmp_path) as reader:
        assert reader.header().dtype == EVENT_DTYPE
        records, sequences, receive_ns = reader.read_span(10_000)
        assert (records == events).all()
        assert sequences[2499] == 2499 and sequences[2500] == 2501
        assert (reader.events(100, 200) == events[100:200]).all()
        assert (reader.events(2400, 2600)["price"] == events[2400:2599]["price"]).all()


@pytest.mark.parametrize("batch_bytes", [4096, 1 << 20])
def test_append_many_with_per_record_values_and_lengths(tmp_path, batch_bytes):
    rng = np.random.default_rng(12)
    count = 3000
    rows = rng.integers(0, 256, (count, 24), dtype=np.uint8)
    lengths = rng.integers(0, 25, count)
    tscs = rng.integers(0, 2**40, count)
    kinds = rng.integers(0, 7, count)
    with JournalWriter(tmp_path, "rows", batch_bytes=batch_bytes) as writer:
        assert writer.append_many(rows, lengths, receive_tsc=tscs, receive_ns=BASE_NS + np.arange(count),
                                  kind=kinds, flags=77) == 0
        assert writer.append_many(rows[:5], receive_tsc=9, receive_ns=BASE_NS + count, kind=kinds[:5],
                                  flags=np.arange(5)) == count
        with pytest.raises(ValueError, match="receive_tsc: 4 values for 5 records"):
            writer.append_many(rows[:5], receive_tsc=np.arange(4))
        with pytest.raises(ValueError, match="lengths"):
            writer.append_many(rows[:5], 25)
        assert writer.next_sequence == count + 5
    with JournalReader(tmp_path) as reader:
        records = list(reader)
    assert [r.sequence for r in records] == list(range(count + 5))
    for number, record in enumerate(records[:count]):
        assert bytes(record.payload) == rows[number, :lengths[number]].tobytes()
        assert (record.receive_tsc, record.receive_ns, record.kind, record.flags) == (
            tscs[number], BASE_NS + number, kinds[number], 77)
    assert [(r.receive_tsc, r.receive_ns, r.kind, r.flags, bytes(r.payload)) for r in records[count:]] == [
        (9, BASE_NS + count, kinds[i], i, rows[i].tobytes()) for i in range(5)]
    assert verify(tmp_path)["ok"]


def test_chunks_written_on_a_second_thread_make_the_same_files(tmp_path, monkeypatch):
    events = np.zeros(20_000, EVENT_DTYPE)
    events["price"] = np.arange(20_000)
    stamps = BASE_NS + DAY_NS - 10_000 + np.arange(20_000)  # midnight falls inside

    def files(root, pipelined):
        monkeypatch.setattr(JournalWriter, "_pipeline_writes", pipelined)
        with JournalWriter(root, "ev", payload=EVENT_DTYPE, batch_bytes=8192, segment_bytes=300_000) as writer:
            writer.append_many(events, receive_ns=stamps)
            assert (writer._executor is not None) == pipelined
        return {path.relative_to(root): path.read_bytes() for path in sorted(root.rglob("*.rb[ji]"))}

    pipelined, serial = files(tmp_path / "a", True), files(tmp_path / "b", False)
    assert len(serial) > 10
    assert pipelined.keys() == serial.keys()
    for name in serial:
        if name.suffix == ".rbj":  # headers hold the wall clock at creation; the records must match
            ours, theirs = pipelined[name], serial[name]
            assert (ours[decode_header(ours, name).header_bytes:]
                    == theirs[decode_header(theirs, name).header_bytes:])
    with JournalReader(tmp_path / "a") as reader:
        records, sequences, receive_ns = reader.read_span(30_000)
    assert (records == events).all() and (receive_ns == stamps).all()


def test_writer_continues_and_is_alone(tmp_path):
    write_journal(tmp_path, 10)
    with JournalWriter(tmp_path, "feed") as writer:
        assert writer.next_sequence == 10
        with pytest.raises(JournalError, match="has a writer"):
            JournalWriter(tmp_path, "feed")
        assert writer.append(b"more", receive_ns=BASE_NS) == 10
    with JournalReader(tmp_path) as reader:
        assert [r.sequence for r in reader] == list(range(11))
    assert verify(tmp_path)["ok"]


def test_a_new_writer_removes_its_streams_files_a_killed_one_left(tmp_path):
    write_journal(tmp_path, 10)
    day = next(path for path in tmp_path.iterdir() if path.is_dir())
    segment = next(day.glob(f"feed.*{SEGMENT_SUFFIX}")).name
    index = index_path(day / segment).name
    leftovers = [day / f".{segment}.tmp", day / f".{index}.0123456789ab.tmp"]   # a header, an index
    others = [day / f".other.{index[5:]}.0123456789ab.tmp", day / "notes.tmp"]
    for path in leftovers + others:
        path.write_bytes(b"torn")
    with JournalWriter(tmp_path, "feed") as writer:
        assert writer.next_sequence == 10
    assert [path.exists() for path in leftovers + others] == [False, False, True, True]


def test_durability_levels_publish_last_durable(tmp_path):
    for durability in ("none", "interval", "batch"):
        with JournalWriter(tmp_path / durability, "s", durability=durability, interval_ms=10_000) as writer:
            writer.append(b"a", receive_ns=BASE_NS)
            writer.append(b"b", receive_ns=BASE_NS)
            if durability == "interval":
                # the first write synced (nothing synced for 10 s before it); the second waits
                assert writer.last_durable_sequence == 0
                writer.flush()
            assert writer.last_durable_sequence == 1
            assert writer.last_written_sequence == 1


def test_merged_streams_by_receive_time(tmp_path):
    write_journal(tmp_path, 50, stream="a", times=[BASE_NS + 2 * i for i in range(50)])
    write_journal(tmp_path, 50, stream="b", times=[BASE_NS + 2 * i + 1 for i in range(50)])
    with JournalReader(tmp_path) as reader:
        merged = [(r.stream, r.receive_ns) for r in reader]
    assert [ns for _, ns in merged] == sorted(ns for _, ns in merged)
    assert len(merged) == 100 and merged[0][0] == "a" and merged[1][0] == "b"


def test_seek_by_datetime(tmp_path):
    write_journal(tmp_path, 100, times=[BASE_NS + 10**9 * i for i in range(100)])
    moment = datetime.datetime.fromtimestamp(BASE_NS // 10**9 + 42, datetime.timezone.utc)
    with JournalReader(tmp_path) as reader:
        assert reader.seek(time=moment) == 42
        with pytest.raises(ValueError, match="aware"):
            reader.seek(time=moment.replace(tzinfo=None))


def test_tail_follows_a_writer_thread(tmp_path):
    write_journal(tmp_path, 5)
    reader = JournalReader(tmp_path)

    def write_more():
        with JournalWriter(tmp_path, "feed", segment_bytes=4096) as writer:
            for i in range(200):
                writer.append(payload_of(5 + i), receive_ns=BASE_NS)
                if i % 20 == 0:
                    time.sleep(0.01)

    thread = threading.Thread(target=write_more)
    thread.start()
    seen = [record.sequence for record in reader.tail(timeout=1.0)]
    thread.join()
    assert seen == list(range(205))
    reader.close()


# ---------------------------------------------------------------- seek against a linear scan

def _seek_cases(data):
    count = data.draw(st.integers(0, 120), label="count")
    steps = data.draw(st.lists(st.integers(-50, 200), min_size=count, max_size=count), label="steps")
    times = list(BASE_NS + np.cumsum(np.array(steps, np.int64))) if count else []
    targets = data.draw(st.lists(st.tuples(st.sampled_from(["sequence", "time"]),
                                           st.integers(-5, 130), st.integers(-200, 12_000)),
                                 min_size=1, max_size=12), label="targets")
    return count, [int(t) for t in times], targets


def _check_seeks(root, records, targets):
    with JournalReader(root) as reader:
        for what, sequence, offset_ns in targets:
            if what == "sequence":
                expected = naive_seek(records, sequence=sequence)
                found = reader.seek(sequence)
            else:
                expected = naive_seek(records, time=BASE_NS + offset_ns)
                found = reader.seek(time=BASE_NS + offset_ns)
            assert found == expected, (what, sequence, offset_ns)
            following = next(iter(reader), None)
            if expected < len(records):
                assert following.sequence == expected
            else:
                assert following is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("index_state", ["present", "deleted", "stale"])
def test_seek_equals_linear_scan(tmp_path_factory, index_state, data):
    root = tmp_path_factory.mktemp("seek")
    count, times, targets = _seek_cases(data)
    if count == 0:
        return
    half = count // 2
    options = dict(segment_bytes=4096, index_every=4)
    if half:
        write_journal(root, half, times=times[:half], **options)
    with JournalWriter(root, "feed", **options) as writer:
        for sequence in range(half, count):
            writer.append(payload_of(sequence), receive_ns=times[sequence])
    records = [(s, times[s]) for s in range(count)]
    paths = only_segment(root)
    if index_state == "deleted":
        for path in paths:
            index_path(path).unlink()
    elif index_state == "stale":
        # indexes written when their segments were shorter (as a reader of a live segment
        # leaves them), another segment's index, and one with a flipped byte
        for number, path in enumerate(paths):
            data = np.fromfile(path, np.uint8)
            header = decode_header(data, path)
            if number % 3 == 0:
                shorter = data[:header.header_bytes + (data.size - header.header_bytes) // 2]
                write_index(scan_segment(shorter, header, path, 4), shorter, 4)
            elif number % 3 == 1:
                index_path(path).write_bytes(index_path(paths[number - 1]).read_bytes())
            else:
                damaged = bytearray(index_path(path).read_bytes())
                damaged[len(damaged) // 2] ^= 0xFF
                index_path(path).write_bytes(bytes(damaged))
    _check_seeks(root, records, targets)
    if index_state == "stale":
        for path in paths:  # every stale index was found out and rebuilt
            data = np.fromfile(path, np.uint8)
            assert read_index(path, decode_header(data, path), data) is not None


def test_stale_index_is_rebuilt(tmp_path):
    write_journal(tmp_path, 50, index_every=4)
    (path,) = only_segment(tmp_path)
    old = index_path(path).read_bytes()
    with open(path, "ab") as segment:  # a segment that changed size under its index
        segment.write(bytes(16))
    with JournalReader(tmp_path, index_every=4) as reader:
        assert reader.seek(33) == 33
        assert reader.torn == [{"path": str(path), "offset": os.path.getsize(path) - 16, "bytes": 16,
                                "status": "corrupt: impossible length"}]
    assert index_path(path).read_bytes() != old


# ---------------------------------------------------------------- torn tails

def _layout(path):
    """Offsets of the records of a segment."""
    data = np.frombuffer(path.read_bytes(), np.uint8)
    header = decode_header(data, path)
    offsets = [header.header_bytes]
    while offsets[-1] < data.size:
        offsets.append(offsets[-1] + int(jk.check_record(data, offsets[-1], data.size, -1)))
    return offsets


@pytest.mark.slow
@pytest.mark.parametrize("with_index", [True, False])
@pytest.mark.parametrize("filler", ["none", "zeros", "garbage"])
def test_torn_tail_at_every_offset_of_last_three_records(tmp_path, with_index, filler):
    check_torn_tails(tmp_path, with_index, filler, every=1)


@pytest.mark.parametrize("with_index", [True, False])
@pytest.mark.parametrize("filler", ["none", "zeros", "garbage"])
def test_torn_tail_at_some_offsets_of_last_three_records(tmp_path, with_index, filler):
    """The quick version of the test above: every 13th offset."""
    check_torn_tails(tmp_path, with_index, filler, every=13)


def check_torn_tails(tmp_path, with_index, filler, every):
    original = tmp_path / "original"
    count = 12
    write_journal(original, count)
    (segment,) = only_segment(original)
    offsets = _layout(segment)
    full = segment.read_bytes()
    garbage = np.random.default_rng(7).integers(0, 256, 300, dtype=np.uint8).tobytes()
    for cut in range(offsets[count - 3], offsets[count], every):
        root = tmp_path / f"cut{cut}"
        shutil.copytree(original, root)
        path = root / segment.parent.name / segment.name
        tail = {"none": b"", "zeros": bytes(100), "garbage": garbage}[filler]
        damaged = full[:cut] + tail
        path.write_bytes(damaged)
        if not with_index:
            index_path(path).unlink()
        # a record is whole when its bytes survived (a cut in trailing zeros, refilled by zeros, is no cut)
        complete = 0
        while complete < count and damaged[offsets[complete]:offsets[complete + 1]] == \
                full[offsets[complete]:offsets[complete + 1]]:
            complete += 1
        torn = len(damaged) - offsets[complete]
        with JournalReader(root) as reader:
            assert [r.sequence for r in reader] == list(range(complete))
            if torn:
                assert reader.torn == [{"path": str(path), "offset": offsets[complete], "bytes": torn,
                                        "status": reader.torn[0]["status"]}]
            else:
                assert reader.torn == []
        report = verify(root)
        assert report["torn_bytes"] == torn and report["bad_records"] == 0
        with JournalWriter(root, "feed") as writer:
            assert writer.next_sequence == complete
            assert (writer.recovery is not None) == (torn > 0)
            if torn:
                assert writer.recovery["bytes"] == torn and writer.recovery["offset"] == offsets[complete]
            writer.append(b"after", receive_ns=BASE_NS)
        assert verify(root)["ok"]
        with JournalReader(root) as reader:
            assert [r.sequence for r in reader] == list(range(complete + 1))
        shutil.rmtree(root)


# ---------------------------------------------------------------- corruption in the middle

@pytest.mark.parametrize("with_index", [True, False])
def test_every_flipped_byte_of_a_record_is_caught(tmp_path, with_index):
    original = tmp_path / "original"
    count = 9
    write_journal(original, count, index_every=2)
    (segment,) = only_segment(original)
    offsets = _layout(segment)
    full = segment.read_bytes()
    victim = 4
    for position in range(offsets[victim], offsets[victim + 1]):
        root = tmp_path / f"flip{position}"
        shutil.copytree(original, root)
        path = root / segment.parent.name / segment.name
        damaged = bytearray(full)
        damaged[position] ^= 0x40
        path.write_bytes(bytes(damaged))
        if not with_index:
            index_path(path).unlink()
        with JournalReader(root) as reader:
            with pytest.raises(JournalCorruptError) as caught:
                list(reader)
            assert caught.value.path == str(path) and caught.value.offset == offsets[victim]
            assert str(path) in str(caught.value) and f"offset {offsets[victim]}" in str(caught.value)
        with JournalReader(root, skip_corrupt=True) as reader:
            assert [r.sequence for r in reader] == [s for s in range(count) if s != victim]
            assert reader.corrupt_records == 1
        with JournalReader(root, skip_corrupt=True) as reader:
            assert reader.seek(victim) == victim + 1  # seeking into the damage skips it, and says so
            assert reader.corrupt_records == 1
        report = verify(root)
        assert report["bad_records"] == 1 and not report["ok"]
        assert report["corrupt"][0]["offset"] == offsets[victim]
        shutil.rmtree(root)


def test_seek_beginning_and_end(tmp_path):
    write_journal(tmp_path, 40, segment_bytes=4096)
    with JournalReader(tmp_path) as reader:
        assert reader.seek_end() == 40 and next(iter(reader), None) is None
        assert reader.seek() == 0 and next(iter(reader)).sequence == 0
        assert reader.seek(10**9) == 40
        assert reader.tell() == 40


def test_a_segment_left_with_a_header_only_is_taken_over(tmp_path):
    write_journal(tmp_path, 3)
    with JournalWriter(tmp_path, "feed", segment_bytes=4096) as writer:
        writer._prepare(BASE_NS)  # a new segment, killed before its first record
        path = writer.path
        writer._finish_segment()
    with JournalWriter(tmp_path, "feed") as writer:
        assert writer.next_sequence == 3
        writer.append(b"x", receive_ns=BASE_NS)
    assert [p.name for _, p in list_segments(tmp_path)["feed"]] == ["feed.0.rbj", path.name]
    assert verify(tmp_path)["ok"]


def _read_all_payloads(reader, count, max_bytes):
    got = []
    while True:
        span = reader.read_payloads(count, max_bytes=max_bytes)
        if not len(span):
            return got
        assert span.offsets[0] == 0 and len(span.offsets) == len(span) + 1
        got += [(span.data[span.offsets[r]:span.offsets[r + 1]].tobytes(), int(span.kinds[r]),
                 int(span.receive_ns[r])) for r in range(len(span))]


@pytest.mark.parametrize("count, max_bytes", [(1, 1 << 20), (7, 64), (1000, 1 << 20), (5, 3)])
def test_read_payloads_equals_iteration(tmp_path, count, max_bytes):
    """Spans of every size, a byte limit below one payload included, across segments."""
    write_journal(tmp_path, 300, segment_bytes=4096)
    assert len(list_segments(tmp_path)["feed"]) > 1
    with JournalReader(tmp_path) as reader:
        want = [(bytes(r.payload), r.kind, r.receive_ns) for r in reader]
    with JournalReader(tmp_path) as reader:
        assert _read_all_payloads(reader, count, max_bytes) == want


def test_read_payloads_passes_a_corrupt_record_when_told(tmp_path):
    write_journal(tmp_path, 9, index_every=2)
    (segment,) = only_segment(tmp_path)
    offsets = _layout(segment)
    damaged = bytearray(segment.read_bytes())
    damaged[offsets[4] + 41] ^= 0x40
    segment.write_bytes(bytes(damaged))
    with JournalReader(tmp_path) as reader:
        with pytest.raises(JournalCorruptError):
            _read_all_payloads(reader, 100, 1 << 20)
    with JournalReader(tmp_path, skip_corrupt=True) as reader:
        got = _read_all_payloads(reader, 100, 1 << 20)
    assert [payload for payload, _, _ in got] == [payload_of(s) for s in range(9) if s != 4]
