"""The journal: appending, checksums, seeking and reading back, against what people use.

Records are 64-byte events (:data:`ringbook.kernels.events.EVENT_DTYPE`). Every
figure is the time per record unless it says otherwise; pyperf reports it,
and the script prints throughput and ratios at the end.

- ``journal_append``: :meth:`JournalWriter.append_many` of ``--records``
  events (10 M by default) with durability ``none``: framed, checksummed and
  written in the writer's default 4 MiB writes (104 bytes a record on disk).
- ``os_write_peer``: the same number of bytes (the journal's, 104 per record)
  written with plain 1 MiB ``os.write`` calls: the machine's limit.
  Target: the journal at least 70% of its bytes per second.
- ``jsonl_peer``: one JSON line per event (what ssmd and cryptofeed write),
  ``json.dumps`` and a buffered write. Target: the journal 20x faster.
- ``savez_compressed_peer``: ``numpy.savez_compressed`` of the event array
  (hftbacktest's data files). Target: 10x.
- ``arrow_ipc_peer``: pyarrow's IPC stream writer fed record batches of 64
  events. Target: 1x.
- ``crc32c_1mib`` / ``crc32c_package_1mib``: CRC32C of a 1 MiB buffer, per
  buffer (target: within 2x of the package); ``crc32c_records`` /
  ``crc32c_package_records``: of 64-byte records one by one, ours in an njit
  loop as the journal runs it, the package from Python as a Python writer
  would (target: 3x).
- ``seek_time``: :meth:`JournalReader.seek` by time on a journal of
  ``--records`` events (1 GiB at 10 M), the reader already open, per seek
  (target: under 100 us).
- ``open_torn``: opening that journal when its last segment ends in a torn
  record (its index is then stale and the segment is scanned), per open
  (target: under 1 s).
- ``read_events``: :meth:`JournalReader.read_span` of all its events into an
  EVENT_DTYPE array, checksums verified (target: at least 1 GB/s of journal).

Run under the bench lock: ``flock /tmp/ringbook-bench.lock python perf/bm_journal.py -o journal.json``
(``--fast --records 1000000`` for a quick look). The journals live in
``--workdir`` (default: a folder in the temporary directory), built once.
"""

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import Comparison, Limit, bench, make_runner, run_subject

from ringbook.engine.journal import JournalReader, JournalWriter, list_segments
from ringbook.kernels import journal as jk
from ringbook.kernels.crc32c import crc32c
from ringbook.kernels.events import EVENT_DTYPE
from ringbook.kernels.jit_options import kernel

BASE_NS = 1_723_161_253_937_085_768
PEER_RECORDS = 200_000       # the slow peers write this many per loop; their time is per record
WRITE_BYTES = 1 << 20


def option(name, default, kind=int):
    """A script option read before pyperf parses the command line (its workers get the same argv)."""
    if name in sys.argv:
        return kind(sys.argv[sys.argv.index(name) + 1])
    return default


RECORDS = option("--records", 10_000_000)
WORKDIR = Path(option("--workdir", os.path.join(tempfile.gettempdir(), f"ringbook-bm-journal-{os.getuid()}"),
                      str))


def make_events(count, seed=18):
    rng = np.random.default_rng(seed)
    events = np.zeros(count, EVENT_DTYPE)
    events["exchange_ns"] = BASE_NS + np.arange(count) * 100
    events["local_ns"] = events["exchange_ns"] + 50_000
    events["price"] = 6_000_000_000_000 + rng.integers(-10_000, 10_000, count) * 1_000_000
    events["quantity"] = rng.integers(1, 10**9, count)
    events["sequence"] = np.arange(count)
    events["kind"] = 1
    events["side"] = np.where(rng.random(count) < 0.5, 1, -1)
    return events


EVENTS = make_events(min(RECORDS, 1_000_000))
RECEIVE_NS = BASE_NS + np.arange(len(EVENTS), dtype=np.int64) * 100


def append_journal(root, count):
    """Append ``count`` events (cycling through EVENTS) to a new journal; the seconds it took."""
    started = time.perf_counter()
    with JournalWriter(root, "events", payload=EVENT_DTYPE, durability="none") as writer:
        done = 0
        while done < count:
            chunk = min(count - done, len(EVENTS))
            writer.append_many(EVENTS[:chunk], receive_ns=RECEIVE_NS[:chunk] + done * 100)
            done += chunk
    return time.perf_counter() - started


def journal_bytes(count):
    return count * int(jk.record_size(EVENT_DTYPE.itemsize))


def time_journal_append(loops):
    total = 0.0
    for _ in range(loops):
        root = WORKDIR / "append"
        shutil.rmtree(root, ignore_errors=True)
        total += append_journal(root, RECORDS)
        shutil.rmtree(root, ignore_errors=True)
    return total


def time_os_write(loops):
    block = np.random.default_rng(1).integers(0, 256, WRITE_BYTES, dtype=np.uint8).tobytes()
    total_bytes = journal_bytes(RECORDS)
    total = 0.0
    for _ in range(loops):
        path = WORKDIR / "plain.bin"
        started = time.perf_counter()
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        left = total_bytes
        while left > 0:
            left -= os.write(descriptor, block[:min(left, WRITE_BYTES)])
        os.close(descriptor)
        total += time.perf_counter() - started
        path.unlink()
    return total


def time_jsonl(loops):
    events = EVENTS[:PEER_RECORDS]
    names = EVENT_DTYPE.names
    rows = events.tolist()
    total = 0.0
    for _ in range(loops):
        path = WORKDIR / "peer.jsonl"
        started = time.perf_counter()
        with open(path, "w", buffering=WRITE_BYTES) as file:
            for row in rows:
                file.write(json.dumps(dict(zip(names, row))))
                file.write("\n")
        total += time.perf_counter() - started
        path.unlink()
    return total


def time_savez(loops):
    events = EVENTS[:PEER_RECORDS]
    total = 0.0
    for _ in range(loops):
        path = WORKDIR / "peer.npz"
        started = time.perf_counter()
        np.savez_compressed(path, data=events)
        total += time.perf_counter() - started
        path.unlink()
    return total


def time_arrow_ipc(loops):
    import pyarrow as pa
    events = EVENTS[:PEER_RECORDS]
    columns = {name: events[name] for name in EVENT_DTYPE.names}
    schema = pa.schema([(name, pa.from_numpy_dtype(EVENT_DTYPE[name])) for name in EVENT_DTYPE.names])
    total = 0.0
    for _ in range(loops):
        path = WORKDIR / "peer.arrows"
        started = time.perf_counter()
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for start in range(0, len(events), 64):
                writer.write_batch(pa.record_batch([pa.array(columns[name][start:start + 64])
                                                    for name in EVENT_DTYPE.names], schema=schema))
        total += time.perf_counter() - started
        path.unlink()
    return total


# -- CRC32C

MIB = np.random.default_rng(2).integers(0, 256, 1 << 20, dtype=np.uint8)
MIB_BYTES = MIB.tobytes()
RECORD_BUFFER = np.ascontiguousarray(EVENTS[:PEER_RECORDS]).view(np.uint8).reshape(-1)
RECORD_LIST = [RECORD_BUFFER[i:i + 64].tobytes() for i in range(0, RECORD_BUFFER.size, 64)]


@kernel
def crc_buffer_loop(buffer, loops):
    total = 0
    for _ in range(loops):
        total += crc32c(buffer, 0, buffer.size, 0)
    return total


@kernel
def crc_records(buffer, width):
    total = 0
    for start in range(0, buffer.size, width):
        total += crc32c(buffer, start, start + width, 0)
    return total


def time_crc_mib(loops):
    started = time.perf_counter()
    crc_buffer_loop(MIB, loops)
    return time.perf_counter() - started


def time_crc_package_mib(loops):
    import crc32c as package
    started = time.perf_counter()
    for _ in range(loops):
        package.crc32c(MIB_BYTES)
    return time.perf_counter() - started


def time_crc_records(loops):
    started = time.perf_counter()
    for _ in range(loops):
        crc_records(RECORD_BUFFER, 64)
    return time.perf_counter() - started


def time_crc_package_records(loops):
    import crc32c as package
    function = package.crc32c
    started = time.perf_counter()
    for _ in range(loops):
        for record in RECORD_LIST:
            function(record)
    return time.perf_counter() - started


# -- the large journal: seek, torn open, read back

LARGE = WORKDIR / f"large-{RECORDS}"


def ensure_large_journal():
    marker = LARGE / "complete"
    if not marker.exists():
        shutil.rmtree(LARGE, ignore_errors=True)
        append_journal(LARGE, RECORDS)
        marker.write_text(str(RECORDS))
    return LARGE


def torn_copy():
    """The large journal with a torn last record (a copy whose last segment lost 20 bytes)."""
    torn = WORKDIR / f"torn-{RECORDS}"
    marker = torn / "complete"
    if not marker.exists():
        shutil.rmtree(torn, ignore_errors=True)
        shutil.copytree(LARGE, torn)
        first, last = list_segments(torn)["events"][-1]
        os.truncate(last, os.path.getsize(last) - 20)
        marker.write_text("torn")
    return torn


def time_seek(loops, reader, targets):
    started = time.perf_counter()
    for loop in range(loops):
        reader.seek(time=int(targets[loop % len(targets)]))
    return time.perf_counter() - started


def time_open_torn(loops, root):
    total = 0.0
    for _ in range(loops):
        started = time.perf_counter()
        # save_index=False: every open meets the stale index and scans, as the first open after a crash does
        reader = JournalReader(root, save_index=False)
        total += time.perf_counter() - started
        assert reader.torn and reader.torn[0]["bytes"] > 0
        reader.close()
    return total


def time_read_events(loops, root):
    total = 0.0
    for _ in range(loops):
        with JournalReader(root) as reader:
            started = time.perf_counter()
            records, _, _ = reader.read_span(RECORDS)
            total += time.perf_counter() - started
        assert len(records) == RECORDS
    return total


def check_and_compile():
    """Compile before timing, and check our CRC against the package once."""
    WORKDIR.mkdir(parents=True, exist_ok=True)
    import crc32c as package
    assert crc_buffer_loop(MIB, 1) == package.crc32c(MIB_BYTES)
    assert crc_records(RECORD_BUFFER[:640], 64) == sum(package.crc32c(r) for r in RECORD_LIST[:10])
    root = WORKDIR / "warm"
    shutil.rmtree(root, ignore_errors=True)
    append_journal(root, 1000)
    with JournalReader(root) as reader:
        assert (reader.read_span(1000)[0] == EVENTS[:1000]).all()
        reader.seek(time=BASE_NS + 5000)
    shutil.rmtree(root)


check_and_compile()

RECORD_BYTES = int(jk.record_size(EVENT_DTYPE.itemsize))


def benchmark_table(reader, targets, large, torn):
    """Every pyperf benchmark of the subject, by name; times are per record unless said."""
    return {
        "journal_append": bench(time_journal_append, inner_loops=RECORDS),
        "os_write_peer": bench(time_os_write, inner_loops=RECORDS),
        "jsonl_peer": bench(time_jsonl, inner_loops=PEER_RECORDS),
        "savez_compressed_peer": bench(time_savez, inner_loops=PEER_RECORDS),
        "arrow_ipc_peer": bench(time_arrow_ipc, inner_loops=PEER_RECORDS),
        "crc32c_1mib": bench(time_crc_mib),
        "crc32c_package_1mib": bench(time_crc_package_mib),
        "crc32c_records": bench(time_crc_records, inner_loops=PEER_RECORDS),
        "crc32c_package_records": bench(time_crc_package_records, inner_loops=PEER_RECORDS),
        "seek_time": bench(time_seek, reader, targets),
        "open_torn": bench(time_open_torn, torn),
        "read_events": bench(time_read_events, large, inner_loops=RECORDS),
    }


COMPARISONS = [
    Comparison("journal_append", "os_write_peer", at_least=0.7,
               means="append 64-byte events, durability none: share of plain 1 MiB os.write's bytes/s"),
    Comparison("journal_append", "jsonl_peer", at_least=20, means="faster than JSON lines (json.dumps)"),
    Comparison("journal_append", "savez_compressed_peer", at_least=10,
               means="faster than numpy.savez_compressed", peer_package="numpy"),
    Comparison("journal_append", "arrow_ipc_peer", at_least=1,
               means="faster than pyarrow's IPC stream writer, batches of 64", peer_package="pyarrow"),
    Comparison("crc32c_1mib", "crc32c_package_1mib", at_least=0.5,
               means="CRC32C of 1 MiB: within 2x of the crc32c package", peer_package="crc32c"),
    Comparison("crc32c_records", "crc32c_package_records", at_least=3,
               means="CRC32C of 64-byte records: faster than the crc32c package", peer_package="crc32c"),
    Limit("seek_time", at_most=100e-6, means="seek by time on the large journal, reader open: under 100 µs"),
    Limit("open_torn", at_most=1.0, means="open the large journal with a torn tail: under 1 s"),
    Limit("read_events", at_most=RECORD_BYTES / 1e9,
          means=f"read events back, checksums verified: at least 1 GB/s of journal "
                f"(time per {RECORD_BYTES}-byte record)"),
]


def pass_options(command, args):
    """Give pyperf's worker processes this script's own options."""
    command.extend(("--records", str(args.records)))
    if args.workdir:
        command.extend(("--workdir", args.workdir))


def print_throughput(results):
    """Records/s and bytes/s of the medians (main process, all benchmarks done)."""
    append = results["journal_append"].median()
    read = results["read_events"].median()
    print()
    print(f"journal_append: {1 / append / 1e6:.2f} M records/s, {RECORD_BYTES / append / 1e6:.0f} MB/s "
          f"on disk ({EVENT_DTYPE.itemsize / append / 1e6:.0f} MB/s of events)")
    print(f"os_write_peer: {RECORD_BYTES / results['os_write_peer'].median() / 1e6:.0f} MB/s")
    print(f"seek_time: {results['seek_time'].median() * 1e6:.1f} us per seek; "
          f"open_torn: {results['open_torn'].median() * 1e3:.0f} ms per open")
    print(f"read_events: {RECORD_BYTES / read / 1e9:.2f} GB/s of journal, {1 / read / 1e6:.1f} M events/s")
    print(f"crc32c_1mib: {(1 << 20) / results['crc32c_1mib'].median() / 1e9:.1f} GB/s, package "
          f"{(1 << 20) / results['crc32c_package_1mib'].median() / 1e9:.1f} GB/s")


def main():
    runner = make_runner(add_cmdline_args=pass_options)
    runner.argparser.add_argument("--records", type=int, default=10_000_000)
    runner.argparser.add_argument("--workdir")
    runner.parse_args()  # --help exits here, before the large journal is built
    large = ensure_large_journal()
    torn = torn_copy()
    reader = JournalReader(large)
    targets = np.random.default_rng(3).integers(BASE_NS, BASE_NS + RECORDS * 100, 4096)
    try:
        _, results = run_subject("Journal", benchmark_table(reader, targets, large, torn), COMPARISONS,
                                 runner=runner, metadata={"journal_records": str(RECORDS),
                                                          "journal_record_bytes": str(RECORD_BYTES)})
        if all(result is not None for result in results.values()):
            print_throughput(results)
    finally:
        reader.close()


if __name__ == "__main__":
    main()
