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

The parse is two njit passes over the lines (decimals, then values); symbols
are interned by comparing bytes with the few already seen, with no Python
loop per line.
"""

import numpy as np

from ringbook.engine.feeds.json_index import equals
from ringbook.engine.feeds.source import Feed, FeedError, line_bounds, read_buffer
from ringbook.kernels import fixed
from ringbook.kernels.events import (ASK, BID, EVENT_DTYPE, FLAG_BATCH_END, FLAG_SNAPSHOT, KIND_L2_SET,
                                     KIND_SNAPSHOT_BEGIN, KIND_SNAPSHOT_END, Instruments)
from ringbook.kernels.jit_options import kernel
from ringbook.kernels.status import FIELD_COUNT, INVALID, OK, OUT_OF_RANGE

HEADER = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"
FIELDS = tuple(HEADER.split(","))
N_FIELDS = len(FIELDS)
F_EXCHANGE, F_SYMBOL, F_TIMESTAMP, F_LOCAL, F_SNAPSHOT, F_SIDE, F_PRICE, F_AMOUNT = range(N_FIELDS)
#: Most distinct symbols one file may hold.
MAX_SYMBOLS = 4096

_COMMA = 44
_DOT = 46
_TRUE = np.frombuffer(b"true", np.uint8)
_FALSE = np.frombuffer(b"false", np.uint8)
_BID = np.frombuffer(b"bid", np.uint8)
_ASK = np.frombuffer(b"ask", np.uint8)
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


@kernel
def _decimals(buffer, start, stop):
    for position in range(start, stop):
        if buffer[position] == _DOT:
            return stop - position - 1
    return 0


@kernel
def scan_decimals(buffer, starts, stops):
    """The most decimals of the price and the amount fields over all lines."""
    field_starts = np.zeros(N_FIELDS, np.int64)
    field_stops = np.zeros(N_FIELDS, np.int64)
    price_decimals = 0
    amount_decimals = 0
    for line in range(starts.shape[0]):
        if _split(buffer, starts[line], stops[line], field_starts, field_stops) != N_FIELDS:
            continue
        price_decimals = max(price_decimals, _decimals(buffer, field_starts[F_PRICE], field_stops[F_PRICE]))
        amount_decimals = max(amount_decimals, _decimals(buffer, field_starts[F_AMOUNT], field_stops[F_AMOUNT]))
    return price_decimals, amount_decimals


@kernel
def _same_bytes(buffer, start, stop, other_start, other_stop):
    if stop - start != other_stop - other_start:
        return False
    for k in range(stop - start):
        if buffer[start + k] != buffer[other_start + k]:
            return False
    return True


@kernel
def parse_rows(buffer, starts, stops, first, price_scale, size_scale, symbol_starts, symbol_stops,
               n_symbols, times, local_times, snapshot, sides, prices, amounts, symbols):
    """Parse lines ``first..`` into the value arrays (row ``i`` from line ``i``).

    Symbols are interned as byte ranges in ``symbol_starts``/``symbol_stops``
    (``n_symbols`` known so far).

    Returns
    -------
    stopped_at, status, field, n_symbols : int64
        The index of the first bad line (the line count when all are good), its
        status (``OK``, ``FIELD_COUNT``, a :mod:`ringbook.kernels.fixed` status,
        ``INVALID`` or ``OUT_OF_RANGE``), the bad field (-1: none) and the
        symbols interned.
    """
    field_starts = np.zeros(N_FIELDS, np.int64)
    field_stops = np.zeros(N_FIELDS, np.int64)
    last_symbol = -1
    for line in range(first, starts.shape[0]):
        if _split(buffer, starts[line], stops[line], field_starts, field_stops) != N_FIELDS:
            return np.int64(line), np.int64(FIELD_COUNT), np.int64(-1), np.int64(n_symbols)
        # The symbol: most rows repeat the previous row's.
        start, stop = field_starts[F_SYMBOL], field_stops[F_SYMBOL]
        if stop == start:
            return np.int64(line), np.int64(INVALID), np.int64(F_SYMBOL), np.int64(n_symbols)
        symbol = -1
        if last_symbol >= 0 and _same_bytes(buffer, start, stop, symbol_starts[last_symbol],
                                            symbol_stops[last_symbol]):
            symbol = last_symbol
        else:
            for known in range(n_symbols):
                if _same_bytes(buffer, start, stop, symbol_starts[known], symbol_stops[known]):
                    symbol = known
                    break
            if symbol < 0:
                if n_symbols >= symbol_starts.shape[0]:
                    return np.int64(line), np.int64(OUT_OF_RANGE), np.int64(F_SYMBOL), np.int64(n_symbols)
                symbol = n_symbols
                symbol_starts[symbol] = start
                symbol_stops[symbol] = stop
                n_symbols += 1
        last_symbol = symbol
        symbols[line] = symbol
        for column in (F_TIMESTAMP, F_LOCAL):
            value, status = fixed.parse_decimal_bytes(buffer, field_starts[column], field_stops[column], 0)
            if status != OK:
                return np.int64(line), status, np.int64(column), np.int64(n_symbols)
            if value < 0 or value > _US_MAX:
                return np.int64(line), np.int64(OUT_OF_RANGE), np.int64(column), np.int64(n_symbols)
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
            return np.int64(line), np.int64(INVALID), np.int64(F_SNAPSHOT), np.int64(n_symbols)
        start, stop = field_starts[F_SIDE], field_stops[F_SIDE]
        if equals(buffer, start, stop, _BID):
            sides[line] = BID
        elif equals(buffer, start, stop, _ASK):
            sides[line] = ASK
        else:
            return np.int64(line), np.int64(INVALID), np.int64(F_SIDE), np.int64(n_symbols)
        value, status = fixed.parse_decimal_bytes(buffer, field_starts[F_PRICE], field_stops[F_PRICE],
                                                  price_scale)
        if status != OK:
            return np.int64(line), status, np.int64(F_PRICE), np.int64(n_symbols)
        prices[line] = value
        value, status = fixed.parse_decimal_bytes(buffer, field_starts[F_AMOUNT], field_stops[F_AMOUNT],
                                                  size_scale)
        if status != OK:
            return np.int64(line), status, np.int64(F_AMOUNT), np.int64(n_symbols)
        if value < 0:
            return np.int64(line), np.int64(OUT_OF_RANGE), np.int64(F_AMOUNT), np.int64(n_symbols)
        amounts[line] = value
    return np.int64(starts.shape[0]), np.int64(OK), np.int64(-1), np.int64(n_symbols)


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


def _events(rows, symbol_ids):
    """Events from parsed rows (a dict of equal-length arrays); ``(events, lines)``."""
    count = len(rows["times"])
    symbols = symbol_ids[rows["symbols"]] if count else np.zeros(0, np.int32)
    snapshot = rows["snapshot"]
    # Per symbol, whether the previous/next row of the same symbol is a snapshot row.
    previous_snapshot = np.zeros(count, bool)
    next_snapshot = np.zeros(count, bool)
    previous_same = np.zeros(count, bool)  # previous row of the symbol is the same message
    for symbol in np.unique(symbols):
        index = np.flatnonzero(symbols == symbol)
        previous_snapshot[index[1:]] = snapshot[index[:-1]]
        next_snapshot[index[:-1]] = snapshot[index[1:]]
        same = ((rows["times"][index[1:]] == rows["times"][index[:-1]])
                & (rows["local_times"][index[1:]] == rows["local_times"][index[:-1]])
                & (snapshot[index[1:]] == snapshot[index[:-1]]))
        previous_same[index[1:]] = same
    run_starts = snapshot & ~previous_snapshot
    run_ends = snapshot & ~next_snapshot
    # A message ends where the symbol's next row starts another one.
    batch_end = np.ones(count, bool)
    for symbol in np.unique(symbols):
        index = np.flatnonzero(symbols == symbol)
        batch_end[index[:-1]] = ~previous_same[index[1:]]
    # Room for a BEGIN before each run and an END after it.
    position = np.arange(count) + np.cumsum(run_starts) + np.cumsum(run_ends) - run_ends
    events = np.zeros(count + int(run_starts.sum()) + int(run_ends.sum()), EVENT_DTYPE)
    lines = np.zeros(len(events), np.int64)
    events["exchange_ns"][position] = rows["times"]
    events["local_ns"][position] = rows["local_times"]
    events["price"][position] = rows["prices"]
    events["quantity"][position] = rows["amounts"]
    events["side"][position] = rows["sides"]
    events["symbol"][position] = symbols
    events["kind"][position] = KIND_L2_SET
    events["flags"][position] = np.where(snapshot, FLAG_SNAPSHOT, np.where(batch_end, FLAG_BATCH_END, 0))
    lines[position] = rows["lines"]
    for mask, offset, kind, flags in ((run_starts, -1, KIND_SNAPSHOT_BEGIN, FLAG_SNAPSHOT),
                                      (run_ends, 1, KIND_SNAPSHOT_END, FLAG_SNAPSHOT | FLAG_BATCH_END)):
        source = np.flatnonzero(mask)
        target = position[source] + offset
        events["exchange_ns"][target] = rows["times"][source]
        events["local_ns"][target] = rows["local_times"][source]
        events["symbol"][target] = symbols[source]
        events["kind"][target] = kind
        events["flags"][target] = flags
        lines[target] = rows["lines"][source]
    return events, lines


def exchange_of(path):
    """The ``exchange`` field of the file's first data row ("" when it has none)."""
    buffer = read_buffer(path)
    starts, stops, _ = line_bounds(buffer)
    if len(starts) < 2:
        return ""
    return bytes(buffer[starts[1]:stops[1]]).split(b",", 1)[0].decode(errors="replace")


def read_incremental(path, *, instruments=None, price_scale=None, size_scale=None, skip_malformed=False):
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

    Returns
    -------
    Feed

    Raises
    ------
    FeedError
        A header other than tardis's, or a malformed line, naming the file, the
        line and the field; ``partial`` holds the events of the lines before it.
    """
    buffer = read_buffer(path)
    starts, stops, numbers = line_bounds(buffer)
    if len(starts) == 0 or bytes(buffer[starts[0]:stops[0]]).decode(errors="replace") != HEADER:
        raise FeedError(path, int(numbers[0]) if len(numbers) else 1,
                        f"not a tardis incremental_book_L2 header (expected {HEADER!r})")
    starts, stops, numbers = starts[1:], stops[1:], numbers[1:]
    found_price, found_size = scan_decimals(buffer, starts, stops)
    price_scale = min(int(found_price), fixed.MAX_SCALE) if price_scale is None else price_scale
    size_scale = min(int(found_size), fixed.MAX_SCALE) if size_scale is None else size_scale
    count = len(starts)
    rows = {"times": np.zeros(count, np.int64), "local_times": np.zeros(count, np.int64),
            "snapshot": np.zeros(count, bool), "sides": np.zeros(count, np.int8),
            "prices": np.zeros(count, np.int64), "amounts": np.zeros(count, np.int64),
            "symbols": np.zeros(count, np.int64)}
    symbol_starts = np.zeros(MAX_SYMBOLS, np.int64)
    symbol_stops = np.zeros(MAX_SYMBOLS, np.int64)
    good = np.ones(count, bool)
    skipped, problem = [], None
    first, n_symbols = 0, 0
    while True:
        stopped_at, status, column, n_symbols = parse_rows(
            buffer, starts, stops, first, price_scale, size_scale, symbol_starts, symbol_stops, n_symbols,
            rows["times"], rows["local_times"], rows["snapshot"], rows["sides"], rows["prices"],
            rows["amounts"], rows["symbols"])
        if status == OK:
            break
        field = FIELDS[column] if column >= 0 else None
        problem = FeedError(path, int(numbers[stopped_at]), _reason(status, int(column)), field)
        if not skip_malformed:
            good[stopped_at:] = False
            break
        skipped.append(int(numbers[stopped_at]))
        good[stopped_at] = False
        problem = None
        first = stopped_at + 1
    instruments = instruments if instruments is not None else Instruments()
    symbol_ids = np.array([instruments.intern(bytes(buffer[symbol_starts[k]:symbol_stops[k]]).decode(),
                                              price_scale, size_scale) for k in range(n_symbols)] or [0],
                          np.int32)
    kept = {name: values[good] for name, values in rows.items()}
    kept["lines"] = numbers[good].astype(np.int64)
    events, lines = _events(kept, symbol_ids)
    feed = Feed(events, lines, instruments, str(path), skipped)
    if problem is not None:
        problem.partial = feed
        raise problem
    return feed
