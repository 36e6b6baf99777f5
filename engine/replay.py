"""``ringbook replay DIR``: verify an engine's journal, rebuild its book and check every checkpoint.

The ``raw`` stream holds the packets exactly as the book consumer took them
from the ring (and the feed's gap markers); the ``engine`` stream holds the
book consumer's own records (:mod:`ringbook.engine.pipeline`). A replay decodes
the packets with the same kernels and applies them with the same
:func:`ringbook.kernels.replay.apply_event`, and at each checkpoint's raw
position compares :func:`ringbook.engine.pipeline.book_hash` with the hash
the live run wrote. ``run.json`` beside the journal gives the book's shape
(symbols, ticks, depth, order table).

A checkpoint whose raw position lies beyond the last raw record on disk (the
process died between the two streams' writes) cannot be checked: it is
counted as ``beyond_end``, never as a match.

:class:`Replayer` holds a replay's state (the book, the checkpoints known so far,
the counts) from one span of raw records to the next; :func:`replay` feeds it a
whole journal, :func:`follow` each raw segment as soon as the writer has sealed
it (a newer raw segment exists), while the run is still writing, and can delete
each segment once it is verified and replayed: the journal on disk then stays a
few segments long however long the run.
"""

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringbook.engine import pipeline
from ringbook.engine.feeds import packet
from ringbook.kernels import book as books
from ringbook.kernels.events import EVENT_DTYPE, Instruments
from ringbook.kernels.jit_options import kernel
from ringbook.kernels.replay import apply_event


@dataclass
class RunDescription:
    """``run.json``: the shape of the book an engine's run kept."""

    root: Path
    instruments: Instruments
    n_symbols: int
    ticks: np.ndarray
    order_capacity: int
    depth: int
    checkpoint_levels: int
    checkpoint_every: int = None  # None: not recorded (an older run)

    def new_book(self):
        return books.new_book(n_symbols=self.n_symbols, depth=self.depth, order_capacity=self.order_capacity,
                              ticks=self.ticks)


#: Raw records a replay reads at a time: its memory is bounded by this, not by the journal.
SPAN_RECORDS = 65_536


def read_description(root):
    """``run.json`` of an engine journal.

    Raises
    ------
    FileNotFoundError
        No ``run.json``: not a journal ``ringbook run`` wrote.
    """
    root = Path(root)
    description = json.loads((root / "run.json").read_text())
    instruments = Instruments(capacity=max(len(description["instruments"]), 1))
    for row in description["instruments"]:
        instruments.intern(row["name"], row["price_scale"], row["size_scale"], row["tick"])
    return RunDescription(
        root=root, instruments=instruments, n_symbols=int(description["n_symbols"]),
        ticks=np.asarray(description["ticks"], np.int64), order_capacity=int(description["order_capacity"]),
        depth=int(description["depth"]), checkpoint_levels=int(description["checkpoint_levels"]),
        checkpoint_every=description.get("checkpoint_every"))


def raw_spans(root):
    """The ``raw`` stream, :data:`SPAN_RECORDS` records at a time (corrupt records skipped):
    :class:`~ringbook.engine.journal.PayloadSpan` objects."""
    from ringbook.engine.journal import JournalReader
    with JournalReader(root, "raw", skip_corrupt=True) as reader:
        while True:
            span = reader.read_payloads(SPAN_RECORDS)
            if not len(span):
                return
            yield span


def _engine_row(record):
    """An ``engine`` record as an int64 row: kind, then the record's 8 words."""
    words = np.frombuffer(bytes(record.payload), np.int64)
    row = np.zeros(pipeline.ENGINE_RECORD_WORDS + 1, np.int64)
    row[0] = record.kind
    row[1:1 + min(len(words), pipeline.ENGINE_RECORD_WORDS)] = words[:pipeline.ENGINE_RECORD_WORDS]
    return row


class EngineRecords:
    """The ``engine`` stream, read as a writer appends to it: each :meth:`read_new` returns
    the records added since the one before (none until the stream's first segment exists).

    Parameters
    ----------
    root : path-like
    save_index : bool
        Write the index files a reader rebuilds (not of a stream still being written).
    """

    def __init__(self, root, save_index=True):
        self.root = Path(root)
        self.save_index = save_index
        self.reader = None

    def read_new(self):
        """int64 rows (kind, then the record's 8 words) of the records not read before."""
        from ringbook.engine.journal import JournalReader, list_segments
        if self.reader is None:
            if not list_segments(self.root, "engine").get("engine"):
                return np.zeros((0, pipeline.ENGINE_RECORD_WORDS + 1), np.int64)
            self.reader = JournalReader(self.root, "engine", skip_corrupt=True, save_index=self.save_index)
        else:
            self.reader.streams["engine"].refresh()
        rows = [_engine_row(record) for record in self.reader]
        return np.array(rows, np.int64).reshape(-1, pipeline.ENGINE_RECORD_WORDS + 1)

    def close(self):
        if self.reader is not None:
            self.reader.close()


def engine_records(root):
    """The ``engine`` stream's records as int64 rows: kind, then the record's 8 words."""
    stream = EngineRecords(root)
    try:
        return stream.read_new()
    finally:
        stream.close()


# result words
EVENTS, PACKETS, BAD_PACKETS, BOOK_ERRORS, MATCHED, MISMATCHED, FIRST_MISMATCH, NEXT_CHECKPOINT, RECORDS = range(9)


@kernel
def replay_packets(book, buffer, offsets, kinds, checkpoint_positions, checkpoint_hashes, scratch,
                   scratch_bytes, top_prices, top_quantities, found_hashes, result):
    """Apply every data packet of a span of raw records; at each checkpoint's raw position
    compare the book's hash. ``result`` carries the position (:data:`RECORDS`) and the next
    checkpoint from one span to the next."""
    next_checkpoint = result[NEXT_CHECKPOINT]
    n_checkpoints = checkpoint_positions.shape[0]
    for k in range(kinds.shape[0]):
        if kinds[k] == pipeline.RECORD_DATA:
            payload = buffer[offsets[k]:offsets[k + 1]]
            count, _, _ = packet.decode_header(payload, offsets[k + 1] - offsets[k])
            if count < 0:
                result[BAD_PACKETS] += 1
            else:
                packet.copy_events(payload, count, scratch_bytes)
                for i in range(count):
                    if apply_event(book, scratch, i) < 0:
                        result[BOOK_ERRORS] += 1
                result[EVENTS] += count
                result[PACKETS] += 1
        result[RECORDS] += 1
        position = result[RECORDS]
        while next_checkpoint < n_checkpoints and checkpoint_positions[next_checkpoint] <= position:
            if checkpoint_positions[next_checkpoint] == position:
                found = pipeline.book_hash(book, top_prices, top_quantities)
                found_hashes[next_checkpoint] = found
                if found == checkpoint_hashes[next_checkpoint]:
                    result[MATCHED] += 1
                else:
                    if result[MISMATCHED] == 0:
                        result[FIRST_MISMATCH] = next_checkpoint
                    result[MISMATCHED] += 1
            next_checkpoint += 1
    result[NEXT_CHECKPOINT] = next_checkpoint


class Replayer:
    """A replay's state from one span of raw records to the next.

    Feed it the ``engine`` stream's records as they become known
    (:meth:`add_engine_records`, in order) and the raw records in order
    (:meth:`consume`); a checkpoint is checked when the replay reaches its raw
    position, so every checkpoint at or below the position reached must be known
    by then: the ones beyond wait. :meth:`report` says where it stands.

    Parameters
    ----------
    run : RunDescription
    """

    def __init__(self, run):
        self.run = run
        self.book = run.new_book()
        self.scratch = np.zeros(packet.MAX_EVENTS, EVENT_DTYPE)
        self.result = np.zeros(9, np.int64)
        self.result[FIRST_MISMATCH] = -1
        self.feed_gaps = 0
        self._own = []          # engine records, in chunks as added
        self._checkpoints = []  # their checkpoint rows, in chunks
        self.positions = np.zeros(0, np.int64)
        self.hashes = np.zeros(0, np.int64)
        self.found = np.zeros(0, np.int64)
        self.engine_position = -1  # the greatest raw position an engine record names
        self._levels(max(run.checkpoint_levels, 1))

    def _levels(self, levels):
        self.top_prices, self.top_quantities = np.zeros(levels, np.int64), np.zeros(levels, np.int64)

    @property
    def position(self):
        """Raw records replayed so far."""
        return int(self.result[RECORDS])

    @property
    def own(self):
        """Every engine record added: int64 rows, kind then the record's words."""
        if len(self._own) > 1:
            self._own = [np.concatenate(self._own)]
        return self._own[0] if self._own else np.zeros((0, pipeline.ENGINE_RECORD_WORDS + 1), np.int64)

    def add_engine_records(self, rows):
        """The ``engine`` stream's records that follow those added before."""
        if not len(rows):
            return
        self._own.append(rows)
        self.engine_position = max(self.engine_position, int(rows[:, 1].max()))
        checkpoints = rows[rows[:, 0] == pipeline.RECORD_CHECKPOINT]
        if not len(checkpoints):
            return
        if not len(self.positions):
            self._levels(int(checkpoints[0, 3]))  # the levels the run hashed
        self._checkpoints.append(checkpoints)
        self.positions = np.concatenate([self.positions, checkpoints[:, 1]])
        self.hashes = np.concatenate([self.hashes, checkpoints[:, 4]])
        self.found = np.concatenate([self.found, np.zeros(len(checkpoints), np.int64)])

    def consume(self, span):
        """Apply a :class:`~ringbook.engine.journal.PayloadSpan` of raw records, the next in order."""
        replay_packets(self.book, span.data, span.offsets, span.kinds, self.positions, self.hashes, self.scratch,
                       self.scratch.view(np.uint8), self.top_prices, self.top_quantities, self.found, self.result)
        self.feed_gaps += int((span.kinds == pipeline.RECORD_GAP).sum())

    def report(self, verified, root):
        """:func:`replay`'s report of what was consumed, ``verified`` the journal's
        :func:`~ringbook.engine.journal.verify` report."""
        result, own = self.result, self.own
        first = None
        if result[FIRST_MISMATCH] >= 0:
            index = int(result[FIRST_MISMATCH])
            first = {"checkpoint": index, "raw_position": int(self.positions[index]),
                     "expected_hash": int(self.hashes[index]), "found_hash": int(self.found[index])}
        drops = own[own[:, 0] == pipeline.RECORD_DROPS]
        book_gaps = int((own[:, 0] == pipeline.RECORD_GAP).sum())
        total = len(self.positions)
        report = {
            "dir": str(Path(root).resolve()),
            "verify": verified,
            "records": int(result[RECORDS]),
            "packets": int(result[PACKETS]),
            "events": int(result[EVENTS]),
            "gaps": book_gaps + self.feed_gaps,
            "gap_detail": {"book": book_gaps, "feed": self.feed_gaps},
            "drops": int(drops[-1, 2]) if len(drops) else 0,
            "resets": int((own[:, 0] == pipeline.RECORD_BOOK_RESET).sum()),
            "checkpoints": {"total": total, "matched": int(result[MATCHED]),
                            "mismatched": int(result[MISMATCHED]),
                            "beyond_end": int(total - result[NEXT_CHECKPOINT]),
                            "first_mismatch": first},
            "errors": int(result[BOOK_ERRORS] + result[BAD_PACKETS]),
        }
        report["ok"] = bool(verified.get("ok", True)) and report["checkpoints"]["mismatched"] == 0
        return report


def replay(root):
    """Verify, rebuild and check a journal ``ringbook run`` wrote; a report dict.

    The raw stream is read :data:`SPAN_RECORDS` records at a time: memory stays bounded
    whatever the journal's size.

    Returns
    -------
    report : dict
        ``verify`` (the journal's :func:`~ringbook.engine.journal.verify`),
        ``events``, ``packets``, ``gaps`` {``book``, ``feed``}, ``drops``,
        ``resets``, ``checkpoints`` {``total``, ``matched``, ``mismatched``,
        ``beyond_end``, ``first_mismatch``}, ``errors``, ``ok``.
    book : the rebuilt book
    description : RunDescription
    """
    from ringbook.engine.journal import verify
    verified = verify(root)
    run = read_description(root)
    replayer = Replayer(run)
    replayer.add_engine_records(engine_records(root))
    for span in raw_spans(root):
        replayer.consume(span)
    return replayer.report(verified, root), replayer.book, run


def _raw_bytes_on_disk(root):
    """Bytes of the raw stream's segments and their index files under ``root`` now."""
    from ringbook.engine.journal import index_path, list_segments
    total = 0
    for _, path in list_segments(root, "raw").get("raw", []):
        for name in (path, index_path(path)):
            try:
                total += os.stat(name).st_size
            except FileNotFoundError:
                pass
    return total


def follow(root, done, delete=False, min_sleep_s=0.001, max_sleep_s=0.2):
    """Verify and replay a journal while ``ringbook run`` (or an :class:`~ringbook.engine.engine.Engine`)
    writes it, one sealed raw segment at a time; a report as :func:`replay`'s.

    A raw segment is sealed once a newer raw segment exists: the writer finishes a
    segment (every byte written, its index too) before the next one gets its name.
    The follower checks each sealed segment as :func:`~ringbook.engine.journal.verify`
    does (every record, and that it starts where the one before ended), replays it,
    and with ``delete`` removes it and its index file, unless the segment is damaged
    (kept for inspection). The segment still being written is never read until
    ``done()`` says the run has ended; then the rest, the last one included, follow.
    Between looks it sleeps, from ``min_sleep_s`` doubling to ``max_sleep_s``.

    A checkpoint is checked where it applies: before a segment is replayed, the
    ``engine`` stream is read again until it names a raw position past the segment's
    end (the book consumer writes its checkpoints after the raw records they follow),
    or the run has ended.

    Parameters
    ----------
    root : path-like
        The journal directory.
    done : callable
        ``done()`` is true once the run has ended and closed its journal (e.g. an
        ``Event``'s ``is_set``).
    delete : bool
        Remove each raw segment once verified and replayed.

    Returns
    -------
    report : dict
        :func:`replay`'s report (its ``verify`` covers every segment processed,
        of both streams), and ``follow``: ``segments`` and ``bytes`` of the raw
        stream processed (``segments_while_running`` of them before the run
        ended), ``deleted`` segments, ``kept`` (damaged segments not deleted),
        ``peak_raw_bytes`` (the most raw journal, segments and index files, seen
        on disk at once), ``waits`` (sleeps between looks).
    book : the rebuilt book
    description : RunDescription
    """
    from ringbook.engine.journal import VerifyTally, index_path, list_segments, segment_spans
    from ringbook.kernels.wait import backoff, wait_strategy
    root = Path(root)
    strategy = wait_strategy(spins=0, yields=0, min_sleep_ns=int(min_sleep_s * 1e9),
                             max_sleep_ns=int(max_sleep_s * 1e9))
    facts = {"segments": 0, "bytes": 0, "segments_while_running": 0, "deleted": 0, "kept": [],
             "peak_raw_bytes": 0, "waits": 0}

    def sleep(attempt):
        facts["waits"] += 1
        return backoff(strategy, attempt)

    attempt = 0
    while not (root / "run.json").exists():  # a run that has not started yet
        if done() and not (root / "run.json").exists():
            raise FileNotFoundError(f"{root / 'run.json'}: the run ended and wrote no journal description")
        attempt = sleep(attempt)
    run = read_description(root)
    replayer = Replayer(run)
    tally = VerifyTally(root)
    engine = EngineRecords(root, save_index=False)

    def know_checkpoints_up_to(position, ended):
        """Read the engine stream until it names a raw position past ``position``, or the run ended."""
        attempt = 0
        while True:
            replayer.add_engine_records(engine.read_new())
            if ended or replayer.engine_position > position or run.checkpoint_every == 0:
                return
            ended = bool(done())  # the stream is complete once the run has ended: one more read
            if not ended:
                attempt = sleep(attempt)

    processed = -1  # the first sequence of the last raw segment processed
    attempt = 0
    try:
        while True:
            ended = bool(done())  # before the listing: once ended, the listing is the whole journal
            listed = list_segments(root, "raw").get("raw", [])
            facts["peak_raw_bytes"] = max(facts["peak_raw_bytes"], _raw_bytes_on_disk(root))
            ready = [(first, path) for first, path in (listed if ended else listed[:-1]) if first > processed]
            for first, path in ready:
                before = (len(tally.report["errors"]), tally.report["gaps"])
                mapped, scan = tally.add("raw", first, path, last_segment=ended and path == listed[-1][1],
                                         keep_open=True)
                processed = first
                if scan is not None:
                    know_checkpoints_up_to(replayer.position + scan.records, ended)
                    for span in segment_spans(mapped, scan, SPAN_RECORDS):
                        replayer.consume(span)
                    mapped.close()
                    facts["segments"] += 1
                    facts["segments_while_running"] += not ended
                    facts["bytes"] += scan.size
                clean = (scan is not None and not scan.corrupt and scan.torn_offset < 0
                         and before == (len(tally.report["errors"]), tally.report["gaps"]))
                if delete and clean:
                    facts["peak_raw_bytes"] = max(facts["peak_raw_bytes"], _raw_bytes_on_disk(root))
                    path.unlink()
                    index_path(path).unlink(missing_ok=True)
                    facts["deleted"] += 1
                elif delete:
                    facts["kept"].append(str(path))
            if ended:
                break
            attempt = 0 if ready else sleep(attempt)
        replayer.add_engine_records(engine.read_new())
    finally:
        engine.close()
    for first, path in list_segments(root, "engine").get("engine", []):
        tally.add("engine", first, path)
    report = replayer.report(tally.report, root)
    report["follow"] = facts
    return report, replayer.book, run


def summary(report):
    checkpoints = report["checkpoints"]
    lines = [f"replay {report['dir']}",
             f"  journal         {'verified' if report['verify'].get('ok') else 'NOT clean'}: "
             f"{report['verify'].get('records')} records in {report['verify'].get('segments')} segments, "
             f"torn bytes {report['verify'].get('torn_bytes')}, bad records {report['verify'].get('bad_records')}",
             f"  events          {report['events']} in {report['packets']} packets",
             f"  gaps            {report['gaps']} (book {report['gap_detail']['book']}, "
             f"feed {report['gap_detail']['feed']})",
             f"  drops           {report['drops']}",
             f"  checkpoints     {checkpoints['matched']} matched, {checkpoints['mismatched']} mismatched"
             + (f", {checkpoints['beyond_end']} beyond the raw journal's end" if checkpoints['beyond_end'] else ""),
             "  OK" if report["ok"] else "  MISMATCH"]
    if "follow" in report:
        facts = report["follow"]
        lines.insert(-1, f"  followed        {facts['segments']} raw segments ({facts['bytes']} bytes), "
                         f"{facts['segments_while_running']} while the run wrote, {facts['deleted']} deleted; "
                         f"at most {facts['peak_raw_bytes']} raw bytes on disk")
    return "\n".join(lines)


def add_arguments(parser):
    parser.add_argument("dir", help="a journal directory written by `ringbook run`")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--follow", action="store_true",
                        help="while `ringbook run` writes DIR: check each raw segment once sealed, and stop "
                             "when the run has ended (no process holds the raw stream's writer lock)")
    parser.add_argument("--delete", action="store_true",
                        help="with --follow: delete each raw segment once verified and replayed "
                             "(damaged ones are kept)")


def run_ended(root):
    """``done`` for :func:`follow` of a ``ringbook run`` in another process: its journal
    description exists and no process writes its raw stream any more."""
    from ringbook.engine.journal import has_writer
    root = Path(root)
    return (root / "run.json").exists() and not has_writer(root, "raw")


def run(args):
    if args.delete and not args.follow:
        print("ringbook replay: --delete goes with --follow", file=sys.stderr)
        return 2
    try:
        if args.follow:
            report, _, _ = follow(args.dir, lambda: run_ended(args.dir), delete=args.delete)
        else:
            report, _, _ = replay(args.dir)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"ringbook replay: {error}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(report, sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        print(summary(report))
    return 0 if report["ok"] else 1
