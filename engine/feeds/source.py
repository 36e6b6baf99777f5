"""What every file reader shares: the file read as a stream of blocks of whole lines,
the result of a read and the error that names a file and a line.

Readers stream: :func:`iter_blocks` reads a file (gunzipping it on the fly) in
blocks of about ``memory_limit // 16`` bytes, cut after the last line break of
each block, the partial last line carried over to the next; numpy finds the line
boundaries of a block, njit kernels parse its lines, and Python only assembles
the result. So resident memory stays bounded by ``memory_limit`` (256 MiB by
default, or ``$RINGBOOK_MEMORY_LIMIT``) whatever the size of the file, compressed or not. Line numbers are
1-based, as an editor shows them, and count every line of the file, blank ones
included.

Inputs that are not regular files are handled as follows: a FIFO (a pipe, or
``/dev/stdin`` fed by one) is read as a stream like any file; a character or
block device (``/dev/zero``), a socket or a directory is refused with a
:class:`FeedError`. A line longer than a quarter of ``memory_limit`` is an
error rather than a reason to grow without bound.
"""

import os
import stat
from dataclasses import dataclass, field

import numpy as np
from zlib_ng import zlib_ng

from ringbook.kernels import fixed
from ringbook.kernels.events import Instruments
from ringbook.kernels.status import FIELD_COUNT, MISSING, NOT_JSON, ODD_LEVELS, OUT_OF_RANGE, status_name

NEWLINE = ord("\n")
CARRIAGE_RETURN = ord("\r")
GZIP_MAGIC = b"\x1f\x8b"

#: Default bound on a reader's resident memory, in bytes (the ``memory_limit`` argument).
MEMORY_LIMIT = 256 * 2**20
#: A block of text is this fraction of the memory limit: its events, line tables and
#: the parser's scratch take several times the text's size.
BLOCK_FRACTION = 16
#: Smallest memory limit a reader accepts (small limits serve tests: many blocks from a small file).
MIN_MEMORY_LIMIT = 2**16
_READ_SIZE = 2**20
_MIN_BLOCK = 4096
#: Compressed bytes one call of the decompressor takes: the input it leaves for later (its output
#: is bounded) is copied at every call, so a large piece would be copied over and over.
_GZIP_INPUT = 2**16


#: Why a field or line was refused, for every status a reader's kernels return: the
#: decimal parser's (``ringbook.kernels.fixed``) and the record codes of
#: ``ringbook.kernels.status``.
REASONS = {
    fixed.INVALID: "not a decimal number",
    fixed.TOO_PRECISE: "too many decimals for the scale",
    fixed.OVERFLOW: "out of int64 range",
    fixed.FULL: "too many numbers",
    MISSING: "missing",
    ODD_LEVELS: "levels must be [price, quantity] pairs",
    NOT_JSON: "not the expected JSON",
    OUT_OF_RANGE: "out of range",
    FIELD_COUNT: "wrong number of fields",
}


def reason_of(code):
    """The reason for a reader's status ``code`` (any kernel's description for another code)."""
    return REASONS.get(int(code)) or status_name(code)


class FeedError(ValueError):
    """A file that cannot be read, or a malformed line: the read stops here.

    Attributes
    ----------
    path : str
        The file.
    line : int or None
        1-based line number of the offending line; None when the fault is the
        file's as a whole (empty, not a regular file, a gzip stream cut short
        before any line).
    field : str or None
        The field that could not be read, when known.
    reason : str
        What is wrong with it.
    partial : Feed or None
        Everything read and accepted before the offending line.
    """

    def __init__(self, path, line, reason, field=None, partial=None):
        self.path = str(path)
        self.line = None if line is None else int(line)
        self.field = field
        self.reason = reason
        self.partial = partial
        where = self.path if self.line is None else f"{self.path}, line {self.line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {reason}")


@dataclass
class Feed:
    """Events read from one file (or one chunk of it, from a reader's stream).

    Attributes
    ----------
    events : numpy.ndarray
        :data:`ringbook.kernels.events.EVENT_DTYPE` records, in the order a book applies them.
    lines : numpy.ndarray
        ``int64``, the 1-based line of the file each event came from.
    instruments : ringbook.kernels.events.Instruments
        The symbols the events refer to, with their scales.
    path : str
        The file.
    skipped_lines : list of int
        Malformed lines skipped under ``skip_malformed=True``.
    ignored : int
        Well-formed lines of a kind the reader does not turn into events.
    dropped : int
        Messages a sync procedure dropped as already contained in a snapshot.
    records : numpy.ndarray or None
        ``int64``, for files whose data rows pair with another file's rows
        (LOBSTER): the 0-based index of each event's row among the data rows
        (header and blank lines excluded), skipped rows included.
    warnings : list of (int, str)
        Lines kept under ``skip_malformed=True`` that would otherwise stop the
        read (a LOBSTER time going backwards), with the reason.
    """

    events: np.ndarray
    lines: np.ndarray
    instruments: Instruments
    path: str
    skipped_lines: list = field(default_factory=list)
    ignored: int = 0
    dropped: int = 0
    records: np.ndarray = None
    warnings: list = field(default_factory=list)

    def __len__(self):
        return len(self.events)


def concatenate(chunks, path, instruments):
    """One :class:`Feed` from the chunks of a reader's stream (an empty Feed for none)."""
    from ringbook.kernels.events import EVENT_DTYPE

    chunks = list(chunks)
    full = [chunk for chunk in chunks if len(chunk)] or chunks[:1]

    def joined(name, empty):
        if len(full) == 1:  # a small file: its one chunk's arrays, not a copy
            return getattr(full[0], name)
        return np.concatenate([getattr(chunk, name) for chunk in full]) if full else empty

    with_records = bool(full) and full[0].records is not None
    feed = Feed(joined("events", np.zeros(0, EVENT_DTYPE)), joined("lines", np.zeros(0, np.int64)),
                instruments, str(path), records=joined("records", None) if with_records else None)
    for chunk in chunks:
        feed.skipped_lines += chunk.skipped_lines
        feed.warnings += chunk.warnings
        feed.ignored += chunk.ignored
        feed.dropped += chunk.dropped
    return feed


def read_whole(path, chunks, instruments):
    """One Feed of a reader's stream; a FeedError at a line gets what came before as ``partial``."""
    read = []
    try:
        for chunk in chunks:
            read.append(chunk)
    except FeedError as error:
        if error.line is not None:
            error.partial = concatenate(read, path, instruments)
        raise
    return concatenate(read, path, instruments)


@dataclass
class Block:
    """Whole lines of a file: ``buffer[starts[i]:stops[i]]`` is line ``numbers[i]``.

    Only non-blank lines are listed; ``numbers`` are 1-based lines of the file.
    """

    buffer: np.ndarray
    starts: np.ndarray
    stops: np.ndarray
    numbers: np.ndarray

    def __len__(self):
        return len(self.starts)

    def text(self, index):
        """Line ``index`` of the block, as bytes."""
        return bytes(self.buffer[self.starts[index]:self.stops[index]])


#: Environment variable that sets the default memory limit (bytes, or with a K, M or G suffix:
#: ``512M``), for the command line and for code that does not pass ``memory_limit``.
MEMORY_LIMIT_VARIABLE = "RINGBOOK_MEMORY_LIMIT"
_SUFFIXES = {"K": 2**10, "M": 2**20, "G": 2**30}


def _default_memory_limit():
    text = os.environ.get(MEMORY_LIMIT_VARIABLE, "").strip().upper().removesuffix("B").removesuffix("I")
    if not text:
        return MEMORY_LIMIT
    try:
        return int(text[:-1]) * _SUFFIXES[text[-1]] if text[-1] in _SUFFIXES else int(text)
    except ValueError:
        raise ValueError(f"{MEMORY_LIMIT_VARIABLE}={os.environ[MEMORY_LIMIT_VARIABLE]!r}: expected bytes, "
                         "or a number with K, M or G") from None


def check_memory_limit(memory_limit):
    """The memory limit as an int, defaulting to ``$RINGBOOK_MEMORY_LIMIT`` or :data:`MEMORY_LIMIT`;
    ValueError when too small."""
    limit = _default_memory_limit() if memory_limit is None else int(memory_limit)
    if limit < MIN_MEMORY_LIMIT:
        raise ValueError(f"memory_limit must be at least {MIN_MEMORY_LIMIT} bytes, got {limit}")
    return limit


def _open_input(path):
    """The file, opened for reading, or a FeedError for what cannot be read as a stream of lines."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise FeedError(path, None, error.strerror or str(error)) from None
    if stat.S_ISDIR(mode):
        raise FeedError(path, None, "is a directory, not a file")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        kind = ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise FeedError(path, None, f"{kind}: only regular files and pipes are read")
    try:
        return open(path, "rb", buffering=0)
    except OSError as error:
        raise FeedError(path, None, error.strerror or str(error)) from None


def _raw_chunks(path, file, size):
    """The file's bytes in chunks of at most ``size``."""
    while True:
        try:
            chunk = file.read(size)
        except OSError as error:
            raise FeedError(path, None, f"read failed: {error.strerror or error}") from None
        if not chunk:
            return
        yield chunk


class _GzipFault(Exception):
    """A damaged or truncated gzip stream: :func:`iter_blocks` names the line it reached."""


def _decompressed(chunks, limit):
    """Gunzip ``chunks`` (one gzip member after another), yielding at most ``limit`` bytes at a time.

    Raises
    ------
    _GzipFault
        A fault in the compressed data, or a stream cut short.
    """
    decompressor = zlib_ng.decompressobj(wbits=31)
    try:
        for piece in _pieces(chunks, _GZIP_INPUT):
            data = piece
            while data:
                if decompressor.eof:
                    if not bytes(data).strip(b"\x00"):
                        break  # zero padding after the last member, as gzip tolerates
                    decompressor = zlib_ng.decompressobj(wbits=31)  # another member follows
                output = decompressor.decompress(data, limit)
                while output:
                    yield output
                    # Output held back by the limit comes out without more input.
                    output = (decompressor.decompress(b"", limit)
                              if len(output) == limit and not decompressor.unconsumed_tail else b"")
                data = decompressor.unused_data if decompressor.eof else decompressor.unconsumed_tail
    except zlib_ng.error as error:
        raise _GzipFault(f"corrupt gzip data: {_gzip_fault(error)}") from None
    if not decompressor.eof:
        raise _GzipFault("truncated gzip file: the compressed data ends before the end of its stream")


def _pieces(chunks, size):
    """The bytes of ``chunks`` in pieces of at most ``size`` (views, not copies)."""
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), size):
            yield view[start:start + size]


def _gzip_faults_named(path, texts, line_reached):
    """``texts``; a gzip fault among them becomes a FeedError at ``line_reached()`` (counting the
    lines only then, not in every piece of text)."""
    try:
        yield from texts
    except _GzipFault as fault:
        raise FeedError(path, line_reached(), str(fault)) from None


def _gzip_fault(error):
    text = str(error)
    if "incorrect data check" in text or "incorrect length check" in text:
        return "checksum mismatch: the file is damaged"
    if "incorrect header check" in text or "unknown compression method" in text:
        return "bad gzip header"
    return text.split(": ", 1)[-1]


def iter_blocks(path, memory_limit=None):
    """Read ``path`` as :class:`Block` s of whole lines; gzip (detected by its magic) is fine.

    Parameters
    ----------
    path : str or Path
        A regular file or a FIFO.
    memory_limit : int, optional
        Bound on what a reader holds at once (:data:`MEMORY_LIMIT` by default);
        blocks are about a sixteenth of it.

    Yields
    ------
    Block
        Non-empty blocks, in file order; every line of the file lies in exactly one.

    Raises
    ------
    FeedError
        Not a regular file or a pipe; a damaged or truncated gzip stream
        (naming the line it stopped in); a line longer than a quarter of
        ``memory_limit``.
    """
    limit = check_memory_limit(memory_limit)
    block_size = max(limit // BLOCK_FRACTION, _MIN_BLOCK)
    longest_line = limit // 4
    lines_before = 0
    with _open_input(path) as file:
        raw = _raw_chunks(path, file, block_size)  # a small file: one read, no copy
        first = next(raw, b"")
        while len(first) < 2 and first:
            more = next(raw, b"")
            if not more:
                break
            first += more

        def chained():
            if first:
                yield first
            yield from raw

        if first[:2] == GZIP_MAGIC:
            # Small pieces of output: a fault in the compressed data is named within a few lines.
            texts = _decompressed(chained(), min(block_size, _READ_SIZE // 4))
        else:
            texts = chained()
        carried = []
        carried_bytes = 0

        def line_reached():
            """The line the text has reached: after the blocks yielded and the lines carried."""
            return lines_before + sum(piece.count(b"\n") for piece in carried) + 1

        for text in _gzip_faults_named(path, texts, line_reached):
            cut = text.rfind(b"\n")
            if cut < 0:
                carried.append(text)
                carried_bytes += len(text)
                if carried_bytes > longest_line:
                    raise FeedError(path, lines_before + 1,
                                    f"a line longer than {longest_line} bytes (a quarter of the memory limit)")
                continue
            carried.append(text[:cut + 1])
            carried_bytes += cut + 1
            if carried_bytes >= block_size:
                joined, carried = b"".join(carried), None  # the pieces go before the block is parsed
                block, newlines = _block(joined, lines_before)
                del joined
                lines_before += newlines
                if len(block):
                    yield block
                carried, carried_bytes = [], 0
            rest = text[cut + 1:]
            if rest:
                carried.append(rest)
                carried_bytes += len(rest)
        if carried_bytes:
            joined, carried = b"".join(carried), None
            block, _ = _block(joined, lines_before)
            del joined
            if len(block):
                yield block


def _block(text, lines_before):
    buffer = np.frombuffer(text, np.uint8)
    starts, stops, numbers, breaks = _line_bounds(buffer)
    return Block(buffer, starts, stops, numbers + lines_before), breaks


def read_buffer(path):
    """The whole (gunzipped) text of ``path`` as a ``uint8`` array; for small files and tests."""
    parts = [block.buffer for block in iter_blocks(path)]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def line_bounds(buffer):
    """Where the non-blank lines of ``buffer`` are.

    Returns
    -------
    starts, stops : numpy.ndarray
        ``int64`` byte offsets: line ``i`` is ``buffer[starts[i]:stops[i]]``,
        without its line break (``\\n`` or ``\\r\\n``).
    numbers : numpy.ndarray
        ``int64`` 1-based line number of each of them in the file.
    """
    return _line_bounds(buffer)[:3]


def _line_bounds(buffer):
    """:func:`line_bounds`, and how many line breaks ``buffer`` holds."""
    breaks = np.flatnonzero(buffer == NEWLINE).astype(np.int64)
    starts = np.concatenate(([0], breaks + 1))
    stops = np.concatenate((breaks, [len(buffer)]))
    numbers = np.arange(1, len(starts) + 1, dtype=np.int64)
    # a final line break ends the last line rather than starting an empty one
    has_carriage_return = stops > starts
    has_carriage_return[has_carriage_return] = buffer[stops[has_carriage_return] - 1] == CARRIAGE_RETURN
    stops = stops - has_carriage_return
    keep = stops > starts
    return starts[keep], stops[keep], numbers[keep], len(breaks)


def empty_file(path):
    """The FeedError of a file with no data line."""
    return FeedError(path, None, "the file is empty (no data line)")
