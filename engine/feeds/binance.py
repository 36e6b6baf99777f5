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

Prices and quantities are strings in Binance's messages; a capture that holds
them as bare JSON numbers (rewritten by a tool) is read too, exactly from the
number's text (``10.5`` as ``"10.5"``); exponent notation (``1e-05``, as a float
printer may write) is refused as not a decimal. A level must be exactly a
``[price, quantity]`` pair.

Sync (``sync=True``, the default) follows Binance's procedure for a local
book, so that the events can be applied in order: diffs that arrive before the
first snapshot are held back and placed right after it; diffs already
contained in the latest snapshot (``u <= lastUpdateId``) are dropped (counted
in ``Feed.dropped``); the first diff applied after a snapshot must have
``U <= lastUpdateId + 1 <= u``, and when it does its ``prev_sequence`` becomes
``lastUpdateId``, so that a book that requires ``prev_sequence`` to equal its
own sequence accepts it; any other break in the chain is left for the book to
count as a gap. Events keep their own ``local_ns``, so a held-back diff's is
earlier than the snapshot's. The reader streams (see
:mod:`ringbook.engine.feeds.source`): messages before the first snapshot are
held back within the memory limit only; a capture whose first snapshot comes
later than that releases them in file order, and the book counts the gaps.

The parsing is one njit loop over a block's lines: it indexes each JSON
object's members in one pass (:mod:`ringbook.engine.feeds.json_index`) and
converts the values in place, one kernel per message type; Python only interns
the few distinct symbols and orders the messages with numpy.
"""
import re
from dataclasses import dataclass

import numpy as np

from ringbook.engine.feeds import json_index as js
from ringbook.engine.feeds.source import (Feed, FeedError, check_memory_limit, empty_file, iter_blocks,
                                          read_whole, reason_of)
from ringbook.kernels import fixed
from ringbook.kernels.events import (ASK, BID, EVENT_DTYPE, FLAG_BATCH_END, FLAG_SNAPSHOT, KIND_L2_SET,
                                     KIND_SEQUENCE, KIND_SNAPSHOT_BEGIN, KIND_SNAPSHOT_END,
                                     KIND_TOP_OF_BOOK, KIND_TRADE, Instruments, put_event)
from ringbook.kernels.borrow import borrow
from ringbook.kernels.jit_options import kernel, llvm_inline_kernel
from ringbook.kernels.status import MISSING, NOT_JSON, OUT_OF_RANGE

PRICE_SCALE = 8
SIZE_SCALE = 8

# Message kinds, per line.
MESSAGE_IGNORED = 0
MESSAGE_DIFF = 1
MESSAGE_SNAPSHOT = 2
MESSAGE_TICKER = 3
MESSAGE_TRADE = 4

#: Columns of the per-line message table that :func:`parse_lines` fills: the
#: ``MESSAGE_*`` kind, where its events start and how many, its first and last
#: update ids (``U`` and ``u``; ``lastUpdateId`` twice for a snapshot) and a hash
#: of its symbol (0 if none).
COLUMN_KIND, COLUMN_START, COLUMN_COUNT, COLUMN_FIRST_ID, COLUMN_LAST_ID, COLUMN_SYMBOL = range(6)
MESSAGE_COLUMNS = 6

#: Field codes reported with a status, for the error message.
FIELD_NAMES = ("local_ns", "json", "E", "U", "u", "pu", "b", "a", "lastUpdateId", "bids",
               "asks", "p", "q", "t", "T", "m", "B", "A", "s")
(_F_LOCAL, _F_JSON, _F_E, _F_FIRST, _F_LAST, _F_PREVIOUS, _F_BIDS, _F_ASKS, _F_LAST_UPDATE,
 _F_SNAPSHOT_BIDS, _F_SNAPSHOT_ASKS, _F_PRICE, _F_QUANTITY, _F_TRADE_ID, _F_TRADE_TIME,
 _F_MAKER, _F_BID_QUANTITY, _F_ASK_QUANTITY, _F_SYMBOL) = range(len(FIELD_NAMES))

# Member names looked up in a message, and the "e" values that classify it.
_STREAM = js.name("stream")
_DATA = js.name("data")
_EVENT_TYPE = js.name("e")
_EVENT_TIME = js.name("E")
_FIRST_ID = js.name("U")
_LAST_ID = js.name("u")
_PREVIOUS_ID = js.name("pu")
_BIDS = js.name("b")
_ASKS = js.name("a")
_LAST_UPDATE_ID = js.name("lastUpdateId")
_SNAPSHOT_BIDS = js.name("bids")
_SNAPSHOT_ASKS = js.name("asks")
_PRICE = js.name("p")
_QUANTITY = js.name("q")
_TRADE_ID = js.name("t")
_TRADE_TIME = js.name("T")
_MAKER = js.name("m")
_BID_QUANTITY = js.name("B")
_ASK_QUANTITY = js.name("A")
_SYMBOL = js.name("s")
_DEPTH_UPDATE = js.name('"depthUpdate"')
_TRADE = js.name('"trade"')
_BOOK_TICKER = js.name('"bookTicker"')

_SYMBOL_MEMBER = re.compile(rb'"s"\s*:\s*"([^"]*)"')

_SPACE = 32
_OPEN_BRACKET = ord("[")
_LETTER_T = 116
_NS_PER_MS = 1_000_000
_MAX_MS = (2 ** 63 - 1) // _NS_PER_MS


@llvm_inline_kernel
def _message_kind(buffer, members, count):
    """``MESSAGE_*`` of an indexed message object."""
    row = js.member(buffer, members, count, _EVENT_TYPE)
    if row >= 0:
        start = members[row, js.VALUE_START]
        stop = members[row, js.VALUE_STOP]
        if js.equals(buffer, start, stop, _DEPTH_UPDATE):
            return MESSAGE_DIFF
        if js.equals(buffer, start, stop, _TRADE):
            return MESSAGE_TRADE
        if js.equals(buffer, start, stop, _BOOK_TICKER):
            return MESSAGE_TICKER
        return MESSAGE_IGNORED
    if js.member(buffer, members, count, _LAST_UPDATE_ID) >= 0:
        return MESSAGE_SNAPSHOT
    # A spot bookTicker has no "e".
    if (js.member(buffer, members, count, _LAST_ID) >= 0
            and js.member(buffer, members, count, _BID_QUANTITY) >= 0
            and js.member(buffer, members, count, _ASK_QUANTITY) >= 0):
        return MESSAGE_TICKER
    return MESSAGE_IGNORED


@llvm_inline_kernel
def _put_levels(buffer, members, count, name, side, scales, scratch, events, written, sequence,
                prev_sequence, exchange_ns, local_ns, flags):
    """The level list ``name`` as ``KIND_L2_SET`` events from ``events[written]``: (written, status)."""
    pairs, status = js.level_pairs(buffer, members, count, name, scales[0], scales[1], scratch)
    if status != fixed.OK:
        return written, status
    if written + pairs + 1 > events.shape[0]:
        return written, np.int64(fixed.FULL)
    for level in range(pairs):
        put_event(events, written + level, KIND_L2_SET, side, scratch[2 * level], scratch[2 * level + 1],
                  0, sequence, prev_sequence, exchange_ns, local_ns, flags, 0)
    return written + pairs, np.int64(fixed.OK)


@llvm_inline_kernel
def _milliseconds(buffer, members, count, name, optional):
    """A time member in ms, within what ns hold: (ms, status); 0 when ``optional`` and absent."""
    value, status = js.integer(buffer, members, count, name)
    if status == MISSING and optional:
        return np.int64(0), np.int64(fixed.OK)
    if status != fixed.OK:
        return np.int64(0), status
    if value < 0 or value > _MAX_MS:
        return np.int64(0), np.int64(OUT_OF_RANGE)
    return value, np.int64(fixed.OK)


@llvm_inline_kernel
def _time_and_id(buffer, members, count, time_name, id_name, time_field, id_field):
    """A time in ms and an integer id: ``(ms, id, status, field)``."""
    milliseconds, status = _milliseconds(buffer, members, count, time_name, False)
    if status != fixed.OK:
        return milliseconds, np.int64(0), status, time_field
    identifier, status = js.integer(buffer, members, count, id_name)
    if status != fixed.OK:
        return milliseconds, identifier, status, id_field
    return milliseconds, identifier, status, -1


@llvm_inline_kernel
def _price_and_quantity(buffer, members, count, price_name, quantity_name, scales, price_field,
                        quantity_field):
    """Two decimal members, a price and a quantity: ``(price, quantity, status, field)``."""
    price, status = js.decimal(buffer, members, count, price_name, scales[0])
    if status != fixed.OK:
        return price, np.int64(0), status, price_field
    quantity, status = js.decimal(buffer, members, count, quantity_name, scales[1])
    if status != fixed.OK:
        return price, quantity, status, quantity_field
    return price, quantity, status, -1


@llvm_inline_kernel
def _parse_diff(buffer, members, count, local_ns, scales, scratch, events, written, record):
    """A ``depthUpdate``: its events from ``events[written]`` and its ``record``.

    Returns ``(written, status, field)``; on an error ``written`` is unchanged.
    """
    event_ms, first_id, status, field = _time_and_id(buffer, members, count, _EVENT_TIME, _FIRST_ID, _F_E,
                                                     _F_FIRST)
    if status != fixed.OK:
        return written, status, field
    last_id, status = js.integer(buffer, members, count, _LAST_ID)
    if status != fixed.OK:
        return written, status, _F_LAST
    if first_id < 1 or last_id < first_id:
        return written, np.int64(OUT_OF_RANGE), _F_LAST
    previous, status = js.integer(buffer, members, count, _PREVIOUS_ID)
    if status == MISSING:
        previous = first_id - 1  # spot: U - 1
    elif status != fixed.OK:
        return written, status, _F_PREVIOUS
    exchange_ns = event_ms * _NS_PER_MS
    end, status = _put_levels(buffer, members, count, _BIDS, BID, scales, scratch, events, written,
                              last_id, previous, exchange_ns, local_ns, 0)
    if status != fixed.OK:
        return written, status, _F_BIDS
    end, status = _put_levels(buffer, members, count, _ASKS, ASK, scales, scratch, events, end,
                              last_id, previous, exchange_ns, local_ns, 0)
    if status != fixed.OK:
        return written, status, _F_ASKS
    if end == written:  # no levels: the message still carries its sequence
        put_event(events, end, KIND_SEQUENCE, 0, 0, 0, 0, last_id, previous, exchange_ns, local_ns, 0, 0)
        end += 1
    events[end - 1].flags = FLAG_BATCH_END
    record[COLUMN_FIRST_ID] = first_id
    record[COLUMN_LAST_ID] = last_id
    record[COLUMN_SYMBOL] = js.text_hash(buffer, members, count, _SYMBOL)
    return end, np.int64(fixed.OK), -1


@llvm_inline_kernel
def _parse_snapshot(buffer, members, count, local_ns, scales, scratch, events, written, record):
    """A REST depth snapshot; as :func:`_parse_diff`."""
    last_update, status = js.integer(buffer, members, count, _LAST_UPDATE_ID)
    if status != fixed.OK:
        return written, status, _F_LAST_UPDATE
    if last_update < 0:
        return written, np.int64(OUT_OF_RANGE), _F_LAST_UPDATE
    event_ms, status = _milliseconds(buffer, members, count, _EVENT_TIME, True)
    if status != fixed.OK:
        return written, status, _F_E
    exchange_ns = event_ms * _NS_PER_MS
    put_event(events, written, KIND_SNAPSHOT_BEGIN, 0, 0, 0, 0, 0, 0, exchange_ns, local_ns, FLAG_SNAPSHOT, 0)
    end, status = _put_levels(buffer, members, count, _SNAPSHOT_BIDS, BID, scales, scratch, events,
                              written + 1, 0, 0, exchange_ns, local_ns, FLAG_SNAPSHOT)
    if status != fixed.OK:
        return written, status, _F_SNAPSHOT_BIDS
    end, status = _put_levels(buffer, members, count, _SNAPSHOT_ASKS, ASK, scales, scratch, events,
                              end, 0, 0, exchange_ns, local_ns, FLAG_SNAPSHOT)
    if status != fixed.OK:
        return written, status, _F_SNAPSHOT_ASKS
    put_event(events, end, KIND_SNAPSHOT_END, 0, 0, 0, 0, last_update, 0, exchange_ns, local_ns,
              FLAG_SNAPSHOT | FLAG_BATCH_END, 0)
    record[COLUMN_FIRST_ID] = last_update
    record[COLUMN_LAST_ID] = last_update
    return end + 1, np.int64(fixed.OK), -1


@llvm_inline_kernel
def _parse_trade(buffer, members, count, local_ns, scales, scratch, events, written, record):
    """A ``trade``; as :func:`_parse_diff`."""
    trade_ms, trade_id, status, field = _time_and_id(buffer, members, count, _TRADE_TIME, _TRADE_ID,
                                                     _F_TRADE_TIME, _F_TRADE_ID)
    if status != fixed.OK:
        return written, status, field
    price, quantity, status, field = _price_and_quantity(buffer, members, count, _PRICE, _QUANTITY, scales,
                                                         _F_PRICE, _F_QUANTITY)
    if status != fixed.OK:
        return written, status, field
    maker = js.member(buffer, members, count, _MAKER)
    if maker < 0:
        return written, np.int64(MISSING), _F_MAKER
    # "m": true means the buyer is the maker, so the aggressor sold.
    side = ASK if buffer[members[maker, js.VALUE_START]] == _LETTER_T else BID
    put_event(events, written, KIND_TRADE, side, price, quantity, trade_id, 0, 0, trade_ms * _NS_PER_MS,
              local_ns, FLAG_BATCH_END, 0)
    record[COLUMN_SYMBOL] = js.text_hash(buffer, members, count, _SYMBOL)
    return written + 1, np.int64(fixed.OK), -1


@llvm_inline_kernel
def _parse_ticker(buffer, members, count, local_ns, scales, scratch, events, written, record):
    """A ``bookTicker``; as :func:`_parse_diff`."""
    last_id, status = js.integer(buffer, members, count, _LAST_ID)
    if status != fixed.OK:
        return written, status, _F_LAST
    event_ms, status = _milliseconds(buffer, members, count, _EVENT_TIME, True)  # spot has no E
    if status != fixed.OK:
        return written, status, _F_E
    bid_price, bid_quantity, status, field = _price_and_quantity(
        buffer, members, count, _BIDS, _BID_QUANTITY, scales, _F_BIDS, _F_BID_QUANTITY)
    if status != fixed.OK:
        return written, status, field
    ask_price, ask_quantity, status, field = _price_and_quantity(
        buffer, members, count, _ASKS, _ASK_QUANTITY, scales, _F_ASKS, _F_ASK_QUANTITY)
    if status != fixed.OK:
        return written, status, field
    exchange_ns = event_ms * _NS_PER_MS
    put_event(events, written, KIND_TOP_OF_BOOK, BID, bid_price, bid_quantity, 0, last_id, 0,
              exchange_ns, local_ns, 0, 0)
    put_event(events, written + 1, KIND_TOP_OF_BOOK, ASK, ask_price, ask_quantity, 0, last_id, 0,
              exchange_ns, local_ns, FLAG_BATCH_END, 0)
    record[COLUMN_FIRST_ID] = last_id
    record[COLUMN_LAST_ID] = last_id
    record[COLUMN_SYMBOL] = js.text_hash(buffer, members, count, _SYMBOL)
    return written + 2, np.int64(fixed.OK), -1


@llvm_inline_kernel
def _index_message(buffer, start, stop, members):
    """Index the message of one line: ``(local_ns, count, status)``.

    The line is ``<local ns> <json>``; a combined stream's wrapper
    (``{"stream":...,"data":{...}}``) is opened, so ``members`` index the message.
    """
    space = start
    while space < stop and buffer[space] != _SPACE:
        space += 1
    local_ns, status = fixed.parse_decimal_bytes(buffer, start, space, 0)
    if status != fixed.OK:
        return local_ns, -1, status
    count, end = js.index_object(buffer, space + 1, stop, members)
    if count < 0 or js.skip_spaces(buffer, end, stop) != stop:
        return local_ns, -1, np.int64(NOT_JSON)
    data = js.member(buffer, members, count, _DATA)
    if data >= 0 and js.member(buffer, members, count, _STREAM) >= 0:
        count, end = js.index_object(buffer, members[data, js.VALUE_START], members[data, js.VALUE_STOP],
                                     members)
        if count < 0:
            return local_ns, -1, np.int64(NOT_JSON)
    return local_ns, count, np.int64(fixed.OK)


@kernel
def parse_lines(buffer, starts, stops, first, written, scales, scratch, events, messages):
    """Parse capture lines ``first..`` into ``events[written..]``, one njit pass.

    Per line ``i`` it fills row ``i`` of ``messages`` (the ``COLUMN_*`` columns;
    a line that is not a book message keeps kind ``MESSAGE_IGNORED``): the
    message's events are ``events[start:start + count]``. ``scales`` is
    ``(price_scale, size_scale)``; ``scratch`` must hold twice the largest level
    count of a line.

    Returns
    -------
    stopped_at : int64
        The index of the first malformed line, or the number of lines.
    written : int64
        Events written so far.
    status : int64
        OK, a ``ringbook.kernels.fixed`` status, or a record code of
        ``ringbook.kernels.status`` (``MISSING``, ``ODD_LEVELS``, ``NOT_JSON``,
        ``OUT_OF_RANGE``); ``FULL`` when ``events`` is too small.
    field : int64
        Index in :data:`FIELD_NAMES` of the bad field (-1 if none).
    """
    buffer = borrow(buffer)     # the caller's reference keeps it alive: no counting in each field's call
    members = js.new_members_kernel()
    for line in range(first, starts.shape[0]):
        start = starts[line]
        stop = stops[line]
        record = messages[line]
        record[:] = 0
        record[COLUMN_START] = written
        if start < 0 or stop > buffer.shape[0] or start > stop:
            return np.int64(line), np.int64(written), np.int64(fixed.INVALID), np.int64(_F_LOCAL)
        local_ns, count, status = _index_message(buffer, start, stop, members)
        if status != fixed.OK:
            return np.int64(line), np.int64(written), status, np.int64(_F_LOCAL if count == -1 and
                                                                        status != NOT_JSON else _F_JSON)
        # Room for a ticker or a trade; level lists check their own.
        if written + 2 > events.shape[0]:
            return np.int64(line), np.int64(written), np.int64(fixed.FULL), np.int64(-1)
        message = _message_kind(buffer, members, count)
        end, status, field = written, np.int64(fixed.OK), -1
        if message == MESSAGE_DIFF:
            end, status, field = _parse_diff(buffer, members, count, local_ns, scales, scratch, events,
                                             written, record)
        elif message == MESSAGE_SNAPSHOT:
            end, status, field = _parse_snapshot(buffer, members, count, local_ns, scales, scratch, events,
                                                 written, record)
        elif message == MESSAGE_TRADE:
            end, status, field = _parse_trade(buffer, members, count, local_ns, scales, scratch, events,
                                              written, record)
        elif message == MESSAGE_TICKER:
            end, status, field = _parse_ticker(buffer, members, count, local_ns, scales, scratch, events,
                                               written, record)
        if status != fixed.OK:
            record[:] = 0
            return np.int64(line), np.int64(written), status, np.int64(field)
        record[COLUMN_KIND] = message
        record[COLUMN_COUNT] = end - written
        written = end
    return np.int64(starts.shape[0]), np.int64(written), np.int64(fixed.OK), np.int64(-1)


@dataclass
class _Parsed:
    """A block's messages: their events, ``MESSAGE_COLUMNS`` table, lines and symbol ids."""

    events: np.ndarray
    messages: np.ndarray
    numbers: np.ndarray
    symbols: np.ndarray

    @property
    def kind(self):
        return self.messages[:, COLUMN_KIND]


def _parse_block(path, block, scales, skip_malformed):
    """Phase one: parse a block's lines.

    Returns ``(events, messages, line numbers, skipped lines, FeedError or None)``;
    after a FeedError the tables stop before its line.
    """
    lines = len(block)
    # Real levels take some 30 bytes: the first guess is bounded by the block's size whatever its
    # brackets, and a block that holds more events grows the array (and the levels' scratch).
    capacity = min(int(np.count_nonzero(block.buffer == _OPEN_BRACKET)) + 2 * lines,
                   len(block.buffer) // 24) + 16
    events = np.zeros(capacity, EVENT_DTYPE)
    scratch = np.zeros(2 * capacity + 4, np.int64)
    messages = np.zeros((lines, MESSAGE_COLUMNS), np.int64)
    numbers = block.numbers
    skipped = []
    first = written = 0
    while True:
        stopped_at, written, status, field = parse_lines(block.buffer, block.starts, block.stops, first,
                                                         written, scales, scratch, events, messages)
        if status == fixed.OK:
            return events[:written], messages, numbers, skipped, None
        if status == fixed.FULL:
            events = np.concatenate([events, np.zeros(len(events), EVENT_DTYPE)])
            scratch = np.zeros(2 * len(scratch), np.int64)
            first = stopped_at
            continue
        line = int(numbers[stopped_at])
        if not skip_malformed:
            problem = FeedError(path, line, reason_of(status), FIELD_NAMES[field] if field >= 0 else None)
            return events[:written], messages[:stopped_at], numbers[:stopped_at], skipped, problem
        skipped.append(line)
        first = stopped_at + 1


def _symbol_name(text):
    """The ``"s"`` value of one line (Python: once per distinct symbol); ValueError if not UTF-8."""
    match = _SYMBOL_MEMBER.search(text)
    return match[1].decode() if match else None


class _Symbols:
    """Phase two: intern each distinct symbol once, across the blocks of a file.

    A snapshot names no symbol: it takes ``symbol``, else the file's only symbol
    (the first one named, which must stay the only one in a file with snapshots).
    """

    def __init__(self, path, instruments, symbol, tick_of, scales):
        self.path, self.instruments, self.symbol = path, instruments, symbol
        self.tick_of, self.scales = tick_of, scales
        self.id_of_hash = {}
        self.names = []
        self.snapshot_line = None

    def _intern(self, name, line):
        try:
            return self.instruments.intern(name, self.scales[0], self.scales[1], self.tick_of.get(name, 1))
        except ValueError as error:
            raise FeedError(self.path, line, str(error), "s") from None

    def ids(self, block, messages, numbers):
        """Per message, its symbol id (``int32``)."""
        hashes, first_seen, inverse = np.unique(messages[:, COLUMN_SYMBOL], return_index=True,
                                                return_inverse=True)
        snapshots = np.flatnonzero(messages[:, COLUMN_KIND] == MESSAGE_SNAPSHOT)
        if self.snapshot_line is None and len(snapshots):
            self.snapshot_line = int(numbers[snapshots[0]])
        new_name_line = None
        for index, value in enumerate(hashes.tolist()):
            if value != 0 and value not in self.id_of_hash:
                line = int(numbers[first_seen[index]])
                try:
                    name = _symbol_name(block.text(np.searchsorted(block.numbers, line)))
                except UnicodeDecodeError:
                    raise FeedError(self.path, line, "a symbol that is not UTF-8 text", "s") from None
                if name not in self.names:
                    self.names.append(name)
                    new_name_line = line if new_name_line is None else min(new_name_line, line)
                self.id_of_hash[value] = None if name is None else self._intern(name, line)
        if self.symbol is None and self.snapshot_line is not None and len(self.names) > 1:
            raise FeedError(self.path, max(new_name_line or 0, self.snapshot_line),
                            f"snapshots with several symbols ({sorted(map(str, self.names))}): pass symbol=")
        ids = np.zeros(len(hashes), np.int32)
        for index, value in enumerate(hashes.tolist()):
            known = self.id_of_hash.get(value)
            if known is None:
                default = self.symbol or (self.names[0] if len(self.names) == 1 else "BINANCE")
                known = self._intern(default, int(numbers[first_seen[index]]))
            ids[index] = known
        return ids[inverse]


def _sync_order(kind, first_id, last_id, carried_id=None, awaiting=False):
    """Message order and stale diffs under Binance's sync procedure, for one stretch of a file.

    ``carried_id`` is the ``lastUpdateId`` of the snapshot that governs the
    stretch's first messages (None before the file's first snapshot: then diffs
    before the stretch's first snapshot are held back and placed right after
    it); ``awaiting`` says that snapshot has had no diff applied yet.

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
    carried_id, awaiting :
        The state for the next stretch.
    """
    position = np.arange(len(kind))
    snapshots = np.flatnonzero(kind == MESSAGE_SNAPSHOT)
    none = np.zeros(0, np.int64)
    if carried_id is None and len(snapshots) == 0:
        return np.flatnonzero(kind != MESSAGE_IGNORED), none, none, 0, None, False
    diffs = kind == MESSAGE_DIFF
    sort_key = 2 * position
    if carried_id is None:
        # A diff before the first snapshot is held back and applied right after it.
        ids = last_id[snapshots]
        governing = np.searchsorted(snapshots, position, side="right") - 1
        held = diffs & (position < snapshots[0])
        sort_key[held] = 2 * snapshots[0] + 1
        governing[held] = 0
        awaiting = True
    else:
        ids = np.concatenate(([carried_id], last_id[snapshots]))
        governing = np.searchsorted(snapshots, position, side="right")
    snapshot_id = np.where(governing >= 0, ids[np.maximum(governing, 0)], 0)
    stale = diffs & (governing >= 0) & (last_id <= snapshot_id)
    keep = (kind != MESSAGE_IGNORED) & ~stale
    order = np.flatnonzero(keep)
    order = order[np.argsort(sort_key[order], kind="stable")]
    # The first kept diff governed by each snapshot: it must overlap lastUpdateId + 1.
    kept_diffs = order[diffs[order]]
    firsts = kept_diffs[np.unique(governing[kept_diffs], return_index=True)[1]]
    firsts = firsts[(governing[firsts] >= 0) & ((governing[firsts] > 0) | awaiting | (carried_id is None))]
    overlaps = (first_id[firsts] <= snapshot_id[firsts] + 1) & (snapshot_id[firsts] + 1 <= last_id[firsts])
    last_group = len(ids) - 1
    still_awaiting = not (governing[kept_diffs] == last_group).any() and (last_group > 0 or awaiting
                                                                           or carried_id is None)
    return (order, firsts[overlaps], snapshot_id[firsts[overlaps]], int(np.count_nonzero(stale)),
            int(ids[-1]), bool(still_awaiting))


@kernel
def gather_messages(events, messages, order, symbols, numbers, out_events, out_lines):
    """The events of messages ``order`` (rows of ``messages``), in that order, into
    ``out_events``, each with its message's symbol and, in ``out_lines``, its line.

    The caller sizes the outputs to the messages' event counts; a message that would
    not fit stops the copy. Returns the events written.
    """
    at = 0
    for k in range(order.shape[0]):
        message = order[k]
        start = messages[message, COLUMN_START]
        count = messages[message, COLUMN_COUNT]
        if at + count > out_events.shape[0] or at + count > out_lines.shape[0] or start + count > events.shape[0]:
            return at
        for j in range(count):
            out_events[at] = events[start + j]
            out_events[at].symbol = symbols[message]
            out_lines[at] = numbers[message]
            at += 1
    return at


def _expand(parsed, order, synced_first, synced_id):
    """Phase three: the events of the messages ``order``, in that order, with symbols and lines."""
    messages = parsed.messages
    counts = messages[order, COLUMN_COUNT]
    offsets = np.cumsum(counts) - counts
    total = int(counts.sum())
    events, lines = np.empty(total, EVENT_DTYPE), np.empty(total, np.int64)
    written = gather_messages(parsed.events, messages, order, parsed.symbols, parsed.numbers, events, lines)
    if written != total:
        raise RuntimeError(f"gathering messages: {written} events of {total} (the message table disagrees)")
    for message, snapshot_id in zip(synced_first.tolist(), synced_id.tolist()):
        start = int(offsets[np.flatnonzero(order == message)[0]])
        events["prev_sequence"][start:start + messages[message, COLUMN_COUNT]] = snapshot_id
    return events, lines


def _merge(parts):
    """One :class:`_Parsed` of consecutive blocks."""
    if len(parts) == 1:
        return parts[0]
    shift = np.cumsum([0] + [len(part.events) for part in parts[:-1]])
    messages = np.concatenate([part.messages for part in parts])
    messages[:, COLUMN_START] += np.repeat(shift, [len(part.messages) for part in parts])
    return _Parsed(np.concatenate([part.events for part in parts]), messages,
                   np.concatenate([part.numbers for part in parts]),
                   np.concatenate([part.symbols for part in parts]))


class _Sync:
    """Phase three across blocks: the sync procedure's order, with what it carries from block to block.

    Until the file's first snapshot the blocks are held (the diffs before it
    go right after it), within ``hold_limit`` bytes of events; past that they are
    released in file order.
    """

    def __init__(self, sync, hold_limit):
        self.sync, self.hold_limit = sync, hold_limit
        self.held, self.held_bytes = [], 0
        self.carried_id, self.awaiting = None, False

    def push(self, parsed):
        """``(events, lines, dropped)`` released by one more block."""
        if not self.sync:
            events, lines = _expand(parsed, np.flatnonzero(parsed.kind != MESSAGE_IGNORED), *_NO_SYNC)
            return events, lines, 0
        if self.carried_id is None:
            self.held.append(parsed)
            self.held_bytes += parsed.events.nbytes + parsed.messages.nbytes
            if not (parsed.kind == MESSAGE_SNAPSHOT).any():
                if self.held_bytes > self.hold_limit:
                    return self.finish()
                return _NOTHING
            parsed = _merge(self.held)
            self.held, self.held_bytes = [], 0
        order, synced_first, synced_id, dropped, self.carried_id, self.awaiting = _sync_order(
            parsed.kind, parsed.messages[:, COLUMN_FIRST_ID], parsed.messages[:, COLUMN_LAST_ID],
            self.carried_id, self.awaiting)
        events, lines = _expand(parsed, order, synced_first, synced_id)
        return events, lines, dropped

    def finish(self):
        """Release what is held, in file order (a file, or a stretch, without a snapshot)."""
        if not self.held:
            return _NOTHING
        parsed = _merge(self.held)
        self.held, self.held_bytes = [], 0
        events, lines = _expand(parsed, np.flatnonzero(parsed.kind != MESSAGE_IGNORED), *_NO_SYNC)
        return events, lines, 0


_NO_SYNC = (np.zeros(0, np.int64), np.zeros(0, np.int64))
_NOTHING = (np.zeros(0, EVENT_DTYPE), np.zeros(0, np.int64), 0)


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


def iter_capture(path, *, sync=True, instruments=None, symbol=None, price_scale=PRICE_SCALE,
                 size_scale=SIZE_SCALE, ticks=None, skip_malformed=False, memory_limit=None):
    """Stream a Binance capture as chunks of events, in bounded memory.

    Takes the arguments of :func:`read_capture`, and ``memory_limit`` (bytes,
    ``ringbook.engine.feeds.source.MEMORY_LIMIT`` by default).

    Yields
    ------
    Feed
        The events a block of lines releases (synced), sharing one instrument
        table; a chunk never splits a message, and may be empty (lines held
        back until the first snapshot, or ignored). ``skipped_lines``,
        ``ignored`` and ``dropped`` count per chunk.

    Raises
    ------
    FeedError
        As :func:`read_capture`, after the chunk of the lines before it; a
        file with no line.
    """
    instruments = instruments if instruments is not None else Instruments()
    tick_of = _parse_ticks(ticks or {}, price_scale)
    limit = check_memory_limit(memory_limit)
    scales = (np.int64(price_scale), np.int64(size_scale))
    symbols = _Symbols(path, instruments, symbol, tick_of, scales)
    order = _Sync(sync, limit // 2)
    seen_lines = False
    for block in iter_blocks(path, limit):
        seen_lines = True
        events, messages, numbers, skipped, problem = _parse_block(path, block, scales, skip_malformed)
        ignored = int(np.count_nonzero(messages[:, COLUMN_KIND] == MESSAGE_IGNORED)) - len(skipped)
        parsed = _Parsed(events, messages, numbers, symbols.ids(block, messages, numbers))
        released, lines, dropped = order.push(parsed)
        if problem is not None:
            rest, rest_lines, _ = order.finish()
            released, lines = np.concatenate([released, rest]), np.concatenate([lines, rest_lines])
        yield Feed(released, lines, instruments, str(path), skipped, ignored, dropped)
        if problem is not None:
            raise problem
    events, lines, _ = order.finish()
    if len(events):
        yield Feed(events, lines, instruments, str(path))
    if not seen_lines:
        raise empty_file(path)


def read_capture(path, *, sync=True, instruments=None, symbol=None, price_scale=PRICE_SCALE,
                 size_scale=SIZE_SCALE, ticks=None, skip_malformed=False, memory_limit=None):
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
    memory_limit : int, optional
        Bound on the memory the reading takes besides the result (see
        :func:`iter_capture`, which reads a capture of any size in bounded memory).

    Returns
    -------
    Feed

    Raises
    ------
    FeedError
        A malformed line, naming the file, line and field; ``partial`` holds
        the events of the lines before it, as reading the file cut before that
        line gives them. A file that cannot be read (empty, damaged gzip, a
        device), naming the file; snapshots in a file of several symbols
        without ``symbol``.
    """
    instruments = instruments if instruments is not None else Instruments()
    return read_whole(path, iter_capture(path, sync=sync, instruments=instruments, symbol=symbol,
                                         price_scale=price_scale, size_scale=size_scale, ticks=ticks,
                                         skip_malformed=skip_malformed, memory_limit=memory_limit),
                      instruments)
