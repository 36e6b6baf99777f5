"""The flusher: rings drained into journals by one thread, through disk errors and a full disk."""

import errno
import os
import threading
import time

import pytest

from ringbook.engine.flusher import Flusher, idle_strategy
from ringbook.engine.journal import JournalError, JournalReader, JournalWriter, verify
from ringbook.engine.ring import Ring
from ringbook.kernels.clock import stamp
from ringbook.kernels.wait import wait_strategy


def message(stream, i, width=40):
    return (f"{stream}:{i}:".encode() + bytes([i % 256]) * width)[:width]


def produce(ring, stream, count, kinds=False):
    stamps = []
    for i in range(count):
        kind = i % 7 if kinds else 0
        value = int(stamp())
        ring.write(message(stream, i), flags=kind | (i << 8) & 0xFFFFFF00, stamp=value, timeout=30)
        stamps.append(value)
    return stamps


def read_back(root, stream):
    with JournalReader(root, stream) as reader:
        return [(r.sequence, r.kind, r.flags, r.receive_tsc, r.receive_ns, bytes(r.payload)) for r in reader]


def test_drains_two_rings_into_two_journals(tmp_path):
    rings = [Ring.create(256, 128), Ring.create(64, 64)]
    writers = [JournalWriter(tmp_path, "a"), JournalWriter(tmp_path, "b")]
    flusher = Flusher([(rings[0], 0, writers[0]), (rings[1], 0, writers[1])]).start()
    before = time.time_ns()
    stamps = [None, None]
    threads = [threading.Thread(target=lambda k=k: stamps.__setitem__(k, produce(rings[k], "ab"[k], 3000, True)))
               for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flusher.stop()
    after = time.time_ns()
    assert flusher.error is None and flusher.lag() == [0, 0]
    assert flusher.records == 6000 and flusher.last_durable_sequence == [2999, 2999]
    for k, writer in enumerate(writers):
        writer.close()
        records = read_back(tmp_path, "ab"[k])
        assert [r[0] for r in records] == list(range(3000))
        for i, (sequence, kind, flags, tsc, receive_ns, payload) in enumerate(records):
            assert payload == message("ab"[k], i)
            assert kind == i % 7 and flags == (i << 8 & 0xFFFFFF00) >> 8
            assert tsc == stamps[k][i]
            assert before - 10**9 <= receive_ns <= after + 10**9
    assert verify(tmp_path)["ok"]


def test_stop_without_drain_leaves_the_rest_in_the_ring(tmp_path):
    ring = Ring.create(1024, 64)
    writer = JournalWriter(tmp_path, "s")
    flusher = Flusher([(ring, 0, writer)])
    for i in range(500):
        ring.write(message("s", i, 30))
    flusher.start()
    flusher.stop(drain=False)
    assert flusher.records + flusher.lag()[0] == 500
    flusher = Flusher([(ring, 0, writer)]).start()
    flusher.stop()
    writer.close()
    assert [r[5] for r in read_back(tmp_path, "s")] == [message("s", i, 30) for i in range(500)]


def test_refuses_a_spinning_wait(tmp_path):
    ring = Ring.create(64, 64)
    with JournalWriter(tmp_path, "s") as writer:
        with pytest.raises(ValueError, match="never spins"):
            Flusher([(ring, 0, writer)], wait=wait_strategy(spins=10))
        assert idle_strategy()[0] == 0


def test_an_error_stops_the_thread_and_is_kept(tmp_path):
    ring = Ring.create(64, 64)
    writer = JournalWriter(tmp_path, "s")
    writer.close()
    flusher = Flusher([(ring, 0, writer)]).start()
    ring.write(b"x")
    deadline = time.monotonic() + 10
    while flusher.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(flusher.error, JournalError)
    with pytest.raises(JournalError, match="closed"):
        flusher.stop()


def test_injected_eio_at_every_batch_loses_and_repeats_nothing(tmp_path):
    ring = Ring.create(128, 64)
    errors = []
    writer = JournalWriter(tmp_path, "s", on_error=lambda path, error: errors.append((path, error.errno)),
                           segment_bytes=8192, retry_max_s=0.002)
    calls = {"n": 0}

    def failing_write(fd, data):
        calls["n"] += 1
        if calls["n"] % 3 == 1:
            raise OSError(errno.EIO, "injected I/O error")
        if calls["n"] % 3 == 2 and len(data) > 8:
            return os.write(fd, bytes(data)[:len(data) // 2])  # a short write, then an error again
        return os.write(fd, data)

    writer.write_function = failing_write
    flusher = Flusher([(ring, 0, writer)]).start()
    produce(ring, "s", 2000)
    flusher.stop()
    writer.close()
    # every third write call fails: each failure reported, and retried until all was written
    assert flusher.batches > 10 and calls["n"] > 10 and len(errors) == (calls["n"] + 2) // 3
    assert {error for _, error in errors} == {errno.EIO}
    assert all(path.endswith(".rbj") or ".tmp" in path for path, _ in errors)
    records = read_back(tmp_path, "s")
    assert [r[0] for r in records] == list(range(2000))
    assert [r[5] for r in records] == [message("s", i) for i in range(2000)]
    assert verify(tmp_path)["ok"]


def test_injected_fdatasync_errors_are_retried(tmp_path):
    errors = []
    writer = JournalWriter(tmp_path, "s", durability="batch", on_error=lambda p, e: errors.append(p))
    failures = iter([True, False, True, False] * 10)

    def flaky_sync(fd):
        if next(failures):
            raise OSError(errno.EIO, "injected fdatasync error")
        os.fdatasync(fd)

    writer.sync_function = flaky_sync
    for i in range(5):
        writer.append(b"r", receive_ns=i)
        assert writer.last_durable_sequence == i
    writer.close()
    assert len(errors) >= 5


def test_a_full_filesystem_during_a_write(small_filesystem):
    mount = small_filesystem("1m")
    root = mount / "journal"
    errors = []
    writer = JournalWriter(root, "s", on_error=lambda path, error: errors.append((path, error.errno)),
                           segment_bytes=64 << 10, retry_max_s=0.01)
    ring = Ring.create(256, 128)
    flusher = Flusher([(ring, 0, writer)]).start()
    count = 6000  # 6000 records of 80 bytes: 480 KB, about half the filesystem
    producer = threading.Thread(target=produce, args=(ring, "s", count))
    producer.start()
    # fill what is left while the flusher writes
    filler = mount / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(descriptor, bytes(4096))
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    deadline = time.monotonic() + 20
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert errors, "the writer never met the full filesystem"
    assert {code for _, code in errors} == {errno.ENOSPC}
    assert all(path.startswith(str(root)) for path, _ in errors)
    stuck_at = flusher.records
    time.sleep(0.1)
    assert flusher.lag()[0] > 0 or flusher.records == stuck_at  # nothing moves while the disk is full
    filler.unlink()  # space returns
    producer.join(timeout=60)
    flusher.stop()
    writer.close()
    records = read_back(root, "s")
    assert [r[0] for r in records] == list(range(count))
    assert [r[5] for r in records] == [message("s", i) for i in range(count)]
    assert verify(root)["ok"]


class DroppingSync:
    """An ``fdatasync`` that fails with EIO as a failing disk does: the pages it was writing are
    dropped (their bytes on disk are zeros here, as a crash would find them), then it raises.

    ``fail_at``: the calls (counted from 1) that fail. The bytes since the last
    successful call are the ones a failure drops.
    """

    def __init__(self, fail_at):
        self.fail_at = set(fail_at)
        self.calls = 0
        self.synced = {}   # descriptor -> file size at its last successful sync
        self.dropped = []  # (offset, size) zeroed

    def __call__(self, fd):
        self.calls += 1
        size = os.fstat(fd).st_size
        if self.calls in self.fail_at:
            start = self.synced.get(fd, 0)
            if size > start:
                os.pwrite(fd, bytes(size - start), start)
                self.dropped.append((start, size - start))
            raise OSError(errno.EIO, "injected fdatasync error, pages dropped")
        os.fdatasync(fd)
        self.synced[fd] = size


@pytest.mark.parametrize("durability", ["batch", "interval"])
def test_fdatasync_eio_rewrites_what_it_dropped(tmp_path, durability):
    errors = []
    writer = JournalWriter(tmp_path, "s", durability=durability, interval_ms=0, segment_bytes=8192,
                           retry_max_s=0.002, on_error=lambda path, error: errors.append(error))
    sync = DroppingSync(fail_at=range(1, 400, 3))
    writer.sync_function = sync
    for i in range(300):
        writer.append(message("s", i), receive_ns=i)
        assert writer.last_durable_sequence == i
    writer.close()
    assert len(sync.dropped) > 20 and sync.dropped[0][0] == 0  # the first one took a header too
    assert all(isinstance(error, OSError) and error.errno == errno.EIO for error in errors)
    assert writer.not_durable == []
    records = read_back(tmp_path, "s")
    assert [r[0] for r in records] == list(range(300))
    assert [r[5] for r in records] == [message("s", i) for i in range(300)]
    assert verify(tmp_path)["ok"]


def test_fdatasync_eio_while_append_many_writes_on_its_second_thread(tmp_path):
    import numpy as np
    writer = JournalWriter(tmp_path, "s", durability="batch", batch_bytes=4096, segment_bytes=64 << 10,
                           retry_max_s=0.002, on_error=lambda path, error: None)
    sync = DroppingSync(fail_at=range(1, 10_000, 2))
    writer.sync_function = sync
    # writable, as the engine's payloads are: the framing kernel compiles once for both
    payloads = np.frombuffer(bytearray(b"".join(message("s", i) for i in range(5000))), np.uint8).reshape(5000, 40)
    writer.append_many(payloads, receive_ns=np.arange(5000))  # 400 KB in 4 KiB batches, 7 segments
    assert writer._executor is not None  # framed on one thread while written on the other
    writer.close()
    assert len(sync.dropped) > 50 and writer.last_durable_sequence == 4999
    records = read_back(tmp_path, "s")
    assert [r[5] for r in records] == [message("s", i) for i in range(5000)]
    assert verify(tmp_path)["ok"]


def test_fdatasync_eio_in_many_batches_of_a_flusher(tmp_path):
    ring = Ring.create(256, 64)
    writer = JournalWriter(tmp_path, "s", durability="batch", segment_bytes=16384, retry_max_s=0.002,
                           on_error=lambda path, error: None)
    sync = DroppingSync(fail_at=range(2, 10_000, 2))
    writer.sync_function = sync
    flusher = Flusher([(ring, 0, writer)]).start()
    produce(ring, "s", 3000)
    flusher.stop()
    writer.close()
    assert len(sync.dropped) > 10
    assert writer.last_durable_sequence == 2999 and writer.not_durable == []
    records = read_back(tmp_path, "s")
    assert [r[5] for r in records] == [message("s", i) for i in range(3000)]
    assert verify(tmp_path)["ok"]


def test_fdatasync_eio_beyond_what_is_kept_names_the_records(tmp_path):
    import numpy as np
    errors = []
    writer = JournalWriter(tmp_path, "s", durability="interval", interval_ms=60_000, retain_bytes=250,
                           retry_max_s=0.002, on_error=lambda path, error: errors.append(error))
    sync = DroppingSync(fail_at=[3])  # the header's and the first batch's syncs succeed, the flush's fails
    writer.sync_function = sync
    payloads = np.frombuffer(bytearray(b"".join(message("s", i) for i in range(10))), np.uint8).reshape(10, 40)
    writer.append_many(payloads[:3], receive_ns=1)   # synced at once: the interval started long ago
    assert writer.last_durable_sequence == 2
    writer.append_many(payloads[3:7], receive_ns=2)  # 4 x 80 bytes: more than retain_bytes, not kept
    writer.append_many(payloads[7:], receive_ns=3)   # 3 x 80 bytes: kept
    assert writer.last_durable_sequence == 2
    writer.flush()
    assert sync.dropped[-1][1] == 7 * 80
    lost = [error for error in errors if isinstance(error, JournalError)]
    assert len(lost) == 1 and "records 3 to 6 may not be durable" in str(lost[0])
    assert [(item["first_sequence"], item["last_sequence"], item["bytes"]) for item in writer.not_durable] == [
        (3, 6, 320)]
    assert writer.last_durable_sequence == 2
    writer.append(message("s", 10), receive_ns=4)
    writer.flush()
    assert writer.last_durable_sequence == 2  # never past what may be lost
    writer.close()
    # records 3 to 6 are zeros on disk; records 7 to 9 were written again
    with JournalReader(tmp_path, "s", skip_corrupt=True) as reader:
        found = [(r.sequence, bytes(r.payload)) for r in reader]
    assert found == [(i, message("s", i)) for i in (0, 1, 2, 7, 8, 9, 10)]


def test_a_blocked_write_does_not_stop_the_draining(tmp_path):
    """A ``write`` that blocks (the kernel throttling dirty pages) stalls the writing thread;
    the flusher keeps draining into chunks behind it, so a small ring never fills."""
    ring = Ring.create(64, 64)
    writer = JournalWriter(tmp_path, "s", batch_bytes=4096)
    released = threading.Event()
    blocked = threading.Event()
    unblocked = threading.Event()

    def blocking_write(fd, data):
        # the chunks' writes (the segment's header is written when it opens, by the flusher)
        if threading.current_thread().name.startswith("ringbook-journal-write") and not released.is_set():
            blocked.set()
            released.wait(30)
            unblocked.set()
        return os.write(fd, data)

    writer.write_function = blocking_write
    flusher = Flusher([(ring, 0, writer)]).start()
    for i in range(3000):
        while not ring.try_write(message("s", i)):
            time.sleep(0.0001)
    # every message went through the ring while the first chunk's write was still blocked
    assert blocked.is_set() and not unblocked.is_set()
    written_while_blocked = writer.last_written_sequence
    released.set()
    flusher.stop()
    writer.close()
    # 3000 records of 96 bytes are far more than the ring's 64 slots: they waited in chunks
    assert written_while_blocked == -1
    assert [r[5] for r in read_back(tmp_path, "s")] == [message("s", i) for i in range(3000)]
    assert verify(tmp_path)["ok"]
