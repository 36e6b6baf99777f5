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
"""

import json
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
        depth=int(description["depth"]), checkpoint_levels=int(description["checkpoint_levels"]))


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


def engine_records(root):
    """The ``engine`` stream's records as int64 rows: kind, then the record's 8 words."""
    from ringbook.engine.journal import JournalReader
    own = []
    try:
        with JournalReader(root, "engine", skip_corrupt=True) as reader:
            for record in reader:
                words = np.frombuffer(bytes(record.payload), np.int64)
                row = np.zeros(pipeline.ENGINE_RECORD_WORDS + 1, np.int64)
                row[0] = record.kind
                row[1:1 + min(len(words), pipeline.ENGINE_RECORD_WORDS)] = words[:pipeline.ENGINE_RECORD_WORDS]
                own.append(row)
    except Exception as error:  # a run killed before its first engine record has no such stream
        if "no segments" not in str(error):
            raise
    return np.array(own, np.int64).reshape(-1, pipeline.ENGINE_RECORD_WORDS + 1)


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


def replay(root):
    """Verify, rebuild and check a journal ``ringbook run`` wrote; a report dict.

    The raw stream is read :data:`SPAN_RECORDS` records at a time: memory stays bounded
    whatever the journal's size.

    Returns
    -------
    report : dict
        ``verify`` (the journal's :func:`~ringbook.engine.journal.verify`),
        ``events``, ``packets``, ``gaps`` {``book``, ``feed``}, ``drops``,
        ``resets``, ``checkpoints`` {``matched``, ``mismatched``,
        ``beyond_end``, ``first_mismatch``}, ``errors``, ``ok``.
    book : the rebuilt book
    description : RunDescription
    """
    from ringbook.engine.journal import verify
    verified = verify(root)
    run = read_description(root)
    book = run.new_book()
    own = engine_records(root)
    checkpoints = own[own[:, 0] == pipeline.RECORD_CHECKPOINT]
    positions = np.ascontiguousarray(checkpoints[:, 1])
    hashes = np.ascontiguousarray(checkpoints[:, 4])
    levels = max(run.checkpoint_levels, 1)
    if len(checkpoints):
        levels = int(checkpoints[0, 3])
    scratch = np.zeros(packet.MAX_EVENTS, EVENT_DTYPE)
    found = np.zeros(len(checkpoints), np.int64)
    top_prices, top_quantities = np.zeros(levels, np.int64), np.zeros(levels, np.int64)
    result = np.zeros(9, np.int64)
    result[FIRST_MISMATCH] = -1
    feed_gaps = 0
    for span in raw_spans(root):
        replay_packets(book, span.data, span.offsets, span.kinds, positions, hashes, scratch,
                       scratch.view(np.uint8), top_prices, top_quantities, found, result)
        feed_gaps += int((span.kinds == pipeline.RECORD_GAP).sum())
    first = None
    if result[FIRST_MISMATCH] >= 0:
        index = int(result[FIRST_MISMATCH])
        first = {"checkpoint": index, "raw_position": int(positions[index]),
                 "expected_hash": int(hashes[index]), "found_hash": int(found[index])}
    drops = own[own[:, 0] == pipeline.RECORD_DROPS]
    book_gaps = int((own[:, 0] == pipeline.RECORD_GAP).sum())
    report = {
        "dir": str(Path(root).resolve()),
        "verify": verified,
        "records": int(result[RECORDS]),
        "packets": int(result[PACKETS]),
        "events": int(result[EVENTS]),
        "gaps": book_gaps + feed_gaps,
        "gap_detail": {"book": book_gaps, "feed": feed_gaps},
        "drops": int(drops[-1, 2]) if len(drops) else 0,
        "resets": int((own[:, 0] == pipeline.RECORD_BOOK_RESET).sum()),
        "checkpoints": {"total": int(len(checkpoints)), "matched": int(result[MATCHED]),
                        "mismatched": int(result[MISMATCHED]),
                        "beyond_end": int(len(checkpoints) - result[NEXT_CHECKPOINT]),
                        "first_mismatch": first},
        "errors": int(result[BOOK_ERRORS] + result[BAD_PACKETS]),
    }
    report["ok"] = bool(verified.get("ok", True)) and report["checkpoints"]["mismatched"] == 0
    return report, book, run


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
    return "\n".join(lines)


def add_arguments(parser):
    parser.add_argument("dir", help="a journal directory written by `ringbook run`")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    try:
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
