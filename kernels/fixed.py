"""Fixed point: exact decimal strings to int64 and back, and rescaling between scales.

Prices and quantities are int64 inside the kernels: a value at scale ``s`` is the
decimal number times ``10**s`` ("61737.63" at scale 8 is 6173763000000). A feed
converts each decimal string once, exactly, never through float; overflow is an
error, never a wrap. Scales run from 0 to 18 (int64 holds 18 full decimal digits).

Accepted syntax
---------------
An optional sign ``+`` or ``-``, digits, an optional ``.`` and digits, with at
least one digit in all: ``"61737.63000000"``, ``"0.00012345"``, ``"-1.5"``,
``"42"``, and, as ``decimal.Decimal`` accepts them, ``".5"``, ``"5."`` and
``"+1"``. ``"-0"`` and ``"-0.000"`` are 0. Leading zeros are fine.

Rejected as :data:`INVALID`: the empty string, a lone ``"."``, ``"-"`` or ``"+"``,
two dots, two signs, a sign after the first byte, spaces (inner, leading or
trailing) and any other byte, exponent notation (``"1e5"``: exchanges do not
send it), ``"inf"``, ``"nan"`` and underscores.

Zeros beyond the scale are fine (``"61737.63000000"`` at scale 2 is 6173763); a
non-zero digit beyond it is :data:`TOO_PRECISE`, since it cannot be held without
loss. A value outside int64 at the requested scale is :data:`OVERFLOW`. When a
text has several faults, the first that applies of INVALID, TOO_PRECISE,
OVERFLOW is reported.

Status codes
------------
Kernels return a status instead of raising; the Python wrappers turn a status
into ``ValueError`` (:data:`INVALID`, :data:`TOO_PRECISE`, and bad arguments) or
``OverflowError`` (:data:`OVERFLOW`). The codes are those of
:mod:`ringbook.kernels.status` (re-exported here), so every error is negative
and :func:`~ringbook.kernels.status.status_name` names it:

=================  ====================================================
``OK``             success (0)
``INVALID``        not a decimal in the syntax above, or bad arguments
                   (scale outside 0..18, a range outside the buffer,
                   an unknown rounding code)
``TOO_PRECISE``    a non-zero digit beyond the scale
``OVERFLOW``       out of int64 at the target scale
``FULL``           :func:`scan_decimals` and :func:`format_decimal_bytes`:
                   ``out`` has no room for what follows
=================  ====================================================

Kernels (callable from ``@njit`` code)
--------------------------------------
:func:`parse_decimal_bytes`, :func:`parse_field`, :func:`scan_decimals`, :func:`rescale_value`,
:func:`rescale_array`, :func:`format_decimal_bytes`.

Python wrappers
---------------
:func:`parse_decimal`, :func:`parse_decimals`, :func:`format_decimal`,
:func:`rescale`, :func:`decimal_places` (the scale a decimal text needs, e.g.
an exchange's tick size).
"""

import operator

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from ringbook.kernels.borrow import borrow
from ringbook.kernels.jit_options import inline_kernel, kernel, llvm_inline_kernel
from ringbook.kernels.limits import INT64_MAX, INT64_MIN
from ringbook.kernels.slab import load_i64
# The codes these kernels return, re-exported so ``fixed.OK`` and the like keep working.
from ringbook.kernels.status import (FULL, INVALID, OK, OVERFLOW, TOO_PRECISE,  # noqa: F401
                                     status_name)

# Rounding codes for rescale_value and rescale_array.
ROUND_HALF_EVEN = 0
ROUND_DOWN = 1  # toward zero

#: Largest scale: 10**18 is the largest power of ten in int64.
MAX_SCALE = 18

_ROUNDINGS = {"half_even": ROUND_HALF_EVEN, "down": ROUND_DOWN}

_ZERO = 48  # ord("0")
_PLUS = 43
_MINUS = 45
_DOT = 46
_NUMBER_BYTES = b"0123456789.+-"

#: ``POWERS_OF_TEN[k] == 10**k`` for k in 0..18.
POWERS_OF_TEN = np.array([10 ** k for k in range(MAX_SCALE + 1)], dtype=np.int64)
# Magnitudes are accumulated as negative numbers, so that INT64_MIN, whose
# magnitude has no positive int64, parses too. _NEGATIVE_LIMITS[k] is the least
# x for which x * 10**k does not overflow (10**k never divides 2**63 for k >= 1).
_NEGATIVE_LIMITS = np.array(
    [INT64_MIN] + [-(INT64_MAX // 10 ** k) for k in range(1, MAX_SCALE + 1)], dtype=np.int64)
# x * 10 cannot overflow while x >= this; subtracting the digit is checked apart.
_TIMES_TEN_LIMIT = -(INT64_MAX // 10)


@kernel
def _is_number_byte(byte):
    """True for the bytes a number is made of: ``0-9 . + -``."""
    return (_ZERO <= byte <= _ZERO + 9) or byte == _DOT or byte == _PLUS or byte == _MINUS


@kernel
def _run_end(buffer, position, stop):
    """Where the run of number bytes that includes ``position`` ends (at most ``stop``)."""
    while position < stop and _is_number_byte(buffer[position]):
        position += 1
    return position


@kernel
def _classify_error(buffer, start, stop, scale):
    """The status of a number whose fast parse failed: INVALID, TOO_PRECISE or OVERFLOW.

    The slow path, so that the fast one can stop at the first sign of trouble
    and still report the most telling fault.
    """
    position = start
    if position < stop and (buffer[position] == _PLUS or buffer[position] == _MINUS):
        position += 1
    digits = 0
    while position < stop and _ZERO <= buffer[position] <= _ZERO + 9:
        digits += 1
        position += 1
    too_precise = False
    if position < stop and buffer[position] == _DOT:
        position += 1
        fraction_digits = 0
        while position < stop and _ZERO <= buffer[position] <= _ZERO + 9:
            fraction_digits += 1
            if fraction_digits > scale and buffer[position] != _ZERO:
                too_precise = True
            digits += 1
            position += 1
    if position != stop or digits == 0:
        return INVALID
    if too_precise:
        return TOO_PRECISE
    return OVERFLOW


@kernel
def _append_digit(accumulated, digit):
    """(``accumulated * 10 - digit``, whether that fits int64), for ``accumulated <= 0``."""
    if accumulated < _TIMES_TEN_LIMIT:
        return accumulated, False
    accumulated *= 10
    if accumulated < INT64_MIN + digit:
        return accumulated, False
    return accumulated - digit, True


@kernel
def _fault(buffer, start, position, stop, scale):
    """(0, status, end) for the number at ``start``; its fast parse gave up at ``position``."""
    end = _run_end(buffer, position, stop)
    return 0, _classify_error(buffer, start, end, scale), end


@kernel
def _parse_run(buffer, start, stop, scale):
    """Parse the number that starts at ``start``: (value, status, end).

    ``end`` is where the run of number bytes (``0-9 . + -``) that starts at
    ``start`` ends, at most ``stop``; the status covers the whole run. The
    caller has checked ``0 <= start <= stop <= len(buffer)`` and the scale.
    """
    position = start
    negative = False
    if position < stop and (buffer[position] == _MINUS or buffer[position] == _PLUS):
        negative = buffer[position] == _MINUS
        position += 1
    accumulated = 0  # minus the magnitude so far
    digits = 0
    while position < stop:
        digit = np.int64(buffer[position]) - _ZERO
        if digit < 0 or digit > 9:
            break
        accumulated, fits = _append_digit(accumulated, digit)
        if not fits:
            return _fault(buffer, start, position, stop, scale)
        digits += 1
        position += 1
    fraction_digits = 0
    too_precise = False
    if position < stop and buffer[position] == _DOT:
        position += 1
        while position < stop:
            digit = np.int64(buffer[position]) - _ZERO
            if digit < 0 or digit > 9:
                break
            if fraction_digits < scale:
                accumulated, fits = _append_digit(accumulated, digit)
                if not fits:
                    return _fault(buffer, start, position, stop, scale)
                fraction_digits += 1
            elif digit != 0:
                too_precise = True
            digits += 1
            position += 1
    if position < stop and _is_number_byte(buffer[position]):
        # A sign or a dot where none may be: the run goes on but the number is bad.
        return 0, INVALID, _run_end(buffer, position, stop)
    if digits == 0:
        return 0, INVALID, position
    if too_precise:
        return 0, TOO_PRECISE, position
    if fraction_digits < scale:
        missing = scale - fraction_digits
        if accumulated < _NEGATIVE_LIMITS[missing]:
            return 0, OVERFLOW, position
        accumulated *= POWERS_OF_TEN[missing]
    if negative:
        return accumulated, OK, position
    if accumulated == INT64_MIN:
        return 0, OVERFLOW, position
    return -accumulated, OK, position


# The usual number in one pass, eight bytes at a time: each byte xor "0" is its digit's value
# when it is a digit, and 10 or more when not (adding 118 then sets its high bit). A carry out
# of a byte that is not a digit reaches only the bytes after it, beyond the first non-digit.
_ASCII_ZEROS = np.uint64(0x3030303030303030)
_TO_HIGH_BIT = np.uint64(0x7676767676767676)
_HIGH_BITS = np.uint64(0x8080808080808080)
_UNSIGNED_POWERS_OF_TEN = np.array([10 ** k for k in range(20)], np.uint64)


@inline_kernel
def _digits_value(values, count):
    """The number the first ``count`` (1..8) bytes of ``values`` make, each byte a digit's
    value, the first in the lowest: pairs, then fours, then the eight, a multiply each."""
    values = values << np.uint64(64 - 8 * count)    # the digits last, zeros before them
    values = ((values & np.uint64(0x0F0F0F0F0F0F0F0F)) * np.uint64(10 * 256 + 1)) >> np.uint64(8)
    values = ((values & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(100 * 65536 + 1)) >> np.uint64(16)
    return ((values & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(10000 * 2 ** 32 + 1)) >> np.uint64(32)


@inline_kernel
def _digit_run(buffer, position, stop, magnitude):
    """``magnitude`` followed by the digits from ``position`` (before ``stop``):
    ``(magnitude, digits, end)``. Eight bytes at a time while the buffer holds them
    (the bytes read past ``stop`` are the buffer's and are not used); unsigned, so
    that a run too long for int64 wraps harmlessly (its caller rejects it)."""
    digits = 0
    while position + 8 <= buffer.shape[0]:
        values = np.uint64(load_i64(buffer, position)) ^ _ASCII_ZEROS
        not_digits = ((values + _TO_HIGH_BIT) | values) & _HIGH_BITS
        count = 8 if not_digits == 0 else np.int64(trailing_zeros(not_digits)) >> 3
        count = min(count, stop - position)
        if count <= 0:
            return magnitude, digits, position
        magnitude = magnitude * _UNSIGNED_POWERS_OF_TEN[count] + _digits_value(values, count)
        digits += count
        position += count
        if count < 8:
            return magnitude, digits, position
    while position < stop and _ZERO <= buffer[position] <= _ZERO + 9:
        magnitude = magnitude * np.uint64(10) + np.uint64(buffer[position] - _ZERO)
        digits += 1
        position += 1
    return magnitude, digits, position


@inline_kernel
def _parse_usual(buffer, start, stop, scale):
    """The usual number at ``start`` in one pass: ``-`` or no sign, whole digits, decimals
    no more than ``scale``, at most 18 digits once scaled. Returns ``(usual, value, end)``:
    whether the text up to ``end`` is such a number (the caller checks what follows it)."""
    position = start
    negative = position < stop and buffer[position] == _MINUS
    if negative:
        position += 1
    magnitude, whole_digits, position = _digit_run(buffer, position, stop, np.uint64(0))
    fraction_digits = 0
    if position < stop and buffer[position] == _DOT:
        magnitude, fraction_digits, position = _digit_run(buffer, position + 1, stop, magnitude)
    usual = whole_digits > 0 and fraction_digits <= scale and whole_digits + scale <= MAX_SCALE
    value = np.int64(magnitude) * POWERS_OF_TEN[scale - fraction_digits] if usual else np.int64(0)
    return usual, -value if negative else value, position


@kernel
def parse_decimal_bytes(buffer, start, stop, scale):
    """Parse ``buffer[start:stop]`` exactly as an int64 at ``scale`` decimals.

    Parameters
    ----------
    buffer : 1-D uint8 array
        ASCII text.
    start, stop : int
        The range holding exactly one number (see the module docstring for the
        syntax); it must lie within ``buffer``.
    scale : int
        Decimals of the result, 0 to 18.

    Returns
    -------
    value : int64
        ``number * 10**scale``; 0 unless the status is OK.
    status : int64
        :data:`OK`, :data:`INVALID`, :data:`TOO_PRECISE` or :data:`OVERFLOW`.
    """
    if start < 0 or stop > len(buffer) or start > stop or scale < 0 or scale > MAX_SCALE:
        return np.int64(0), np.int64(INVALID)
    buffer = borrow(buffer)
    usual, value, end = _parse_usual(buffer, start, stop, scale)
    if usual and end == stop:
        return value, np.int64(OK)
    value, status, end = _parse_run(buffer, start, stop, scale)
    if end != stop:
        return np.int64(0), np.int64(INVALID)
    return np.int64(value), np.int64(status)


@llvm_inline_kernel
def parse_field(buffer, start, stop, scale, delimiter):
    """Parse the field that starts at ``start`` and ends at the first ``delimiter`` byte
    or at ``stop``: ``(value, status, end)``, ``end`` being where the field ends.

    Exactly :func:`parse_decimal_bytes` of ``buffer[start:end]``, in one pass over the
    usual field, where a split at the delimiter then a parse would read it twice. The
    caller has checked ``0 <= start <= stop <= len(buffer)``; ``delimiter`` is not a
    number byte (``0-9 . + -``).
    """
    usual, value, end = _parse_usual(buffer, start, stop, scale)
    if usual and (end == stop or buffer[end] == delimiter):
        return value, np.int64(OK), np.int64(end)
    while end < stop and buffer[end] != delimiter:
        end += 1
    value, status = parse_decimal_bytes(buffer, start, end, scale)
    return value, status, np.int64(end)


@kernel
def scan_decimals(buffer, start, stop, scale, out):
    """Parse every number in ``buffer[start:stop]`` into ``out``, in order.

    A number is a maximal run of the bytes ``0-9 . + -``; every other byte
    (quotes, commas, brackets, colons, letters, spaces) is a delimiter. So
    ``[["61737.63000000","0.00012345"],["61737.64000000","1.5"]]`` at scale 8
    gives 6173763000000, 12345, 6173764000000, 150000000. Mind that numbers
    outside quotes count too (a JSON key's value such as ``"u":5009``), and
    that a letter splits a run (``1e5`` reads as 1 and 5): pass the range that
    holds the numbers wanted.

    Parameters
    ----------
    buffer : 1-D uint8 array
    start, stop : int
        The range to scan; it must lie within ``buffer``.
    scale : int
        Decimals of the values, 0 to 18.
    out : 1-D int64 array
        Receives the values.

    Returns
    -------
    count : int64
        How many values were written to ``out[:count]``.
    status : int64
        :data:`OK` when every number in the range was written. Otherwise the
        scan stops: :data:`INVALID`, :data:`TOO_PRECISE` or :data:`OVERFLOW` for
        a bad number; :data:`FULL` when ``out`` is full and another number
        follows (a range holding exactly ``len(out)`` numbers is OK).
        :data:`INVALID` with position ``start`` for a range outside the buffer
        or a bad scale.
    error_position : int64
        Where the bad number starts, or for :data:`FULL` where the first number
        not written starts (scan again from there); -1 when OK.
    """
    if start < 0 or stop > len(buffer) or start > stop or scale < 0 or scale > MAX_SCALE:
        return np.int64(0), np.int64(INVALID), np.int64(start)
    capacity = len(out)
    count = 0
    position = start
    while position < stop:
        if not _is_number_byte(buffer[position]):
            position += 1
            continue
        if count == capacity:
            return np.int64(count), np.int64(FULL), np.int64(position)
        usual, value, end = _parse_usual(buffer, position, stop, scale)
        if not usual or (end < stop and _is_number_byte(buffer[end])):
            value, status, end = _parse_run(buffer, position, stop, scale)
            if status != OK:
                return np.int64(count), np.int64(status), np.int64(position)
        out[count] = value
        count += 1
        position = end
    return np.int64(count), np.int64(OK), np.int64(-1)


@kernel
def rescale_value(value, from_scale, to_scale, rounding):
    """``value`` at ``from_scale`` decimals, as an int64 at ``to_scale`` decimals.

    Parameters
    ----------
    value : int64
    from_scale, to_scale : int
        0 to 18.
    rounding : int
        :data:`ROUND_HALF_EVEN` or :data:`ROUND_DOWN` (toward zero); used only
        when decimals are dropped.

    Returns
    -------
    value : int64
        The rescaled value; 0 unless the status is OK.
    status : int64
        :data:`OK`, :data:`OVERFLOW` (more decimals do not fit) or
        :data:`INVALID` (a scale outside 0..18 or an unknown rounding code).
    """
    value = np.int64(value)
    if (from_scale < 0 or from_scale > MAX_SCALE or to_scale < 0 or to_scale > MAX_SCALE
            or (rounding != ROUND_HALF_EVEN and rounding != ROUND_DOWN)):
        return np.int64(0), np.int64(INVALID)
    if to_scale >= from_scale:
        shift = to_scale - from_scale
        if shift == 0:
            return value, np.int64(OK)
        # 10**shift never divides 2**63, so the negative limit mirrors the positive one.
        if value < _NEGATIVE_LIMITS[shift] or value > -_NEGATIVE_LIMITS[shift]:
            return np.int64(0), np.int64(OVERFLOW)
        return value * POWERS_OF_TEN[shift], np.int64(OK)
    divisor = POWERS_OF_TEN[from_scale - to_scale]
    # Truncating division; the remainder has the sign of value and |remainder| < divisor.
    quotient = value // divisor
    remainder = value - quotient * divisor
    if remainder != 0 and value < 0:
        quotient += 1
        remainder -= divisor
    if rounding == ROUND_HALF_EVEN and remainder != 0:
        half = divisor // 2
        magnitude = remainder if remainder > 0 else -remainder
        if magnitude > half or (magnitude == half and quotient % 2 != 0):
            quotient += 1 if value > 0 else -1
    return np.int64(quotient), np.int64(OK)


@kernel
def rescale_array(values, from_scale, to_scale, rounding, out):
    """:func:`rescale_value` over ``values`` into ``out``: (status, first bad index).

    Stops at the first value that does not fit, returning its index (-1 when
    all fit). ``out`` may be ``values`` itself. ``out`` must be at least as
    long as ``values``; if it is shorter, nothing is written and the status is
    :data:`INVALID`.
    """
    if len(out) < len(values):
        return np.int64(INVALID), np.int64(-1)
    for index in range(len(values)):
        rescaled, status = rescale_value(values[index], from_scale, to_scale, rounding)
        if status != OK:
            return status, np.int64(index if status == OVERFLOW else -1)
        out[index] = rescaled
    return np.int64(OK), np.int64(-1)


@inline_kernel
def _digit_count(value):
    """Decimal digits of an unsigned ``value`` (1 for 0)."""
    digits = 1
    while digits < 20 and value >= _UNSIGNED_POWERS[digits]:    # comparisons, not divisions
        digits += 1
    return digits


_UNSIGNED_POWERS = np.array([10 ** k for k in range(20)], np.uint64)
#: "00" to "99": digits are written two at a time, one division for both.
_DIGIT_PAIRS = np.array([ord(c) for k in range(100) for c in f"{k:02d}"], np.uint8)


@inline_kernel
def put_digits(out, start, value, digits):
    """The last ``digits`` decimal digits of an unsigned ``value`` into ``out[start:]``."""
    position = start + digits
    while position - start >= 2:
        pair = value % np.uint64(100)
        value //= np.uint64(100)
        position -= 2
        out[position] = _DIGIT_PAIRS[2 * pair]
        out[position + 1] = _DIGIT_PAIRS[2 * pair + 1]
    if position > start:
        out[start] = _ZERO + value % np.uint64(10)


@llvm_inline_kernel
def format_decimal_bytes(value, scale, decimals, out, start, trim=False):
    """Write ``value`` (at ``scale`` decimals) as decimal text into ``out[start:]``.

    The njit counterpart of :func:`format_decimal`, for exports written from
    njit code: ``decimals`` digits follow the dot (none and no dot when 0);
    fewer than ``scale`` only when the dropped digits are zeros. With
    ``trim``, trailing zeros of the decimals go, and the dot with them when
    none is left: the shortest text of the value (``"30233.6"``, ``"3"``).

    Returns
    -------
    stop : int64
        Where the text ends in ``out``; ``start`` unless the status is OK.
    status : int64
        :data:`OK`; :data:`TOO_PRECISE` when a dropped digit is not zero;
        :data:`FULL` when ``out`` has no room (nothing is written);
        :data:`INVALID` for a scale outside 0..18, negative ``decimals`` or a
        ``start`` outside ``out``.
    """
    value = np.int64(value)
    if scale < 0 or scale > MAX_SCALE or decimals < 0 or start < 0 or start > len(out):
        return np.int64(start), np.int64(INVALID)
    # Unsigned magnitude (INT64_MIN has one): division by the constant 10 is then a
    # multiply and a shift, with no correction for the sign.
    magnitude = np.uint64(-(value + 1)) + np.uint64(1) if value < 0 else np.uint64(value)
    divisor = np.uint64(POWERS_OF_TEN[scale])
    whole = magnitude // divisor
    fraction = magnitude - whole * divisor
    kept = min(scale, decimals)
    if kept < scale:
        dropped = np.uint64(POWERS_OF_TEN[scale - kept])
        if fraction % dropped != 0:
            return np.int64(start), np.int64(TOO_PRECISE)
        fraction = fraction // dropped
    if trim:
        while kept > 0 and fraction % np.uint64(10) == 0:
            fraction = fraction // np.uint64(10)
            kept -= 1
        decimals = kept
    whole_digits = _digit_count(whole)
    length = (1 if value < 0 else 0) + whole_digits + (1 + decimals if decimals > 0 else 0)
    if start + length > len(out):
        return np.int64(start), np.int64(FULL)
    position = start
    if value < 0:
        out[position] = _MINUS
        position += 1
    put_digits(out, position, whole, whole_digits)
    position += whole_digits
    if decimals > 0:
        out[position] = _DOT
        position += 1
        put_digits(out, position, fraction, kept)
        position += kept
        for _ in range(decimals - kept):
            out[position] = _ZERO
            position += 1
    return np.int64(position), np.int64(OK)


# ---------------------------------------------------------------- Python wrappers


def _check_scale(scale, name="scale"):
    scale = operator.index(scale)
    if not 0 <= scale <= MAX_SCALE:
        raise ValueError(f"{name} must be in 0..{MAX_SCALE}, got {scale}")
    return scale


def _as_buffer(text):
    """``text`` (str or bytes-like) as a read-only uint8 array.

    Read-only like the buffers the feeds read from files, so the kernels below compile
    once for both (Numba compiles again for each flag).
    """
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"invalid decimal {text!r}: not ASCII") from None
    elif isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
    else:
        raise TypeError(f"expected str or bytes, got {type(text).__name__}")
    return np.frombuffer(raw, dtype=np.uint8)


def _raise_for_status(status, text, scale):
    if status == INVALID:
        raise ValueError(f"invalid decimal {text!r}")
    if status == TOO_PRECISE:
        raise ValueError(f"decimal {text!r} has non-zero digits beyond {scale} decimals")
    if status == OVERFLOW:
        raise OverflowError(f"decimal {text!r} at scale {scale} is out of int64 range")
    raise RuntimeError(f"unexpected status {status} for {text!r}")


def parse_decimal(text, scale):
    """Parse a decimal string exactly as an int at ``scale`` decimals (never through float).

    Parameters
    ----------
    text : str or bytes
        A decimal in the syntax of the module docstring, e.g. ``"61737.63000000"``.
    scale : int
        Decimals of the result, 0 to 18.

    Returns
    -------
    int
        ``number * 10**scale``, within int64.

    Raises
    ------
    ValueError
        Invalid text, or a non-zero digit beyond ``scale`` (the message names the text).
    OverflowError
        Out of int64 at ``scale``.

    Examples
    --------
    >>> parse_decimal("61737.63000000", 2)
    6173763
    >>> parse_decimal(b"-1.5", 8)
    -150000000
    """
    scale = _check_scale(scale)
    buffer = _as_buffer(text)
    value, status = parse_decimal_bytes(buffer, 0, len(buffer), scale)
    if status != OK:
        _raise_for_status(status, text, scale)
    return int(value)


def parse_decimals(text, scale):
    """Every number in ``text`` (delimited as :func:`scan_decimals` does), as an int64 array.

    >>> parse_decimals('[["61737.63000000","0.00012345"]]', 8).tolist()
    [6173763000000, 12345]
    """
    scale = _check_scale(scale)
    buffer = _as_buffer(text)
    # Numbers are separated by at least one delimiter byte.
    out = np.empty((len(buffer) + 1) // 2, dtype=np.int64)
    count, status, position = scan_decimals(buffer, 0, len(buffer), scale, out)
    if status != OK:
        raw = bytes(buffer)
        end = position + 1
        while end < len(raw) and raw[end] in _NUMBER_BYTES:
            end += 1
        number = raw[position:end].decode("ascii")
        try:
            _raise_for_status(status, number, scale)
        except (ValueError, OverflowError) as error:
            raise type(error)(f"{error} at byte {position}") from None
    return out[:count].copy()


def format_decimal(value, scale, decimals=None, trim=False):
    """The text of ``value`` at ``scale`` decimals: the exact reverse of :func:`parse_decimal`.

    Parameters
    ----------
    value : int
        Within int64.
    scale : int
        Decimals ``value`` holds, 0 to 18.
    decimals : int, optional
        How many decimals to print: ``scale`` when None; more pads with zeros;
        fewer drops trailing digits, only when they are zeros. It never rounds:
        round with :func:`rescale` first if that is what you mean.
    trim : bool
        Drop the trailing zeros of the decimals, and the dot when none is
        left: the shortest text of the value, as exchanges write it (and
        checksum it).

    Returns
    -------
    str
        ``"-"`` for negative values, the whole part, then ``"."`` and
        ``decimals`` digits (no dot when ``decimals`` is 0, or with ``trim``
        when they are all zeros).

    Raises
    ------
    ValueError
        A non-zero digit would be dropped, or a bad ``scale`` or ``decimals``.
    OverflowError
        ``value`` is outside int64.

    Examples
    --------
    >>> format_decimal(6173763000000, 8)
    '61737.63000000'
    >>> format_decimal(6173763000000, 8, decimals=2)
    '61737.63'
    >>> format_decimal(-5, 1, decimals=3)
    '-0.500'
    >>> format_decimal(3023360000000, 8, trim=True)
    '30233.6'
    """
    value = operator.index(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError(f"{value} is out of int64 range")
    scale = _check_scale(scale)
    decimals = scale if decimals is None else operator.index(decimals)
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    whole, fraction = divmod(abs(value), 10 ** scale)
    digits = str(fraction).rjust(scale, "0") if scale else ""
    if decimals < scale:
        if digits[decimals:].strip("0"):
            raise ValueError(f"{value} at scale {scale} needs more than {decimals} decimals; "
                             "round it with rescale first")
        digits = digits[:decimals]
    else:
        digits = digits.ljust(decimals, "0")
    if trim:
        digits = digits.rstrip("0")
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def rescale(values, from_scale, to_scale, rounding="half_even"):
    """Integer ``values`` at ``from_scale`` decimals, as a new int64 array at ``to_scale``.

    Parameters
    ----------
    values : array_like of integers
        Any shape.
    from_scale, to_scale : int
        0 to 18.
    rounding : {"half_even", "down"}
        How dropped decimals round: to nearest, ties to even; or toward zero.

    Returns
    -------
    numpy.ndarray
        int64, the shape of ``values``.

    Raises
    ------
    OverflowError
        A value does not fit int64 at ``to_scale`` (the message names the first
        one and its index); never wraps.
    TypeError
        ``values`` are not integers.
    ValueError
        A bad scale or rounding.

    Examples
    --------
    >>> rescale([6173763, -25, 35], 2, 1).tolist()
    [617376, -2, 4]
    >>> rescale([6173763, -25], 2, 1, rounding="down").tolist()
    [617376, -2]
    """
    from_scale = _check_scale(from_scale, "from_scale")
    to_scale = _check_scale(to_scale, "to_scale")
    try:
        rounding_code = _ROUNDINGS[rounding]
    except (KeyError, TypeError):
        raise ValueError(
            f"rounding must be one of {sorted(_ROUNDINGS)}, got {rounding!r}") from None
    array = np.asarray(values)
    if array.dtype.kind not in "iu":
        if array.size == 0 and array.dtype.kind == "f":
            array = array.astype(np.int64)  # np.asarray([]) is float64
        else:
            raise TypeError(f"rescale needs integer values, got dtype {array.dtype}")
    if array.dtype == np.uint64 and array.size and array.max() > INT64_MAX:
        flat_index = int(np.argmax(array.reshape(-1) > INT64_MAX))
        raise OverflowError(f"values[{_index_text(flat_index, array.shape)}] = "
                            f"{array.reshape(-1)[flat_index]} is out of int64 range")
    source = np.ascontiguousarray(array, dtype=np.int64).reshape(-1)
    out = np.empty_like(source)
    status, index = rescale_array(source, from_scale, to_scale, rounding_code, out)
    if status == OVERFLOW:
        raise OverflowError(
            f"values[{_index_text(int(index), array.shape)}] = {source[index]} at scale "
            f"{from_scale} is out of int64 range at scale {to_scale}")
    if status != OK:
        raise RuntimeError(f"unexpected status: {status_name(status)}")
    return out.reshape(array.shape)


def decimal_places(text):
    """The fewest decimals that hold the decimal ``text`` exactly: the scale it needs.

    An exchange's tick or lot size (``"0.01000000"`` -> 2, ``"0.5"`` -> 1,
    ``"10"`` -> 0) gives the scale of the prices or quantities that are
    multiples of it.

    Raises
    ------
    ValueError
        Invalid text, or more than 18 decimals.
    """
    buffer = _as_buffer(text)
    for scale in range(MAX_SCALE + 1):
        value, status = parse_decimal_bytes(buffer, 0, len(buffer), scale)
        if status == OK:
            return scale
        if status != TOO_PRECISE:
            _raise_for_status(status, text, scale)
    raise ValueError(f"decimal {text!r} has more than {MAX_SCALE} decimals")


def _index_text(flat_index, shape):
    if len(shape) == 1:
        return str(flat_index)
    return ", ".join(str(int(i)) for i in np.unravel_index(flat_index, shape))
