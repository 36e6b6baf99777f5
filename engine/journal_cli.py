"""``ringbook journal``: look into, verify, print, export and import journals.

``info DIR``
    Streams, segments, records, first and last sequence and time, bytes.
``verify DIR [--json]``
    Checks every record's checksum, the sequences between segments and the
    tails. Exit status 0 when clean, 1 when anything is wrong, 2 when the
    journal cannot be read. ``--json`` prints one object with at least
    ``records``, ``segments``, ``bad_records``, ``torn_bytes`` and ``gaps``.
``cat DIR [--stream S] [--from SEQ|TIME] [--to SEQ|TIME]``
    Records as JSON lines (the export's shape). ``TIME`` is RFC 3339
    (``2024-08-08T12:00:00Z``); a plain integer is a sequence.
``export DIR --format jsonl|parquet --out PATH [--stream S] [--decimal-strings]``
    JSON lines ``{"ts": "<RFC 3339>", "seq": N, "stream": "...", "data": ...}``
    where ``data`` is the message exactly as received when it is JSON (else a
    string), or the event as an object with prices and quantities as exact
    decimal strings. Records of the engine's own kinds add ``"kind"``.
    Parquet (``pip install ringbook[parquet]``): typed columns, one row group
    per segment; for event streams prices and quantities are int64 with their
    scale in the column metadata, and with ``--decimal-strings`` also exact
    decimal strings. The file appears under its final name only when complete.
``import --format binance|kalshi|lobster PATH --out DIR [--stream S]``
    A capture into a journal of raw messages (see :mod:`ringbook.engine.feeds.journal`).
"""

import datetime
import json
import os
import sys
from pathlib import Path

import numpy as np

from ringbook.engine.journal import JournalError, JournalReader, RECORD_DATA, RECORD_KIND_NAMES, verify
from ringbook.kernels.fixed import format_decimal

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def rfc3339(ns):
    """``2024-08-08T12:00:00.123456789Z`` of ns since the epoch (UTC), exact to the ns."""
    seconds, fraction = divmod(int(ns), 1_000_000_000)
    moment = _EPOCH + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:09d}Z"


def parse_position(text):
    """A sequence (int) or an aware datetime from ``--from``/``--to``."""
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment


class _Scales:
    """Price and size scales by symbol, from a segment header's instrument table."""

    def __init__(self, header):
        self.by_symbol = {item["symbol"]: item for item in header.metadata.get("instruments", [])}

    def price(self, symbol):
        item = self.by_symbol.get(int(symbol))
        return None if item is None else int(item["price_scale"])

    def size(self, symbol):
        item = self.by_symbol.get(int(symbol))
        return None if item is None else int(item["size_scale"])


def _event_object(event, dtype, scales):
    data = {}
    for name in dtype.names:
        value = event[name]
        if name == "price" and "symbol" in dtype.names and scales.price(event["symbol"]) is not None:
            data[name] = format_decimal(int(value), scales.price(event["symbol"]))
        elif name == "quantity" and "symbol" in dtype.names and scales.size(event["symbol"]) is not None:
            data[name] = format_decimal(int(value), scales.size(event["symbol"]))
        elif isinstance(value, bytes):
            data[name] = value.decode(errors="replace")
        else:
            data[name] = value.item() if hasattr(value, "item") else value
    return data


def jsonl_line(record, dtype=None, scales=None):
    """One export line of a :class:`ringbook.engine.journal.Record`."""
    head = f'{{"ts":"{rfc3339(record.receive_ns)}","seq":{record.sequence},"stream":{json.dumps(record.stream)}'
    if record.kind != RECORD_DATA:
        head += f',"kind":{json.dumps(record.kind_name)}'
        payload = bytes(record.payload)
        data = int.from_bytes(payload[:8], "little", signed=True) if len(payload) == 8 else payload.hex()
        return head + f',"data":{json.dumps(data)}}}'
    payload = bytes(record.payload)
    if dtype is not None and len(payload) == dtype.itemsize:
        event = np.frombuffer(payload, dtype)[0]
        return head + ',"data":' + json.dumps(_event_object(event, dtype, scales), separators=(",", ":")) + "}"
    text = payload.decode("utf-8", errors="replace")
    try:
        json.loads(text)
        return head + ',"data":' + text + "}"  # the message exactly as received
    except ValueError:
        return head + ',"data":' + json.dumps(text) + "}"


def _records(reader, stream, start, stop):
    if stream is None and len(reader.streams) > 1:
        if isinstance(start, datetime.datetime) or start is None:
            reader.seek(time=start) if start is not None else reader.seek()
            stop_ns = None if stop is None else _as_ns(stop)
            for record in reader:
                if stop_ns is not None and record.receive_ns >= stop_ns:
                    return
                yield record
            return
        raise JournalError("several streams: give --stream to select by sequence", reader.root)
    yield from reader.records(start, stop, stream=stream)


def _as_ns(moment):
    if isinstance(moment, int):
        return moment
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _dtype_and_scales(reader, stream):
    header = reader.header(stream)
    return header.dtype, _Scales(header)


def export_jsonl(root, out, *, stream=None, start=None, stop=None, skip_corrupt=False):
    """Write a journal's records as JSON lines to the open text file ``out``; returns the count."""
    count = 0
    with JournalReader(root, stream, skip_corrupt=skip_corrupt) as reader:
        formats = {name: _dtype_and_scales(reader, name) for name in reader.streams}
        for record in _records(reader, stream, start, stop):
            dtype, scales = formats[record.stream]
            out.write(jsonl_line(record, dtype, scales))
            out.write("\n")
            count += 1
    return count


def export_parquet(root, path, *, stream=None, decimal_strings=False, skip_corrupt=False):
    """Write a journal's records to a Parquet file at ``path`` (one row group per segment); returns the count."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError("Parquet export needs pyarrow: pip install 'ringbook[parquet]'") from None
    count = 0
    with JournalReader(root, stream, skip_corrupt=skip_corrupt) as reader:
        names = list(reader.streams)
        kinds = {name: reader.header(name).dtype for name in names}
        dtypes = {str(dtype) for dtype in kinds.values()}
        if len(dtypes) > 1:
            raise JournalError("streams of different payloads: export them one --stream at a time", root)
        dtype = kinds[names[0]]
        schema = None
        writer = None
        try:
            for name in names:
                scales = _Scales(reader.header(name))
                for scan in reader.segments(name):
                    records = list(reader.records(scan.first_sequence, scan.next_sequence, stream=name))
                    if not records:
                        continue
                    table = _segment_table(pa, records, name, dtype, scales, decimal_strings)
                    if writer is None:
                        schema = table.schema
                        writer = pq.ParquetWriter(str(path), schema)
                    writer.write_table(table.cast(schema), row_group_size=max(len(records), 1))
                    count += len(records)
            if writer is None:
                schema = _segment_table(pa, [], names[0] if names else "", dtype, _Scales(reader.header(names[0])),
                                        decimal_strings).schema
                writer = pq.ParquetWriter(str(path), schema)
        finally:
            if writer is not None:
                writer.close()
    return count


def _segment_table(pa, records, stream, dtype, scales, decimal_strings):
    columns = {
        "stream": pa.array([stream] * len(records), pa.string()),
        "seq": pa.array([r.sequence for r in records], pa.int64()),
        "receive_time": pa.array([r.receive_ns for r in records], pa.timestamp("ns", tz="UTC")),
        "receive_tsc": pa.array([r.receive_tsc for r in records], pa.int64()),
        "kind": pa.array([r.kind for r in records], pa.uint16()),
        "flags": pa.array([r.flags for r in records], pa.uint32()),
    }
    fields = [pa.field(name, column.type) for name, column in columns.items()]
    if dtype is None:
        columns["payload"] = pa.array([bytes(r.payload) for r in records], pa.binary())
        fields.append(pa.field("payload", pa.binary()))
    else:
        data = [r for r in records]
        events = np.zeros(len(data), dtype)
        for i, record in enumerate(data):
            if record.kind == RECORD_DATA and len(record.payload) == dtype.itemsize:
                events[i] = np.frombuffer(record.payload, dtype)[0]
        for name in dtype.names:
            values = events[name]
            if values.dtype.kind == "S":
                column = pa.array([v.decode(errors="replace") for v in values], pa.string())
            else:
                column = pa.array(values)
            metadata = None
            if name in ("price", "quantity") and "symbol" in dtype.names:
                scale_of = scales.price if name == "price" else scales.size
                by_symbol = {str(s): scale_of(s) for s in np.unique(events["symbol"]).tolist()}
                metadata = {"scale_by_symbol": json.dumps(by_symbol)}
                if len(set(by_symbol.values())) == 1:
                    metadata["scale"] = str(next(iter(by_symbol.values())))
                if decimal_strings:
                    text = [format_decimal(int(v), scale_of(s)) if scale_of(s) is not None else str(int(v))
                            for v, s in zip(values.tolist(), events["symbol"].tolist())]
                    columns[f"{name}_decimal"] = pa.array(text, pa.string())
            columns[name] = column
            fields.append(pa.field(name, column.type, metadata=metadata))
        if decimal_strings and "price" in dtype.names and "symbol" in dtype.names:
            fields += [pa.field(f"{n}_decimal", pa.string()) for n in ("price", "quantity") if n in dtype.names]
    return pa.table([columns[field.name] for field in fields], schema=pa.schema(fields))


def _atomic_output(path):
    path = Path(path)
    return path.parent / f".{path.name}.partial{os.getpid()}"


def export(root, out, format, *, stream=None, decimal_strings=False, skip_corrupt=False):
    """Export atomically: written beside ``out`` under a temporary name, renamed when complete."""
    temporary = _atomic_output(out)
    try:
        if format == "jsonl":
            with open(temporary, "w", encoding="utf-8") as file:
                count = export_jsonl(root, file, stream=stream, skip_corrupt=skip_corrupt)
                file.flush()
                os.fsync(file.fileno())
        elif format == "parquet":
            count = export_parquet(root, temporary, stream=stream, decimal_strings=decimal_strings,
                                   skip_corrupt=skip_corrupt)
        else:
            raise ValueError(f"export format must be jsonl or parquet, got {format!r}")
        os.replace(temporary, out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return count


# ------------------------------------------------------------------ command line


def info(root):
    """What :func:`verify` says without checking the records: from the indexes."""
    result = {"root": str(root), "streams": {}}
    with JournalReader(root) as reader:
        for name, stream in reader.streams.items():
            scans = stream.scans
            records = sum(scan.records for scan in scans)
            with_records = [scan for scan in scans if scan.records]
            result["streams"][name] = {
                "segments": len(scans),
                "records": records,
                "first_sequence": scans[0].first_sequence if scans else None,
                "last_sequence": stream.next_sequence - 1 if records else None,
                "first_time": rfc3339(with_records[0].first_ns) if with_records else None,
                "last_time": rfc3339(with_records[-1].last_ns) if with_records else None,
                "bytes": sum(scan.size for scan in scans),
                "payload": scans[0].header.metadata.get("payload") if scans else None,
                "source": scans[0].header.metadata.get("source") if scans else None,
                "torn_bytes": sum(scan.torn_bytes for scan in scans),
            }
    return result


def add_arguments(parser):
    commands = parser.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    command = commands.add_parser("info", help="streams, segments, records, sequences, times, bytes")
    command.add_argument("dir")
    command.add_argument("--json", action="store_true")
    command = commands.add_parser("verify", help="check every record; exit 0 clean, 1 problems, 2 unreadable")
    command.add_argument("dir")
    command.add_argument("--json", action="store_true")
    command = commands.add_parser("cat", help="records as JSON lines")
    command.add_argument("dir")
    command.add_argument("--stream")
    command.add_argument("--from", dest="start", help="a sequence, or an RFC 3339 time")
    command.add_argument("--to", dest="stop", help="a sequence, or an RFC 3339 time (excluded)")
    command.add_argument("--skip-corrupt", action="store_true")
    command = commands.add_parser("export", help="JSON lines or Parquet, written atomically")
    command.add_argument("dir")
    command.add_argument("--format", required=True, choices=("jsonl", "parquet"))
    command.add_argument("--out", required=True)
    command.add_argument("--stream")
    command.add_argument("--decimal-strings", action="store_true", help="Parquet: prices also as decimal strings")
    command.add_argument("--skip-corrupt", action="store_true")
    command = commands.add_parser("import", help="a capture (binance, kalshi, lobster) into a journal")
    command.add_argument("path")
    command.add_argument("--format", required=True, choices=("binance", "kalshi", "lobster"))
    command.add_argument("--out", required=True, help="the journal directory")
    command.add_argument("--stream", help="stream name (default: from the file name)")


def _print_info(result):
    print(f"journal {result['root']}")
    for name, facts in result["streams"].items():
        print(f"  stream {name}: {facts['segments']} segment(s), {facts['records']} records, "
              f"{facts['bytes']} bytes")
        print(f"    sequences {facts['first_sequence']} .. {facts['last_sequence']}")
        print(f"    time      {facts['first_time']} .. {facts['last_time']}")
        if facts["torn_bytes"]:
            print(f"    torn tail {facts['torn_bytes']} bytes")


def _print_verify(report):
    print(f"journal {report['root']}: {report['segments']} segment(s), {report['records']} records, "
          f"{report['bytes']} bytes")
    for item in report["corrupt"]:
        print(f"  corrupt: {item['path']}, offset {item['offset']}: {item['status']} "
              f"({item['lost_records']} record(s) lost)")
    for item in report["torn"]:
        print(f"  torn tail: {item['path']}, offset {item['offset']}: {item['bytes']} bytes ({item['status']})")
    for item in report["gap_list"]:
        print(f"  gap: stream {item['stream']} expected sequence {item['expected']}, "
              f"{item['path']} starts at {item['found']}")
    for error in report["errors"]:
        print(f"  unreadable: {error}")
    print("  OK" if report["ok"] else "  PROBLEMS")


def run(args):
    action = args.journal_command
    try:
        if action == "import":
            from ringbook.engine.feeds.journal import import_capture
            stream, records = import_capture(args.format, args.path, args.out, stream=args.stream)
            print(f"imported {records} records into stream {stream!r} of {args.out}")
            return 0
        if not Path(args.dir).is_dir():
            raise JournalError("no such journal directory", args.dir)
        if action == "info":
            result = info(args.dir)
            if args.json:
                print(json.dumps(result))
            else:
                _print_info(result)
            return 0
        if action == "verify":
            report = verify(args.dir)
            if args.json:
                print(json.dumps(report))
            else:
                _print_verify(report)
            if report["errors"] and not report["records"]:
                return 2
            return 0 if report["ok"] else 1
        if action == "cat":
            with JournalReader(args.dir, args.stream, skip_corrupt=args.skip_corrupt) as reader:
                formats = {name: _dtype_and_scales(reader, name) for name in reader.streams}
                for record in _records(reader, args.stream, parse_position(args.start), parse_position(args.stop)):
                    dtype, scales = formats[record.stream]
                    sys.stdout.write(jsonl_line(record, dtype, scales) + "\n")
            return 0
        if action == "export":
            count = export(args.dir, args.out, args.format, stream=args.stream,
                           decimal_strings=args.decimal_strings, skip_corrupt=args.skip_corrupt)
            print(f"exported {count} records to {args.out}", file=sys.stderr)
            return 0
    except BrokenPipeError:
        return 0
    except (JournalError, OSError, ValueError, RuntimeError) as error:
        print(f"ringbook journal {action}: {error}", file=sys.stderr)
        return 2
    return 2
