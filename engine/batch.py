"""Many files at once: snapshots, a user's callback and checks over every shard.

A *shard* is a (file, symbol): the unit of output and of the manifest. The
symbols of a file are known only once it is read, so one task reads one file
(with its LOBSTER orderbook file, matched by name) and produces every shard of
it. The inputs are :mod:`ringbook.engine.inputs`; where the tasks run, and
what happens when a worker dies or a task raises, is :mod:`ringbook.engine.tasks`.

Durability: a worker writes each output atomically (a temporary file, then a
rename) but does not sync it; the driver syncs an input's outputs and their
folder before the manifest records the input as done, and un-records an input
(durably) before its outputs are written again. So the manifest never says
done of an output that a crash of the machine could lose or leave short, and
the syncs overlap the workers' next shards instead of stalling them. The
manifest is saved at most once a second as inputs finish (and at the end, or
when the run is stopped): after a crash, a rerun redoes the inputs finished
since its last save.
"""

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from ringbook.engine.inputs import Source, as_inputs, read_source, source_facts, sources, stream_source
from ringbook.engine.tasks import (TaskFailure, WorkersCannotStart, executor, failure_line, prepare_worker,
                                     run_tasks)


# ---------------------------------------------------------------- manifest

MANIFEST = "manifest.json"
LOCK = ".ringbook-snapshots.lock"   # held by the run writing to the folder


class Manifest:
    """``manifest.json`` in the output folder: every input and its shards.

    ``{"version": 1, "options": {...}, "files": {input: {"size", "mtime_ns",
    "blake3", ["orderbook_size", "orderbook_mtime_ns",] "format", "orderbook", "stream",
    "status", "error", "shards": [{"symbol", "output", "rows", "first_boundary_ns",
    "last_boundary_ns", "first_event_ns", "last_event_ns", "events", "levels_shown"}]}}}``, an
    input named by its path (``path#stream`` for a journal's stream, whose facts are those of
    its segments); ``levels_shown`` is the levels of a LOBSTER orderbook file, the snapshots'
    source (its levels beyond are empty), and None for other inputs. Written atomically and synced, at most once a second as inputs finish (see
    :meth:`record`); an input is recorded as done only once its outputs are synced (see the
    module docstring).
    """

    #: Seconds at least between saves as inputs finish (and ten times the last save's time):
    #: saving the whole manifest after each of thousands of inputs would cost more than they do.
    SAVE_EVERY = 1.0

    def __init__(self, directory, options):
        self.path = Path(directory) / MANIFEST
        self.options = options
        self.files = {}
        self._unsaved = False
        self._next_save = 0.0
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved.get("options") == options:
                self.files = saved.get("files", {})

    def is_done(self, source, directory):
        """True when the input is unchanged (size and mtime, its orderbook file's too) and every one
        of its outputs exists."""
        entry = self.files.get(source.key)
        if entry is None or entry.get("status") != "done":
            return False
        facts = source_facts(source, hash=False)
        if entry.get("orderbook") != source.orderbook or any(entry.get(name) != value
                                                              for name, value in facts.items()):
            return False
        return all((Path(directory) / shard["output"]).exists() for shard in entry["shards"])

    def sources(self):
        """The recorded inputs, as :class:`Source`."""
        return [Source(key[: -len(entry["stream"]) - 1] if entry.get("stream") else key, entry.get("format"),
                       entry.get("orderbook"), entry.get("stream")) for key, entry in self.files.items()]

    def refuse_shared_names(self, inputs):
        """Refuse inputs whose outputs would take the names of another input's (one file name in two
        folders, or ``x.csv`` beside ``x.csv.gz``): the last written would replace the first's.

        Inputs recorded earlier count too, but one whose file is gone is taken as moved: it is
        forgotten, and its outputs are the new input's to write.
        """
        from ringbook.engine.snapshots import output_stem

        keys = {source.key for source in inputs}
        gone = [source for source in self.sources()
                if source.key not in keys and not os.path.exists(source.path)]
        self.forget(gone)
        recorded = [source for source in self.sources() if source.key not in keys]
        claims = {}
        for source in [*recorded, *inputs]:
            other = claims.setdefault(output_stem(source.name), source)
            if other.key != source.key:
                earlier = " (whose outputs this folder holds)" if other in recorded else ""
                raise ValueError(f"{other.key}{earlier} and {source.key} would write outputs of the same names "
                                 f"({output_stem(source.name)}.*): rename one, or write them to different "
                                 f"output folders")

    def record(self, source, entry):
        """Record an input, saved with those recorded since the last save once it is time
        (:data:`SAVE_EVERY`) or at :meth:`flush`: after a crash, a rerun redoes the inputs
        recorded since."""
        self.files[source.key] = entry
        self._unsaved = True
        if time.monotonic() >= self._next_save:
            self.save()

    def flush(self):
        """Save what is recorded and not saved yet."""
        if self._unsaved:
            self.save()

    def forget(self, sources):
        """Un-record the inputs (saved at once) before their outputs are written again: a crash
        mid-write then leaves them to be redone, never recorded as done with a torn output."""
        forgotten = [self.files.pop(source.key) for source in sources if source.key in self.files]
        if forgotten:
            self.save()

    def save(self):
        from ringbook.engine.files import write_atomic

        started = time.monotonic()
        text = json.dumps({"version": 1, "options": self.options, "files": self.files}, indent=1,
                          sort_keys=True)
        write_atomic(self.path, (text + "\n").encode())
        self._unsaved = False
        self._next_save = time.monotonic() + max(self.SAVE_EVERY, 10 * (time.monotonic() - started))


# ---------------------------------------------------------------- snapshots of many files

_INTERVAL = re.compile(r"^(\d+)(ns|us|µs|ms|s|m|min|h)$")
_UNIT_NS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
            "min": 60 * 10**9, "h": 3600 * 10**9}


def parse_interval(text):
    """``"1s"``, ``"100ms"``, ``"5m"`` ... -> ns (a whole number of µs)."""
    match = _INTERVAL.match(str(text).strip())
    if not match or int(match[1]) <= 0:
        raise ValueError(f"interval {text!r}: a positive whole number with a unit (ns, us, ms, s, m, h)")
    interval = int(match[1]) * _UNIT_NS[match[2]]
    if interval % 1000:
        raise ValueError(f"interval {text!r}: must be a whole number of µs (timestamps are µs)")
    return interval


def symbol_events(feed):
    """``[(symbol, its events)]`` for each symbol a feed has events of, by id; the events
    of a feed of one instrument as they are (neither counted nor copied)."""
    import numpy as np

    events = feed.events
    if len(feed.instruments) <= 1:
        return [(0, events)] if len(events) else []
    symbols = events["symbol"]
    # The symbols present, by counting: a sort of every event would cost more.
    return [(symbol, events[symbols == symbol]) for symbol in np.flatnonzero(np.bincount(symbols)).tolist()]


def snapshot_task(source, out_dir, levels, interval_ns, interval_text, format):
    """One file's shards: take each symbol's snapshots, write each shard's file.

    Runs on a worker. Returns the manifest entry of the file. Each output is
    written atomically but not synced: the driver syncs them before it records
    the entry (see the module docstring). Every input is streamed, a chunk at a
    time, all its symbols in one pass (:func:`_streamed_shards`).
    """
    from ringbook.engine.feeds.tardis import MoreDecimals

    prepare_worker()
    facts = source_facts(source)
    try:
        # A tardis file read once, at its first block's scales; rarely, a later block has more
        # decimals: its outputs so far are discarded and the file is read again in two passes.
        shards = _streamed_shards(source, out_dir, levels, interval_ns, interval_text, format, True)
    except MoreDecimals:
        shards = _streamed_shards(source, out_dir, levels, interval_ns, interval_text, format, False)
    return {**facts, "format": source.format, "orderbook": source.orderbook, "stream": source.stream,
            "status": "done", "error": None, "shards": shards}


def _shard_entry(name, output, tally, events, earliest, latest, levels_shown):
    return {"symbol": name, "output": output, "rows": tally.rows, "events": events,
            "first_boundary_ns": tally.first_boundary, "last_boundary_ns": tally.last_boundary,
            "first_event_ns": int(earliest) if earliest else None,
            "last_event_ns": int(latest) if latest else None, "levels_shown": levels_shown}


def _streamed_shards(source, out_dir, levels, interval_ns, interval_text, format, first_block_scales=False):
    """The shards of a file taken as it streams, every symbol in one pass: its memory is a
    chunk's and each symbol's book and file writer, whatever the file's size. An error
    discards every output (see ``stream_source`` for ``first_block_scales``)."""
    import numpy as np

    from ringbook.engine import snapshots
    from ringbook.engine.files import AtomicFile

    chunks, orderbook, exchange = stream_source(source, first_block_scales)
    shards = {}   # the stream of each symbol: its file, writer, output name and tally
    scratch = np.empty(snapshots.CSV_PIECE, np.uint8) if format == "csv" else None   # CSV writers take turns
    try:
        for stream, piece in snapshots.stream_symbols(chunks, interval_ns, levels, exchange=exchange,
                                                      orderbook=orderbook):
            if stream not in shards:
                output = snapshots.output_name(source.name, stream.name, levels, interval_text, format)
                file = AtomicFile(Path(out_dir) / output, durable=False)
                shards[stream] = file, snapshots.SnapshotWriter(file, format, scratch), output, snapshots.Tally()
            file, writer, _, tally = shards[stream]
            tally.add(piece)
            writer.add(piece)
        for file, writer, _, _ in shards.values():
            writer.finish()
            file.commit()
    except BaseException:
        for file, _, _, _ in shards.values():
            file.discard()
        raise
    return [_shard_entry(stream.name, output, tally, stream.span.events, stream.span.earliest, stream.span.latest,
                         stream.levels_shown())
            for stream, (_, _, output, tally) in sorted(shards.items(), key=lambda item: item[0].symbol)]


@dataclass
class BatchReport:
    """What a batch run did."""

    done: list = field(default_factory=list)       # inputs processed now
    skipped: list = field(default_factory=list)    # inputs already done (rerun)
    failed: list = field(default_factory=list)     # (input, TaskFailure)
    entries: dict = field(default_factory=dict)    # input -> manifest entry

    @property
    def ok(self):
        return not self.failed


def snapshot_files(paths, out_dir, *, levels=25, interval="1s", format="csv", workers=None,
                   cluster=None, force=False, progress=False, input_format=None, attempts=3):
    """Snapshots of every (file, symbol) shard of ``paths`` into ``out_dir``, with a manifest.

    A rerun skips inputs whose shards are done (unchanged size and mtime,
    outputs present, same options); ``force`` redoes them. An input is
    recorded as done only once its outputs are synced, and an input to redo
    is un-recorded before its outputs are written again (see the module
    docstring): after a crash, a rerun redoes whatever might be torn.

    Returns
    -------
    BatchReport
    """
    from ringbook.engine.files import remove_temporary_files, take_lock
    from ringbook.engine.snapshots import FORMATS as OUTPUT_FORMATS

    if format not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {format!r}")
    if levels < 1:
        raise ValueError(f"levels must be positive, got {levels}")
    interval_ns = parse_interval(interval)
    if format == "parquet":
        import pyarrow  # noqa: F401 - fail here, not on every worker
    inputs = sources(paths, input_format)   # bad inputs are refused before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = take_lock(out_dir / LOCK)
    if lock is None:
        raise ValueError(f"{out_dir}: another run is writing snapshots to this folder")
    with lock:
        remove_temporary_files(out_dir)   # a run killed mid-write leaves them
        try:
            return _snapshot_files(inputs, out_dir, levels, interval, interval_ns, format, workers, cluster,
                                   force, progress, attempts)
        finally:
            remove_temporary_files(out_dir)   # and so does a worker killed mid-write, its shard run again


def _snapshot_files(inputs, out_dir, levels, interval, interval_ns, format, workers, cluster, force, progress,
                    attempts):
    """:func:`snapshot_files` in a folder it holds the lock of."""
    from ringbook.engine.files import sync_files

    manifest = Manifest(out_dir, {"levels": levels, "interval": interval, "format": format})
    manifest.refuse_shared_names(inputs)
    report = BatchReport()
    todo = []
    for source in inputs:
        if not force and manifest.is_done(source, out_dir):
            report.skipped.append(source.key)
            report.entries[source.key] = manifest.files[source.key]
        else:
            todo.append(source)

    def finished(k, result):
        source = todo[k]
        if not isinstance(result, TaskFailure):
            try:
                sync_files(out_dir, [shard["output"] for shard in result["shards"]])
            except OSError as error:
                result = TaskFailure.of(error)
        if isinstance(result, TaskFailure):
            try:
                facts = source_facts(source, hash=False)
            except OSError:
                facts = {}
            entry = {**facts, "format": source.format, "orderbook": source.orderbook, "stream": source.stream,
                     "status": "failed", "error": result.__dict__, "shards": []}
            report.failed.append((source.key, result))
        else:
            entry = result
            report.done.append(source.key)
        report.entries[source.key] = entry
        manifest.record(source, entry)

    if todo:
        try:
            with executor(workers, cluster) as runner:
                # The lock, not the folder: a worker may have a folder of that name of its own.
                runner.require_paths([*(path for source in todo for path in source.paths),
                                      str(out_dir.resolve() / LOCK)])
                manifest.forget(todo)
                run_tasks(runner, snapshot_task,
                          [(source, str(out_dir.resolve()), levels, interval_ns, interval, format)
                           for source in todo],
                          attempts=attempts, progress=progress, description="snapshots", on_result=finished)
        finally:
            manifest.flush()   # what is done is recorded, also when the run is stopped
    order = {source.key: k for k, source in enumerate(inputs)}
    report.done.sort(key=order.get)
    report.failed.sort(key=lambda failure: order[failure[0]])
    return report


# ---------------------------------------------------------------- a user's callback over many files

_callables = {}


def _load_callables(payload):
    """Unpickle the user's functions once per process and keep them, so each compiles once."""
    key = blake3.blake3(payload).hexdigest()
    if key not in _callables:
        import pickle

        _callables[key] = pickle.loads(payload)
    return _callables[key]


def replay_task(source, payload, every):
    """Replay one file's symbols with the user's callback; ``[(symbol, state)]``. Runs on a worker."""
    prepare_worker()
    from ringbook.engine.check import feed_ticks
    from ringbook.engine.reconciled import replay_lobster
    from ringbook.kernels import book as books
    from ringbook.kernels.orders import order_slots_for
    from ringbook.kernels.replay import replay_events

    callback, make_state = _load_callables(payload)
    feed, orderbook, _ = read_source(source)
    results = []
    n_symbols = max(len(feed.instruments), 1)
    ticks = feed_ticks(feed, n_symbols)
    for symbol, events in symbol_events(feed):
        book = books.new_book(n_symbols=n_symbols, depth=4096, order_capacity=order_slots_for(events), ticks=ticks)
        state = make_state(events)
        if orderbook is None:
            replay_events(book, events, callback, state, every)
        elif len(events):
            # A LOBSTER file: seeded from its orderbook file and kept equal to it (see ``reconciled``).
            stop, status = replay_lobster(book, symbol, events, feed.records, orderbook, callback, state, every)
            books.check_status(status, f"{feed.path}, line {int(feed.lines[min(stop, len(events) - 1)])}")
        results.append((feed.instruments.name_of(symbol), state))
    return results


class ReplayError(RuntimeError):
    """Some shards failed; ``failures`` lists ``(input, TaskFailure)`` and ``results`` the rest
    (or their fold, given ``reduce``)."""

    def __init__(self, failures, results):
        self.failures = failures
        self.results = results
        lines = [failure_line(" ", path, failure.error) for path, failure in failures]   # indented
        super().__init__(f"{len(failures)} of the files failed:\n" + "\n".join(lines))


def replay_files(sources_or_paths, callback, make_state, every=None, reduce=None, *, workers=None,
                 cluster=None, progress=False, input_format=None, attempts=3):
    """Replay every (file, symbol) shard with a user's ``@njit`` callback, anywhere.

    Parameters
    ----------
    sources_or_paths : str, Path or Source, or a list of them
        Input files, journals or folders of them (LOBSTER message files are
        seeded from their orderbook files, found by name).
    callback : numba dispatcher
        ``callback(book, events, i, state)``, as for :func:`ringbook.kernels.replay.replay`.
    make_state : callable
        ``make_state(events) -> state``, called on the worker for each shard
        with the shard's events (a numpy array); the state numba passes to the
        callback (arrays, a tuple of arrays).
    every : int, optional
        ``EVERY_EVENT`` (default) or ``EVERY_BATCH`` of :mod:`ringbook.kernels.replay`.
    reduce : callable, optional
        ``reduce(a, b) -> state``, folded over the shards' states in input
        order as they arrive (deterministic: merge exactly, e.g. add counts),
        so only a few states are held at once; None returns every shard's state.
    workers, cluster
        Where to run (see :func:`ringbook.engine.tasks.executor`).

    Returns
    -------
    dict or object
        ``{(input, symbol): state}`` in input order (the input's path; ``path#stream`` for a
        journal's stream), or the fold of the states.

    Raises
    ------
    ReplayError
        When shards failed (``error.results``: the others' results, or their fold).
    """
    from numba import cloudpickle  # numba's own copy: no extra dependency

    from ringbook.kernels.replay import EVERY_EVENT

    every = EVERY_EVENT if every is None else every
    sources_or_paths = as_inputs(sources_or_paths)
    # Paths are resolved together (a LOBSTER orderbook file among them is its message file's
    # companion); a journal gives a source per stream. Sources given as such stay in place.
    paths = [str(item) for item in sources_or_paths if not isinstance(item, Source)]
    found = {}
    for source in sources(paths, input_format):
        found.setdefault(source.path, []).append(source)
    inputs = []
    for item in sources_or_paths:
        if isinstance(item, Source):
            inputs.append(item)
            continue
        path = str(Path(item).resolve())
        inside = [key for key in found if key.startswith(path + os.sep)] if Path(path).is_dir() else []
        for key in [path, *inside]:   # a file, a journal, or the inputs under a folder
            inputs.extend(found.pop(key, []))
    payload = cloudpickle.dumps((callback, make_state))
    fold = _InputOrderFold(inputs, reduce)
    with executor(workers, cluster) as runner:
        runner.require_paths(path for source in inputs for path in source.paths)
        # Folding, a shard starts at most two a worker past the first unfinished one: the states
        # waiting for an earlier shard's stay few (a slow shard may leave a worker idle meanwhile).
        ahead = None if reduce is None else 2 * max(runner.workers, 1)
        run_tasks(runner, replay_task, [(source, payload, every) for source in inputs],
                  attempts=attempts, progress=progress, description="replay", on_result=fold.add, ahead=ahead)
    if fold.failures:
        raise ReplayError(fold.failures, fold.result())
    return fold.result()


class _InputOrderFold:
    """Shards' states as their tasks finish, kept per shard or folded by ``reduce`` in input
    order; a state folded is let go (a year of shards is never in memory at once)."""

    def __init__(self, inputs, reduce):
        self.inputs = inputs
        self.reduce = reduce
        self.states = {}            # (input, symbol) -> state, when not reducing
        self.merged = None          # the fold of the first ``folded`` states, when reducing
        self.folded = 0
        self.failures = []
        self._early = {}            # finished before an earlier input: k -> outcome
        self._next = 0

    def add(self, k, outcome):
        self._early[k] = outcome
        while self._next in self._early:
            source, outcome = self.inputs[self._next], self._early.pop(self._next)
            self._next += 1
            if isinstance(outcome, TaskFailure):
                self.failures.append((source.key, outcome))
                continue
            for symbol, state in outcome:
                if self.reduce is None:
                    self.states[(source.key, symbol)] = state
                else:
                    self.merged = self.reduce(self.merged, state) if self.folded else state
                    self.folded += 1

    def result(self):
        return self.states if self.reduce is None else self.merged


# ---------------------------------------------------------------- ringbook check over many files

#: What ``ringbook check`` has an exchange's truth for (a folder's other files are not checked).
CHECKED_FORMATS = ("lobster", "binance", "journal")


def check_task(source):
    """``ringbook check`` of one file on a worker: its result's dict."""
    prepare_worker()
    from ringbook.engine import check

    if source.format == "lobster":
        return check.check_lobster(source.path, source.orderbook).to_dict()
    if source.format == "binance":
        return check.check_binance(source.path).to_dict()
    if source.format == "journal":
        result = check.check_journal(source.path, source.orderbook, stream=source.stream).to_dict()
        return {**result, "stream": source.stream}
    raise ValueError(f"{source.path}: no exchange truth to check a {source.format} file against")


TOTALS = ("events", "checked", "mismatches", "gaps")


def check_files(paths, *, workers=None, cluster=None, progress=False, input_format=None):
    """Check many files (LOBSTER with their orderbook files, matched by name; Binance captures).

    Returns
    -------
    files : list of dict
        Per input, in input order: the check's result (as ``--json`` prints
        it), or ``{"file", "error", ...}`` for a file that could not be read.
    totals : dict
        ``events``, ``checked``, ``mismatches``, ``gaps`` added over the files.
    """
    inputs = sources(paths, input_format, folder_formats=CHECKED_FORMATS)
    with executor(workers, cluster) as runner:
        runner.require_paths(path for source in inputs for path in source.paths)
        outcomes = run_tasks(runner, check_task, [(source,) for source in inputs], progress=progress,
                             description="check")
    files = []
    for source, outcome in zip(inputs, outcomes):
        if isinstance(outcome, TaskFailure):
            problem = {"format": source.format, "file": source.path, "error": outcome.error}
            if source.stream is not None:
                problem["stream"] = source.stream
            if outcome.line is not None:
                problem.update({"error_file": outcome.file, "line": outcome.line, "field": outcome.field})
            files.append(problem)
        else:
            files.append(outcome)
    totals = {name: sum(entry.get(name, 0) for entry in files) for name in TOTALS}
    return files, totals


def run_check(args):
    """``ringbook check FILES... [--workers N | --cluster ADDRESS] [--json]``: one line per file, totals."""
    try:
        files, totals = check_files(args.files, workers=args.workers, cluster=args.cluster,
                                    progress=not (args.json or args.no_progress),
                                    input_format=args.format)
    except (ValueError, OSError, ImportError, WorkersCannotStart) as error:
        print(f"ringbook check: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ringbook check: interrupted", file=sys.stderr)
        return 130
    if args.json:
        json.dump({"files": files, "totals": totals}, sys.stdout)
        sys.stdout.write("\n")
    else:
        for entry in files:
            name = entry["file"] + (f" (stream {entry['stream']})" if entry.get("stream") else "")
            if "error" in entry:
                print(failure_line("ERROR   ", name, entry["error"]))
            else:
                print(f"{'OK' if entry['mismatches'] == 0 else 'MISMATCH':8} {name}: "
                      + ", ".join(f"{name} {entry[name]}" for name in TOTALS))
        print(f"TOTAL    {len(files)} files: " + ", ".join(f"{name} {totals[name]}" for name in TOTALS))
    if any("error" in entry for entry in files):
        return 2
    return 1 if totals["mismatches"] else 0
