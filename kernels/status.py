"""One status convention for every kernel, and one table of what each code means.

A kernel returns ``OK`` (0) when it did what was asked; a positive code for an
ordinary outcome worth knowing (a stale message, a gap); a negative code for an
error. A kernel whose non-negative result is a count or a length (a read that
returns the bytes it copied) returns its outcomes as negative codes too, so that
none can be mistaken for a result: ``EMPTY``, ``FULL`` and ``TIMEOUT`` are such
codes.

Every code used anywhere in ``ringbook.kernels`` and in the engine's parsers is
defined here, once, with a distinct value, so that :func:`status_name` names any
code from any module. Modules import the codes they use from here.
"""

OK = 0

# Ordinary outcomes.
STALE = 1            # message already applied: rejected
GAP = 2              # applied, but the message does not follow the book's sequence
UNKNOWN_ORDER = 3    # L3 event for an order not in the table: level adjusted from the event
LEVEL_DROPPED = 4    # price at or beyond the side's horizon (capacity): dropped

# Ordinary outcomes of kernels whose non-negative result is a count or a length.
EMPTY = -1           # nothing to read
FULL = -2            # no room: a ring's slowest consumer is a ring behind, an output array is full
TIMEOUT = -3         # a blocking call waited as long as it was allowed

# Errors in arguments.
BAD_ARGUMENT = -10   # a size, geometry or index out of range, inconsistent arrays
BAD_SYMBOL = -11     # symbol id out of range
INVALID_SIDE = -12   # side is neither BID (1) nor ASK (-1)
BAD_QUANTITY = -13   # negative (or, for an add, zero) quantity
BAD_KIND = -14       # unknown event kind
BAD_INDEX = -15      # event index out of range
BAD_TICK = -16       # tick must be positive
BAD_STATE = -17      # state not opened on this slab, or opened for the other side
TOO_LARGE = -18      # message longer than a slot's payload, or than the reader's buffer

# Errors in numbers read from text.
INVALID = -20        # not a decimal number
TOO_PRECISE = -21    # more decimals than the scale holds
OVERFLOW = -22       # out of int64 range

# Errors of the book's capacity and content.
ORDER_TABLE_FULL = -30
DUPLICATE_ORDER = -31

# Errors in parsed records (exchange files, JSON messages).
MISSING = -40        # a required field is absent
ODD_LEVELS = -41     # a level list whose numbers do not pair up
NOT_JSON = -42       # the line is not the JSON the format expects
OUT_OF_RANGE = -43   # a number outside what the field allows
FIELD_COUNT = -44    # a row with the wrong number of fields

# Errors in shared memory or files that a peer may have corrupted.
CORRUPT_MAGIC = -50
CORRUPT_VERSION = -51
CORRUPT_GEOMETRY = -52
CORRUPT_SIZE = -53       # the region's size is not what its header says
CORRUPT_POSITION = -54
CORRUPT_LENGTH = -55
CORRUPT_SEQUENCE = -56
CORRUPT_CHECKSUM = -57

#: code -> short description, for every code above.
STATUS_NAMES = {
    OK: "ok",
    STALE: "stale message",
    GAP: "sequence gap",
    UNKNOWN_ORDER: "unknown order",
    LEVEL_DROPPED: "level dropped",
    EMPTY: "empty",
    FULL: "full",
    TIMEOUT: "timed out",
    BAD_ARGUMENT: "argument out of range",
    BAD_SYMBOL: "symbol id out of range",
    INVALID_SIDE: "side is neither BID (1) nor ASK (-1)",
    BAD_QUANTITY: "negative (or, for an add, zero) quantity",
    BAD_KIND: "unknown event kind",
    BAD_INDEX: "event index out of range",
    BAD_TICK: "tick must be positive",
    BAD_STATE: "state not opened on this slab for this side",
    TOO_LARGE: "message too large",
    INVALID: "not a decimal number",
    TOO_PRECISE: "more decimals than the scale",
    OVERFLOW: "out of int64 range",
    ORDER_TABLE_FULL: "order table full",
    DUPLICATE_ORDER: "order id already in the book",
    MISSING: "missing",
    ODD_LEVELS: "levels must be [price, quantity] pairs",
    NOT_JSON: "not the expected JSON",
    OUT_OF_RANGE: "out of range",
    FIELD_COUNT: "wrong number of fields",
    CORRUPT_MAGIC: "corrupt: bad magic number",
    CORRUPT_VERSION: "corrupt: unknown format version",
    CORRUPT_GEOMETRY: "corrupt: impossible geometry",
    CORRUPT_SIZE: "corrupt: size differs from what the header says",
    CORRUPT_POSITION: "corrupt: impossible position",
    CORRUPT_LENGTH: "corrupt: impossible length",
    CORRUPT_SEQUENCE: "corrupt: sequence out of order",
    CORRUPT_CHECKSUM: "corrupt: checksum mismatch",
}


def status_name(code):
    """The description of a status code from any kernel, or ``'status N'`` if unknown."""
    return STATUS_NAMES.get(int(code), f"status {int(code)}")


def is_error(code):
    """True for an error code (negative and not one of the count-kernels' outcomes)."""
    return code < 0 and code not in (EMPTY, FULL, TIMEOUT)
