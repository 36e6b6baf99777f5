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

Kalshi messages are few and each names its market, so this reader parses a
line at a time with :func:`json.loads`; the decimals still go through
:func:`ringbook.kernels.fixed.parse_decimal`, exactly.
"""

import json

import numpy as np

from ringbook.engine.feeds.source import Feed, FeedError, line_bounds, read_buffer
from ringbook.kernels.events import (ASK, BID, EVENT_DTYPE, FLAG_BATCH_END, KIND_TOP_OF_BOOK, KIND_TRADE,
                            Instruments)
from ringbook.kernels.fixed import parse_decimal

PRICE_SCALE = 4
SIZE_SCALE = 2
TICK = 100  # one cent at price_scale 4
_NS_PER_SECOND = 1_000_000_000
_CENT = 10 ** (PRICE_SCALE - 2)


class _Malformed(Exception):
    def __init__(self, field, reason):
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _get(message, key):
    if key not in message:
        raise _Malformed(key, "missing")
    return message[key]


def _integer(message, key, default=None):
    if key not in message and default is not None:
        return default
    value = _get(message, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Malformed(key, f"expected an integer, got {value!r}")
    return value


def _decimal(message, key, scale):
    value = _get(message, key)
    if not isinstance(value, str):
        raise _Malformed(key, f"expected a decimal string, got {value!r}")
    try:
        return parse_decimal(value, scale)
    except (ValueError, OverflowError) as error:
        raise _Malformed(key, str(error)) from None


def _price(message, dollars_key, cents_key):
    """A price at PRICE_SCALE: the exact dollar string, else the cents."""
    if dollars_key in message:
        return _decimal(message, dollars_key, PRICE_SCALE)
    return _integer(message, cents_key) * _CENT


def _size(message, fp_key, count_key=None):
    """A quantity at SIZE_SCALE: the ``_fp`` string, else the integer count, else 0."""
    if fp_key in message:
        return _decimal(message, fp_key, SIZE_SCALE)
    if count_key is not None:
        return _integer(message, count_key) * 10 ** SIZE_SCALE
    return 0


def _symbol(instruments, message):
    name = _get(message, "market_ticker")
    if not isinstance(name, str) or not name:
        raise _Malformed("market_ticker", f"expected a market ticker, got {name!r}")
    try:
        return instruments.intern(name, PRICE_SCALE, SIZE_SCALE, TICK)
    except ValueError as error:
        raise _Malformed("market_ticker", str(error)) from None


def _events_of(line, instruments):
    """The event tuples of one line (empty for an ignored message type)."""
    local_ns = 0
    head, _, rest = line.partition(b" ")
    if head.isdigit() and rest:
        local_ns, line = int(head), rest
    try:
        document = json.loads(line)
    except (ValueError, UnicodeDecodeError) as error:
        raise _Malformed(None, f"not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("msg", {}), dict):
        raise _Malformed(None, "expected a JSON object with an object 'msg'")
    kind = document.get("type")
    if kind not in ("ticker", "trade"):
        return []
    message = _get(document, "msg")
    sequence = _integer(document, "seq", default=0)
    exchange_ns = _integer(message, "ts") * _NS_PER_SECOND
    symbol = _symbol(instruments, message)
    # (exchange_ns, local_ns, price, quantity, order_id, sequence, prev_sequence, symbol, kind, side, flags)
    if kind == "ticker":
        bid = _price(message, "yes_bid_dollars", "yes_bid")
        ask = _price(message, "yes_ask_dollars", "yes_ask")
        bid_size = _size(message, "yes_bid_size_fp")
        ask_size = _size(message, "yes_ask_size_fp")
        return [(exchange_ns, local_ns, bid, bid_size, 0, sequence, 0, symbol, KIND_TOP_OF_BOOK, BID, 0),
                (exchange_ns, local_ns, ask, ask_size, 0, sequence, 0, symbol, KIND_TOP_OF_BOOK, ASK,
                 FLAG_BATCH_END)]
    price = _price(message, "yes_price_dollars", "yes_price")
    quantity = _size(message, "count_fp", "count")
    taker = _get(message, "taker_side")
    if taker not in ("yes", "no"):
        raise _Malformed("taker_side", f"expected 'yes' or 'no', got {taker!r}")
    side = BID if taker == "yes" else ASK
    return [(exchange_ns, local_ns, price, quantity, 0, sequence, 0, symbol, KIND_TRADE, side,
             FLAG_BATCH_END)]


def read_messages(path, *, instruments=None, skip_malformed=False):
    """Read Kalshi ``ticker`` and ``trade`` messages (JSON lines; gzip is fine) into events.

    Parameters
    ----------
    path : str or Path
    instruments : ringbook.kernels.events.Instruments, optional
        Table to intern the market tickers in; a new one by default.
    skip_malformed : bool
        Skip malformed lines and list them in ``skipped_lines`` instead of raising.

    Returns
    -------
    Feed

    Raises
    ------
    FeedError
        A malformed line (not JSON, a missing or bad field), naming the file,
        line and field; ``partial`` holds the events before it.
    """
    instruments = instruments if instruments is not None else Instruments()
    buffer = read_buffer(path)
    starts, stops, numbers = line_bounds(buffer)
    data = buffer.tobytes()
    records, lines, skipped = [], [], []
    ignored = 0
    for start, stop, number in zip(starts.tolist(), stops.tolist(), numbers.tolist()):
        try:
            events = _events_of(data[start:stop], instruments)
        except _Malformed as error:
            if skip_malformed:
                skipped.append(number)
                continue
            partial = Feed(np.array(records, EVENT_DTYPE), np.array(lines, np.int64), instruments,
                           str(path), skipped, ignored)
            raise FeedError(path, number, error.reason, error.field, partial) from None
        if not events:
            ignored += 1
        records.extend(events)
        lines.extend([number] * len(events))
    return Feed(np.array(records, EVENT_DTYPE), np.array(lines, np.int64), instruments, str(path),
                skipped, ignored)
