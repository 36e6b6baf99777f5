import gzip
import json
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import types

from ringbook.kernels import fixed
from ringbook.kernels.fixed import (FULL, INT64_MAX, INT64_MIN, INVALID, OK, OVERFLOW, ROUND_DOWN,
                           ROUND_HALF_EVEN, TOO_PRECISE, format_decimal, format_decimal_bytes,
                           parse_decimal, parse_decimal_bytes, parse_decimals, rescale,
                           rescale_array, rescale_value, scan_decimals)
from tests.llvm_ir import allocation_calls
from tests.naive import (naive_decimal_places, naive_format_decimal, naive_parse_decimal,
                         naive_rescale, naive_scan_decimals)

STATUS = {"OK": OK, "INVALID": INVALID, "TOO_PRECISE": TOO_PRECISE, "OVERFLOW": OVERFLOW,
          "FULL": FULL}
ROUNDING = {"half_even": ROUND_HALF_EVEN, "down": ROUND_DOWN}
PROPERTY = settings(max_examples=300, deadline=None)
scales = st.integers(0, fixed.MAX_SCALE)
int64s = st.integers(INT64_MIN, INT64_MAX)


def as_buffer(text):
    """Read-only, as the feeds' buffers and :func:`parse_decimal`'s are: one compile of each kernel."""
    return np.frombuffer(text.encode("latin-1"), dtype=np.uint8)


def kernel_parse(text, scale):
    buffer = as_buffer(text)
    value, status = parse_decimal_bytes(buffer, 0, len(buffer), scale)
    return int(value), int(status)


def expected_parse(text, scale):
    value, name = naive_parse_decimal(text, scale)
    return value, STATUS[name]


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("text, scale, expected", [
    ("61737.63000000", 8, 6173763000000),
    ("61737.63000000", 2, 6173763),  # zeros beyond the scale are fine
    ("0.00012345", 8, 12345),
    ("-1.5", 8, -150000000),
    ("42", 0, 42),
    ("4.2", 18, 42 * 10 ** 17),
    (".5", 1, 5),
    ("5.", 1, 50),
    ("+1", 3, 1000),
    ("-0", 4, 0),
    ("-0.000", 2, 0),
    ("9223372036854775807", 0, INT64_MAX),
    ("-9223372036854775808", 0, INT64_MIN),
    ("-9.223372036854775808", 18, INT64_MIN),
    ("92233720368547758.07", 2, INT64_MAX),
    ("0" * 100 + "1." + "0" * 100, 18, 10 ** 18),
])
def test_parse_decimal_examples(text, scale, expected):
    assert parse_decimal(text, scale) == expected
    assert parse_decimal(text.encode(), scale) == expected
    assert kernel_parse(text, scale) == (expected, OK)


@pytest.mark.parametrize("text", [
    "", ".", "-", "+", "+-1", "--1", "1-", "1.2.3", "..5", "1 ", " 1", "1 000", "1e5", "1E5",
    "inf", "nan", "Infinity", "1_000", "0x10", "1,5", "\x00", "\u0661",
])
def test_parse_decimal_rejects_what_is_not_a_decimal(text):
    with pytest.raises(ValueError, match="invalid decimal") as error:
        parse_decimal(text, 8)
    assert repr(text) in str(error.value)


@pytest.mark.parametrize("text, scale", [("1.234", 2), ("0.00000001", 7), ("-1.5", 0)])
def test_parse_decimal_rejects_digits_beyond_the_scale(text, scale):
    with pytest.raises(ValueError, match="beyond") as error:
        parse_decimal(text, scale)
    assert repr(text) in str(error.value)


@pytest.mark.parametrize("text, scale", [
    ("9223372036854775808", 0), ("-9223372036854775809", 0), ("9223372036854775807", 1),
    ("92233720368547758.08", 2), ("1" + "0" * 40, 0), ("10", 18),
])
def test_parse_decimal_overflow_is_an_error(text, scale):
    with pytest.raises(OverflowError) as error:
        parse_decimal(text, scale)
    assert repr(text) in str(error.value)


def test_the_first_fault_that_applies_is_reported():
    assert kernel_parse("9" * 30 + ".123x", 2) == (0, INVALID)
    assert kernel_parse("9" * 30 + ".123", 2) == (0, TOO_PRECISE)
    assert kernel_parse("9" * 30 + ".12", 2) == (0, OVERFLOW)


def test_parse_decimal_rejects_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        parse_decimal("1", 19)
    with pytest.raises(ValueError, match="scale"):
        parse_decimal("1", -1)
    with pytest.raises(TypeError):
        parse_decimal(1.5, 2)


def test_kernel_checks_its_range_and_scale():
    buffer = as_buffer("12345")
    assert parse_decimal_bytes(buffer, 0, 6, 0) == (0, INVALID)
    assert parse_decimal_bytes(buffer, -1, 3, 0) == (0, INVALID)
    assert parse_decimal_bytes(buffer, 3, 2, 0) == (0, INVALID)
    assert parse_decimal_bytes(buffer, 0, 5, 19) == (0, INVALID)
    assert parse_decimal_bytes(buffer, 1, 3, 2) == (2300, OK)


@PROPERTY
@given(st.text(alphabet="0123456789.+-", max_size=24), scales)
def test_any_text_parses_as_decimal_does(text, scale):
    assert kernel_parse(text, scale) == expected_parse(text, scale)


@st.composite
def decimal_texts(draw):
    """Valid texts in every form the syntax allows, some far beyond int64."""
    whole = draw(st.one_of(st.integers(0, 10 ** 20), st.just(0)))
    fraction = draw(st.text(alphabet="0123456789", max_size=22))
    sign = draw(st.sampled_from(["", "-", "+"]))
    leading_zeros = "0" * draw(st.integers(0, 3))
    bare_fraction = whole == 0 and fraction and draw(st.booleans())  # ".5"
    whole_text = "" if bare_fraction else leading_zeros + str(whole)
    dot = "." if fraction or draw(st.booleans()) else ""
    return sign + whole_text + dot + fraction


@PROPERTY
@given(decimal_texts(), scales)
def test_decimal_texts_parse_as_decimal_does(text, scale):
    assert kernel_parse(text, scale) == expected_parse(text, scale)


def check_fields(fields, digits_after, scale):
    """Each field of a comma-separated line, parsed where it stands by ``parse_field``, as
    ``Decimal`` parses it. Digits follow the line in the buffer: eight-byte loads read them,
    and the field must not take them."""
    text = ",".join(fields)
    buffer = as_buffer(text + "7" * digits_after)
    position = 0
    for field in fields:
        value, status, end = fixed.parse_field(buffer, position, len(text), scale, ord(","))
        assert (int(value), int(status), int(end)) == (*expected_parse(field, scale), position + len(field))
        position = int(end) + 1


@PROPERTY
@given(st.lists(st.one_of(decimal_texts(), st.text(alphabet="0123456789.+-x ", max_size=24)), min_size=1,
                max_size=4),
       st.integers(0, 20), scales)
def test_parse_field_parses_each_field_as_decimal_does(fields, digits_after, scale):
    """Any fields, at any distance from the buffer's end (eight bytes at a time, then a byte at a time)."""
    check_fields(fields, digits_after, scale)


@pytest.mark.parametrize("field, scale", [
    ("999999999999999999", 0), ("9223372036854775807", 0), ("9223372036854775808", 0),
    ("-9223372036854775808", 0), ("9999999999", 9), ("922337203.6854775807", 10), ("99999999.99999999", 10),
    ("12345678", 0), ("123456789", 0), ("1234567.8", 1), ("-0.00000001", 8), ("1.000000000", 8)])
@pytest.mark.parametrize("digits_after", [0, 3, 16])
def test_parse_field_at_the_edges_of_int64_and_of_eight_digits(field, scale, digits_after):
    check_fields([field, field], digits_after, scale)


@PROPERTY
@given(int64s, scales)
def test_format_then_parse_round_trips(value, scale):
    text = format_decimal(value, scale)
    assert Decimal(text) == Decimal(naive_format_decimal(value, scale))
    assert parse_decimal(text, scale) == value


def test_real_binance_prices_and_quantities_parse_as_decimal_does(shared_data):
    checked = 0
    with gzip.open(shared_data / "binance" / "spot_btcusdt_20240808.gz", "rt") as lines:
        for line in lines:
            message = json.loads(line.split(" ", 1)[1])
            data = message.get("data", message)
            texts = [text for pairs in (data.get("b", []), data.get("a", []))
                     if isinstance(pairs, list) for pair in pairs for text in pair]
            for text in texts:
                assert parse_decimal(text, 8) == int(Decimal(text).scaleb(8))
                checked += 1
    assert checked > 10_000


# ------------------------------------------------------------------ formatting


@pytest.mark.parametrize("value, scale, decimals, expected", [
    (6173763000000, 8, None, "61737.63000000"),
    (6173763000000, 8, 2, "61737.63"),
    (6173763000000, 8, 10, "61737.6300000000"),
    (12345, 8, None, "0.00012345"),
    (-150000000, 8, 1, "-1.5"),
    (0, 3, None, "0.000"),
    (42, 0, None, "42"),
    (42, 0, 2, "42.00"),
    (4200, 2, 0, "42"),
    (INT64_MIN, 18, None, "-9.223372036854775808"),
    (INT64_MAX, 0, None, "9223372036854775807"),
])
def test_format_decimal_examples(value, scale, decimals, expected):
    assert format_decimal(value, scale, decimals) == expected
    out = np.zeros(40, dtype=np.uint8)
    decimals = scale if decimals is None else decimals
    stop, status = format_decimal_bytes(value, scale, decimals, out, 3)
    assert status == OK
    assert bytes(out[3:stop]).decode() == expected


def test_format_decimal_never_drops_a_digit_silently():
    with pytest.raises(ValueError, match="rescale"):
        format_decimal(6173763, 2, decimals=1)
    out = np.zeros(40, dtype=np.uint8)
    assert format_decimal_bytes(6173763, 2, 1, out, 0) == (0, TOO_PRECISE)
    with pytest.raises(OverflowError):
        format_decimal(INT64_MAX + 1, 0)
    with pytest.raises(ValueError):
        format_decimal(1, 2, decimals=-1)


def test_format_decimal_bytes_reports_a_full_buffer_and_writes_nothing():
    out = np.zeros(5, dtype=np.uint8)
    assert format_decimal_bytes(-150, 2, 2, out, 0) == (5, OK)
    assert format_decimal_bytes(-150, 2, 2, out, 1) == (1, FULL)
    assert format_decimal_bytes(-150, 2, 2, out, 6) == (6, INVALID)
    assert bytes(out) == b"-1.50"


@PROPERTY
@given(int64s, scales, st.integers(0, 20))
def test_format_decimal_bytes_agrees_with_format_decimal(value, scale, decimals):
    out = np.zeros(48, dtype=np.uint8)
    stop, status = format_decimal_bytes(value, scale, decimals, out, 0)
    try:
        expected = format_decimal(value, scale, decimals)
    except ValueError:
        assert status == TOO_PRECISE
    else:
        assert status == OK
        assert bytes(out[:stop]).decode() == expected
        assert parse_decimal(expected, scale) == value


@pytest.mark.parametrize("value, scale, decimals, expected", [
    (3023360000000, 8, None, "30233.6"),
    (300000000, 8, None, "3"),
    (120290, 8, None, "0.0012029"),
    (0, 8, None, "0"),
    (-150000000, 8, None, "-1.5"),
    (42, 0, None, "42"),
    (4200, 2, 5, "42"),
    (INT64_MIN, 18, None, "-9.223372036854775808"),
])
def test_format_decimal_trim_gives_the_shortest_text(value, scale, decimals, expected):
    assert format_decimal(value, scale, decimals, trim=True) == expected
    out = np.zeros(40, dtype=np.uint8)
    decimals = scale if decimals is None else decimals
    stop, status = format_decimal_bytes(value, scale, decimals, out, 3, True)
    assert status == OK
    assert bytes(out[3:stop]).decode() == expected


@PROPERTY
@given(int64s, scales, st.integers(0, 20))
def test_format_decimal_trim_agrees_with_decimal(value, scale, decimals):
    out = np.zeros(48, dtype=np.uint8)
    stop, status = format_decimal_bytes(value, scale, decimals, out, 0, True)
    try:
        expected = format_decimal(value, scale, decimals, trim=True)
    except ValueError:
        assert status == TOO_PRECISE
    else:
        assert expected == naive_format_decimal(value, scale, trim=True)
        assert status == OK
        assert bytes(out[:stop]).decode() == expected


@PROPERTY
@given(decimal_texts())
def test_decimal_places_is_the_least_scale_that_parses(text):
    try:
        expected = naive_decimal_places(text)
    except ArithmeticError:
        expected = None
    if expected is None or expected > fixed.MAX_SCALE or kernel_parse(text, expected)[1] != OK:
        with pytest.raises((ValueError, OverflowError)):
            fixed.decimal_places(text)
    else:
        assert fixed.decimal_places(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("0.01000000", 2), ("0.5", 1), ("10", 0), ("100.00", 0), ("0.00000001", 8), ("5e-4", None),
])
def test_decimal_places_of_exchange_tick_sizes(text, expected):
    if expected is None:
        with pytest.raises(ValueError, match="invalid decimal"):
            fixed.decimal_places(text)
    else:
        assert fixed.decimal_places(text) == expected


# ------------------------------------------------------------------ rescaling


@pytest.mark.parametrize("value, expected_half_even, expected_down", [
    (25, 2, 2), (35, 4, 3), (-25, -2, -2), (-35, -4, -3), (26, 3, 2), (-26, -3, -2),
    (24, 2, 2), (-24, -2, -2), (5, 0, 0), (15, 2, 1), (-5, 0, 0), (0, 0, 0),
])
def test_rescale_rounds_dropped_decimals(value, expected_half_even, expected_down):
    assert rescale_value(value, 1, 0, ROUND_HALF_EVEN) == (expected_half_even, OK)
    assert rescale_value(value, 1, 0, ROUND_DOWN) == (expected_down, OK)


@PROPERTY
@given(int64s, scales, scales, st.sampled_from(sorted(ROUNDING)))
def test_rescale_value_agrees_with_decimal_quantize(value, from_scale, to_scale, rounding):
    expected, name = naive_rescale(value, from_scale, to_scale, rounding)
    result = rescale_value(value, from_scale, to_scale, ROUNDING[rounding])
    assert result == (expected, STATUS[name])


@pytest.mark.parametrize("value, from_scale, to_scale", [
    (INT64_MAX, 0, 1), (INT64_MIN, 0, 1), (922337203685477581, 0, 1),
    (-922337203685477581, 0, 1), (10, 0, 18), (-10, 0, 18),
])
def test_rescale_value_overflow_is_an_error(value, from_scale, to_scale):
    assert rescale_value(value, from_scale, to_scale, ROUND_HALF_EVEN) == (0, OVERFLOW)


def test_rescale_value_rejects_bad_arguments():
    assert rescale_value(1, 19, 0, ROUND_DOWN) == (0, INVALID)
    assert rescale_value(1, 0, -1, ROUND_DOWN) == (0, INVALID)
    assert rescale_value(1, 2, 0, 7) == (0, INVALID)


def test_rescale_array_keeps_shape_and_dtype():
    values = np.array([[6173763, -25], [35, 0]], dtype=np.int32)
    result = rescale(values, 2, 1)
    assert result.dtype == np.int64
    assert result.tolist() == [[617376, -2], [4, 0]]
    assert rescale(values, 2, 1, rounding="down").tolist() == [[617376, -2], [3, 0]]
    assert rescale(values, 2, 4).tolist() == [[617376300, -2500], [3500, 0]]
    assert rescale([], 2, 4).tolist() == []


def test_rescale_overflow_names_the_first_offending_index_and_value():
    values = np.array([1, 2, INT64_MAX // 10, INT64_MAX // 10 + 1, INT64_MAX], dtype=np.int64)
    with pytest.raises(OverflowError, match=rf"values\[3\] = {INT64_MAX // 10 + 1}"):
        rescale(values, 0, 1)
    with pytest.raises(OverflowError, match=r"values\[1\]"):
        rescale(np.array([0, 2 ** 63], dtype=np.uint64), 0, 0)
    with pytest.raises(OverflowError, match=r"values\[1, 0\]"):
        rescale(np.array([[0, 1], [INT64_MIN, 0]]), 3, 4)


def test_rescale_rejects_bad_arguments():
    with pytest.raises(TypeError):
        rescale(np.array([1.5]), 1, 0)
    with pytest.raises(ValueError, match="rounding"):
        rescale([1], 1, 0, rounding="half_up")
    with pytest.raises(ValueError, match="to_scale"):
        rescale([1], 1, 19)


def test_rescale_array_kernel_works_in_place_and_stops_at_overflow():
    values = np.array([15, 25, -35], dtype=np.int64)
    assert rescale_array(values, 1, 0, ROUND_HALF_EVEN, values) == (OK, -1)
    assert values.tolist() == [2, 2, -4]
    out = np.zeros(3, dtype=np.int64)
    assert rescale_array(np.array([1, INT64_MIN, 3]), 0, 2, ROUND_DOWN, out) == (OVERFLOW, 1)
    assert rescale_array(values, 0, 1, ROUND_DOWN, out[:2]) == (INVALID, -1)


# ------------------------------------------------------------------ scanning


BINANCE_FRAGMENT = '[["61737.63000000","0.00012345"],["61737.64000000","1.5"]]'


def kernel_scan(text, scale, capacity, start=0, stop=None):
    buffer = as_buffer(text)
    out = np.full(capacity, -7, dtype=np.int64)
    stop = len(buffer) if stop is None else stop
    count, status, position = scan_decimals(buffer, start, stop, scale, out)
    assert (out[count:] == -7).all()  # nothing written beyond count
    return out[:count].tolist(), int(status), int(position)


def test_scan_decimals_reads_a_depth_fragment():
    assert kernel_scan(BINANCE_FRAGMENT, 8, 4) == (
        [6173763000000, 12345, 6173764000000, 150000000], OK, -1)
    assert parse_decimals(BINANCE_FRAGMENT, 8).tolist() == [6173763000000, 12345,
                                                             6173764000000, 150000000]


def test_scan_decimals_reports_a_full_out_where_to_resume():
    values, status, position = kernel_scan(BINANCE_FRAGMENT, 8, 3)
    assert (values, status) == ([6173763000000, 12345, 6173764000000], FULL)
    assert BINANCE_FRAGMENT[position:].startswith('1.5"')
    assert kernel_scan(BINANCE_FRAGMENT, 8, 4, start=position) == ([150000000], OK, -1)
    assert kernel_scan(BINANCE_FRAGMENT, 8, 0)[1:] == (FULL, 3)
    assert kernel_scan("[]", 8, 0) == ([], OK, -1)


def test_scan_decimals_stops_at_the_first_bad_number():
    text = '["1.5","2.5.1","3"]'
    assert kernel_scan(text, 2, 8) == ([150], INVALID, text.index("2.5.1"))
    assert kernel_scan('"1","0.001"', 2, 8) == ([100], TOO_PRECISE, 5)
    assert kernel_scan('1 99999999999999999999', 0, 8) == ([1], OVERFLOW, 2)
    with pytest.raises(ValueError, match=rf"'2\.5\.1'.* at byte {text.index('2.5.1')}"):
        parse_decimals(text, 2)


def test_scan_decimals_checks_its_range():
    buffer = as_buffer("1,2")
    out = np.zeros(4, dtype=np.int64)
    assert scan_decimals(buffer, 0, 4, 0, out) == (0, INVALID, 0)
    assert scan_decimals(buffer, 2, 1, 0, out) == (0, INVALID, 2)
    assert scan_decimals(buffer, 0, 3, 19, out) == (0, INVALID, 0)
    assert scan_decimals(buffer, 1, 3, 0, out) == (1, OK, -1)
    assert out[0] == 2


number_tokens = st.one_of(decimal_texts(), st.text(alphabet="0123456789.+-", max_size=6))
delimiters = st.text(alphabet='"[]{},: abez\t', min_size=1, max_size=3)


@PROPERTY
@given(st.lists(st.tuples(number_tokens, delimiters), max_size=8), delimiters, scales,
       st.integers(0, 9))
def test_scan_decimals_agrees_with_a_regex_and_decimal(tokens, first, scale, capacity):
    text = first + "".join(number + delimiter for number, delimiter in tokens)
    values, name, position = naive_scan_decimals(text, scale, capacity)
    assert kernel_scan(text, scale, capacity) == (values, STATUS[name], position)


def test_scan_decimals_reads_real_depth_updates(shared_data):
    checked = 0
    with gzip.open(shared_data / "binance" / "spot_btcusdt_20240808.gz", "rt") as lines:
        for line in lines:
            if '"depthUpdate"' not in line:
                continue
            data = json.loads(line.split(" ", 1)[1])["data"]
            fragment = line[line.index('"b":') + 4:]  # the bids, then "a" and the asks
            expected = [int(Decimal(text).scaleb(8)) for side in (data["b"], data["a"])
                        for pair in side for text in pair]
            assert kernel_scan(fragment, 8, 2 * len(expected)) == (expected, OK, -1)
            checked += 1
    assert checked > 3000


# ------------------------------------------------------------------ no allocation


BUFFER = types.Array(types.uint8, 1, "C")
INT64_ARRAY = types.Array(types.int64, 1, "C")


@pytest.mark.parametrize("kernel, signature", [
    (parse_decimal_bytes, (BUFFER, types.int64, types.int64, types.int64)),
    (scan_decimals, (BUFFER, types.int64, types.int64, types.int64, INT64_ARRAY)),
    (rescale_value, (types.int64, types.int64, types.int64, types.int64)),
    (rescale_array, (INT64_ARRAY, types.int64, types.int64, types.int64, INT64_ARRAY)),
    (format_decimal_bytes, (types.int64, types.int64, types.int64, BUFFER, types.int64,
                            types.boolean)),
])
@pytest.mark.slow
def test_kernels_allocate_nothing(kernel, signature):
    assert allocation_calls(kernel, signature) == []
