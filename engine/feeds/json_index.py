"""A one-pass index of a JSON object's members, in njit, for readers of JSON lines.

:func:`index_object` walks the object at ``buffer[start]`` once and records, per
member, where its name and its value lie, without decoding anything; a reader then
looks members up by name (:func:`member`) and converts only the values it needs,
exactly (:func:`integer`, :func:`decimal`, :func:`level_pairs`). The small
helpers are inlined into their callers' machine code: a reader calls them a few
times per number, and a call would cost more than the work. Nested objects
are indexed by calling :func:`index_object` again on a member's value. Used by
the Binance and Kalshi readers, and meant for live connectors too.

Numbers are taken from their text, never through float: a decimal may be sent
as a JSON string (``"61737.63"``, as exchanges do) or as a bare JSON number
(``61737.63``); either is parsed exactly by
:func:`ringbook.kernels.fixed.parse_decimal_bytes`, which refuses exponent
notation (``1e-05``).

The kernels return ``ringbook.kernels.status`` codes: ``MISSING`` for a member
that is absent, ``ODD_LEVELS`` for a level list that is not ``[[p, q], ...]``,
and the decimal parser's codes for a bad number.
"""

import numpy as np

from ringbook.kernels import fixed
from ringbook.kernels.jit_options import kernel, llvm_inline_kernel
from ringbook.kernels.status import MISSING, ODD_LEVELS

#: Members indexed per object; later ones are ignored (exchanges send a dozen or so).
MAX_MEMBERS = 32
#: Columns of the members table: the name's range (inside the quotes), the value's range.
KEY_START, KEY_STOP, VALUE_START, VALUE_STOP = range(4)

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


def name(text):
    """A member name (or a literal value such as ``'"trade"'``) as the uint8 array the kernels compare.

    Read-only, as Numba types a global array inside a kernel: a name passed from Python and
    one a kernel reads as a global compile the kernels once, not once for each flag.
    """
    return np.frombuffer(text.encode(), np.uint8)


def new_members():
    """A members table for :func:`index_object`."""
    return np.zeros((MAX_MEMBERS, 4), np.int64)


@kernel
def new_members_kernel():
    """:func:`new_members`, for njit callers."""
    return np.zeros((MAX_MEMBERS, 4), np.int64)


@llvm_inline_kernel
def skip_spaces(buffer, position, stop):
    """Past the spaces and tabs at ``position``."""
    while position < stop and (buffer[position] == _SPACE or buffer[position] == _TAB):
        position += 1
    return position


@llvm_inline_kernel
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


@llvm_inline_kernel
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


@llvm_inline_kernel
def index_object(buffer, start, stop, members):
    """Index the members of the JSON object at ``buffer[start]``, one pass.

    Row ``i`` of ``members`` receives the ``i``-th member's name range (inside
    the quotes) and value range. Returns ``(count, end)``, ``end`` past the
    closing brace; ``count`` is -1 when the object is malformed.
    """
    if start < 0 or stop > buffer.shape[0] or start >= stop or buffer[start] != _OPEN_BRACE:
        return -1, start
    count = 0
    position = skip_spaces(buffer, start + 1, stop)
    if position < stop and buffer[position] == _CLOSE_BRACE:
        return 0, position + 1
    while True:
        if position >= stop or buffer[position] != _QUOTE:
            return -1, position
        name_start = position + 1
        name_end = _skip_string(buffer, position, stop)
        if name_end < 0:
            return -1, position
        position = skip_spaces(buffer, name_end, stop)
        if position >= stop or buffer[position] != _COLON:
            return -1, position
        value_start = skip_spaces(buffer, position + 1, stop)
        value_end = _skip_value(buffer, value_start, stop)
        if value_end < 0:
            return -1, value_start
        if count < members.shape[0]:
            members[count, KEY_START] = name_start
            members[count, KEY_STOP] = name_end - 1
            members[count, VALUE_START] = value_start
            members[count, VALUE_STOP] = value_end
            count += 1
        position = skip_spaces(buffer, value_end, stop)
        if position < stop and buffer[position] == _COMMA:
            position = skip_spaces(buffer, position + 1, stop)
        elif position < stop and buffer[position] == _CLOSE_BRACE:
            return count, position + 1
        else:
            return -1, position


@llvm_inline_kernel
def equals(buffer, start, stop, pattern):
    """True when ``buffer[start:stop]`` is ``pattern``."""
    if stop - start != pattern.shape[0]:
        return False
    for offset in range(pattern.shape[0]):
        if buffer[start + offset] != pattern[offset]:
            return False
    return True


@llvm_inline_kernel
def member(buffer, members, count, name):
    """The row of the member called ``name``, or -1."""
    for row in range(count):
        if equals(buffer, members[row, KEY_START], members[row, KEY_STOP], name):
            return row
    return -1


@llvm_inline_kernel
def value_is(buffer, members, count, name, literal):
    """True when member ``name`` is present and its value's text is ``literal``."""
    row = member(buffer, members, count, name)
    return row >= 0 and equals(buffer, members[row, VALUE_START], members[row, VALUE_STOP], literal)


@llvm_inline_kernel
def integer(buffer, members, count, name):
    """The unquoted integer member ``name``: (value, status); ``MISSING`` when absent."""
    row = member(buffer, members, count, name)
    if row < 0:
        return np.int64(0), np.int64(MISSING)
    return fixed.parse_decimal_bytes(buffer, members[row, VALUE_START], members[row, VALUE_STOP], 0)


@llvm_inline_kernel
def _number(buffer, start, stop, scale):
    """A decimal at ``buffer[start:stop]``, quoted or bare: (value, status)."""
    if stop - start >= 2 and buffer[start] == _QUOTE and buffer[stop - 1] == _QUOTE:
        return fixed.parse_decimal_bytes(buffer, start + 1, stop - 1, scale)
    return fixed.parse_decimal_bytes(buffer, start, stop, scale)


@llvm_inline_kernel
def decimal(buffer, members, count, name, scale):
    """The member ``name``, a decimal as a string (``"1.5"``) or a bare number, at ``scale``:
    (value, status); ``MISSING`` when absent."""
    row = member(buffer, members, count, name)
    if row < 0:
        return np.int64(0), np.int64(MISSING)
    return _number(buffer, members[row, VALUE_START], members[row, VALUE_STOP], scale)


@llvm_inline_kernel
def _token_end(buffer, position, stop):
    """Past the string or bare number at ``position`` (-1 for a string that never ends)."""
    if position < stop and buffer[position] == _QUOTE:
        return _skip_string(buffer, position, stop)
    while (position < stop and buffer[position] != _COMMA and buffer[position] != _CLOSE_BRACKET
           and buffer[position] != _SPACE and buffer[position] != _TAB):
        position += 1
    return position


@llvm_inline_kernel
def _token_number(buffer, position, stop, scale):
    """The string or bare number after the spaces at ``position``: ``(value, status, position past
    it and the spaces after it)``."""
    position = skip_spaces(buffer, position, stop)
    end = _token_end(buffer, position, stop)
    if end < 0:
        return np.int64(0), np.int64(fixed.INVALID), position
    value, status = _number(buffer, position, end, scale)
    return value, status, skip_spaces(buffer, end, stop)


@llvm_inline_kernel
def level_pairs(buffer, members, count, name, price_scale, size_scale, out):
    """The member ``name``, ``[[price, quantity], ...]``, into ``out``: (pairs, status).

    Prices land in ``out[0::2]`` and quantities in ``out[1::2]``. Each level
    must be exactly a pair; numbers may be strings or bare. ``fixed.FULL`` when
    ``out`` is too small.
    """
    row = member(buffer, members, count, name)
    if row < 0:
        return np.int64(0), np.int64(MISSING)
    stop = members[row, VALUE_STOP]
    position = members[row, VALUE_START]
    if buffer[position] != _OPEN_BRACKET:
        return np.int64(0), np.int64(fixed.INVALID)
    position = skip_spaces(buffer, position + 1, stop)
    pairs = 0
    if position < stop and buffer[position] == _CLOSE_BRACKET:
        return np.int64(0), np.int64(fixed.OK)
    while True:
        if position >= stop or buffer[position] != _OPEN_BRACKET:
            return np.int64(0), np.int64(ODD_LEVELS)
        if 2 * pairs + 2 > out.shape[0]:
            return np.int64(0), np.int64(fixed.FULL)
        price, status, position = _token_number(buffer, position + 1, stop, price_scale)
        if status != fixed.OK:
            return np.int64(0), status
        if position >= stop or buffer[position] != _COMMA:
            return np.int64(0), np.int64(ODD_LEVELS)
        quantity, status, position = _token_number(buffer, position + 1, stop, size_scale)
        if status != fixed.OK:
            return np.int64(0), status
        if position >= stop or buffer[position] != _CLOSE_BRACKET:
            return np.int64(0), np.int64(ODD_LEVELS)
        out[2 * pairs] = price
        out[2 * pairs + 1] = quantity
        pairs += 1
        position = skip_spaces(buffer, position + 1, stop)
        if position < stop and buffer[position] == _COMMA:
            position = skip_spaces(buffer, position + 1, stop)
        elif position < stop and buffer[position] == _CLOSE_BRACKET:
            return np.int64(pairs), np.int64(fixed.OK)
        else:
            return np.int64(0), np.int64(ODD_LEVELS)


@llvm_inline_kernel
def text_hash(buffer, members, count, name):
    """FNV-1a hash of member ``name``'s value text, as int64 (0 when absent): for interning
    names in Python once per distinct value."""
    row = member(buffer, members, count, name)
    if row < 0:
        return np.int64(0)
    value = np.uint64(14695981039346656037)
    for position in range(members[row, VALUE_START], members[row, VALUE_STOP]):
        value = (value ^ np.uint64(buffer[position])) * np.uint64(1099511628211)
    return np.int64(value)
