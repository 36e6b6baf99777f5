"""Kalshi WebSocket ``ticker`` and ``trade`` messages, one JSON object a line.

A line may start with a local receive time in ns and a space (``<ns> <json>``,
as ringbook's Binance captures do); otherwise ``local_ns`` is 0.

Scales: prices are dollars per contract at ``price_scale`` 4, taken exactly from
the ``*_dollars`` strings (``"0.1400"`` is 1400; Kalshi quotes up to 4 decimals)
or, when a message has only the cent fields, from the cents (``14`` is 1400);
quantities are contracts at ``size_scale`` 2, from the ``*_fp`` strings
(``"84.00"`` is 8400; fractional contracts exist) or ``count`` times 100. The
tick is one cent (100). Each ``market_ticker`` is a symbol.

``ticker``
    Two ``KIND_TOP_OF_BOOK`` events: the best yes bid (``yes_bid_dollars``,
    ``yes_bid_size_fp``) and the best yes ask (``yes_ask_dollars``,
    ``yes_ask_size_fp``); the second carries ``FLAG_BATCH_END``. A message
    without sizes gives quantity 0. Kalshi shows a side with no orders at
    0.00 (bid) or 1.00 (ask) with size 0.
``trade``
    One ``KIND_TRADE`` at the yes price, quantity ``count_fp``; ``side`` is
    the taker's, in yes terms (``taker_side`` "yes": ``BID``, "no": ``ASK``);
    ``order_id`` is 0 (Kalshi's trade ids are UUIDs).

``exchange_ns`` is ``ts`` (seconds) in ns; ``sequence`` is the message's
``seq`` when it has one (the subscription's message counter), else 0.
Other message types are counted in ``Feed.ignored``.

Kalshi messages are few and each names its market, so this reader goes a line
at a time in Python over the njit JSON indexer of
:mod:`ringbook.engine.feeds.json_index`; the decimals are parsed from their text,
exactly (a bare JSON number as well as a string). It streams, as every reader
does (:mod:`ringbook.engine.feeds.source`).
"""

import json

import numpy as np

from ringbook.engine.feeds import json_index as js
from ringbook.engine.feeds.source import Feed, FeedError, empty_file, iter_blocks, read_whole, reason_of
from ringbook.kernels import fixed
from ringbook.kernels.events import (ASK, BID, EVENT_DTYPE, FLAG_BATCH_END, KIND_TOP_OF_BOOK, KIND_TRADE,
                                     Instruments)
from ringbook.kernels.limits import INT64_MAX

PRICE_SCALE = 4
SIZE_SCALE = 2
TICK = 100  # one cent at price_scale 4
_NS_PER_SECOND = 1_000_000_000
_CENT = 10 ** (PRICE_SCALE - 2)
_OPEN_BRACE = ord("{")
_QUOTE = ord('"')
_NAMES = {}


def _name(text):
    if text not in _NAMES:
        _NAMES[text] = js.name(text)
    return _NAMES[text]


class _Malformed(Exception):
    def __init__(self, field, reason):
        super().__init__(reason)
        self.field = field
        self.reason = reason


class _Object:
    """One indexed JSON object of a line: its members, looked up by name."""

    def __init__(self, buffer, start, stop):
        self.buffer = buffer
        self.members = js.new_members()
        self.count, self.end = js.index_object(buffer, start, stop, self.members)

    def has(self, key):
        return js.member(self.buffer, self.members, self.count, _name(key)) >= 0

    def text(self, key):
        """The raw JSON text of member ``key``."""
        row = js.member(self.buffer, self.members, self.count, _name(key))
        if row < 0:
            raise _Malformed(key, "missing")
        return bytes(self.buffer[self.members[row, js.VALUE_START]:self.members[row, js.VALUE_STOP]])

    def value_range(self, key):
        row = js.member(self.buffer, self.members, self.count, _name(key))
        return (-1, -1) if row < 0 else (self.members[row, js.VALUE_START], self.members[row, js.VALUE_STOP])

    def integer(self, key, default=None, limit=INT64_MAX):
        """Member ``key``, an integer from 0 to ``limit`` (so that scaling it cannot overflow)."""
        value, code = js.integer(self.buffer, self.members, self.count, _name(key))
        if code == fixed.OK:
            if not 0 <= value <= limit:
                raise _Malformed(key, f"out of range: {int(value)} (0 to {limit})")
            return int(value)
        if not self.has(key) and default is not None:
            return default
        if not self.has(key):
            raise _Malformed(key, "missing")
        raise _Malformed(key, f"expected an integer, got {self.text(key).decode(errors='replace')}")

    def decimal(self, key, scale):
        value, code = js.decimal(self.buffer, self.members, self.count, _name(key), scale)
        if code != fixed.OK:
            raise _Malformed(key, reason_of(code))
        return int(value)


def _price(message, dollars_key, cents_key):
    """A price at PRICE_SCALE: the exact dollar string, else the cents."""
    if message.has(dollars_key):
        return message.decimal(dollars_key, PRICE_SCALE)
    return message.integer(cents_key, limit=INT64_MAX // _CENT) * _CENT


def _size(message, fp_key, count_key=None):
    """A quantity at SIZE_SCALE: the ``_fp`` string, else the integer count, else 0."""
    if message.has(fp_key):
        return message.decimal(fp_key, SIZE_SCALE)
    if count_key is not None:
        return message.integer(count_key, limit=INT64_MAX // 10 ** SIZE_SCALE) * 10 ** SIZE_SCALE
    return 0


def _symbol(instruments, message, symbols):
    """The market's symbol id; ``symbols`` caches the raw ticker text of each one."""
    raw = message.text("market_ticker")
    if raw in symbols:
        return symbols[raw]
    try:
        name = json.loads(raw) if raw[:1] == b'"' else None
    except ValueError:  # a bad escape or bad UTF-8
        name = None
    if not isinstance(name, str) or not name:
        raise _Malformed("market_ticker", f"expected a market ticker, got {raw.decode(errors='replace')}")
    try:
        symbols[raw] = instruments.intern(name, PRICE_SCALE, SIZE_SCALE, TICK)
    except ValueError as error:
        raise _Malformed("market_ticker", str(error)) from None
    return symbols[raw]


def _events_of(buffer, start, stop, instruments, symbols):
    """The event tuples of one line (empty for an ignored message type)."""
    local_ns = 0
    space = start
    while space < stop and 48 <= buffer[space] <= 57:
        space += 1
    if space > start and space < stop and buffer[space] == 32:
        local_ns, code = fixed.parse_decimal_bytes(buffer, start, space, 0)
        if code != fixed.OK:
            raise _Malformed("local_ns", reason_of(code))
        local_ns, start = int(local_ns), space + 1
    document = _Object(buffer, start, stop)
    if document.count < 0 or js.skip_spaces(buffer, document.end, stop) != stop:
        raise _Malformed(None, f"not JSON: a JSON object expected, malformed at column "
                         f"{max(document.end, start) - start + 1}")
    message = None
    if document.has("msg"):
        msg_start, msg_stop = document.value_range("msg")
        message = _Object(buffer, msg_start, msg_stop) if buffer[msg_start] == _OPEN_BRACE else None
        if message is None or message.count < 0:
            raise _Malformed(None, "expected a JSON object with an object 'msg'")
    kind = document.text("type") if document.has("type") else b""
    if kind not in (b'"ticker"', b'"trade"'):
        return []
    if message is None:
        raise _Malformed("msg", "missing")
    sequence = document.integer("seq", default=0)
    exchange_ns = message.integer("ts", limit=INT64_MAX // _NS_PER_SECOND) * _NS_PER_SECOND
    symbol = _symbol(instruments, message, symbols)
    # (exchange_ns, local_ns, price, quantity, order_id, sequence, prev_sequence, symbol, kind, side, flags)
    if kind == b'"ticker"':
        bid = _price(message, "yes_bid_dollars", "yes_bid")
        ask = _price(message, "yes_ask_dollars", "yes_ask")
        bid_size = _size(message, "yes_bid_size_fp")
        ask_size = _size(message, "yes_ask_size_fp")
        return [(exchange_ns, local_ns, bid, bid_size, 0, sequence, 0, symbol, KIND_TOP_OF_BOOK, BID, 0),
                (exchange_ns, local_ns, ask, ask_size, 0, sequence, 0, symbol, KIND_TOP_OF_BOOK, ASK,
                 FLAG_BATCH_END)]
    price = _price(message, "yes_price_dollars", "yes_price")
    quantity = _size(message, "count_fp", "count")
    taker = message.text("taker_side")
    if taker not in (b'"yes"', b'"no"'):
        raise _Malformed("taker_side", f"expected 'yes' or 'no', got {taker.decode(errors='replace')}")
    side = BID if taker == b'"yes"' else ASK
    return [(exchange_ns, local_ns, price, quantity, 0, sequence, 0, symbol, KIND_TRADE, side,
             FLAG_BATCH_END)]


def iter_messages(path, *, instruments=None, skip_malformed=False, memory_limit=None):
    """Stream Kalshi messages as chunks of events, in bounded memory.

    Takes the arguments of :func:`read_messages`, and ``memory_limit`` (bytes,
    ``ringbook.engine.feeds.source.MEMORY_LIMIT`` by default).

    Yields
    ------
    Feed
        The events of one block of lines, sharing one instrument table.

    Raises
    ------
    FeedError
        As :func:`read_messages`, after the chunk of the lines before it; a file with no line.
    """
    instruments = instruments if instruments is not None else Instruments()
    symbols = {}
    seen_lines = False
    for block in iter_blocks(path, memory_limit):
        seen_lines = True
        records, lines, skipped = [], [], []
        ignored = 0
        problem = None
        for start, stop, number in zip(block.starts.tolist(), block.stops.tolist(), block.numbers.tolist()):
            try:
                events = _events_of(block.buffer, start, stop, instruments, symbols)
            except _Malformed as error:
                if skip_malformed:
                    skipped.append(number)
                    continue
                problem = FeedError(path, number, error.reason, error.field)
                break
            if not events:
                ignored += 1
            records.extend(events)
            lines.extend([number] * len(events))
        yield Feed(np.array(records, EVENT_DTYPE), np.array(lines, np.int64), instruments, str(path),
                   skipped, ignored)
        if problem is not None:
            raise problem
    if not seen_lines:
        raise empty_file(path)


def read_messages(path, *, instruments=None, skip_malformed=False, memory_limit=None):
    """Read Kalshi ``ticker`` and ``trade`` messages (JSON lines; gzip is fine) into events.

    Parameters
    ----------
    path : str or Path
    instruments : ringbook.kernels.events.Instruments, optional
        Table to intern the market tickers in; a new one by default.
    skip_malformed : bool
        Skip malformed lines and list them in ``skipped_lines`` instead of raising.
    memory_limit : int, optional
        Bound on the memory the reading takes besides the result (see :func:`iter_messages`).

    Returns
    -------
    Feed

    Raises
    ------
    FeedError
        A malformed line (not JSON, a missing or bad field), naming the file,
        line and field; ``partial`` holds the events before it. A file that
        cannot be read (empty, damaged gzip, a device), naming the file.
    """
    instruments = instruments if instruments is not None else Instruments()
    return read_whole(path, iter_messages(path, instruments=instruments, skip_malformed=skip_malformed,
                                          memory_limit=memory_limit), instruments)
