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

Building events
---------------
A feed written in Python builds its events a message at a time with
:func:`make_events` (columns as arrays or scalars, ``FLAG_BATCH_END`` on the
last event of each message) and a snapshot with :func:`snapshot_events`
(``KIND_SNAPSHOT_BEGIN``, the levels, ``KIND_SNAPSHOT_END``: the book
replaces the symbol's levels and takes the snapshot's sequence). An
:class:`Instruments` table is filled from the exchange's instrument list
(:meth:`Instruments.from_listings`): tick and lot sizes give the scales.
"""

import numpy as np

from ringbook.kernels.fixed import decimal_places, parse_decimal
from ringbook.kernels.jit_options import llvm_inline_kernel

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


@llvm_inline_kernel
def put_event(events, index, kind, side, price, quantity, order_id, sequence, prev_sequence, exchange_ns,
              local_ns, flags, symbol):
    """Set every field of ``events[index]``: a reader kernel's event, inlined into its loop."""
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
    event.symbol = symbol


def empty_events(count):
    """A zeroed event array of ``count`` records."""
    return np.zeros(count, EVENT_DTYPE)


#: The sides an event may carry: 0 where the side is unknown or both (a trade
#: print, a clear of both sides).
_SIDES = (BID, ASK, 0)


def _column(name, value):
    """``value`` (a scalar or a 1-d array of integers) as a 1-d int64 array, checked
    to fit the event field ``name``."""
    array = np.asarray(value)
    if array.dtype == object or (array.size and array.dtype.kind not in "iub"):
        raise TypeError(f"{name}: integers expected (fixed point: see ringbook.kernels.fixed), "
                        f"got dtype {array.dtype}")
    if array.ndim > 1:
        raise ValueError(f"{name}: a scalar or a 1-d array expected, got shape {array.shape}")
    limits = np.iinfo(EVENT_DTYPE[name])
    if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: {array.max()} is outside int64")
    array = array.astype(np.int64, copy=False)
    lowest = 0 if name == "symbol" else limits.min    # ids of an Instruments table
    outside = (array < lowest) | (array > limits.max)
    if outside.any():
        bad = int(np.argmax(outside.reshape(-1)))
        where = f"{name}[{bad}]" if array.ndim else name
        raise ValueError(f"{where} = {array.reshape(-1)[bad]} is outside {lowest}..{limits.max}")
    return array


def make_events(kind, side=0, price=0, quantity=0, *, symbol=0, sequence=0, prev_sequence=0,
                order_id=0, exchange_ns=0, local_ns=0, flags=0, message=None):
    """Events from columns: each a scalar (the same for every event) or a 1-d array.

    Parameters
    ----------
    kind, side, price, quantity, symbol, sequence, prev_sequence, order_id, exchange_ns, \
    local_ns, flags
        The fields of :data:`EVENT_DTYPE`, as integers (prices and quantities
        in fixed point). Arrays must share one length; scalars are repeated.
    message : 1-d array, optional
        A message id per event: consecutive events with the same id are one
        exchange message. None: all the events are one message.

    Returns
    -------
    numpy.ndarray of EVENT_DTYPE
        The events in order, with :data:`FLAG_BATCH_END` added to the last
        event of each message (the book is consistent after it).

    Raises
    ------
    ValueError
        Arrays of different lengths, an unknown kind, a side other than
        ``BID``, ``ASK`` or 0 (or 0 for ``KIND_L2_SET``), a value that does not
        fit its field; the message names the field and the first bad index.
    TypeError
        A column that is not integers (a float price: parse the text with
        :func:`ringbook.kernels.fixed.parse_decimals` instead).

    Examples
    --------
    A depth diff that sets two bids and deletes an ask, as one message:

    >>> events = make_events(KIND_L2_SET, [BID, BID, ASK], [100, 99, 101], [5, 3, 0],
    ...                      sequence=42, prev_sequence=41)
    >>> events["flags"].tolist()
    [0, 0, 1]
    """
    columns = dict(kind=kind, side=side, price=price, quantity=quantity, symbol=symbol,
                   sequence=sequence, prev_sequence=prev_sequence, order_id=order_id,
                   exchange_ns=exchange_ns, local_ns=local_ns, flags=flags)
    columns = {name: _column(name, value) for name, value in columns.items()}
    lengths = {name: len(array) for name, array in columns.items() if array.ndim == 1}
    if message is not None:
        message = np.asarray(message)
        if message.ndim != 1:
            raise ValueError(f"message: a 1-d array of message ids expected, got shape "
                             f"{message.shape}")
        lengths["message"] = len(message)
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of different lengths: {lengths}")
    count = next(iter(lengths.values()), 1)
    events = np.zeros(count, EVENT_DTYPE)
    for name, array in columns.items():
        events[name] = array
    unknown = ~np.isin(events["kind"], list(KIND_NAMES))
    if unknown.any():
        bad = int(np.argmax(unknown))
        raise ValueError(f"kind[{bad}] = {events['kind'][bad]} is not a KIND_* constant")
    bad_side = ~np.isin(events["side"], _SIDES) | ((events["kind"] == KIND_L2_SET)
                                                   & (events["side"] == 0))
    if bad_side.any():
        bad = int(np.argmax(bad_side))
        raise ValueError(f"side[{bad}] = {events['side'][bad]}: BID (1) or ASK (-1) expected"
                         + ("" if events["kind"][bad] == KIND_L2_SET else ", or 0"))
    if count:
        ends = np.ones(count, bool)
        if message is not None:
            ends[:-1] = message[1:] != message[:-1]
        else:
            ends[:-1] = False
        events["flags"][ends] |= FLAG_BATCH_END
    return events


def snapshot_events(symbol, bid_prices, bid_quantities, ask_prices, ask_quantities, *,
                    sequence=0, exchange_ns=0, local_ns=0):
    """A snapshot of one symbol as one message: ``KIND_SNAPSHOT_BEGIN``, the levels,
    ``KIND_SNAPSHOT_END``.

    Applied, it replaces every level (and order) of the symbol with these
    levels, and the symbol's sequence becomes ``sequence``: the next message
    must follow it. Every event carries :data:`FLAG_SNAPSHOT` (no sequence
    checks inside); the end carries :data:`FLAG_BATCH_END` too.

    Parameters
    ----------
    symbol : int
    bid_prices, bid_quantities, ask_prices, ask_quantities : 1-d arrays of integers
        Levels in any order, fixed point.
    sequence : int
        The exchange's update id of the snapshot (0: none).
    exchange_ns, local_ns : int
        Stamped on every event.

    Returns
    -------
    numpy.ndarray of EVENT_DTYPE
        ``2 + len(bid_prices) + len(ask_prices)`` events.
    """
    bid_prices, bid_quantities, ask_prices, ask_quantities = (
        np.atleast_1d(np.asarray(array)) for array in
        (bid_prices, bid_quantities, ask_prices, ask_quantities))
    if len(bid_prices) != len(bid_quantities) or len(ask_prices) != len(ask_quantities):
        raise ValueError(f"prices and quantities differ in length: bids {len(bid_prices)} and "
                         f"{len(bid_quantities)}, asks {len(ask_prices)} and {len(ask_quantities)}")
    levels = len(bid_prices) + len(ask_prices)
    kind = np.full(levels + 2, KIND_L2_SET, np.int64)
    kind[0], kind[-1] = KIND_SNAPSHOT_BEGIN, KIND_SNAPSHOT_END
    side = np.zeros(levels + 2, np.int64)
    side[1:1 + len(bid_prices)] = BID
    side[1 + len(bid_prices):-1] = ASK
    price = np.zeros(levels + 2, np.int64)
    price[1:-1] = np.concatenate([_column("price", bid_prices), _column("price", ask_prices)])
    quantity = np.zeros(levels + 2, np.int64)
    quantity[1:-1] = np.concatenate([_column("quantity", bid_quantities),
                                     _column("quantity", ask_quantities)])
    sequences = np.zeros(levels + 2, np.int64)
    sequences[-1] = sequence
    return make_events(kind, side, price, quantity, symbol=symbol, sequence=sequences,
                       exchange_ns=exchange_ns, local_ns=local_ns, flags=FLAG_SNAPSHOT)


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

    def intern_listing(self, name, tick, lot):
        """The id of ``name``, an instrument as the exchange lists it: tick and lot
        sizes as decimal strings.

        The price scale is the decimals of ``tick`` and the size scale those of
        ``lot`` (trailing zeros do not count: ``"0.01000000"`` is 2), so every
        price and quantity of the instrument is exact at them; ``tick`` is
        recorded in fixed point for the book (``new_book(ticks=table["tick"])``).
        """
        price_scale = decimal_places(tick)
        size_scale = decimal_places(lot)
        return self.intern(name, price_scale, size_scale, parse_decimal(tick, price_scale))

    @classmethod
    def from_listings(cls, listings, *, name="symbol", tick="tick_size", lot="lot_size",
                      capacity=2048):
        """A table of every instrument in an exchange's instrument list.

        Parameters
        ----------
        listings : iterable of mappings
            One per instrument, e.g. the parsed JSON of the exchange's
            instruments endpoint.
        name, tick, lot : str
            The keys of the symbol's name, its tick size and its lot size
            (decimal strings, as exchanges send them) in each mapping.
        capacity : int
            Symbols the table holds at least (more if the list is longer).

        Raises
        ------
        ValueError
            A listing without one of the keys, or with a size that is not a
            decimal; the message names the listing's position, its name and the key.
        """
        listings = list(listings)
        instruments = cls(capacity=max(capacity, len(listings)))
        for position, listing in enumerate(listings):
            where = f"instrument list entry {position}"
            try:
                where += f" ({listing[name]!r})"
                instruments.intern_listing(listing[name], listing[tick], listing[lot])
            except KeyError as error:
                raise ValueError(f"{where}: no key {error.args[0]!r}") from None
            except (ValueError, OverflowError, TypeError) as error:
                key = tick if _is_bad_decimal(listing[tick]) else lot
                raise ValueError(f"{where}, key {key!r}: {error}") from None
        return instruments

    def id_of(self, name):
        """The id of a known name (``KeyError`` if it was never interned)."""
        return self._ids[name]

    def name_of(self, symbol):
        return self.table[symbol]["name"].decode()

    def __len__(self):
        return len(self._ids)

    def __contains__(self, name):
        return name in self._ids


def _is_bad_decimal(text):
    """True when ``text`` has no scale (not a decimal string): the field to blame."""
    try:
        decimal_places(text)
    except (ValueError, OverflowError, TypeError):
        return True
    return False
