"""Binance raw captures: one message a line, ``<local receive time ns> <json>``.

The JSON is a stream message, bare or wrapped as ``{"stream":...,"data":{...}}``,
or a REST depth snapshot. Four kinds become events; prices and quantities are
parsed exactly at the instrument's scales (8 and 8 by default), never through float:

``depthUpdate`` (spot ``U``/``u``, USD-M futures also ``pu``)
    One ``KIND_L2_SET`` per level, bids first (quantity 0 deletes), all with
    ``sequence = u`` and ``prev_sequence = U - 1`` (spot) or ``pu`` (futures,
    recognised by the presence of ``pu``); the last carries ``FLAG_BATCH_END``.
    A diff with no levels still carries its sequence: it becomes one
    ``KIND_SEQUENCE`` event (side 0, price and quantity 0) with
    ``FLAG_BATCH_END``, which the book checks and takes the sequence of
    without changing a level.
    ``exchange_ns`` is the event time ``E``.
REST depth snapshot (``lastUpdateId``, ``bids``, ``asks``)
    ``KIND_SNAPSHOT_BEGIN``, one ``KIND_L2_SET`` per level with
    ``FLAG_SNAPSHOT``, then ``KIND_SNAPSHOT_END`` with ``sequence =
    lastUpdateId`` and ``FLAG_SNAPSHOT | FLAG_BATCH_END``. A snapshot has no
    symbol of its own: it belongs to the file's symbol (a file that holds
    snapshots holds one symbol).
``bookTicker``
    Two ``KIND_TOP_OF_BOOK`` events, the best bid then the best ask (price and
    quantity), ``sequence = u``; the second carries ``FLAG_BATCH_END``.
    ``exchange_ns`` is ``E`` when the message has one (USD-M futures), else 0.
``trade``
    One ``KIND_TRADE``: ``order_id`` is the trade id ``t``, ``side`` the
    aggressor's (``m`` true, the buyer is the maker: ``ASK``; else ``BID``),
    ``exchange_ns`` the trade time ``T``.

Other well-formed messages are counted in ``Feed.ignored``.

Sync (``sync=True``, the default) follows Binance's procedure for a local
book, so that the events can be applied in order: diffs that arrive before the
first snapshot are held back and placed right after it; diffs already
contained in the latest snapshot (``u <= lastUpdateId``) are dropped (counted
in ``Feed.dropped``); the first diff applied after a snapshot must have
``U <= lastUpdateId + 1 <= u``, and when it does its ``prev_sequence`` becomes
``lastUpdateId``, so that a book that requires ``prev_sequence`` to equal its
own sequence accepts it; any other break in the chain is left for the book to
count as a gap. Events keep their own ``local_ns``, so a held-back diff's is
earlier than the snapshot's.

The parsing is one njit loop over the file's lines: it indexes each JSON
object's members in one pass and converts the values in place (a level list
with one :func:`ringbook.kernels.fixed.scan_decimals`); Python only interns the few
distinct symbols and orders the messages with numpy.
"""

import re

import numpy as np

from ringbook.engine.feeds.source import Feed, FeedError, line_bounds, read_buffer
from ringbook.kernels import fixed
from ringbook.kernels.events import (ASK, BID, EVENT_DTYPE, FLAG_BATCH_END, FLAG_SNAPSHOT, KIND_L2_SET,
                            KIND_SEQUENCE, KIND_SNAPSHOT_BEGIN, KIND_SNAPSHOT_END,
                            KIND_TOP_OF_BOOK, KIND_TRADE, Instruments)
from ringbook.kernels.jit_options import kernel

PRICE_SCALE = 8
SIZE_SCALE = 8

# Message kinds, per line.
MESSAGE_IGNORED = 0
MESSAGE_DIFF = 1
MESSAGE_SNAPSHOT = 2
MESSAGE_TICKER = 3
MESSAGE_TRADE = 4

# Status codes of parse_lines beyond kernels.fixed's OK..FULL.
MISSING = 10       # a required key is absent
ODD_LEVELS = 11    # a level list whose numbers do not pair up
NOT_JSON = 12      # the line is not "<ns> {...}"
OUT_OF_RANGE = 13  # a number outside what the field allows

#: Field codes reported with a status, for the error message.
FIELD_NAMES = ("local_ns", "json", "E", "U", "u", "pu", "b", "a", "lastUpdateId", "bids",
               "asks", "p", "q", "t", "T", "m", "B", "A", "s")
(_F_LOCAL, _F_JSON, _F_E, _F_FIRST, _F_LAST, _F_PREVIOUS, _F_BIDS, _F_ASKS, _F_LAST_UPDATE,
 _F_SNAPSHOT_BIDS, _F_SNAPSHOT_ASKS, _F_PRICE, _F_QUANTITY, _F_TRADE_ID, _F_TRADE_TIME,
 _F_MAKER, _F_BID_QUANTITY, _F_ASK_QUANTITY, _F_SYMBOL) = range(len(FIELD_NAMES))

_REASONS = {fixed.INVALID: "not a decimal number", fixed.TOO_PRECISE: "more decimals than the scale",
            fixed.OVERFLOW: "out of int64 range", fixed.FULL: "too many numbers",
            MISSING: "missing", ODD_LEVELS: "levels must be [price, quantity] pairs",
            NOT_JSON: "expected '<local ns> {json}'", OUT_OF_RANGE: "out of range"}


def _name(text):
    return np.frombuffer(text.encode(), np.uint8).copy()


# Member names looked up in a message, and the "e" values that classify it.
_STREAM = _name("stream")
_DATA = _name("data")
_EVENT_TYPE = _name("e")
_EVENT_TIME = _name("E")
_FIRST_ID = _name("U")
_LAST_ID = _name("u")
_PREVIOUS_ID = _name("pu")
_BIDS = _name("b")
_ASKS = _name("a")
_LAST_UPDATE_ID = _name("lastUpdateId")
_SNAPSHOT_BIDS = _name("bids")
_SNAPSHOT_ASKS = _name("asks")
_PRICE = _name("p")
_QUANTITY = _name("q")
_TRADE_ID = _name("t")
_TRADE_TIME = _name("T")
_MAKER = _name("m")
_BID_QUANTITY = _name("B")
_ASK_QUANTITY = _name("A")
_SYMBOL = _name("s")
_DEPTH_UPDATE = _name('"depthUpdate"')
_TRADE = _name('"trade"')
_BOOK_TICKER = _name('"bookTicker"')

_SYMBOL_MEMBER = re.compile(rb'"s"\s*:\s*"([^"]*)"')

#: Members indexed per object; later ones are ignored (Binance sends about 10).
MAX_MEMBERS = 32
_KEY_START, _KEY_STOP, _VALUE_START, _VALUE_STOP = range(4)

_TAB = 9
_SPACE = 32
_QUOTE = 34
_COMMA = 44
_COLON = 58
_OPEN_BRACKET = 91
_BACKSLASH = 92
_CLOSE_BRACKET = 93
_OPEN_BRACE = 123
_CLOSE_BRACE = 125
_LETTER_T = 116
_NS_PER_MS = 1_000_000
_MAX_MS = (2 ** 63 - 1) // _NS_PER_MS


@kernel
def _skip_spaces(buffer, position, stop):
    while position < stop and (buffer[position] == _SPACE or buffer[position] == _TAB):
        position += 1
    return position


@kernel
def _skip_string(buffer, position, stop):
    """Past the JSON string that starts at ``position`` (a quote); -1 if it never ends."""
    position += 1
    while position < stop:
        byte = buffer[position]
        if byte == _BACKSLASH:
            position += 2
        elif byte == _QUOTE:
            return position + 1
        else:
            position += 1
    return -1


@kernel
def _skip_value(buffer, position, stop):
    """Past the JSON value that starts at ``position``; -1 when it is malformed."""
    if position >= stop:
        return -1
    byte = buffer[position]
    if byte == _QUOTE:
        return _skip_string(buffer, position, stop)
    if byte == _OPEN_BRACKET or byte == _OPEN_BRACE:
        depth = 0
        while position < stop:
            byte = buffer[position]
            if byte == _QUOTE:
                position = _skip_string(buffer, position, stop)
                if position < 0:
                    return -1
                continue
            if byte == _OPEN_BRACKET or byte == _OPEN_BRACE:
                depth += 1
            elif byte == _CLOSE_BRACKET or byte == _CLOSE_BRACE:
                depth -= 1
                if depth == 0:
                    return position + 1
            position += 1
        return -1
    # A number, true, false or null: up to the next delimiter.
    end = position
    while (end < stop and buffer[end] != _COMMA and buffer[end] != _CLOSE_BRACE
           and buffer[end] != _CLOSE_BRACKET and buffer[end] != _SPACE):
        end += 1
    return end if end > position else -1


@kernel
def _index_object(buffer, start, stop, members):
    """Index the members of the JSON object at ``buffer[start]``, one pass.

    Row ``i`` of ``members`` receives the ``i``-th member's name range (inside
    the quotes) and value range. Returns ``(count, end)``, ``end`` past the
    closing brace; ``count`` is -1 when the object is malformed.
    """
    if start >= stop or buffer[start] != _OPEN_BRACE:
        return -1, start
    count = 0
    position = _skip_spaces(buffer, start + 1, stop)
    if position < stop and buffer[position] == _CLOSE_BRACE:
        return 0, position + 1
    while True:
        if position >= stop or buffer[position] != _QUOTE:
            return -1, position
        name_start = position + 1
        name_end = _skip_string(buffer, position, stop)
        if name_end < 0:
            return -1, position
        position = _skip_spaces(buffer, name_end, stop)
        if position >= stop or buffer[position] != _COLON:
            return -1, position
        value_start = _skip_spaces(buffer, position + 1, stop)
        value_end = _skip_value(buffer, value_start, stop)
        if value_end < 0:
            return -1, value_start
        if count < members.shape[0]:
            members[count, _KEY_START] = name_start
            members[count, _KEY_STOP] = name_end - 1
            members[count, _VALUE_START] = value_start
            members[count, _VALUE_STOP] = value_end
            count += 1
        position = _skip_spaces(buffer, value_end, stop)
        if position < stop and buffer[position] == _COMMA:
            position = _skip_spaces(buffer, position + 1, stop)
        elif position < stop and buffer[position] == _CLOSE_BRACE:
            return count, position + 1
        else:
            return -1, position


@kernel
def _equals(buffer, start, stop, pattern):
    if stop - start != pattern.shape[0]:
        return False
    for offset in range(pattern.shape[0]):
        if buffer[start + offset] != pattern[offset]:
            return False
    return True


@kernel
def _member(buffer, members, count, name):
    """The row of the member called ``name``, or -1."""
    for row in range(count):
        if _equals(buffer, members[row, _KEY_START], members[row, _KEY_STOP], name):
            return row
    return -1


@kernel
def _integer(buffer, members, count, name):
    """The unquoted integer member ``name``: (value, status)."""
    row = _member(buffer, members, count, name)
    if row < 0:
        return np.int64(0), np.int64(MISSING)
    return fixed.parse_decimal_bytes(buffer, members[row, _VALUE_START], members[row, _VALUE_STOP], 0)


@kernel
def _quoted_decimal(buffer, members, count, name, scale):
    """The member ``name``, a quoted decimal (``"1.5"``), at ``scale``: (value, status)."""
    row = _member(buffer, members, count, name)
    if row < 0:
        return np.int64(0), np.int64(MISSING)
    start = members[row, _VALUE_START]
    stop = members[row, _VALUE_STOP]
    if stop - start < 2 or buffer[start] != _QUOTE or buffer[stop - 1] != _QUOTE:
        return np.int64(0), np.int64(fixed.INVALID)
    return fixed.parse_decimal_bytes(buffer, start + 1, stop - 1, scale)


@kernel
def _quoted_decimal_in(buffer, start, stop, index, scale):
    """The ``index``-th quoted string in ``buffer[start:stop]`` as a decimal at ``scale``."""
    position = start
    seen = -1
    while position < stop:
        if buffer[position] == _QUOTE:
            end = position + 1
            while end < stop and buffer[end] != _QUOTE:
                end += 1
            if end >= stop:
                break
            seen += 1
            if seen == index:
                return fixed.parse_decimal_bytes(buffer, position + 1, end, scale)
            position = end + 1
        else:
            position += 1
    return np.int64(0), np.int64(fixed.INVALID)


@kernel
def _levels(buffer, members, count, name, price_scale, size_scale, scratch):
    """The member ``name``, ``[[price, quantity], ...]``, into ``scratch``: (pairs, status).

    Prices land in ``scratch[0::2]`` and quantities in ``scratch[1::2]``.
    """
    row = _member(buffer, members, count, name)
    if row < 0:
        return np.int64(0), np.int64(MISSING)
    start = members[row, _VALUE_START]
    stop = members[row, _VALUE_STOP]
    if buffer[start] != _OPEN_BRACKET:
        return np.int64(0), np.int64(fixed.INVALID)
    if price_scale == size_scale:
        # One scan over the whole list: brackets, quotes and commas delimit the numbers.
        numbers, status, _ = fixed.scan_decimals(buffer, start, stop, price_scale, scratch)
        if status != fixed.OK:
            return np.int64(0), status
        if numbers % 2:
            return np.int64(0), np.int64(ODD_LEVELS)
        return numbers // 2, np.int64(fixed.OK)
    # Different scales: each pair is its own "[...]" group.
    pairs = 0
    group = start + 1
    while group < stop - 1:
        if buffer[group] != _OPEN_BRACKET:
            group += 1
            continue
        close = group + 1
        while close < stop and buffer[close] != _CLOSE_BRACKET:
            close += 1
        if 2 * pairs + 2 > scratch.shape[0]:
            return np.int64(0), np.int64(fixed.FULL)
        price, status = _quoted_decimal_in(buffer, group + 1, close, 0, price_scale)
        if status != fixed.OK:
            return np.int64(0), status
        quantity, status = _quoted_decimal_in(buffer, group + 1, close, 1, size_scale)
        if status != fixed.OK:
            return np.int64(0), status
        scratch[2 * pairs] = price
        scratch[2 * pairs + 1] = quantity
        pairs += 1
        group = close + 1
    return np.int64(pairs), np.int64(fixed.OK)


@kernel
def _symbol_hash(buffer, members, count):
    """FNV-1a hash of the ``"s"`` member (0 when absent): symbols are interned in Python."""
    row = _member(buffer, members, count, _SYMBOL)
    if row < 0:
        return np.uint64(0)
    value = np.uint64(14695981039346656037)
    for position in range(members[row, _VALUE_START], members[row, _VALUE_STOP]):
        value = (value ^ np.uint64(buffer[position])) * np.uint64(1099511628211)
    return value


@kernel
def _message_kind(buffer, members, count):
    """``MESSAGE_*`` of an indexed message object."""
    row = _member(buffer, members, count, _EVENT_TYPE)
    if row >= 0:
        start = members[row, _VALUE_START]
        stop = members[row, _VALUE_STOP]
        if _equals(buffer, start, stop, _DEPTH_UPDATE):
            return MESSAGE_DIFF
        if _equals(buffer, start, stop, _TRADE):
            return MESSAGE_TRADE
        if _equals(buffer, start, stop, _BOOK_TICKER):
            return MESSAGE_TICKER
        return MESSAGE_IGNORED
    if _member(buffer, members, count, _LAST_UPDATE_ID) >= 0:
        return MESSAGE_SNAPSHOT
    # A spot bookTicker has no "e".
    if (_member(buffer, members, count, _LAST_ID) >= 0 and _member(buffer, members, count, _BID_QUANTITY) >= 0
            and _member(buffer, members, count, _ASK_QUANTITY) >= 0):
        return MESSAGE_TICKER
    return MESSAGE_IGNORED


@kernel
def _put(events, index, kind, side, price, quantity, order_id, sequence, prev_sequence,
         exchange_ns, local_ns, flags):
    event = events[index]
    event.kind = kind
    event.side = side
    event.price = price
    event.quantity = quantity
    event.order_id = order_id
    event.sequence = sequence
    event.prev_sequence = prev_sequence
    event.exchange_ns = exchange_ns
    event.local_ns = local_ns
    event.flags = flags
    event.symbol = 0


@kernel
def _put_levels(events, written, scratch, pairs, side, sequence, prev_sequence, exchange_ns,
                local_ns, flags):
    for level in range(pairs):
        _put(events, written + level, KIND_L2_SET, side, scratch[2 * level], scratch[2 * level + 1],
             0, sequence, prev_sequence, exchange_ns, local_ns, flags)
    return written + pairs


@kernel
def parse_lines(buffer, starts, stops, first, written, price_scale, size_scale, scratch, events,
                message_kind, message_start, message_count, message_first_id, message_last_id,
                message_symbol):
    """Parse capture lines ``first..`` into ``events[written..]``, one njit pass.

    Per line ``i`` it records ``message_kind[i]`` (``MESSAGE_*``), the message's
    events ``events[message_start[i]:message_start[i] + message_count[i]]``,
    its first and last update ids (``U`` and ``u``; ``lastUpdateId`` twice for a
    snapshot) and ``message_symbol[i]``, a hash of its symbol (0 if none).
    ``scratch`` must hold twice the largest level count of a line.

    Returns
    -------
    stopped_at : int64
        The index of the first malformed line, or the number of lines.
    written : int64
        Events written so far.
    status : int64
        OK, a ``ringbook.kernels.fixed`` status or ``MISSING``, ``ODD_LEVELS``,
        ``NOT_JSON``, ``OUT_OF_RANGE``; ``FULL`` when ``events`` is too small.
    field : int64
        Index in :data:`FIELD_NAMES` of the bad field (-1 if none).
    """
    capacity = events.shape[0]
    members = np.empty((MAX_MEMBERS, 4), np.int64)
    for line in range(first, starts.shape[0]):
        start = starts[line]
        stop = stops[line]
        if start < 0 or stop > buffer.shape[0] or start > stop:
            return np.int64(line), np.int64(written), np.int64(fixed.INVALID), np.int64(_F_LOCAL)
        message_kind[line] = MESSAGE_IGNORED
        message_start[line] = written
        message_count[line] = 0
        message_first_id[line] = 0
        message_last_id[line] = 0
        message_symbol[line] = 0
        space = start
        while space < stop and buffer[space] != _SPACE:
            space += 1
        local_ns, status = fixed.parse_decimal_bytes(buffer, start, space, 0)
        if status != fixed.OK:
            return np.int64(line), np.int64(written), status, np.int64(_F_LOCAL)
        body = space + 1
        count, end = _index_object(buffer, body, stop, members)
        if count < 0 or _skip_spaces(buffer, end, stop) != stop:
            return np.int64(line), np.int64(written), np.int64(NOT_JSON), np.int64(_F_JSON)
        # A combined stream wraps the message: {"stream":...,"data":{...}}.
        data = _member(buffer, members, count, _DATA)
        if data >= 0 and _member(buffer, members, count, _STREAM) >= 0:
            count, end = _index_object(buffer, members[data, _VALUE_START], stop, members)
            if count < 0:
                return np.int64(line), np.int64(written), np.int64(NOT_JSON), np.int64(_F_JSON)
        # Room for a ticker or a trade; level lists check their own.
        if written + 2 > capacity:
            return np.int64(line), np.int64(written), np.int64(fixed.FULL), np.int64(-1)

        message = _message_kind(buffer, members, count)
        if message == MESSAGE_DIFF:
            event_ms, status = _integer(buffer, members, count, _EVENT_TIME)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_E)
            first_id, status = _integer(buffer, members, count, _FIRST_ID)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_FIRST)
            last_id, status = _integer(buffer, members, count, _LAST_ID)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_LAST)
            if event_ms < 0 or event_ms > _MAX_MS or first_id < 1 or last_id < first_id:
                field = _F_E if (event_ms < 0 or event_ms > _MAX_MS) else _F_LAST
                return np.int64(line), np.int64(written), np.int64(OUT_OF_RANGE), np.int64(field)
            previous, status = _integer(buffer, members, count, _PREVIOUS_ID)
            if status == MISSING:
                previous = first_id - 1  # spot: U - 1
            elif status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_PREVIOUS)
            exchange_ns = event_ms * _NS_PER_MS
            bid_pairs, status = _levels(buffer, members, count, _BIDS, price_scale, size_scale, scratch)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_BIDS)
            begin = written
            if written + bid_pairs > capacity:
                return np.int64(line), np.int64(begin), np.int64(fixed.FULL), np.int64(-1)
            written = _put_levels(events, written, scratch, bid_pairs, BID, last_id, previous,
                                  exchange_ns, local_ns, 0)
            ask_pairs, status = _levels(buffer, members, count, _ASKS, price_scale, size_scale, scratch)
            if status != fixed.OK:
                return np.int64(line), np.int64(begin), status, np.int64(_F_ASKS)
            if written + ask_pairs + 1 > capacity:
                return np.int64(line), np.int64(begin), np.int64(fixed.FULL), np.int64(-1)
            written = _put_levels(events, written, scratch, ask_pairs, ASK, last_id, previous,
                                  exchange_ns, local_ns, 0)
            if written == begin:  # no levels: the message still carries its sequence
                _put(events, written, KIND_SEQUENCE, 0, 0, 0, 0, last_id, previous,
                     exchange_ns, local_ns, 0)
                written += 1
            events[written - 1].flags = FLAG_BATCH_END
            message_kind[line] = MESSAGE_DIFF
            message_start[line] = begin
            message_count[line] = written - begin
            message_first_id[line] = first_id
            message_last_id[line] = last_id
            message_symbol[line] = _symbol_hash(buffer, members, count)
        elif message == MESSAGE_SNAPSHOT:
            last_update, status = _integer(buffer, members, count, _LAST_UPDATE_ID)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_LAST_UPDATE)
            if last_update < 0:
                return np.int64(line), np.int64(written), np.int64(OUT_OF_RANGE), np.int64(_F_LAST_UPDATE)
            event_ms, status = _integer(buffer, members, count, _EVENT_TIME)
            if status == MISSING:
                event_ms = 0
            elif status != fixed.OK or event_ms < 0 or event_ms > _MAX_MS:
                return np.int64(line), np.int64(written), np.int64(OUT_OF_RANGE), np.int64(_F_E)
            exchange_ns = event_ms * _NS_PER_MS
            begin = written
            _put(events, written, KIND_SNAPSHOT_BEGIN, 0, 0, 0, 0, 0, 0, exchange_ns, local_ns,
                 FLAG_SNAPSHOT)
            written += 1
            pairs, status = _levels(buffer, members, count, _SNAPSHOT_BIDS, price_scale, size_scale, scratch)
            if status != fixed.OK:
                return np.int64(line), np.int64(begin), status, np.int64(_F_SNAPSHOT_BIDS)
            if written + pairs > capacity:
                return np.int64(line), np.int64(begin), np.int64(fixed.FULL), np.int64(-1)
            written = _put_levels(events, written, scratch, pairs, BID, 0, 0, exchange_ns, local_ns,
                                  FLAG_SNAPSHOT)
            pairs, status = _levels(buffer, members, count, _SNAPSHOT_ASKS, price_scale, size_scale, scratch)
            if status != fixed.OK:
                return np.int64(line), np.int64(begin), status, np.int64(_F_SNAPSHOT_ASKS)
            if written + pairs + 1 > capacity:
                return np.int64(line), np.int64(begin), np.int64(fixed.FULL), np.int64(-1)
            written = _put_levels(events, written, scratch, pairs, ASK, 0, 0, exchange_ns, local_ns,
                                  FLAG_SNAPSHOT)
            _put(events, written, KIND_SNAPSHOT_END, 0, 0, 0, 0, last_update, 0, exchange_ns,
                 local_ns, FLAG_SNAPSHOT | FLAG_BATCH_END)
            written += 1
            message_kind[line] = MESSAGE_SNAPSHOT
            message_start[line] = begin
            message_count[line] = written - begin
            message_first_id[line] = last_update
            message_last_id[line] = last_update
        elif message == MESSAGE_TRADE:
            trade_ms, status = _integer(buffer, members, count, _TRADE_TIME)
            if status != fixed.OK or trade_ms < 0 or trade_ms > _MAX_MS:
                return np.int64(line), np.int64(written), np.int64(
                    status if status != fixed.OK else OUT_OF_RANGE), np.int64(_F_TRADE_TIME)
            trade_id, status = _integer(buffer, members, count, _TRADE_ID)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_TRADE_ID)
            price, status = _quoted_decimal(buffer, members, count, _PRICE, price_scale)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_PRICE)
            quantity, status = _quoted_decimal(buffer, members, count, _QUANTITY, size_scale)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_QUANTITY)
            maker = _member(buffer, members, count, _MAKER)
            if maker < 0:
                return np.int64(line), np.int64(written), np.int64(MISSING), np.int64(_F_MAKER)
            # "m": true means the buyer is the maker, so the aggressor sold.
            side = ASK if buffer[members[maker, _VALUE_START]] == _LETTER_T else BID
            _put(events, written, KIND_TRADE, side, price, quantity, trade_id, 0, 0,
                 trade_ms * _NS_PER_MS, local_ns, FLAG_BATCH_END)
            message_kind[line] = MESSAGE_TRADE
            message_start[line] = written
            message_count[line] = 1
            message_symbol[line] = _symbol_hash(buffer, members, count)
            written += 1
        elif message == MESSAGE_TICKER:
            last_id, status = _integer(buffer, members, count, _LAST_ID)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_LAST)
            event_ms, status = _integer(buffer, members, count, _EVENT_TIME)
            if status == MISSING:
                event_ms = 0  # spot bookTicker carries no event time
            elif status != fixed.OK or event_ms < 0 or event_ms > _MAX_MS:
                return np.int64(line), np.int64(written), np.int64(OUT_OF_RANGE), np.int64(_F_E)
            bid_price, status = _quoted_decimal(buffer, members, count, _BIDS, price_scale)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_BIDS)
            bid_quantity, status = _quoted_decimal(buffer, members, count, _BID_QUANTITY, size_scale)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_BID_QUANTITY)
            ask_price, status = _quoted_decimal(buffer, members, count, _ASKS, price_scale)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_ASKS)
            ask_quantity, status = _quoted_decimal(buffer, members, count, _ASK_QUANTITY, size_scale)
            if status != fixed.OK:
                return np.int64(line), np.int64(written), status, np.int64(_F_ASK_QUANTITY)
            exchange_ns = event_ms * _NS_PER_MS
            _put(events, written, KIND_TOP_OF_BOOK, BID, bid_price, bid_quantity, 0, last_id, 0,
                 exchange_ns, local_ns, 0)
            _put(events, written + 1, KIND_TOP_OF_BOOK, ASK, ask_price, ask_quantity, 0, last_id, 0,
                 exchange_ns, local_ns, FLAG_BATCH_END)
            message_kind[line] = MESSAGE_TICKER
            message_start[line] = written
            message_count[line] = 2
            message_first_id[line] = last_id
            message_last_id[line] = last_id
            message_symbol[line] = _symbol_hash(buffer, members, count)
            written += 2
    return np.int64(starts.shape[0]), np.int64(written), np.int64(fixed.OK), np.int64(-1)


def _symbol_name(buffer, start, stop):
    """The ``"s"`` value of one line (Python: once per distinct symbol)."""
    match = _SYMBOL_MEMBER.search(bytes(buffer[start:stop]))
    return match[1].decode() if match else None


def _sync_order(kind, first_id, last_id):
    """Message order and stale diffs under Binance's sync procedure.

    Returns
    -------
    order : numpy.ndarray
        Indices of the messages to keep, in the order to apply them.
    synced_first : numpy.ndarray
        Indices of the first diff applied after each snapshot, when it
        overlaps the snapshot as the procedure requires.
    synced_id : numpy.ndarray
        The ``lastUpdateId`` of the snapshot each of those follows.
    dropped : int
        Diffs dropped as already contained in their snapshot.
    """
    count = len(kind)
    snapshots = np.flatnonzero(kind == MESSAGE_SNAPSHOT)
    position = np.arange(count)
    if len(snapshots) == 0:
        keep = np.flatnonzero(kind != MESSAGE_IGNORED)
        return keep, np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    diffs = kind == MESSAGE_DIFF
    # A diff before the first snapshot is held back and applied right after it.
    held = diffs & (position < snapshots[0])
    sort_key = 2 * position
    sort_key[held] = 2 * snapshots[0] + 1
    governing = np.searchsorted(snapshots, position, side="right") - 1
    governing[held] = 0
    snapshot_id = np.where(governing >= 0, last_id[snapshots[np.maximum(governing, 0)]], 0)
    stale = diffs & (governing >= 0) & (last_id <= snapshot_id)
    keep = (kind != MESSAGE_IGNORED) & ~stale
    order = np.flatnonzero(keep)
    order = order[np.argsort(sort_key[order], kind="stable")]
    # The first kept diff governed by each snapshot: it must overlap lastUpdateId + 1.
    kept_diffs = order[diffs[order]]
    firsts = kept_diffs[np.unique(governing[kept_diffs], return_index=True)[1]]
    firsts = firsts[governing[firsts] >= 0]
    overlaps = (first_id[firsts] <= snapshot_id[firsts] + 1) & (snapshot_id[firsts] + 1 <= last_id[firsts])
    return order, firsts[overlaps], snapshot_id[firsts[overlaps]], int(np.count_nonzero(stale))


def _parse_ticks(ticks, price_scale):
    """``{name: tick}`` in fixed point at ``price_scale``; ValueError naming a bad one."""
    tick_of = {}
    for name, text in ticks.items():
        try:
            tick = fixed.parse_decimal(text, price_scale)
        except (ValueError, OverflowError) as error:
            raise ValueError(f"ticks[{name!r}]: {error}") from None
        if tick <= 0:
            raise ValueError(f"ticks[{name!r}]: a tick must be positive, got {text!r}")
        tick_of[name] = tick
    return tick_of


def read_capture(path, *, sync=True, instruments=None, symbol=None, price_scale=PRICE_SCALE,
                 size_scale=SIZE_SCALE, ticks=None, skip_malformed=False):
    """Read a Binance capture (``<local ns> <json>`` lines; gzip is fine) into events.

    Parameters
    ----------
    path : str or Path
    sync : bool
        Order the messages by Binance's sync procedure (see the module
        docstring); False keeps the file's order and every diff.
    instruments : ringbook.kernels.events.Instruments, optional
        Table to intern the symbols in; a new one by default.
    symbol : str, optional
        The symbol of lines that carry none (REST snapshots); by default the
        file's only symbol.
    price_scale, size_scale : int
        Decimals of prices and quantities (8: Binance's own precision).
    ticks : dict, optional
        Tick size of each symbol as a decimal string, e.g. ``{"BTCUSDT": "0.01"}``
        (``tickSize`` of the ``PRICE_FILTER`` in Binance's ``exchangeInfo``),
        recorded in the instrument table for the book's ladder; a capture does
        not carry it. A symbol without one gets 1 (any tick keeps the book
        exact; :func:`ringbook.engine.check.price_ticks` infers one from the prices).
    skip_malformed : bool
        Skip malformed lines and list them in ``skipped_lines`` instead of raising.

    Returns
    -------
    Feed

    Raises
    ------
    FeedError
        A malformed line, naming the file, line and field; ``partial`` holds
        the events of the lines before it (in file order).
    """
    instruments = instruments if instruments is not None else Instruments()
    tick_of = _parse_ticks(ticks or {}, price_scale)
    buffer = read_buffer(path)
    starts, stops, numbers = line_bounds(buffer)
    lines = len(starts)
    longest = int((stops - starts).max()) if lines else 0
    scratch = np.zeros(longest // 2 + 2, np.int64)
    capacity = int(np.count_nonzero(buffer == _OPEN_BRACKET)) + 2 * lines + 2
    events = np.zeros(capacity, EVENT_DTYPE)
    kind = np.zeros(lines, np.int64)
    message_start = np.zeros(lines, np.int64)
    message_count = np.zeros(lines, np.int64)
    first_id = np.zeros(lines, np.int64)
    last_id = np.zeros(lines, np.int64)
    symbol_hash = np.zeros(lines, np.uint64)
    skipped = []
    first = written = 0
    problem = None
    while True:
        stopped_at, written, status, field = parse_lines(
            buffer, starts, stops, first, written, price_scale, size_scale, scratch, events, kind,
            message_start, message_count, first_id, last_id, symbol_hash)
        if status == fixed.OK:
            break
        kind[stopped_at] = MESSAGE_IGNORED
        message_count[stopped_at] = 0
        reason = _REASONS.get(int(status), f"status {status}")
        field_name = FIELD_NAMES[field] if field >= 0 else None
        if not skip_malformed:
            problem = FeedError(path, int(numbers[stopped_at]), reason, field_name)
            lines = int(stopped_at)
            kind, message_start, message_count = kind[:lines], message_start[:lines], message_count[:lines]
            first_id, last_id, symbol_hash = first_id[:lines], last_id[:lines], symbol_hash[:lines]
            numbers = numbers[:lines]
            break
        skipped.append(int(numbers[stopped_at]))
        first = stopped_at + 1

    # Intern the symbols: one Python look-up per distinct symbol, not per line.
    hashes, first_seen, inverse = np.unique(symbol_hash, return_index=True, return_inverse=True)
    name_of_hash = {index: _symbol_name(buffer, starts[first_seen[index]], stops[first_seen[index]])
                    for index in range(len(hashes)) if hashes[index] != 0}
    names = set(name_of_hash.values())
    if symbol is None and len(names) > 1 and (kind == MESSAGE_SNAPSHOT).any():
        raise ValueError(f"{path}: snapshots with several symbols ({sorted(names)}): pass symbol=")
    default = symbol or (names.pop() if len(names) == 1 else "BINANCE")
    id_of_hash = np.zeros(len(hashes), np.int32)
    for index in range(len(hashes)):
        try:
            name = name_of_hash.get(index, default)
            id_of_hash[index] = instruments.intern(name, price_scale, size_scale, tick_of.get(name, 1))
        except ValueError as error:
            raise FeedError(path, int(numbers[first_seen[index]]), str(error), "s") from None
    symbol_ids = id_of_hash[inverse]

    ignored = int(np.count_nonzero(kind == MESSAGE_IGNORED)) - len(skipped)
    dropped = 0
    if sync and problem is None:
        order, synced_first, synced_id, dropped = _sync_order(kind, first_id, last_id)
    else:
        order = np.flatnonzero(kind != MESSAGE_IGNORED)
        synced_first = synced_id = np.zeros(0, np.int64)
    # Expand messages to their events, in order.
    counts = message_count[order]
    event_index = (np.repeat(message_start[order] - np.cumsum(counts) + counts, counts)
                   + np.arange(int(counts.sum())))
    result = events[event_index]
    result["symbol"] = np.repeat(symbol_ids[order], counts)
    result_lines = np.repeat(numbers[order], counts).astype(np.int64)
    offsets = np.cumsum(counts) - counts
    for message, snapshot_id in zip(synced_first.tolist(), synced_id.tolist()):
        start = int(offsets[np.flatnonzero(order == message)[0]])
        result["prev_sequence"][start:start + message_count[message]] = snapshot_id
    feed = Feed(result, result_lines, instruments, str(path), skipped, ignored, dropped)
    if problem is not None:
        problem.partial = feed
        raise problem
    return feed
