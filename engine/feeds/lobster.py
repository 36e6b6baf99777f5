"""LOBSTER message and orderbook files (Nasdaq order by order, with the book it implies).

A message file has one event a line, ``time,type,order_id,size,price,direction``;
an orderbook file has, on line ``k``, the book after message ``k``:
``ask_price_1,ask_size_1,bid_price_1,bid_size_1,ask_price_2,...`` for as many
levels as the file was made with. Either may start with a header row (a first
line with letters in it). Prices are dollars times 10000 (``price_scale`` 4) and
sizes are shares (``size_scale`` 0); empty orderbook levels hold the prices
``-9999999999`` (bid) and ``9999999999`` (ask) with size 0.

Message types become event kinds:

====  ============================  =======================================
type  LOBSTER                       event
====  ============================  =======================================
1     new limit order               ``KIND_L3_ADD``
2     partial cancel                ``KIND_L3_CANCEL`` (quantity removed)
3     delete                        ``KIND_L3_DELETE``
4     visible execution             ``KIND_L3_EXECUTE`` (quantity executed)
5     hidden execution              ``KIND_L3_EXECUTE_HIDDEN``
6     cross trade (auction)         ``KIND_TRADE`` (side 0: no aggressor)
7     trading halt indicator        ``KIND_STATUS``: price -1 halted,
                                    0 quoting, 1 trading
====  ============================  =======================================

``side`` is the direction (1 buy → ``BID``, -1 sell → ``ASK``): for executions
the side of the resting order. Every message is a whole exchange message, so
each event carries ``FLAG_BATCH_END``; LOBSTER has no sequence numbers
(``sequence`` 0).

Time: the time column (seconds after midnight, up to nanosecond decimals) is
parsed exactly as fixed point at 9 decimals, never through float. When the
trading date is known (from a file name ``TICKER_YYYY-MM-DD_..._message_N.csv``
or the ``date`` argument), ``exchange_ns`` is ns since the Unix epoch, counting
from midnight in New York (Nasdaq's local time, daylight saving included);
otherwise it is ns since midnight.
"""

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringbook.engine.feeds.source import (MIN_MEMORY_LIMIT, Feed, FeedError, check_memory_limit, empty_file,
                                          iter_blocks, read_whole, reason_of)
from ringbook.kernels import fixed
from ringbook.kernels.events import (ASK, BID, EVENT_DTYPE, FLAG_BATCH_END, KIND_L3_ADD, KIND_L3_CANCEL,
                            KIND_L3_DELETE, KIND_L3_EXECUTE, KIND_L3_EXECUTE_HIDDEN, KIND_STATUS,
                            KIND_TRADE, STATUS_HALTED, STATUS_QUOTING, STATUS_TRADING, Instruments)
from ringbook.kernels.borrow import borrow
from ringbook.kernels.jit_options import kernel
from ringbook.kernels.limits import INT64_MAX
from ringbook.kernels.status import FIELD_COUNT, OK

PRICE_SCALE = 4
SIZE_SCALE = 0
TICK = 100  # one cent at price_scale 4
#: Prices LOBSTER writes for an empty orderbook level.
EMPTY_ASK_PRICE = 9999999999
EMPTY_BID_PRICE = -9999999999

MESSAGE_FIELDS = ("time", "type", "order_id", "size", "price", "direction")
#: Decimals each message column is parsed at: the time to ns, the rest as integers.
MESSAGE_SCALES = np.array([9, 0, 0, 0, 0, 0], np.int64)

#: LOBSTER event type -> event kind (0: no such type).
KIND_OF_TYPE = np.array([0, KIND_L3_ADD, KIND_L3_CANCEL, KIND_L3_DELETE, KIND_L3_EXECUTE,
                         KIND_L3_EXECUTE_HIDDEN, KIND_TRADE, KIND_STATUS], np.uint8)
#: Type 7's price -> STATUS_* code, indexed by price + 1.
STATUS_OF_HALT_PRICE = np.array([STATUS_HALTED, STATUS_QUOTING, STATUS_TRADING], np.int64)

_COMMA = 44
_FILE_NAME = re.compile(r"^(?P<ticker>[^_]+)_(?P<date>\d{4}-\d{2}-\d{2})_\d+_\d+_"
                        r"(?:message|orderbook)_(?P<levels>\d+)\.csv$")
_NASDAQ_ZONE = "America/New_York"


@kernel
def parse_csv_rows(buffer, starts, stops, first, scales, out):
    """Parse comma-separated decimal lines into the rows of ``out``, exactly.

    Line ``i`` is ``buffer[starts[i]:stops[i]]``; it must hold exactly
    ``out.shape[1]`` fields, field ``j`` a decimal parsed at ``scales[j]``.

    Parameters
    ----------
    buffer : 1-D uint8 array
    starts, stops : 1-D int64 arrays
        Line bounds, within ``buffer``.
    first : int
        The first line to parse; lines before it are left alone.
    scales : 1-D int64 array
        Decimals of each column.
    out : 2-D int64 array
        At least as many rows as lines; row ``i`` receives line ``i``.

    Returns
    -------
    stopped_at : int64
        The index of the first bad line, or the number of lines when all are good.
    status : int64
        ``ringbook.kernels.fixed`` status of the bad field,
        ``ringbook.kernels.status.FIELD_COUNT`` for a line with another number of
        fields, OK when all lines are good.
    column : int64
        The bad field's column (-1 when OK or for a field count).
    """
    buffer = borrow(buffer)     # the caller's reference keeps it alive: no counting in each field's call
    width = out.shape[1]
    if scales.shape[0] != width or out.shape[0] < starts.shape[0] or stops.shape[0] != starts.shape[0]:
        return np.int64(first), np.int64(fixed.INVALID), np.int64(-1)
    for line in range(first, starts.shape[0]):
        start = starts[line]
        stop = stops[line]
        if start < 0 or stop > buffer.shape[0] or start > stop:
            return np.int64(line), np.int64(fixed.INVALID), np.int64(-1)
        position = start
        column = 0
        while True:
            if column == width:
                return np.int64(line), np.int64(FIELD_COUNT), np.int64(-1)
            value, status, end = fixed.parse_field(buffer, position, stop, scales[column], _COMMA)
            if status != fixed.OK:
                return np.int64(line), status, np.int64(column)
            out[line, column] = value
            column += 1
            if end == stop:
                break
            position = end + 1
        if column != width:
            return np.int64(line), np.int64(FIELD_COUNT), np.int64(-1)
    return np.int64(starts.shape[0]), np.int64(fixed.OK), np.int64(-1)


def _has_header(block):
    """True when every field of the block's first line has a letter (a header such as ``Time,Type,...``).

    A data line with one corrupted field is not taken for a header: it is reported.
    """
    fields = block.text(0).split(b",")
    return all(any(chr(byte).isalpha() for byte in field) for field in fields)


def _field_count(block, index):
    return int(np.count_nonzero(block.buffer[block.starts[index]:block.stops[index]] == _COMMA)) + 1


def _block_rows(path, block, first, width, scales, names, skip_malformed):
    """Parse the lines ``first..`` of a block into an int64 matrix.

    Returns ``(rows, line numbers, indices among the parsed lines, skipped lines, FeedError or None)``.
    """
    # Rows are parsed in batches whose matrix is no larger than the block's text (times 4): a
    # first row with very many fields cannot make the matrix explode.
    batch = max(1, 4 * len(block.buffer) // (8 * width))
    parts, skipped = [], []
    for batch_start in range(first, len(block), batch):
        batch_stop = min(batch_start + batch, len(block))
        rows, numbers, indices, problem = _batch_rows(path, block, batch_start, batch_stop, width, scales,
                                                      names, skip_malformed, skipped)
        parts.append((rows, numbers, indices + batch_start - first))
        if problem is not None:
            break
    else:
        problem = None
    if not parts:
        return np.zeros((0, width), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), skipped, problem
    if len(parts) == 1:
        return (*parts[0], skipped, problem)
    return (*(np.concatenate([part[index] for part in parts]) for index in range(3)), skipped, problem)


def _batch_rows(path, block, batch_start, batch_stop, width, scales, names, skip_malformed, skipped):
    """Lines ``batch_start:batch_stop`` of a block as rows; malformed ones appended to ``skipped``."""
    starts, stops = block.starts[batch_start:batch_stop], block.stops[batch_start:batch_stop]
    numbers = block.numbers[batch_start:batch_stop]
    rows = np.empty((len(starts), width), np.int64)   # only whole rows are kept: no need to zero
    good = np.ones(len(starts), bool)
    at = 0
    while True:
        stopped_at, code, column = parse_csv_rows(block.buffer, starts, stops, at, scales, rows)
        if code == OK:
            break
        line = int(numbers[stopped_at])
        if code == FIELD_COUNT:
            field, reason = None, f"{_field_count(block, batch_start + stopped_at)} fields, expected {width}"
        else:
            field, reason = names(int(column)), reason_of(code)
        if not skip_malformed:
            return (rows[:stopped_at], numbers[:stopped_at], np.arange(stopped_at),
                    FeedError(path, line, reason, field))
        skipped.append(line)
        good[stopped_at] = False
        at = stopped_at + 1
    if good.all():  # the usual case: no copy
        return rows, numbers, np.arange(len(rows)), None
    return rows[good], numbers[good], np.flatnonzero(good), None


def _iter_rows(path, width_of, names, scales_of, skip_malformed, memory_limit):
    """Stream a LOBSTER csv as blocks of int64 rows.

    Yields ``(rows, line numbers, record indices, skipped lines, FeedError or None)``
    per block; after a FeedError nothing follows. ``width_of(field_count, line)``
    decides the column count from the first data row's; ``scales_of(width)`` the
    decimals of each column; ``names(column)`` names a column. A file with no
    data row (empty, blank or only a header) is a FeedError.
    """
    width = scales = None
    records_before = 0
    for index, block in enumerate(iter_blocks(path, memory_limit)):
        first = 1 if index == 0 and _has_header(block) else 0
        if first == len(block):
            continue
        if width is None:
            width = width_of(_field_count(block, first), int(block.numbers[first]))
            scales = scales_of(width)
        rows, numbers, indices, skipped, problem = _block_rows(path, block, first, width, scales, names,
                                                               skip_malformed)
        yield rows, numbers, records_before + indices, skipped, problem
        if problem is not None:
            return
        records_before += len(block) - first
    if width is None:
        raise empty_file(path)


def file_facts(path):
    """``(ticker, date, levels)`` from a LOBSTER file name; ``(None, None, None)`` otherwise."""
    match = _FILE_NAME.match(Path(path).name)
    if match is None:
        return None, None, None
    return match["ticker"], datetime.date.fromisoformat(match["date"]), int(match["levels"])


def midnight_ns(date):
    """ns since the Unix epoch of midnight in New York on ``date``."""
    from zoneinfo import ZoneInfo

    midnight = datetime.datetime(date.year, date.month, date.day, tzinfo=ZoneInfo(_NASDAQ_ZONE))
    seconds = int((midnight - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)).total_seconds())
    return seconds * 1_000_000_000


def _message_problems(rows, origin_ns):
    """Per row, the first invalid column (-1 when the row is valid) and why.

    The time must be non-negative and, counted from ``origin_ns``, within int64 ns.
    """
    kinds = rows[:, 1]
    size, price, direction, order_id = rows[:, 3], rows[:, 4], rows[:, 5], rows[:, 2]
    is_halt = kinds == 7
    checks = [
        (0, (rows[:, 0] < 0) | (rows[:, 0] > INT64_MAX - origin_ns), "time out of range"),
        (1, (kinds < 1) | (kinds > 7), "event type must be 1..7"),
        (2, order_id < 0, "negative order id"),
        (3, size < 0, "negative size"),
        (4, ~is_halt & (price <= 0), "price must be positive"),
        (4, is_halt & ((price < -1) | (price > 1)), "a halt's price must be -1, 0 or 1"),
        (5, (direction != 1) & (direction != -1), "direction must be 1 or -1"),
    ]
    column = np.full(len(rows), -1, np.int64)
    reason = np.full(len(rows), -1, np.int64)
    for index, (col, bad, _) in reversed(list(enumerate(checks))):
        column[bad] = col
        reason[bad] = index
    return column, reason, [text for _, _, text in checks]


@kernel
def message_events(rows, symbol_id, origin_ns, events):
    """The events of validated message rows (``time, type, order_id, size, price, direction``)
    into ``events`` (zeroed: fields a message has no value for are left alone), one per row:
    a halt (type 7) carries its ``STATUS_*`` in ``quantity`` and no price or side, a cross
    trade (type 6) no side.

    Returns the events written: fewer than the rows at the first row that is not valid
    (a type outside 1..7, or a halt price outside -1..1), or when ``events`` is full.
    """
    for i in range(min(rows.shape[0], events.shape[0])):
        message_type = rows[i, 1]
        if message_type < 1 or message_type >= KIND_OF_TYPE.shape[0]:
            return i
        kind = KIND_OF_TYPE[message_type]
        halt = rows[i, 4] + 1
        if kind == KIND_STATUS and (halt < 0 or halt >= STATUS_OF_HALT_PRICE.shape[0]):
            return i
        event = events[i]
        event.exchange_ns = origin_ns + rows[i, 0]
        event.order_id = rows[i, 2]
        event.symbol = symbol_id
        event.kind = kind
        event.flags = FLAG_BATCH_END
        if kind == KIND_STATUS:
            event.quantity = STATUS_OF_HALT_PRICE[halt]
        else:
            event.quantity = rows[i, 3]
            event.price = rows[i, 4]
            if kind != KIND_TRADE:
                event.side = BID if rows[i, 5] == 1 else ASK
    return min(rows.shape[0], events.shape[0])


def _message_events(rows, symbol_id, origin_ns):
    """The events of validated message rows."""
    events = np.zeros(len(rows), EVENT_DTYPE)
    written = message_events(rows, symbol_id, origin_ns, events)
    if written != len(rows):
        raise RuntimeError(f"message row {written} was not validated")
    return events


def _backwards(times, last_time):
    """Rows whose time is earlier than the previous row's (``last_time`` before the first)."""
    previous = np.concatenate(([last_time], times[:-1]))
    return times < previous


def _time_reason(time, previous):
    return (f"time goes backwards: {fixed.format_decimal(int(time), 9)} after "
            f"{fixed.format_decimal(int(previous), 9)}")


def iter_messages(path, *, symbol=None, date=None, instruments=None, skip_malformed=False,
                  memory_limit=None):
    """Stream a LOBSTER message file as chunks of events, in bounded memory.

    Takes the arguments of :func:`read_messages`, and ``memory_limit`` (bytes,
    ``ringbook.engine.feeds.source.MEMORY_LIMIT`` by default).

    Yields
    ------
    Feed
        The events of one block of lines, sharing one instrument table; a chunk
        may be empty (a block of skipped lines).

    Raises
    ------
    FeedError
        As :func:`read_messages`, after the chunk of the lines before it; and
        for a file with no data row.
    """
    ticker, file_date, _ = file_facts(path)
    instruments = instruments if instruments is not None else Instruments()
    symbol_id = instruments.intern(symbol or ticker or "LOBSTER", PRICE_SCALE, SIZE_SCALE, TICK)
    date = date or file_date
    origin_ns = midnight_ns(date) if date is not None else 0
    last_time = np.iinfo(np.int64).min
    for rows, numbers, records, skipped, problem in _iter_rows(
            path, lambda found, line: len(MESSAGE_FIELDS), MESSAGE_FIELDS.__getitem__,
            lambda width: MESSAGE_SCALES, skip_malformed, memory_limit):
        warnings = []
        bad_column, bad_reason, reasons = _message_problems(rows, origin_ns)
        if not skip_malformed:
            bad = np.flatnonzero(bad_column >= 0)
            cut = int(bad[0]) if len(bad) else len(rows)
            backwards = np.flatnonzero(_backwards(rows[:cut, 0], last_time))
            if len(backwards):
                cut = int(backwards[0])
                previous = rows[cut - 1, 0] if cut else last_time
                problem = FeedError(path, int(numbers[cut]), _time_reason(rows[cut, 0], previous), "time")
            elif cut < len(rows):
                problem = FeedError(path, int(numbers[cut]), reasons[bad_reason[cut]],
                                    MESSAGE_FIELDS[bad_column[cut]])
            rows, numbers, records = rows[:cut], numbers[:cut], records[:cut]
        else:
            bad = bad_column >= 0
            if bad.any():
                skipped = sorted(skipped + numbers[bad].tolist())
                rows, numbers, records = rows[~bad], numbers[~bad], records[~bad]
            backwards = np.flatnonzero(_backwards(rows[:, 0], last_time))
            for index in backwards.tolist():
                previous = rows[index - 1, 0] if index else last_time
                warnings.append((int(numbers[index]), _time_reason(rows[index, 0], previous)))
        if len(rows):
            last_time = rows[-1, 0]
        yield Feed(_message_events(rows, symbol_id, origin_ns), numbers.astype(np.int64), instruments,
                   str(path), skipped, records=records.astype(np.int64), warnings=warnings)
        if problem is not None:
            raise problem


def read_messages(path, *, symbol=None, date=None, instruments=None, skip_malformed=False,
                  memory_limit=None):
    """Read a LOBSTER message file into events.

    Parameters
    ----------
    path : str or Path
        A message file, with or without a header row; gzip is fine.
    symbol : str, optional
        The instrument's name; by default the ticker in the file name (else "LOBSTER").
    date : datetime.date, optional
        The trading day; by default the date in the file name. Without one,
        ``exchange_ns`` is ns since midnight instead of since the epoch.
    instruments : ringbook.kernels.events.Instruments, optional
        Table to intern the symbol in (price_scale 4, size_scale 0, tick 100); a new one by default.
    skip_malformed : bool
        Skip malformed lines and list them in ``skipped_lines`` instead of
        raising; a time earlier than the line before's is kept and listed in
        ``warnings``.
    memory_limit : int, optional
        Bound on the memory the reading takes besides the result (see
        :func:`iter_messages`, which reads a file of any size in bounded memory).

    Returns
    -------
    Feed
        One event per message; ``lines`` gives each event's line in the file.

    Raises
    ------
    FeedError
        A malformed line (wrong field count, a field that is not an exact
        number of the column's kind, a value out of its domain, a time earlier
        than the line before's), naming the file, line and field; ``partial``
        holds the events before it. A file that cannot be read (empty, damaged
        gzip, a device), naming the file.
    """
    instruments = instruments if instruments is not None else Instruments()
    chunks = iter_messages(path, symbol=symbol, date=date, instruments=instruments,
                           skip_malformed=skip_malformed, memory_limit=memory_limit)
    return read_whole(path, chunks, instruments)


@dataclass
class OrderbookFile:
    """A LOBSTER orderbook file: the book after each message.

    Attributes
    ----------
    ask_price, ask_size, bid_price, bid_size : numpy.ndarray
        ``int64`` arrays of shape (rows, levels); level 0 is the best. Empty
        levels have size 0 (and LOBSTER's placeholder prices).
    lines : numpy.ndarray
        ``int64``, the 1-based line of each row.
    records : numpy.ndarray
        ``int64``, the 0-based index of each row among the data rows (row
        ``k`` is the book after the message of record ``k``).
    path : str
    skipped_lines : list of int
    """

    ask_price: np.ndarray
    ask_size: np.ndarray
    bid_price: np.ndarray
    bid_size: np.ndarray
    lines: np.ndarray
    records: np.ndarray
    path: str
    skipped_lines: list

    @property
    def levels(self):
        return self.ask_price.shape[1]

    def __len__(self):
        return len(self.lines)


def _orderbook_names(column):
    return f"{('ask_price', 'ask_size', 'bid_price', 'bid_size')[column % 4]}_{column // 4 + 1}"


@kernel
def split_levels(rows, ask_price, ask_size, bid_price, bid_size):
    """Orderbook rows (``ask_price_1,ask_size_1,bid_price_1,bid_size_1,ask_price_2,...``)
    into an array of each column kind, one pass; returns the rows split: all of them, or
    those before the first with a negative size."""
    for row in range(rows.shape[0]):
        for level in range(ask_price.shape[1]):
            if rows[row, 4 * level + 1] < 0 or rows[row, 4 * level + 3] < 0:
                return row
            ask_price[row, level] = rows[row, 4 * level]
            ask_size[row, level] = rows[row, 4 * level + 1]
            bid_price[row, level] = rows[row, 4 * level + 2]
            bid_size[row, level] = rows[row, 4 * level + 3]
    return rows.shape[0]


def iter_orderbook(path, *, skip_malformed=False, memory_limit=None):
    """Stream a LOBSTER orderbook file as :class:`OrderbookFile` chunks, in bounded memory.

    Raises
    ------
    FeedError
        As :func:`read_orderbook`, after the chunk of the rows before it.
    """
    def width_of(found, line):
        if found % 4:
            raise FeedError(path, line, f"{found} fields: an orderbook row has 4 per level")
        return max(found, 4)

    for rows, numbers, records, skipped, problem in _iter_rows(
            path, width_of, _orderbook_names, lambda width: np.zeros(width, np.int64), skip_malformed,
            memory_limit):
        columns = [np.empty((len(rows), rows.shape[1] // 4), np.int64) for _ in range(4)]
        kept = split_levels(rows, *columns)
        if kept < len(rows):
            problem = FeedError(path, int(numbers[kept]), "negative size")
        yield OrderbookFile(*(column[:kept] for column in columns), numbers[:kept].astype(np.int64),
                            records[:kept].astype(np.int64), str(path), skipped)
        if problem is not None:
            raise problem


def read_orderbook(path, *, skip_malformed=False, memory_limit=None):
    """Read a LOBSTER orderbook file (any level count, with or without a header).

    The level count comes from the first row (4 fields a level).

    Raises
    ------
    FeedError
        A malformed row: a field count other than the first row's, a field
        that is not an integer, a negative size; ``partial`` is None (an
        orderbook is read whole). A file with no data row, or one that cannot
        be read.
    """
    chunks = list(iter_orderbook(path, skip_malformed=skip_malformed, memory_limit=memory_limit))
    return joined_orderbook(chunks, str(path), [line for chunk in chunks for line in chunk.skipped_lines])


_ORDERBOOK_COLUMNS = ("ask_price", "ask_size", "bid_price", "bid_size", "lines", "records")


def joined_orderbook(parts, path, skipped_lines):
    """One :class:`OrderbookFile` of the rows of ``parts`` (at least one), in order: the
    only part itself when there is one, not a copy."""
    if len(parts) == 1:
        return parts[0]
    return OrderbookFile(*(np.concatenate([getattr(part, name) for part in parts]) for name in _ORDERBOOK_COLUMNS),
                         path, skipped_lines)


def orderbook_rows(orderbook, keep):
    """The rows of ``orderbook`` that ``keep`` (a slice or a mask) selects."""
    return OrderbookFile(*(getattr(orderbook, name)[keep] for name in _ORDERBOOK_COLUMNS), orderbook.path, [])


class OrderbookStream:
    """The rows of a streamed orderbook file (:func:`iter_orderbook`), handed out by record
    as the message chunks come, holding only the rows not yet paired with a message.

    Keeps the row compared last too: the next comparison's window is bounded by it.
    """

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.held = []
        self.previous = None
        self.first = None
        self.last_record = -1
        self.last_line = None
        self.exhausted = False

    def _pull(self):
        chunk = next(self.chunks, None)
        if chunk is None:
            self.exhausted = True
            return
        if len(chunk):
            self.held.append(chunk)
            self.last_record, self.last_line = int(chunk.records[-1]), int(chunk.lines[-1])
            if self.first is None:
                self.first = chunk

    def first_rows(self):
        """The first chunk of rows (None for a file whose rows were all skipped)."""
        while self.first is None and not self.exhausted:
            self._pull()
        return self.first

    def upto(self, record):
        """``(rows, previous)``: the next rows with a record up to ``record``, from one chunk of
        the file at most, as one OrderbookFile whose row 0 is the row kept by
        :meth:`keep_previous` when there is one (then ``previous`` is 0, else -1).

        Its last row's record is below ``record`` only when the chunk ended there: ask again
        for the next chunk's (see :meth:`windows`).
        """
        while not self.held and not self.exhausted:
            self._pull()
        previous = 0 if self.previous is not None else -1
        taken = []
        if self.held:
            head = self.held[0]
            cut = len(head) if head.records[-1] <= record else int(np.searchsorted(head.records, record, "right"))
            taken = [orderbook_rows(head, slice(0, cut))] if cut < len(head) else [head]
            self.held = [orderbook_rows(head, slice(cut, None))] if cut < len(head) else []
        parts = ([self.previous] if self.previous is not None else []) + taken
        if not parts:
            return orderbook_rows(self.first, slice(0, 0)), previous
        return joined_orderbook(parts, parts[-1].path, []), previous

    def windows(self, records):
        """Pair a message chunk's ``records`` with their rows, a chunk of rows at a time.

        Yields ``(start, stop, rows, previous, row_of_event)``: the messages
        ``start:stop``, the rows that hold theirs (see :meth:`upto`) and the row of each
        message up to ``stop`` (-1: none, and before ``start``), for a kernel that runs
        ``events[:stop]`` from ``start``. Call :meth:`keep_previous` after each, before the next.
        """
        start = 0
        while start < len(records):
            rows, previous = self.upto(int(records[-1]))
            stop = len(records)
            if len(rows) > previous + 1 and rows.records[-1] < records[-1] and not self.exhausted:
                stop = start + int(np.searchsorted(records[start:], rows.records[-1], "right"))
            row_of_event = rows_of_records(rows.records, records[start:stop], previous + 1)
            if start:
                row_of_event = np.concatenate([np.full(start, -1, np.int64), row_of_event])
            yield start, stop, rows, previous, row_of_event
            start = stop

    def keep_previous(self, rows, previous):
        """Keep row ``previous`` of ``rows`` (if >= 0) as the next :meth:`upto`'s row 0."""
        if previous >= 0:
            self.previous = orderbook_rows(rows, slice(previous, previous + 1))

    def drain(self):
        """Read the rest of the file (its errors and its last record), holding none of it."""
        while not self.exhausted:
            self._pull()
            self.held = []


def iter_with_orderbook(message_path, orderbook_path, *, skip_malformed=False, memory_limit=None):
    """``(chunks, rows)``: a message file's :func:`iter_messages` and its orderbook file's
    :class:`OrderbookStream` (None without one), streamed side by side, each file within half
    of ``memory_limit`` (``ringbook.engine.feeds.source.MEMORY_LIMIT`` by default)."""
    half = max(check_memory_limit(memory_limit) // 2, MIN_MEMORY_LIMIT)
    chunks = iter_messages(message_path, skip_malformed=skip_malformed, memory_limit=half)
    if orderbook_path is None:
        return chunks, None
    return chunks, OrderbookStream(iter_orderbook(orderbook_path, skip_malformed=skip_malformed, memory_limit=half))


def rows_of_records(row_records, records, first=0):
    """The row of each of ``records`` (a message's, non-decreasing) among ``row_records`` (the
    orderbook rows', increasing) from row ``first`` on; -1 where no row has it."""
    candidates = row_records[first:]
    if np.array_equal(candidates, records):   # the usual case: both files whole, row for row
        return np.arange(first, first + len(records), dtype=np.int64)
    at = np.minimum(np.searchsorted(candidates, records), max(len(candidates) - 1, 0))
    paired = candidates[at] == records if len(candidates) else np.zeros(len(records), bool)
    return np.where(paired, at + first, -1).astype(np.int64)


def levels_before_first(orderbook, first_event):
    """The levels as they stood before the first message: orderbook row 0 with it undone.

    Use them to seed a book (``ringbook.kernels.book.load_snapshot``) and then replay
    every message, the first included; row ``k`` is then the book after
    message ``k`` for every ``k``.

    Parameters
    ----------
    orderbook : OrderbookFile
    first_event : numpy.void
        The event of the first message (``read_messages(...).events[0]``).

    Returns
    -------
    bid_prices, bid_sizes, ask_prices, ask_sizes : numpy.ndarray
        ``int64``, non-empty levels only.
    """
    bids = dict(zip(orderbook.bid_price[0].tolist(), orderbook.bid_size[0].tolist()))
    asks = dict(zip(orderbook.ask_price[0].tolist(), orderbook.ask_size[0].tolist()))
    levels = bids if first_event["side"] == BID else asks
    price, quantity, kind = int(first_event["price"]), int(first_event["quantity"]), int(first_event["kind"])
    if kind == KIND_L3_ADD:
        levels[price] = levels.get(price, 0) - quantity
    elif kind in (KIND_L3_CANCEL, KIND_L3_DELETE, KIND_L3_EXECUTE):
        levels[price] = levels.get(price, 0) + quantity
    bid_prices = np.array([p for p, q in bids.items() if q > 0], np.int64)
    ask_prices = np.array([p for p, q in asks.items() if q > 0], np.int64)
    return (bid_prices, np.array([bids[p] for p in bid_prices.tolist()], np.int64),
            ask_prices, np.array([asks[p] for p in ask_prices.tolist()], np.int64))
