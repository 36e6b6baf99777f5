"""A journal as a feed source: raw captures in, the same captures (and events) out.

:func:`import_capture` turns a file a reader knows into a journal of raw
messages, one record per message (a non-blank line), keeping each message's
recorded receive time:

- ``binance``: ``<receive ns> <json>`` lines; the record is the JSON, its
  receive time the ns.
- ``kalshi``: JSON lines, with or without a ``<receive ns> `` prefix; without
  one the receive time is the message's ``ts`` (exchange seconds), or 0.
- ``lobster``: message rows; the receive time is the row's time after
  midnight (New York) of the date in the file name. A header row is kept in
  the segment header, not as a record.

The segment header's ``source`` says which format and file the journal came
from. :func:`materialize` writes the capture back, byte for byte the
non-blank lines of the original (line ``n`` is record ``n - 1``), under the
original file's name, so that :func:`read_feed` hands it to that format's
reader and ``ringbook check --format journal DIR`` runs the check that fits.
"""

import decimal
import re
import tempfile
from pathlib import Path

import numpy as np

from ringbook.engine.feeds.source import line_bounds, read_buffer

FORMATS = ("binance", "kalshi", "lobster")
_PREFIX = re.compile(rb"([0-9]{1,19}) ")
_KALSHI_TS = re.compile(rb'"ts"\s*:\s*([0-9]{1,12})[,}\s]')
_NS = 1_000_000_000


def stream_name_of(path):
    """A stream name from a file name: its stem, with anything but letters, digits, ``_``, ``-`` as ``_``."""
    name = Path(path).name
    for suffix in (".gz", ".csv", ".jsonl", ".json", ".txt"):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
    return re.sub(r"[^A-Za-z0-9_\-]", "_", name)[:128] or "capture"


def _original_name(path):
    name = Path(path).name
    return name[:-3] if name.endswith(".gz") else name


def _looks_like_header(line):
    """A LOBSTER header row (``Time,Type,...``): every field has a letter."""
    return all(any(chr(byte).isalpha() for byte in field) for field in line.split(b","))


def _lobster_times(data, starts, stops, midnight):
    """Receive ns of LOBSTER rows: midnight plus the first column's seconds, exactly."""
    times = np.zeros(len(starts), np.int64)
    for i, (start, stop) in enumerate(zip(starts.tolist(), stops.tolist())):
        field = data[start:stop].split(b",", 1)[0]
        try:
            times[i] = midnight + int(decimal.Decimal(field.decode()) * _NS)
        except (decimal.InvalidOperation, ValueError):
            times[i] = midnight
    return times


def import_capture(format, path, root, *, stream=None, segment_bytes=None):
    """Write the messages of a capture file into stream ``stream`` of the journal at ``root``.

    Returns ``(stream, records)``.
    """
    from ringbook.engine.journal import DEFAULT_SEGMENT_BYTES, JournalWriter
    from ringbook.engine.feeds import lobster

    if format not in FORMATS:
        raise ValueError(f"import format must be one of {FORMATS}, got {format!r}")
    path = Path(path)
    stream = stream or stream_name_of(path)
    buffer = read_buffer(path)
    starts, stops, numbers = line_bounds(buffer)
    data = buffer.tobytes()
    source = {"format": format, "file": _original_name(path), "prefix": False}
    receive_ns = np.zeros(len(starts), np.int64)
    payload_starts = starts.copy()
    if format in ("binance", "kalshi"):
        prefixed = np.zeros(len(starts), bool)
        for i, (start, stop) in enumerate(zip(starts.tolist(), stops.tolist())):
            match = _PREFIX.match(data, start, stop)
            if match is not None:
                prefixed[i] = True
                receive_ns[i] = int(match[1])
                payload_starts[i] = match.end()
            elif format == "kalshi":
                ts = _KALSHI_TS.search(data, start, stop)
                receive_ns[i] = int(ts[1]) * _NS if ts is not None else 0
        if len(starts) and prefixed.any() != prefixed.all():
            first = int(numbers[np.flatnonzero(prefixed != prefixed[0])[0]])
            raise ValueError(f"{path}, line {first}: some lines have a receive-time prefix and some do not")
        source["prefix"] = bool(prefixed.any()) if len(starts) else format == "binance"
    else:
        ticker, date, _ = lobster.file_facts(path)
        midnight = lobster.midnight_ns(date) if date is not None else 0
        if len(starts) and _looks_like_header(data[starts[0]:stops[0]]):
            source["header"] = data[starts[0]:stops[0]].decode()
            starts, stops, numbers, payload_starts = starts[1:], stops[1:], numbers[1:], payload_starts[1:]
            receive_ns = receive_ns[1:]
        receive_ns = _lobster_times(data, starts, stops, midnight)
    options = {"segment_bytes": segment_bytes or DEFAULT_SEGMENT_BYTES}
    with JournalWriter(root, stream, source=source, **options) as writer:
        if writer.next_sequence != 0:
            raise ValueError(f"{root}: stream {stream!r} exists already; import into a new stream")
        writer.append_slices(buffer, payload_starts, stops, receive_ns=receive_ns)
        records = writer.next_sequence
    return stream, records


def source_of(root, stream=None):
    """``(stream, source dict)`` of a journal stream (the only one when not named)."""
    from ringbook.engine.journal import JournalError, JournalReader

    with JournalReader(root, stream) as reader:
        name = reader.stream
        source = dict(reader.header(name).metadata.get("source") or {})
    if source.get("format") not in FORMATS:
        raise JournalError(f"stream {name!r} was not imported from a capture a reader knows "
                           f"(source {source!r})", root)
    return name, source


def materialize(root, directory, stream=None):
    """Write the capture a journal stream holds back into ``directory``, under its original name.

    Returns ``(format, path)``.
    """
    from ringbook.engine.journal import JournalReader

    name, source = source_of(root, stream)
    target = Path(directory) / source.get("file", f"{name}.txt")
    with JournalReader(root, name) as reader, open(target, "wb") as out:
        if "header" in source:
            out.write(source["header"].encode() + b"\n")
        prefix = source.get("prefix", False)
        for record in reader:
            if prefix:
                out.write(b"%d " % record.receive_ns)
            out.write(record.payload)
            out.write(b"\n")
    return source["format"], target


def read_feed(root, stream=None, **options):
    """Read a journal stream imported from a capture with that format's reader; returns its ``Feed``.

    ``options`` go to the reader (``skip_malformed``, ``instruments``, ...).
    The feed's ``path`` names the journal.
    """
    from ringbook.engine.feeds import binance, kalshi, lobster

    readers = {"binance": binance.read_capture, "kalshi": kalshi.read_messages, "lobster": lobster.read_messages}
    with tempfile.TemporaryDirectory(prefix="ringbook-journal-") as directory:
        format, path = materialize(root, directory, stream)
        feed = readers[format](path, **options)
    feed.path = str(root)
    return feed
