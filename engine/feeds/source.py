"""What every file reader shares: the file as one ``uint8`` buffer, its lines,
the result of a read and the error that names a file and a line.

Readers work on the whole file at once: numpy finds the line boundaries, njit
kernels parse the lines, and Python only assembles the result. Line numbers
are 1-based, as an editor shows them, and count every line of the file,
blank ones included.
"""

import gzip
from dataclasses import dataclass, field

import numpy as np

from ringbook.kernels.events import Instruments

NEWLINE = ord("\n")
CARRIAGE_RETURN = ord("\r")
GZIP_MAGIC = b"\x1f\x8b"


class FeedError(ValueError):
    """A malformed line: the read stops here.

    Attributes
    ----------
    path : str
        The file.
    line : int
        1-based line number of the offending line.
    field : str or None
        The field that could not be read, when known.
    reason : str
        What is wrong with it.
    partial : Feed or None
        Everything read and accepted before the offending line.
    """

    def __init__(self, path, line, reason, field=None, partial=None):
        self.path = str(path)
        self.line = int(line)
        self.field = field
        self.reason = reason
        self.partial = partial
        where = f"{self.path}, line {self.line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {reason}")


@dataclass
class Feed:
    """Events read from one file.

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
    """

    events: np.ndarray
    lines: np.ndarray
    instruments: Instruments
    path: str
    skipped_lines: list = field(default_factory=list)
    ignored: int = 0
    dropped: int = 0
    records: np.ndarray = None

    def __len__(self):
        return len(self.events)


def read_buffer(path):
    """The bytes of ``path`` as a ``uint8`` array, gunzipped if the file is gzip."""
    with open(path, "rb") as file:
        data = file.read()
    if data[:2] == GZIP_MAGIC:
        data = gzip.decompress(data)
    return np.frombuffer(data, np.uint8)


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
    breaks = np.flatnonzero(buffer == NEWLINE).astype(np.int64)
    starts = np.concatenate(([0], breaks + 1))
    stops = np.concatenate((breaks, [len(buffer)]))
    numbers = np.arange(1, len(starts) + 1, dtype=np.int64)
    # a final line break ends the last line rather than starting an empty one
    has_carriage_return = stops > starts
    has_carriage_return[has_carriage_return] = buffer[stops[has_carriage_return] - 1] == CARRIAGE_RETURN
    stops = stops - has_carriage_return
    keep = stops > starts
    return starts[keep], stops[keep], numbers[keep]

