"""tardis.dev ``incremental_book_L2`` CSV files (plain or gzip).

Header and one level change a row::

    exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount

``timestamp`` (the exchange's) and ``local_timestamp`` are µs since the epoch;
``side`` is ``bid`` or ``ask``; ``amount`` is the level's new total (0 deletes
it). Each row becomes one ``KIND_L2_SET`` event (``exchange_ns``/``local_ns`` in
ns, ``sequence`` 0: tardis has no update ids). Rows of one symbol that share
``timestamp``, ``local_timestamp`` and ``is_snapshot`` are one exchange message:
the last carries ``FLAG_BATCH_END``.

Snapshots, as tardis documents them: a run of ``is_snapshot=true`` rows of a
symbol (the first rows of the file, or rows that follow incremental rows)
starts a new snapshot: the book is cleared, then loaded. The run becomes
``KIND_SNAPSHOT_BEGIN``, its rows with ``FLAG_SNAPSHOT``, then
``KIND_SNAPSHOT_END`` with ``FLAG_SNAPSHOT | FLAG_BATCH_END``.

Scales: a file does not say its instruments' precision, so prices and amounts
are read at the most decimals any row of the file has (each exactly, never
through float), unless ``price_scale``/``size_scale`` are given.

The file is read as a stream of blocks (:func:`ringbook.engine.feeds.source.iter_blocks`),
plain or gzip, so memory stays bounded whatever its size. The parse is two njit
passes over the lines (decimals, then values). A stream of a file larger than a block
reads it twice unless the scales are given, or once with ``first_block_scales``, which
starts over only where a later block shows more decimals than the first (files rarely
do; :func:`read_incremental` and a snapshot shard read that way); symbols are interned by comparing bytes with
the few already seen, with no Python loop per line.
"""

import contextlib
import os
import stat

import numpy as np

from ringbook.engine.feeds.json_index import equals
from ringbook.engine.feeds.source import (MIN_MEMORY_LIMIT, Feed, FeedError, check_memory_limit, iter_blocks,
                                          read_whole)
from ringbook.kernels import fixed
from ringbook.kernels.events import (ASK, BID, EVENT_DTYPE, FLAG_BATCH_END, FLAG_SNAPSHOT, KIND_L2_SET,
                                     KIND_SNAPSHOT_BEGIN, KIND_SNAPSHOT_END, Instruments, put_event)
from ringbook.kernels.borrow import borrow
from ringbook.kernels.jit_options import kernel, llvm_inline_kernel
from ringbook.kernels.status import FIELD_COUNT, INVALID, OK, OUT_OF_RANGE

HEADER = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"
FIELDS = tuple(HEADER.split(","))
N_FIELDS = len(FIELDS)
F_EXCHANGE, F_SYMBOL, F_TIMESTAMP, F_LOCAL, F_SNAPSHOT, F_SIDE, F_PRICE, F_AMOUNT = range(N_FIELDS)
#: Most distinct symbols one file may hold.
MAX_SYMBOLS = 4096
#: :func:`parse_rows` status (an ordinary outcome): no room for a new symbol's name; grow and resume.
NAMES_FULL = 1

_COMMA = 44
_DOT = 46
_TRUE = np.frombuffer(b"true", np.uint8)
_FALSE = np.frombuffer(b"false", np.uint8)
_BID = np.frombuffer(b"bid", np.uint8)
_ASK = np.frombuffer(b"ask", np.uint8)
_TRUE_COMMA, _FALSE_COMMA, _BID_COMMA, _ASK_COMMA = (np.frombuffer(text, np.uint8)
                                                     for text in (b"true,", b"false,", b"bid,", b"ask,"))
_US_MAX = np.iinfo(np.int64).max // 1000


@kernel
def _split(buffer, start, stop, field_starts, field_stops):
    """Field bounds of one line; the number of fields found (stops counting past N_FIELDS)."""
    count = 0
    field_start = start
    for position in range(start, stop + 1):
        if position == stop or buffer[position] == _COMMA:
            if count < N_FIELDS:
                field_starts[count] = field_start
                field_stops[count] = position
            count += 1
            if count > N_FIELDS:
                return count
            field_start = position + 1
    return count


@llvm_inline_kernel
def _decimals(buffer, start, stop):
    for position in range(start, stop):
        if buffer[position] == _DOT:
            return stop - position - 1
    return 0


@llvm_inline_kernel
def _after_last_comma(buffer, start, stop):
    """Where the last field of ``buffer[start:stop]`` starts."""
    position = stop
    while position > start and buffer[position - 1] != _COMMA:
        position -= 1
    return position


@kernel
def scan_decimals(buffer, starts, stops):
    """The most decimals of the price and the amount fields over all lines (of 8 fields)."""
    buffer = borrow(buffer)     # the caller's reference keeps it alive: no counting in each line's calls
    price_decimals = 0
    amount_decimals = 0
    for line in range(starts.shape[0]):
        start, stop = starts[line], stops[line]
        commas = 0
        for position in range(start, stop):     # no branch: a vector loop
            commas += buffer[position] == _COMMA
        if commas != N_FIELDS - 1:
            continue
        amount_start = _after_last_comma(buffer, start, stop)
        price_start = _after_last_comma(buffer, start, amount_start - 1)
        price_decimals = max(price_decimals, _decimals(buffer, price_start, amount_start - 1))
        amount_decimals = max(amount_decimals, _decimals(buffer, amount_start, stop))
    return price_decimals, amount_decimals


@llvm_inline_kernel
def _same_name(buffer, start, stop, names, name_start, name_stop):
    if stop - start != name_stop - name_start:
        return False
    for k in range(stop - start):
        if buffer[start + k] != names[name_start + k]:
            return False
    return True


@llvm_inline_kernel
def _symbol_of(buffer, start, stop, names, name_starts, name_stops, n_symbols, names_used, last_symbol):
    """The id of the symbol ``buffer[start:stop]``, interned in ``names`` if new (see :func:`parse_rows`):
    ``(symbol, status, n_symbols, names_used)``, status ``OK``, ``NAMES_FULL`` or ``OUT_OF_RANGE``."""
    # Most rows repeat the previous row's symbol.
    if last_symbol >= 0 and _same_name(buffer, start, stop, names, name_starts[last_symbol],
                                       name_stops[last_symbol]):
        return last_symbol, OK, n_symbols, names_used
    for known in range(n_symbols):
        if _same_name(buffer, start, stop, names, name_starts[known], name_stops[known]):
            return known, OK, n_symbols, names_used
    if n_symbols >= name_starts.shape[0]:
        return -1, OUT_OF_RANGE, n_symbols, names_used
    if names_used + stop - start > names.shape[0]:
        return -1, NAMES_FULL, n_symbols, names_used
    name_starts[n_symbols] = names_used
    for k in range(stop - start):
        names[names_used + k] = buffer[start + k]
    name_stops[n_symbols] = names_used + stop - start
    return n_symbols, OK, n_symbols + 1, names_used + stop - start


@llvm_inline_kernel
def _comma_at_or_after(buffer, position, stop):
    while position < stop and buffer[position] != _COMMA:
        position += 1
    return position


@llvm_inline_kernel
def _starts_with(buffer, position, stop, pattern):
    """Whether ``buffer[position:stop]`` begins with ``pattern``."""
    return equals(buffer, position, min(position + pattern.shape[0], stop), pattern)


@llvm_inline_kernel
def _usual_row(buffer, start, stop, price_scale, size_scale):
    """A well-formed row in one pass, each field parsed where it is found:
    ``(ok, symbol_start, symbol_stop, timestamp_us, local_us, snapshot, side, price, amount)``.

    Not ``ok`` for any other row: :func:`parse_rows` then splits it into its fields
    and names what is wrong, in the order it always has.
    """
    no = (False, np.int64(0), np.int64(0), np.int64(0), np.int64(0), False, np.int64(0), np.int64(0),
          np.int64(0))
    symbol_start = _comma_at_or_after(buffer, start, stop) + 1
    symbol_stop = _comma_at_or_after(buffer, symbol_start, stop)
    if symbol_stop >= stop or symbol_stop == symbol_start:
        return no
    # A field that ends before ``stop`` ends at a comma.
    time, status, end = fixed.parse_field(buffer, symbol_stop + 1, stop, 0, _COMMA)
    if status != OK or end >= stop or time < 0 or time > _US_MAX:
        return no
    local, status, end = fixed.parse_field(buffer, end + 1, stop, 0, _COMMA)
    if status != OK or end >= stop or local < 0 or local > _US_MAX:
        return no
    position = end + 1
    snapshot = _starts_with(buffer, position, stop, _TRUE_COMMA)
    if snapshot:
        position += _TRUE_COMMA.shape[0]
    elif _starts_with(buffer, position, stop, _FALSE_COMMA):
        position += _FALSE_COMMA.shape[0]
    else:
        return no
    if _starts_with(buffer, position, stop, _BID_COMMA):
        side = np.int64(BID)
    elif _starts_with(buffer, position, stop, _ASK_COMMA):
        side = np.int64(ASK)
    else:
        return no
    price, status, end = fixed.parse_field(buffer, position + _BID_COMMA.shape[0], stop, price_scale, _COMMA)
    if status != OK or end >= stop:
        return no
    amount, status, end = fixed.parse_field(buffer, end + 1, stop, size_scale, _COMMA)
    if status != OK or end != stop or amount < 0:
        return no
    return True, symbol_start, symbol_stop, time, local, snapshot, side, price, amount


@kernel
def parse_rows(buffer, starts, stops, first, price_scale, size_scale, names, name_starts, name_stops,
               n_symbols, names_used, times, local_times, snapshot, sides, prices, amounts, symbols):
    """Parse lines ``first..`` into the value arrays (row ``i`` from line ``i``).

    Symbols are interned as byte strings copied into ``names``: symbol ``k`` is
    ``names[name_starts[k]:name_stops[k]]`` (``n_symbols`` known so far, the
    first ``names_used`` bytes taken), so they outlive the block.

    Returns
    -------
    stopped_at, status, field, n_symbols, names_used : int64
        The index of the first line not parsed (the line count when all are),
        its status (``OK``; :data:`NAMES_FULL` when ``names`` has no room for a
        new symbol: grow it and resume there; else ``FIELD_COUNT``, a
        :mod:`ringbook.kernels.fixed` status, ``INVALID`` or ``OUT_OF_RANGE``),
        the bad field (-1: none) and the symbols and name bytes taken.
    """
    # The caller's references keep these alive: no counting in the calls each line makes.
    buffer, names, name_starts, name_stops = borrow((buffer, names, name_starts, name_stops))
    field_starts = np.zeros(N_FIELDS, np.int64)
    field_stops = np.zeros(N_FIELDS, np.int64)
    last_symbol = -1
    for line in range(first, starts.shape[0]):
        usual, start, stop, time, local, is_snapshot, side, price, amount = _usual_row(
            buffer, starts[line], stops[line], price_scale, size_scale)
        if usual:
            symbol, status, n_symbols, names_used = _symbol_of(buffer, start, stop, names, name_starts, name_stops,
                                                               n_symbols, names_used, last_symbol)
            if status != OK:
                return (np.int64(line), np.int64(status), np.int64(F_SYMBOL), np.int64(n_symbols),
                        np.int64(names_used))
            last_symbol = symbol
            symbols[line] = symbol
            times[line] = time * 1000
            local_times[line] = local * 1000
            snapshot[line] = is_snapshot
            sides[line] = side
            prices[line] = price
            amounts[line] = amount
            continue
        # Anything else, field by field: the first field that is wrong is named.
        if _split(buffer, starts[line], stops[line], field_starts, field_stops) != N_FIELDS:
            return np.int64(line), np.int64(FIELD_COUNT), np.int64(-1), np.int64(n_symbols), np.int64(names_used)
        start, stop = field_starts[F_SYMBOL], field_stops[F_SYMBOL]
        if stop == start:
            return np.int64(line), np.int64(INVALID), np.int64(F_SYMBOL), np.int64(n_symbols), np.int64(names_used)
        symbol, status, n_symbols, names_used = _symbol_of(buffer, start, stop, names, name_starts, name_stops,
                                                           n_symbols, names_used, last_symbol)
        if status != OK:
            return np.int64(line), np.int64(status), np.int64(F_SYMBOL), np.int64(n_symbols), np.int64(names_used)
        last_symbol = symbol
        symbols[line] = symbol
        for column in (F_TIMESTAMP, F_LOCAL):
            value, status = fixed.parse_decimal_bytes(buffer, field_starts[column], field_stops[column], 0)
            if status != OK:
                return np.int64(line), status, np.int64(column), np.int64(n_symbols), np.int64(names_used)
            if value < 0 or value > _US_MAX:
                return (np.int64(line), np.int64(OUT_OF_RANGE), np.int64(column), np.int64(n_symbols),
                        np.int64(names_used))
            if column == F_TIMESTAMP:
                times[line] = value * 1000
            else:
                local_times[line] = value * 1000
        start, stop = field_starts[F_SNAPSHOT], field_stops[F_SNAPSHOT]
        if equals(buffer, start, stop, _TRUE):
            snapshot[line] = True
        elif equals(buffer, start, stop, _FALSE):
            snapshot[line] = False
        else:
            return (np.int64(line), np.int64(INVALID), np.int64(F_SNAPSHOT), np.int64(n_symbols),
                    np.int64(names_used))
        start, stop = field_starts[F_SIDE], field_stops[F_SIDE]
        if equals(buffer, start, stop, _BID):
            sides[line] = BID
        elif equals(buffer, start, stop, _ASK):
            sides[line] = ASK
        else:
            return np.int64(line), np.int64(INVALID), np.int64(F_SIDE), np.int64(n_symbols), np.int64(names_used)
        value, status = fixed.parse_decimal_bytes(buffer, field_starts[F_PRICE], field_stops[F_PRICE],
                                                  price_scale)
        if status != OK:
            return np.int64(line), status, np.int64(F_PRICE), np.int64(n_symbols), np.int64(names_used)
        prices[line] = value
        value, status = fixed.parse_decimal_bytes(buffer, field_starts[F_AMOUNT], field_stops[F_AMOUNT],
                                                  size_scale)
        if status != OK:
            return np.int64(line), status, np.int64(F_AMOUNT), np.int64(n_symbols), np.int64(names_used)
        if value < 0:
            return (np.int64(line), np.int64(OUT_OF_RANGE), np.int64(F_AMOUNT), np.int64(n_symbols),
                    np.int64(names_used))
        amounts[line] = value
    return np.int64(starts.shape[0]), np.int64(OK), np.int64(-1), np.int64(n_symbols), np.int64(names_used)


_REASONS = {fixed.INVALID: "not a decimal number", fixed.TOO_PRECISE: "too many decimals",
            fixed.OVERFLOW: "out of int64 range", OUT_OF_RANGE: "out of range"}
_FIELD_REASONS = {F_SNAPSHOT: "must be true or false", F_SIDE: "must be bid or ask",
                  F_SYMBOL: "empty symbol", F_AMOUNT: None}


def _reason(status, field):
    if status == FIELD_COUNT:
        return f"expected {N_FIELDS} fields"
    if status == INVALID and _FIELD_REASONS.get(field):
        return _FIELD_REASONS[field]
    if status == OUT_OF_RANGE:
        return {F_AMOUNT: "negative amount", F_SYMBOL: f"more than {MAX_SYMBOLS} symbols"}.get(
            field, "out of range")
    return _REASONS.get(int(status), f"status {int(status)}")


_ROW_COLUMNS = (("times", np.int64), ("local_times", np.int64), ("snapshot", bool), ("sides", np.int8),
                ("prices", np.int64), ("amounts", np.int64), ("symbols", np.int64), ("lines", np.int64))


class _Messages:
    """Rows into events, a block at a time, with the result of parsing the whole file at once.

    A row's flags depend on the *next* row of its symbol (same message? does
    the snapshot run go on?), so the rows from the earliest row whose symbol has
    no later row yet are held back until one comes. To bound memory, at most
    ``max(hold, rows of the newest block)`` rows are held: a symbol silent for
    longer than that has its message (and snapshot run) taken as ended.
    """

    def __init__(self, hold):
        self.hold = hold
        self.held = {name: np.zeros(0, dtype) for name, dtype in _ROW_COLUMNS}
        # Whether the last emitted row of each symbol continues a snapshot run.
        self.in_snapshot = np.zeros(MAX_SYMBOLS, bool)

    def push(self, rows, symbol_ids, final):
        """Events and lines of the rows that can be decided (all of them when ``final``)."""
        if len(self.held["times"]):
            rows = {name: np.concatenate((self.held[name], rows[name])) for name, _ in _ROW_COLUMNS}
        count = len(rows["times"])
        local = rows["symbols"]
        # Each symbol's rows in file order (most files hold one symbol: that is the file's order).
        order = np.lexsort((np.arange(count), local)) if count and local.min() != local.max() else np.arange(count)
        same = local[order[1:]] == local[order[:-1]]
        next_row = np.full(count, -1, np.int64)
        previous_row = np.full(count, -1, np.int64)
        next_row[order[:-1][same]] = order[1:][same]
        previous_row[order[1:][same]] = order[:-1][same]
        has_next = next_row >= 0
        if final or count == 0:
            cut = count
        else:
            cut = int(np.flatnonzero(~has_next).min())
            cut = max(cut, count - max(self.hold, count - len(self.held["times"])))
        self.held = {name: values[cut:] for name, values in rows.items()}
        times, local_times, snapshot = rows["times"], rows["local_times"], rows["snapshot"]
        index = np.arange(cut)
        follower = np.where(has_next[:cut], next_row[:cut], 0)
        ahead = has_next[:cut]
        previous_snapshot = np.where(previous_row[:cut] >= 0, snapshot[np.maximum(previous_row[:cut], 0)],
                                     self.in_snapshot[local[:cut]])
        next_snapshot = ahead & snapshot[follower]
        next_same = (ahead & (times[follower] == times[:cut]) & (local_times[follower] == local_times[:cut])
                     & (snapshot[follower] == snapshot[:cut]))
        # The last emitted row of each symbol: does its run go on into the held rows?
        last = index[(next_row[:cut] >= cut) | ~ahead]
        self.in_snapshot[local[last]] = snapshot[last] & ahead[last]
        kept = {name: values[:cut] for name, values in rows.items()}
        kept["symbols"] = symbol_ids[local[:cut]] if cut else np.zeros(0, np.int32)
        return _events(kept, snapshot[:cut] & ~previous_snapshot, snapshot[:cut] & ~next_snapshot, ~next_same)


@kernel
def fill_events(times, local_times, snapshot, sides, prices, amounts, symbols, row_lines, run_starts, run_ends,
                batch_end, events, lines):
    """The events of decided rows into ``events`` (zeroed) and their lines into ``lines``: a
    ``KIND_L2_SET`` a row, a ``KIND_SNAPSHOT_BEGIN`` before each row that starts a snapshot
    run and a ``KIND_SNAPSHOT_END`` after each that ends one. Returns the events written
    (fewer than ``events`` holds only if it is too long)."""
    at = 0
    for row in range(min(times.shape[0], events.shape[0])):
        if run_starts[row]:
            put_event(events, at, KIND_SNAPSHOT_BEGIN, 0, 0, 0, 0, 0, 0, times[row], local_times[row],
                      FLAG_SNAPSHOT, symbols[row])
            lines[at] = row_lines[row]
            at += 1
        put_event(events, at, KIND_L2_SET, sides[row], prices[row], amounts[row], 0, 0, 0, times[row],
                  local_times[row], FLAG_SNAPSHOT if snapshot[row] else FLAG_BATCH_END if batch_end[row] else 0,
                  symbols[row])
        lines[at] = row_lines[row]
        at += 1
        if run_ends[row]:
            put_event(events, at, KIND_SNAPSHOT_END, 0, 0, 0, 0, 0, 0, times[row], local_times[row],
                      FLAG_SNAPSHOT | FLAG_BATCH_END, symbols[row])
            lines[at] = row_lines[row]
            at += 1
    return at


def _events(rows, run_starts, run_ends, batch_end):
    """Events from decided rows (a dict of equal-length arrays); ``(events, lines)``."""
    count = len(rows["times"]) + int(run_starts.sum()) + int(run_ends.sum())
    events = np.zeros(count, EVENT_DTYPE)
    lines = np.zeros(count, np.int64)
    written = fill_events(rows["times"], rows["local_times"], rows["snapshot"], rows["sides"], rows["prices"],
                          rows["amounts"], rows["symbols"], rows["lines"], run_starts, run_ends, batch_end,
                          events, lines)
    if written != count:
        raise RuntimeError(f"{written} events written of {count}")
    return events, lines


def exchange_of(path):
    """The ``exchange`` field of the file's first data row ("" when it has none)."""
    for block in iter_blocks(path, MIN_MEMORY_LIMIT):
        for index in range(len(block)):
            if block.numbers[index] > 1 or block.text(index) != HEADER.encode():
                return block.text(index).split(b",", 1)[0].decode(errors="replace")
    return ""


def _check_header(path, block):
    if block is None or len(block) == 0 or block.text(0).decode(errors="replace") != HEADER:
        line = int(block.numbers[0]) if block is not None and len(block) else 1
        raise FeedError(path, line, f"not a tardis incremental_book_L2 header (expected {HEADER!r})")


def _scales(path, blocks, memory_limit):
    """The most decimals of prices and amounts: over ``blocks`` when they are the whole file,
    else in a first pass over the file (a pipe cannot be read twice)."""
    if blocks[-1] is None:
        chosen = blocks[:-1]
    elif stat.S_ISREG(os.stat(path).st_mode):
        chosen = iter_blocks(path, memory_limit)
    else:
        raise FeedError(path, None, "a pipe is read once: give price_scale and size_scale to read one "
                        "larger than a block")
    price_decimals, amount_decimals = 0, 0
    for block in chosen:
        found_price, found_size = scan_decimals(block.buffer, block.starts, block.stops)
        price_decimals, amount_decimals = max(price_decimals, found_price), max(amount_decimals, found_size)
    return min(int(price_decimals), fixed.MAX_SCALE), min(int(amount_decimals), fixed.MAX_SCALE)


class MoreDecimals(Exception):
    """A stream read at its first block's scales (``first_block_scales``) reached a row with more
    decimals: what it yielded is at scales too small for the file. Read it again without."""


def iter_incremental(path, *, instruments=None, price_scale=None, size_scale=None, skip_malformed=False,
                     memory_limit=None, first_block_scales=False):
    """Read a tardis.dev ``incremental_book_L2`` file as a stream of :class:`Feed` chunks.

    Takes the arguments of :func:`read_incremental`, and:

    memory_limit : int, optional
        Bytes, see :func:`ringbook.engine.feeds.source.iter_blocks`.
    first_block_scales : bool
        Without ``price_scale`` and ``size_scale``, a file larger than a block is
        read twice: once for the scales, once for the rows. With this, a regular
        file is read once, at the scales of its first block, and a later block
        with more decimals raises :class:`MoreDecimals`: start over without it.

    Yields
    ------
    Feed
        The events of a run of blocks, in file order; all chunks share the
        instrument table. A malformed line (``skip_malformed=False``) ends the
        stream with the events before it, then raises :class:`FeedError`.
    """
    memory_limit = check_memory_limit(memory_limit)
    instruments = instruments if instruments is not None else Instruments()
    stream = iter_blocks(path, memory_limit)
    # The first two blocks: one without a second is the whole file, read once.
    blocks = [next(stream, None)]
    _check_header(path, blocks[0])
    blocks.append(next(stream, None))
    # Only a regular file can be read again from the start.
    guess = first_block_scales and blocks[-1] is not None and stat.S_ISREG(os.stat(path).st_mode)
    guess_price, guess_size = (guess and scale is None for scale in (price_scale, size_scale))
    if price_scale is None or size_scale is None:
        found_price, found_size = _scales(path, blocks[:1] + [None] if guess_price or guess_size else blocks,
                                          memory_limit)
        price_scale = found_price if price_scale is None else price_scale
        size_scale = found_size if size_scale is None else size_scale

    def all_blocks():
        yield from (block for block in blocks if block is not None)
        blocks.clear()  # so the first two go once they are parsed
        yield from stream

    names = np.zeros(1024, np.uint8)
    name_starts = np.zeros(MAX_SYMBOLS, np.int64)
    name_stops = np.zeros(MAX_SYMBOLS, np.int64)
    n_symbols, names_used, interned = 0, 0, 0
    symbol_ids = np.zeros(0, np.int32)
    messages = _Messages(hold=1024)
    for block_index, block in enumerate(all_blocks()):
        if block_index > 0 and (guess_price or guess_size):
            found_price, found_size = _scales(path, [block, None], memory_limit)
            if (guess_price and found_price > price_scale) or (guess_size and found_size > size_scale):
                raise MoreDecimals(f"{path}: a row after its first block has more decimals than any "
                                   "before it: read it again without first_block_scales")
        first_row = 1 if block_index == 0 else 0  # the header
        starts, stops, numbers = block.starts[first_row:], block.stops[first_row:], block.numbers[first_row:]
        count = len(starts)
        rows = {name: np.zeros(count, dtype) for name, dtype in _ROW_COLUMNS}
        good = np.ones(count, bool)
        skipped, problem, first = [], None, 0
        while True:
            stopped_at, status, column, n_symbols, names_used = parse_rows(
                block.buffer, starts, stops, first, price_scale, size_scale, names, name_starts, name_stops,
                n_symbols, names_used, rows["times"], rows["local_times"], rows["snapshot"], rows["sides"],
                rows["prices"], rows["amounts"], rows["symbols"])
            if status == OK:
                break
            if status == NAMES_FULL:
                names = np.concatenate((names, np.zeros(len(names), np.uint8)))
                first = stopped_at
                continue
            field = FIELDS[column] if column >= 0 else None
            problem = FeedError(path, int(numbers[stopped_at]), _reason(status, int(column)), field)
            if not skip_malformed:
                good[stopped_at:] = False
                break
            skipped.append(int(numbers[stopped_at]))
            good[stopped_at] = False
            problem = None
            first = stopped_at + 1
        if n_symbols > interned:
            symbol_ids = np.concatenate((symbol_ids, np.array(
                [instruments.intern(bytes(names[name_starts[k]:name_stops[k]]).decode(), price_scale, size_scale)
                 for k in range(interned, n_symbols)], np.int32)))
            interned = n_symbols
        rows["lines"][:] = numbers
        kept = rows if good.all() else {name: values[good] for name, values in rows.items()}
        del rows, block, starts, stops, numbers
        events, lines = messages.push(kept, symbol_ids, final=problem is not None)
        yield Feed(events, lines, instruments, str(path), skipped)
        if problem is not None:
            raise problem
    events, lines = messages.push({name: np.zeros(0, dtype) for name, dtype in _ROW_COLUMNS}, symbol_ids,
                                  final=True)
    yield Feed(events, lines, instruments, str(path))


def read_incremental(path, *, instruments=None, price_scale=None, size_scale=None, skip_malformed=False,
                     memory_limit=None):
    """Read a tardis.dev ``incremental_book_L2`` CSV file (gzip is fine) into events.

    Parameters
    ----------
    path : str or Path
    instruments : ringbook.kernels.events.Instruments, optional
        Table to intern the symbols in; a new one by default.
    price_scale, size_scale : int, optional
        Decimals of prices and amounts; by default the most any row has.
    skip_malformed : bool
        Skip malformed lines and list them in ``skipped_lines`` instead of raising.
    memory_limit : int, optional
        Bound on what the reader holds besides the events it returns (bytes;
        see :func:`ringbook.engine.feeds.source.iter_blocks`).

    Returns
    -------
    Feed

    Raises
    ------
    FeedError
        A header other than tardis's, or a malformed line, naming the file, the
        line and the field; ``partial`` holds the events of the lines before it.
    """
    if instruments is None and (price_scale is None or size_scale is None):
        # Read once, at the first block's scales: a file nearly always shows its most decimals
        # there. A later block with more starts the read over at the whole file's.
        guessed = Instruments()
        with contextlib.suppress(MoreDecimals):
            return read_whole(path, iter_incremental(path, instruments=guessed, price_scale=price_scale,
                                                     size_scale=size_scale, skip_malformed=skip_malformed,
                                                     memory_limit=memory_limit, first_block_scales=True), guessed)
    instruments = instruments if instruments is not None else Instruments()
    return read_whole(path, iter_incremental(path, instruments=instruments, price_scale=price_scale,
                                             size_scale=size_scale, skip_malformed=skip_malformed,
                                             memory_limit=memory_limit), instruments)
