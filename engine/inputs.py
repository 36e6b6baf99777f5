"""The inputs of a batch: files, folders and journal streams, their formats, how each is read.

An input is a :class:`Source`: a file (or a journal's stream) and its format,
told from its name and first line (:func:`detect_format`). A LOBSTER message
file is paired with its orderbook file by name, a folder that is not a journal
stands for the inputs under it, and a journal gives one input per stream
(:func:`sources`). :func:`read_source` reads any of them into a feed; its
facts (size, mtime, BLAKE3 hash) say whether it changed since a run.
"""

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import blake3

#: Formats a file can be read in, and how :func:`detect_format` tells them apart. A
#: ``journal`` is a directory written by :class:`ringbook.engine.journal.JournalWriter`:
#: each of its streams imported from a capture (``ringbook journal import``) is an input.
FORMATS = ("lobster", "binance", "tardis", "kalshi", "journal")
_LOBSTER_NAME = re.compile(r"_(message|orderbook)_\d+\.csv(\.gz)?$")
_TARDIS_HEADER = b"exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"
#: The exchange column of the snapshot files, per format (tardis files name their own).
EXCHANGES = {"lobster": "nasdaq", "binance": "binance", "kalshi": "kalshi"}


@dataclass(frozen=True)
class Source:
    """One input file (or journal stream) and what it is read with."""

    path: str
    format: str
    orderbook: str = None   # LOBSTER: the orderbook file beside the message file
    stream: str = None      # a journal's stream

    @property
    def name(self):
        return Path(self.path).name if self.stream is None else f"{Path(self.path).name}.{self.stream}"

    @property
    def paths(self):
        """What a task reads: the input (a journal's folder) and its LOBSTER orderbook file."""
        return [self.path] if self.orderbook is None else [self.path, self.orderbook]

    @property
    def key(self):
        """What names the input in the manifest and in results: the path, ``#stream`` for a journal's."""
        return self.path if self.stream is None else f"{self.path}#{self.stream}"


def _first_line(path):
    import gzip

    with open(path, "rb") as file:
        head = file.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as file:
        return file.readline(4096)


def detect_format(path):
    """``lobster``, ``binance``, ``tardis``, ``kalshi`` (from the name and first line) or
    ``journal`` (a directory of journal segments).

    Raises
    ------
    ValueError
        When none fits, naming the file.
    """
    if _LOBSTER_NAME.search(Path(path).name):
        return "lobster"
    if Path(path).is_dir():
        from ringbook.engine.journal import list_segments

        if list_segments(path):
            return "journal"
        raise ValueError(f"{path}: a directory without journal segments")
    line = _first_line(path).strip()
    if line.startswith(_TARDIS_HEADER):
        return "tardis"
    if re.match(rb"^\d+ \{", line):
        return "binance"
    if line.startswith(b"{") and (b'"ticker"' in line or b'"trade"' in line):
        return "kalshi"
    raise ValueError(f"{path}: cannot tell its format (LOBSTER, Binance capture, tardis, Kalshi)")


def sources(paths, format=None, folder_formats=None):
    """The :class:`Source` of each input, LOBSTER message files paired with their orderbook files.

    A LOBSTER orderbook file among the inputs is taken as its message file's
    companion, not as an input; a message file's orderbook file is found by
    name (``_message_`` -> ``_orderbook_``) among the inputs or beside it.
    A journal directory gives one input per stream, in name order; a stream
    imported from a LOBSTER message file finds its orderbook file by the
    original file's name, among the inputs, in the journal or beside it.
    An input given twice (or by two paths to one file) is one input.
    A folder that is not a journal stands for the inputs under it (:func:`_expand_folders`),
    of ``folder_formats`` only when given.
    Unreadable or unknown inputs raise ``ValueError`` (or ``OSError``).
    """
    found = []
    paths = list(dict.fromkeys(str(Path(path).resolve())   # each input once
                               for path in _expand_folders(as_inputs(paths), format, folder_formats)))
    given = set(paths)
    kinds = {path: format or detect_format(path) for path in paths}
    journals = {path: _journal_sources(path, given) for path, kind in kinds.items() if kind == "journal"}
    claimed = {source.orderbook for streams in journals.values() for source in streams}
    for path in paths:
        kind = kinds[path]
        if kind == "journal":
            found.extend(journals[path])
        elif kind == "lobster":
            name = Path(path).name
            if "_orderbook_" in name:
                if str(Path(path).with_name(name.replace("_orderbook_", "_message_"))) in given or path in claimed:
                    continue  # its message file's companion
                raise ValueError(f"{path}: a LOBSTER orderbook file without its message file")
            companion = Path(path).with_name(name.replace("_message_", "_orderbook_"))
            found.append(Source(path, kind, str(companion) if companion.exists() else None))
        else:
            found.append(Source(path, kind))
    return found


def as_inputs(paths):
    """A list of inputs: one path (or :class:`Source`) given alone is a list of one, not a
    string's characters."""
    return [paths] if isinstance(paths, (str, os.PathLike, Source)) else list(paths)


def _expand_folders(paths, format=None, formats=None):
    """The paths, each folder that is not a journal replaced by what is under it, in name order:
    the journals (as folders) and the files of a format this module tells (every file when
    ``format`` is given), hidden ones left out; of ``formats`` only, when given. A folder with
    none of them raises ``ValueError``."""
    for path in paths:
        if not is_folder_of_inputs(path):
            yield path
            continue
        found = []
        for folder, folders, files in os.walk(path):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in list(folders):
                if not is_folder_of_inputs(Path(folder) / name):
                    folders.remove(name)   # a journal: an input, not a folder of inputs
                    if formats is None or "journal" in formats:
                        found.append(Path(folder) / name)
            for name in sorted(files):
                kind = format or _format_or_none(Path(folder) / name)
                if not name.startswith(".") and kind is not None and (formats is None or kind in formats):
                    found.append(Path(folder) / name)
        if not found:
            raise ValueError(f"{path}: a folder without inputs (LOBSTER, Binance captures, tardis, Kalshi, "
                             f"journals)")
        yield from sorted(found)


def is_folder_of_inputs(path):
    """A folder that is not a journal: it stands for the inputs under it."""
    from ringbook.engine.journal import list_segments

    return Path(path).is_dir() and not list_segments(path)


def _format_or_none(path):
    try:
        return detect_format(path)
    except (ValueError, OSError):
        return None


def _journal_sources(root, given):
    """A :class:`Source` per stream of the journal at ``root``.

    A stream that was not imported from a capture is still listed: its task
    fails with the journal's error, naming it.
    """
    from ringbook.engine.feeds import journal as feeds_journal
    from ringbook.engine.journal import JournalError, list_segments

    found = []
    for stream in sorted(list_segments(root)):
        try:
            _, facts = feeds_journal.source_of(root, stream)
        except JournalError:
            found.append(Source(root, "journal", stream=stream))
            continue
        orderbook = None
        original = str(facts.get("file", ""))
        if facts["format"] == "lobster" and "_message_" in original:
            name = original.replace("_message_", "_orderbook_")
            places = [Path(path) for path in given if Path(path).name in (name, name + ".gz")]
            places += [Path(root) / name, Path(root) / (name + ".gz"), Path(root).parent / name,
                       Path(root).parent / (name + ".gz")]
            orderbook = next((str(place) for place in places if place.is_file()), None)
        found.append(Source(root, "journal", orderbook, stream))
    return found


def read_source(source):
    """``(feed, orderbook or None, exchange)`` for a :class:`Source`."""
    from ringbook.engine.feeds import binance, kalshi, lobster, tardis

    if source.format == "journal":
        return _read_journal(source)
    if source.format == "lobster":
        return (lobster.read_messages(source.path), lobster.read_orderbook(_orderbook_of(source)),
                EXCHANGES["lobster"])
    if source.format == "binance":
        return binance.read_capture(source.path), None, EXCHANGES["binance"]
    if source.format == "tardis":
        return tardis.read_incremental(source.path), None, tardis.exchange_of(source.path)
    if source.format == "kalshi":
        return kalshi.read_messages(source.path), None, EXCHANGES["kalshi"]
    raise ValueError(f"unknown format {source.format!r}")


def _orderbook_of(source):
    """A LOBSTER source's orderbook file, which it cannot go without."""
    from ringbook.engine.feeds.source import FeedError

    if source.orderbook is None:
        # Its messages refer to orders resting before the file starts: a book not seeded
        # from the orderbook file would be wrong from the first row, silently.
        wanted = Path(source.path).name.replace("_message_", "_orderbook_")
        raise FeedError(source.path, None, f"no orderbook file {wanted} beside it or among the inputs (the "
                        "book is seeded from it: LOBSTER's messages refer to orders resting before the file)")
    return source.orderbook


def stream_source(source, first_block_scales=False):
    """``(chunks, orderbook, exchange)``: a reader's stream of
    :class:`~ringbook.engine.feeds.source.Feed` chunks, in bounded memory; for LOBSTER,
    ``orderbook`` streams its orderbook file beside it
    (:class:`~ringbook.engine.feeds.lobster.OrderbookStream`), each file within half the
    memory limit. ``orderbook`` is None otherwise. A journal stream is streamed from the
    capture it was imported from, written back to a temporary file (:func:`_stream_journal`).
    ``first_block_scales`` reads a tardis file once, at its first block's scales (see
    :func:`ringbook.engine.feeds.tardis.iter_incremental`): the chunks may end in
    ``MoreDecimals``.
    """
    from ringbook.engine.feeds import binance, kalshi, lobster, tardis

    if source.format == "journal":
        return _stream_journal(source, first_block_scales)
    if source.format == "lobster":
        return (*lobster.iter_with_orderbook(source.path, _orderbook_of(source)), EXCHANGES["lobster"])
    if source.format == "binance":
        return binance.iter_capture(source.path), None, EXCHANGES["binance"]
    if source.format == "tardis":
        return (tardis.iter_incremental(source.path, first_block_scales=first_block_scales), None,
                tardis.exchange_of(source.path))
    if source.format == "kalshi":
        return kalshi.iter_messages(source.path), None, EXCHANGES["kalshi"]
    raise ValueError(f"unknown format {source.format!r}")


def _read_journal(source):
    """A journal stream read as the capture it was imported from (written back to a temporary
    file, then read by that format's reader); errors name the journal and stream."""
    from ringbook.engine.feeds import journal as feeds_journal
    from ringbook.engine.feeds.source import FeedError

    with tempfile.TemporaryDirectory(prefix="ringbook-batch-") as directory:
        format, path = feeds_journal.materialize(source.path, directory, source.stream)
        try:
            feed, orderbook, exchange = read_source(Source(str(path), format, source.orderbook))
        except FeedError as error:
            raise _journal_error(source, format, error) from None
    feed.path = source.key
    return feed, orderbook, exchange


def _stream_journal(source, first_block_scales):
    """:func:`stream_source` of a journal stream: the capture written back to a temporary file
    and streamed from there, the file removed once its chunks end; errors name the journal
    and stream."""
    from ringbook.engine.feeds import journal as feeds_journal
    from ringbook.engine.feeds.source import FeedError

    directory = tempfile.TemporaryDirectory(prefix="ringbook-batch-")
    try:
        format, path = feeds_journal.materialize(source.path, directory.name, source.stream)
        try:
            chunks, orderbook, exchange = stream_source(Source(str(path), format, source.orderbook),
                                                        first_block_scales)
        except FeedError as error:
            raise _journal_error(source, format, error) from None
    except BaseException:
        directory.cleanup()
        raise
    return _journal_chunks(source, format, chunks, directory), orderbook, exchange


def _journal_chunks(source, format, chunks, directory):
    from ringbook.engine.feeds.source import FeedError

    try:
        for chunk in chunks:
            chunk.path = source.key
            yield chunk
    except FeedError as error:
        raise _journal_error(source, format, error) from None
    finally:
        directory.cleanup()


def _journal_error(source, format, error):
    """A reader's error in a journal stream's capture, naming the journal and stream."""
    from ringbook.engine.feeds.source import FeedError

    return FeedError(f"{source.path} (stream {source.stream}, a {format} capture)", error.line, error.reason,
                     error.field, error.partial)


def source_facts(source, hash=True):
    """:func:`file_facts` of an input; for a journal stream, of its segments together
    (bytes added, the latest mtime, one hash over them in order). A LOBSTER orderbook
    file adds its ``orderbook_size`` and ``orderbook_mtime_ns``: the snapshots depend on it too."""
    if source.stream is None:
        facts = file_facts(source.path, hash)
        if source.orderbook:
            stat = os.stat(source.orderbook)
            facts.update(orderbook_size=stat.st_size, orderbook_mtime_ns=stat.st_mtime_ns)
        return facts
    from ringbook.engine.journal import list_segments

    segments = [path for _, path in list_segments(source.path, source.stream).get(source.stream, [])]
    stats = [os.stat(path) for path in segments]
    facts = {"size": sum(stat.st_size for stat in stats), "mtime_ns": max((stat.st_mtime_ns for stat in stats),
                                                                          default=0)}
    if hash:
        facts["blake3"] = content_hash(segments)
    return facts


def file_facts(path, hash=True):
    """``{"size", "mtime_ns", "blake3"}`` of a file."""
    stat = os.stat(path)
    facts = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if hash:
        facts["blake3"] = content_hash([path])
    return facts


def content_hash(paths):
    """BLAKE3 of the files' bytes, one after another, as hex.

    A cryptographic hash, like SHA-256, at several times its speed. The files are
    read into one reused buffer: a new block each read would cost more than hashing it.
    """
    digest = blake3.blake3()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    for path in paths:
        with open(path, "rb", buffering=0) as file:
            while read := file.readinto(buffer):
                digest.update(view[:read])
    return digest.hexdigest()
