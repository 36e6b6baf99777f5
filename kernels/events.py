"""Normalized market events: the record every feed produces and every book consumes.

One event is one change, at the granularity the book applies it. An exchange
message that changes several levels (a Binance depth diff) becomes several
events that share ``sequence`` and ``prev_sequence``; the last of them carries
:data:`FLAG_BATCH_END`, after which the book is consistent again.

Fields of :data:`EVENT_DTYPE` (64 bytes: one cache line)
----------------------------------------------------------
exchange_ns : int64
    The exchange's timestamp, ns since the epoch (0 when unknown).
local_ns : int64
    When the message was received locally, ns (0 when unknown).
price : int64
    Fixed point at the instrument's ``price_scale`` decimals.
quantity : int64
    Fixed point at the instrument's ``size_scale`` decimals. For ``L2_SET`` the
    new total at the level (0 deletes it); for ``L3_ADD`` the order's size; for
    ``L3_CANCEL`` and ``L3_EXECUTE`` the amount removed; for ``STATUS`` a
    ``STATUS_*`` code.
order_id : int64
    The exchange's order id (L3), trade id (``TRADE``), else 0.
sequence : int64
    The exchange's update id after this change (Binance ``u``), 0 when the feed
    has none. The book rejects a message whose ``sequence`` it has already applied.
prev_sequence : int64
    The update id the book must already hold for this message to follow without
    a gap (Binance spot ``U - 1``, USD-M futures ``pu``), 0 for no check.
symbol : int32
    Interned id from an :class:`Instruments` table.
kind : uint8
    One of the ``KIND_*`` constants.
side : int8
    :data:`BID` (1, buy), :data:`ASK` (-1, sell) or 0. For executions and
    cancels, the side of the resting order; for trades, the aggressor's side
    when known.
flags : uint16
    Bitwise or of ``FLAG_*``.
"""

import numpy as np

EVENT_DTYPE = np.dtype([
    ("exchange_ns", np.int64),
    ("local_ns", np.int64),
    ("price", np.int64),
    ("quantity", np.int64),
    ("order_id", np.int64),
    ("sequence", np.int64),
    ("prev_sequence", np.int64),
    ("symbol", np.int32),
    ("kind", np.uint8),
    ("side", np.int8),
    ("flags", np.uint16),
], align=True)

# Kinds. Values are part of the journal format: append, never renumber.
KIND_L2_SET = 1            # set the level's total quantity; 0 deletes it
KIND_L3_ADD = 2            # a new visible limit order
KIND_L3_CANCEL = 3         # partial cancel: quantity is the amount removed
KIND_L3_DELETE = 4         # the whole order leaves the book
KIND_L3_EXECUTE = 5        # visible execution against a resting order: quantity executed
KIND_L3_EXECUTE_HIDDEN = 6 # execution against hidden liquidity: never touches the book
KIND_TRADE = 7             # a trade print (Binance trade, LOBSTER cross trade)
KIND_CLEAR = 8             # empty one side (side != 0) or both (side == 0)
KIND_SNAPSHOT_BEGIN = 9    # a snapshot follows: the book clears the symbol
KIND_SNAPSHOT_END = 10     # snapshot complete: its sequence becomes the book's
KIND_STATUS = 11           # trading status change: quantity is a STATUS_* code
KIND_TOP_OF_BOOK = 12      # the exchange's own best level on one side (Binance bookTicker): a check, not a change
KIND_SEQUENCE = 13         # a message that changes nothing but carries its sequence, e.g. an empty diff

KIND_NAMES = {
    KIND_L2_SET: "l2_set", KIND_L3_ADD: "l3_add", KIND_L3_CANCEL: "l3_cancel",
    KIND_L3_DELETE: "l3_delete", KIND_L3_EXECUTE: "l3_execute",
    KIND_L3_EXECUTE_HIDDEN: "l3_execute_hidden", KIND_TRADE: "trade", KIND_CLEAR: "clear",
    KIND_SNAPSHOT_BEGIN: "snapshot_begin", KIND_SNAPSHOT_END: "snapshot_end",
    KIND_STATUS: "status", KIND_TOP_OF_BOOK: "top_of_book", KIND_SEQUENCE: "sequence",
}

BID = 1
ASK = -1

FLAG_BATCH_END = 1    # last event of an exchange message: the book is consistent after it
FLAG_SNAPSHOT = 2     # part of a snapshot (between SNAPSHOT_BEGIN and SNAPSHOT_END)

STATUS_TRADING = 1
STATUS_HALTED = 2
STATUS_QUOTING = 3    # quotes accepted, no matching (auction, resumption)

INSTRUMENT_DTYPE = np.dtype([
    ("symbol", np.int32),
    ("price_scale", np.int32),   # decimals of fixed-point prices
    ("size_scale", np.int32),    # decimals of fixed-point quantities
    ("tick", np.int64),          # price increment, fixed point at price_scale
    ("name", "S32"),
], align=True)


def empty_events(count):
    """A zeroed event array of ``count`` records."""
    return np.zeros(count, EVENT_DTYPE)


class Instruments:
    """Symbol interning and the per-symbol instrument table.

    Names become ``int32`` ids once, at the boundary (a feed, a notebook); the
    hot path sees only ids and :attr:`table`, a structured array that njit code
    can index by id.
    """

    def __init__(self, capacity=2048):
        self.table = np.zeros(capacity, INSTRUMENT_DTYPE)
        self._ids = {}

    def intern(self, name, price_scale=8, size_scale=8, tick=1):
        """The id of ``name``, adding it with these scales if it is new.

        Raises
        ------
        ValueError
            If the name is known with other scales or tick, or is too long.
        OverflowError
            If the table is full.
        """
        encoded = name.encode()
        if len(encoded) > INSTRUMENT_DTYPE["name"].itemsize:
            raise ValueError(f"symbol name {name!r} is longer than "
                             f"{INSTRUMENT_DTYPE['name'].itemsize} bytes")
        known = self._ids.get(name)
        if known is not None:
            row = self.table[known]
            if (row["price_scale"], row["size_scale"], row["tick"]) != (price_scale, size_scale, tick):
                raise ValueError(
                    f"symbol {name!r} is interned with price_scale={row['price_scale']}, "
                    f"size_scale={row['size_scale']}, tick={row['tick']}; got "
                    f"price_scale={price_scale}, size_scale={size_scale}, tick={tick}")
            return known
        symbol = len(self._ids)
        if symbol >= len(self.table):
            raise OverflowError(f"instrument table is full ({len(self.table)} symbols)")
        self.table[symbol] = (symbol, price_scale, size_scale, tick, encoded)
        self._ids[name] = symbol
        return symbol

    def id_of(self, name):
        """The id of a known name (``KeyError`` if it was never interned)."""
        return self._ids[name]

    def name_of(self, symbol):
        return self.table[symbol]["name"].decode()

    def __len__(self):
        return len(self._ids)

    def __contains__(self, name):
        return name in self._ids
