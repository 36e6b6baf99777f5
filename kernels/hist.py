"""Latency histogram: HdrHistogram's log-linear bucket layout in two flat int64 arrays.

A histogram is a pair of arrays made by :func:`new_histogram`:

``counts``
    int64, one count per bucket, in HdrHistogram's layout (so its encoded form and
    its percentiles agree with HdrHistogram's tools and the ``hdrh`` package).
``meta``
    int64, :data:`META_LEN` entries: the layout (fixed at creation) and the running
    statistics, at the index constants below.

Values are non-negative integers (nanoseconds, ticks...). The layout keeps
``significant_digits`` decimal digits of every value: a bucket is never wider than
``value / 10**significant_digits``. Values below 0 or above ``highest`` are clamped
to the nearest end of that range, recorded there, and counted in
``meta[CLAMPED_COUNT]``; recording never fails and never indexes outside ``counts``.

The kernels take ``(counts, meta, ...)`` in that order and can be called from
user ``@njit`` code; recording is O(1) and allocates nothing. The :class:`Histogram`
class wraps the two arrays for notebooks and exposes them as ``.counts`` and
``.meta``, so njit code can record into the same histogram.

Layout, for ``u = unit_magnitude = floor(log2(lowest))`` and
``h = sub_bucket_half_count_magnitude = ceil(log2(2 * 10**digits)) - 1``: bucket 0
holds values below ``2**(h + 1 + u)`` at a resolution of ``2**u``; bucket ``b > 0``
holds ``[2**(h + b + u), 2**(h + 1 + b + u))`` in ``2**h`` sub-buckets of width
``2**(b + u)``. The index of a value in bucket ``b`` with sub-bucket
``s = value >> (b + u)`` is ``(b << h) + s``.

Percentiles follow HdrHistogram's ``getValueAtPercentile``: the count at percentile
``p`` of ``n`` values is ``max(1, floor(p * n / 100 + 0.5))``; walking the counts,
the answer is the highest value equivalent to the first bucket whose cumulative
count reaches it (the lowest equivalent value for ``p == 0``). So it is the
sample of that rank in sorted order, rounded up to the top of its bucket.
"""

import base64
import struct
import zlib

import numpy as np
from numba.cpython.unsafe.numbers import leading_zeros

from ringbook.kernels.jit_options import kernel
from ringbook.kernels.limits import INT64_MAX

# Indices into ``meta``. The layout, fixed by new_histogram:
LOWEST = 0  #: lowest discernible value (>= 1), as given
HIGHEST = 1  #: highest trackable value; larger values are clamped to it
SIGNIFICANT_DIGITS = 2  #: decimal digits of resolution, 1 to 5
UNIT_MAGNITUDE = 3  #: floor(log2(lowest))
SUB_BUCKET_HALF_COUNT_MAGNITUDE = 4  #: log2 of the sub-buckets in buckets above the first
SUB_BUCKET_MASK = 5  #: (2 * sub_bucket_half_count - 1) << unit_magnitude
BUCKET_COUNT = 6  #: buckets (powers of two) needed to reach ``highest``
COUNTS_LEN = 7  #: length of ``counts``
# The running statistics:
TOTAL_COUNT = 8  #: values recorded
MIN_VALUE = 9  #: smallest value recorded (after clamping); INT64_MAX when empty
MAX_VALUE = 10  #: largest value recorded (after clamping); 0 when empty
CLAMPED_COUNT = 11  #: values that were outside [0, highest] and were clamped
META_LEN = 12

_LAYOUT_INDEX = {"LOWEST": LOWEST, "HIGHEST": HIGHEST, "SIGNIFICANT_DIGITS": SIGNIFICANT_DIGITS,
                 "UNIT_MAGNITUDE": UNIT_MAGNITUDE,
                 "SUB_BUCKET_HALF_COUNT_MAGNITUDE": SUB_BUCKET_HALF_COUNT_MAGNITUDE,
                 "SUB_BUCKET_MASK": SUB_BUCKET_MASK, "BUCKET_COUNT": BUCKET_COUNT,
                 "COUNTS_LEN": COUNTS_LEN}

#: Bounds on the layout. ``lowest`` stays at or below 2**40 so that floor(log2)
#: computed in floating point (as other HdrHistogram implementations do) agrees
#: with the exact one, and the same encoded histogram has the same layout
#: everywhere; ``highest`` stays below 2**62 so every bucket bound fits in int64.
MAX_LOWEST = 1 << 40
MAX_HIGHEST = (1 << 62) - 1

# HdrHistogram's V2 compressed encoding (the form its V1.3 interval logs carry).
_ENCODING_COOKIE = 0x1C849303 | 0x10  # payload header; 0x10: ZigZag LEB128 counts
_COMPRESSION_COOKIE = 0x1C849304 | 0x10  # base64'd envelope around the zlib'd payload
_COOKIE_BASE_MASK = ~0xF0 & 0xFFFFFFFF
_ENVELOPE = struct.Struct(">II")  # cookie, length of the compressed payload
_PAYLOAD_HEADER = struct.Struct(">IIIIqqd")  # cookie, counts bytes, normalizing offset,
# significant digits, lowest, highest, integer-to-double conversion ratio
_MAX_VARINT_BYTES = 9  # a 64-bit ZigZag LEB128 word takes at most 9 bytes

# Status codes of _decode_counts.
_DECODE_TRUNCATED = -1  # the last varint runs past the end of the buffer
_DECODE_OVERFLOW = -2  # counts or zero runs run past the end of the counts array


# ---------------------------------------------------------------- layout helpers


@kernel
def _counts_index(value, unit_magnitude, sub_bucket_half_count_magnitude, sub_bucket_mask):
    """Index in ``counts`` of a value in [0, highest]."""
    # The bucket is the power of two just above the value (never below the first
    # bucket's, hence the mask); the value's top bits within it pick the sub-bucket.
    bucket_index = (64 - leading_zeros(value | sub_bucket_mask)
                    - unit_magnitude - sub_bucket_half_count_magnitude - 1)
    sub_bucket_index = value >> (bucket_index + unit_magnitude)
    return (bucket_index << sub_bucket_half_count_magnitude) + sub_bucket_index


@kernel
def _bucket_of_index(index, sub_bucket_half_count_magnitude):
    # Bucket 0 holds indices [0, 2 * half_count), bucket b > 0 [(b + 1), (b + 2)) * half_count.
    return max((index >> sub_bucket_half_count_magnitude) - 1, 0)


@kernel
def _lowest_equivalent_at(index, unit_magnitude, sub_bucket_half_count_magnitude):
    """Smallest value that lands in ``counts[index]``."""
    bucket_index = _bucket_of_index(index, sub_bucket_half_count_magnitude)
    sub_bucket_index = index - (bucket_index << sub_bucket_half_count_magnitude)
    return sub_bucket_index << (bucket_index + unit_magnitude)


@kernel
def _range_size_at(index, unit_magnitude, sub_bucket_half_count_magnitude):
    """How many values land in ``counts[index]``."""
    return np.int64(1) << (
        _bucket_of_index(index, sub_bucket_half_count_magnitude) + unit_magnitude)


@kernel
def _highest_equivalent_at(index, unit_magnitude, sub_bucket_half_count_magnitude):
    """Largest value that lands in ``counts[index]``."""
    return (_lowest_equivalent_at(index, unit_magnitude, sub_bucket_half_count_magnitude)
            + _range_size_at(index, unit_magnitude, sub_bucket_half_count_magnitude) - 1)


@kernel
def _median_equivalent_at(index, unit_magnitude, sub_bucket_half_count_magnitude):
    """The middle of ``counts[index]``'s range: what mean and stddev count a value as."""
    return (_lowest_equivalent_at(index, unit_magnitude, sub_bucket_half_count_magnitude)
            + (_range_size_at(index, unit_magnitude, sub_bucket_half_count_magnitude) >> 1))


# ---------------------------------------------------------------- recording


@kernel
def record_n(counts, meta, value, count):
    """Record ``count`` occurrences of ``value``: O(1), no allocation.

    Parameters
    ----------
    counts, meta : numpy.ndarray
        A histogram made by :func:`new_histogram`.
    value : int
        The value; clamped to [0, highest] (and then counted in ``meta[CLAMPED_COUNT]``).
    count : int
        How many times; a negative count records nothing.
    """
    value = np.int64(value)
    count = max(np.int64(count), 0)
    clamped = min(max(value, 0), meta[HIGHEST])
    meta[CLAMPED_COUNT] += count * (clamped != value)
    counts[_counts_index(clamped, meta[UNIT_MAGNITUDE], meta[SUB_BUCKET_HALF_COUNT_MAGNITUDE],
                         meta[SUB_BUCKET_MASK])] += count
    meta[TOTAL_COUNT] += count
    if count > 0:
        meta[MIN_VALUE] = min(meta[MIN_VALUE], clamped)
        meta[MAX_VALUE] = max(meta[MAX_VALUE], clamped)


@kernel
def record(counts, meta, value):
    """Record one ``value`` (see :func:`record_n`): O(1), no allocation."""
    record_n(counts, meta, value, 1)


@kernel
def record_many(counts, meta, values):
    """Record every element of the integer array ``values``, with no allocation."""
    unit_magnitude = meta[UNIT_MAGNITUDE]
    half_count_magnitude = meta[SUB_BUCKET_HALF_COUNT_MAGNITUDE]
    sub_bucket_mask = meta[SUB_BUCKET_MASK]
    highest = meta[HIGHEST]
    smallest = meta[MIN_VALUE]
    largest = meta[MAX_VALUE]
    clamped_count = 0
    for raw in values:
        value = np.int64(raw)
        clamped = min(max(value, 0), highest)
        clamped_count += clamped != value
        counts[_counts_index(clamped, unit_magnitude, half_count_magnitude,
                             sub_bucket_mask)] += 1
        smallest = min(smallest, clamped)
        largest = max(largest, clamped)
    meta[TOTAL_COUNT] += len(values)
    meta[CLAMPED_COUNT] += clamped_count
    meta[MIN_VALUE] = smallest
    meta[MAX_VALUE] = largest


@kernel
def record_corrected(counts, meta, value, expected_interval):
    """Record ``value`` and correct for coordinated omission, like HdrHistogram.

    As HdrHistogram's ``recordValueWithExpectedInterval``: when a value exceeds the
    expected interval between samples, the samples that a stalled measurement
    missed are recorded too: ``value - k * expected_interval`` for ``k = 1, 2, ...``
    while that is at least ``expected_interval``. The correction starts from the
    clamped value. It costs one step per bucket those values span, not one per
    value, and allocates nothing. ``expected_interval <= 0`` disables it.
    """
    value = np.int64(value)
    expected_interval = np.int64(expected_interval)
    record_n(counts, meta, value, 1)
    if expected_interval <= 0:
        return
    unit_magnitude = meta[UNIT_MAGNITUDE]
    half_count_magnitude = meta[SUB_BUCKET_HALF_COUNT_MAGNITUDE]
    missing = min(max(value, 0), meta[HIGHEST]) - expected_interval
    recorded = 0
    while missing >= expected_interval:
        # The missed values form an arithmetic sequence: count the ones in this
        # bucket at once, then jump below it.
        index = _counts_index(missing, unit_magnitude, half_count_magnitude,
                              meta[SUB_BUCKET_MASK])
        bucket_floor = max(_lowest_equivalent_at(index, unit_magnitude, half_count_magnitude),
                           expected_interval)
        in_bucket = (missing - bucket_floor) // expected_interval + 1
        counts[index] += in_bucket
        recorded += in_bucket
        missing -= in_bucket * expected_interval
    if recorded > 0:
        meta[TOTAL_COUNT] += recorded
        meta[MIN_VALUE] = min(meta[MIN_VALUE], missing + expected_interval)


# ---------------------------------------------------------------- queries


@kernel
def value_at_percentile(counts, meta, percentile):
    """The value at ``percentile`` (0 to 100) with HdrHistogram's semantics.

    The rank is ``max(1, floor(percentile * total / 100 + 0.5))``; the result is
    the highest value equivalent to the bucket where the cumulative count reaches
    that rank, or the lowest equivalent value for percentile 0. Percentiles are
    clamped to [0, 100]; an empty histogram gives 0. O(len(counts)), no allocation.
    """
    total = meta[TOTAL_COUNT]
    if total <= 0:
        return np.int64(0)
    percentile = min(max(np.float64(percentile), 0.0), 100.0)
    target = max(np.int64(percentile * total / 100.0 + 0.5), 1)
    unit_magnitude = meta[UNIT_MAGNITUDE]
    half_count_magnitude = meta[SUB_BUCKET_HALF_COUNT_MAGNITUDE]
    # The first bucket where the cumulative count reaches the target.
    found = min(meta[COUNTS_LEN], len(counts)) - 1
    running = 0
    for index in range(found + 1):
        running += counts[index]
        if running >= target:
            found = index
            break
    if percentile == 0.0:
        return _lowest_equivalent_at(found, unit_magnitude, half_count_magnitude)
    return _highest_equivalent_at(found, unit_magnitude, half_count_magnitude)


@kernel
def values_at_percentiles(counts, meta, percentiles, out):
    """``out[i] = value_at_percentile(counts, meta, percentiles[i])``, no allocation."""
    for i in range(min(len(percentiles), len(out))):
        out[i] = value_at_percentile(counts, meta, percentiles[i])


@kernel
def mean(counts, meta):
    """Mean of the recorded values, each counted at the middle of its bucket.

    As HdrHistogram computes it; within a bucket's resolution of the exact mean.
    0.0 when empty.
    """
    total = meta[TOTAL_COUNT]
    if total <= 0:
        return 0.0
    unit_magnitude = meta[UNIT_MAGNITUDE]
    half_count_magnitude = meta[SUB_BUCKET_HALF_COUNT_MAGNITUDE]
    weighted_sum = 0.0
    for index in range(min(meta[COUNTS_LEN], len(counts))):
        if counts[index] != 0:
            weighted_sum += counts[index] * np.float64(
                _median_equivalent_at(index, unit_magnitude, half_count_magnitude))
    return weighted_sum / total


@kernel
def stddev(counts, meta):
    """Population standard deviation, values counted at their bucket's middle, like
    HdrHistogram. 0.0 when empty."""
    total = meta[TOTAL_COUNT]
    if total <= 0:
        return 0.0
    average = mean(counts, meta)
    unit_magnitude = meta[UNIT_MAGNITUDE]
    half_count_magnitude = meta[SUB_BUCKET_HALF_COUNT_MAGNITUDE]
    squares = 0.0
    for index in range(min(meta[COUNTS_LEN], len(counts))):
        if counts[index] != 0:
            deviation = np.float64(_median_equivalent_at(
                index, unit_magnitude, half_count_magnitude)) - average
            squares += counts[index] * deviation * deviation
    return np.sqrt(squares / total)


# ---------------------------------------------------------------- merge and reset


@kernel
def reset(counts, meta):
    """Empty the histogram, keeping its layout."""
    counts[:] = 0
    meta[TOTAL_COUNT] = 0
    meta[MIN_VALUE] = INT64_MAX
    meta[MAX_VALUE] = 0
    meta[CLAMPED_COUNT] = 0


@kernel
def merge_into(counts, meta, other_counts, other_meta):
    """Add the histogram ``(other_counts, other_meta)`` into ``(counts, meta)``.

    With the same layout, counts add element by element. Otherwise each of the
    other's buckets is recorded here at its lowest equivalent value (clamped to
    this range as :func:`record_n` does). Clamped counts add up. No allocation.
    """
    same_layout = (meta[UNIT_MAGNITUDE] == other_meta[UNIT_MAGNITUDE]
                   and meta[SUB_BUCKET_HALF_COUNT_MAGNITUDE]
                   == other_meta[SUB_BUCKET_HALF_COUNT_MAGNITUDE]
                   and meta[COUNTS_LEN] == other_meta[COUNTS_LEN]
                   and len(counts) == len(other_counts))
    if same_layout:
        for index in range(len(counts)):
            counts[index] += other_counts[index]
        meta[TOTAL_COUNT] += other_meta[TOTAL_COUNT]
        meta[MIN_VALUE] = min(meta[MIN_VALUE], other_meta[MIN_VALUE])
        meta[MAX_VALUE] = max(meta[MAX_VALUE], other_meta[MAX_VALUE])
    else:
        for index in range(min(other_meta[COUNTS_LEN], len(other_counts))):
            if other_counts[index] > 0:
                record_n(counts, meta, _lowest_equivalent_at(
                    index, other_meta[UNIT_MAGNITUDE],
                    other_meta[SUB_BUCKET_HALF_COUNT_MAGNITUDE]), other_counts[index])
    meta[CLAMPED_COUNT] += other_meta[CLAMPED_COUNT]


@kernel
def _restore_statistics(counts, meta):
    """Total, min and max recomputed from the counts (after decoding): min and max
    become the lowest and highest values equivalent to the outermost buckets."""
    unit_magnitude = meta[UNIT_MAGNITUDE]
    half_count_magnitude = meta[SUB_BUCKET_HALF_COUNT_MAGNITUDE]
    total = 0
    first = -1
    last = -1
    for index in range(len(counts)):
        if counts[index] != 0:
            total += counts[index]
            last = index
            if first < 0:
                first = index
    meta[TOTAL_COUNT] = total
    meta[MIN_VALUE] = INT64_MAX
    meta[MAX_VALUE] = 0
    if first >= 0:
        meta[MIN_VALUE] = _lowest_equivalent_at(first, unit_magnitude, half_count_magnitude)
        meta[MAX_VALUE] = _highest_equivalent_at(last, unit_magnitude, half_count_magnitude)


# ---------------------------------------------------------------- ZigZag LEB128


@kernel
def _encode_counts(counts, length, out):
    """Write ``counts[:length]`` as ZigZag LEB128 words into ``out``; return the bytes used.

    Runs of two or more zero counts become one negative word (minus the run's
    length), as HdrHistogram's V2 encoding does. ``out`` needs 9 bytes per count.
    """
    position = 0
    index = 0
    while index < length:
        word = counts[index]
        index += 1
        if word == 0:
            run = 1
            while index < length and counts[index] == 0:
                run += 1
                index += 1
            if run > 1:
                word = -run
        # ZigZag maps small magnitudes of either sign to small unsigned numbers.
        bits = (word << 1) ^ (word >> 63)
        for byte_number in range(_MAX_VARINT_BYTES):
            if byte_number == _MAX_VARINT_BYTES - 1:
                out[position] = bits  # the ninth byte carries the last 8 bits whole
                position += 1
                break
            low = bits & 0x7F
            bits = (bits >> 7) & 0x01FFFFFFFFFFFFFF  # logical shift of a 64-bit word
            if bits == 0:
                out[position] = low
                position += 1
                break
            out[position] = low | 0x80
            position += 1
    return position


@kernel
def _decode_counts(data, counts):
    """Fill ``counts`` from ZigZag LEB128 words in the uint8 array ``data``.

    Returns the number of buckets covered (>= 0), or a negative status when the
    words are truncated or would write past the end of ``counts``.
    """
    position = 0
    index = 0
    size = len(data)
    while position < size:
        bits = np.int64(0)
        shift = 0
        complete = False
        for byte_number in range(_MAX_VARINT_BYTES):
            if position >= size:
                break
            byte = np.int64(data[position])
            position += 1
            if byte_number == _MAX_VARINT_BYTES - 1:
                bits |= byte << 56  # the ninth byte's 8 bits are all payload
                complete = True
                break
            bits |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                complete = True
                break
        if not complete:
            return _DECODE_TRUNCATED
        word = ((bits >> 1) & 0x7FFFFFFFFFFFFFFF) ^ -(bits & 1)
        if word < 0:
            if -word > len(counts) - index:
                return _DECODE_OVERFLOW
            index -= word  # a run of zeros
        else:
            if index >= len(counts):
                return _DECODE_OVERFLOW
            counts[index] = word
            index += 1
    return index


@kernel
def _last_nonzero_index(counts):
    for index in range(len(counts) - 1, -1, -1):
        if counts[index] != 0:
            return index
    return -1


# ---------------------------------------------------------------- Python side


def histogram_layout(lowest, highest, significant_digits):
    """The layout fields of a histogram, validated, as a dict keyed by meta names.

    Raises
    ------
    ValueError
        If ``significant_digits`` is not 1 to 5, ``lowest`` not in [1, 2**40],
        or ``highest`` not in [2 * lowest, 2**62).
    """
    lowest, highest, significant_digits = int(lowest), int(highest), int(significant_digits)
    if not 1 <= significant_digits <= 5:
        raise ValueError(f"significant_digits must be 1 to 5, not {significant_digits}")
    if not 1 <= lowest <= MAX_LOWEST:
        raise ValueError(f"lowest must be between 1 and 2**40, not {lowest}")
    if not 2 * lowest <= highest <= MAX_HIGHEST:
        raise ValueError(f"highest must be at least 2 * lowest ({2 * lowest}) "
                         f"and below 2**62, not {highest}")
    unit_magnitude = lowest.bit_length() - 1
    # Sub-buckets enough for single-unit resolution up to 2 * 10**digits.
    sub_bucket_count_magnitude = (2 * 10**significant_digits - 1).bit_length()
    half_count_magnitude = sub_bucket_count_magnitude - 1
    sub_bucket_count = 1 << sub_bucket_count_magnitude
    smallest_untrackable = sub_bucket_count << unit_magnitude
    bucket_count = 1
    while smallest_untrackable <= highest:
        smallest_untrackable <<= 1
        bucket_count += 1
    return {
        "LOWEST": lowest,
        "HIGHEST": highest,
        "SIGNIFICANT_DIGITS": significant_digits,
        "UNIT_MAGNITUDE": unit_magnitude,
        "SUB_BUCKET_HALF_COUNT_MAGNITUDE": half_count_magnitude,
        "SUB_BUCKET_MASK": (sub_bucket_count - 1) << unit_magnitude,
        "BUCKET_COUNT": bucket_count,
        "COUNTS_LEN": (bucket_count + 1) << half_count_magnitude,
    }


def new_histogram(lowest=1, highest=3_600_000_000_000, significant_digits=3):
    """Allocate an empty histogram: ``(counts, meta)``, both int64.

    Parameters
    ----------
    lowest : int
        Lowest discernible value, 1 to 2**40 (values below it share buckets of
        width ``2**floor(log2(lowest))``).
    highest : int
        Highest trackable value, at least ``2 * lowest`` and below 2**62. The
        default is one hour in nanoseconds.
    significant_digits : int
        Decimal digits of resolution, 1 to 5.

    Returns
    -------
    counts, meta : numpy.ndarray
        The bucket counts and the layout and statistics (see the module's index
        constants).
    """
    layout = histogram_layout(lowest, highest, significant_digits)
    meta = np.zeros(META_LEN, dtype=np.int64)
    for name, value in layout.items():
        meta[_LAYOUT_INDEX[name]] = value
    meta[MIN_VALUE] = INT64_MAX
    counts = np.zeros(layout["COUNTS_LEN"], dtype=np.int64)
    return counts, meta


def check_histogram(counts, meta):
    """Raise ValueError unless ``(counts, meta)`` is a consistent histogram.

    Kernels trust their arrays (Numba does not check bounds); this check is what
    makes arrays from elsewhere safe to pass to them.
    """
    for name, array in (("counts", counts), ("meta", meta)):
        if not (isinstance(array, np.ndarray) and array.dtype == np.int64
                and array.ndim == 1):
            raise ValueError(f"{name} must be a one-dimensional int64 array")
    if len(meta) != META_LEN:
        raise ValueError(f"meta must have {META_LEN} entries, not {len(meta)}")
    layout = histogram_layout(meta[LOWEST], meta[HIGHEST], meta[SIGNIFICANT_DIGITS])
    for name, value in layout.items():
        if meta[_LAYOUT_INDEX[name]] != value:
            raise ValueError(f"meta[{name}] is {meta[_LAYOUT_INDEX[name]]}, expected {value}")
    if len(counts) != layout["COUNTS_LEN"]:
        raise ValueError(f"counts has {len(counts)} entries, the layout needs "
                         f"{layout['COUNTS_LEN']}")


def encode(counts, meta):
    """HdrHistogram's compressed, base64 form of the histogram (V2 encoding), as str.

    This is the form HdrHistogram's V1.3 interval logs carry; HdrHistogram's tools
    and ``hdrh.histogram.HdrHistogram.decode`` read it.
    """
    check_histogram(counts, meta)
    length = _last_nonzero_index(counts) + 1
    varints = np.empty(length * _MAX_VARINT_BYTES, dtype=np.uint8)
    used = _encode_counts(counts, length, varints)
    payload = _PAYLOAD_HEADER.pack(
        _ENCODING_COOKIE, used, 0, int(meta[SIGNIFICANT_DIGITS]), int(meta[LOWEST]),
        int(meta[HIGHEST]), 1.0) + varints[:used].tobytes()
    compressed = zlib.compress(payload)
    envelope = _ENVELOPE.pack(_COMPRESSION_COOKIE, len(compressed)) + compressed
    return base64.b64encode(envelope).decode("ascii")


def decode(encoded):
    """Read HdrHistogram's compressed base64 form (V2 encoding) into ``(counts, meta)``.

    Min and max become the lowest and highest values equivalent to the outermost
    non-empty buckets, as HdrHistogram reports them after decoding.

    Raises
    ------
    ValueError
        If the text is not valid base64, a cookie or length is wrong, the layout
        is unsupported, or the counts do not fit the layout.
    """
    try:
        envelope = base64.b64decode(encoded.strip(), validate=True)  # a log line may end in \n
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"not base64: {error}") from None
    if len(envelope) < _ENVELOPE.size:
        raise ValueError("encoded histogram too short")
    cookie, compressed_length = _ENVELOPE.unpack_from(envelope)
    if cookie & _COOKIE_BASE_MASK != _COMPRESSION_COOKIE & _COOKIE_BASE_MASK:
        raise ValueError(f"not a compressed V2 histogram (cookie {cookie:#x})")
    if compressed_length != len(envelope) - _ENVELOPE.size:
        raise ValueError(f"compressed length {compressed_length} does not match the "
                         f"{len(envelope) - _ENVELOPE.size} bytes present")
    inflater = zlib.decompressobj()
    try:
        # Read the header first: it bounds how much the counts may inflate to.
        header = inflater.decompress(envelope[_ENVELOPE.size:], _PAYLOAD_HEADER.size)
        if len(header) < _PAYLOAD_HEADER.size:
            raise ValueError("payload too short for its header")
        (cookie, varints_length, normalizing_offset, significant_digits, lowest, highest,
         _conversion_ratio) = _PAYLOAD_HEADER.unpack(header)
        if cookie & _COOKIE_BASE_MASK != _ENCODING_COOKIE & _COOKIE_BASE_MASK:
            raise ValueError(f"not a V2 histogram payload (cookie {cookie:#x})")
        if normalizing_offset != 0:
            raise ValueError("shifted (normalized) histograms are not supported")
        counts, meta = new_histogram(lowest, highest, significant_digits)
        if varints_length > len(counts) * _MAX_VARINT_BYTES:
            raise ValueError(f"counts length {varints_length} too large for the layout")
        varints = inflater.decompress(inflater.unconsumed_tail, varints_length)
    except zlib.error as error:
        raise ValueError(f"corrupt compressed payload: {error}") from None
    if len(varints) != varints_length:
        raise ValueError(f"payload holds {len(varints)} bytes of counts, header says "
                         f"{varints_length}")
    status = _decode_counts(np.frombuffer(varints, dtype=np.uint8), counts)
    if status == _DECODE_TRUNCATED:
        raise ValueError("counts end in the middle of a word")
    if status == _DECODE_OVERFLOW:
        raise ValueError("counts run past the end of the layout")
    _restore_statistics(counts, meta)
    return counts, meta


def _as_int64_values(values):
    array = np.asarray(values)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise ValueError("values must be finite")
        return np.ascontiguousarray(array, dtype=np.int64).ravel()
    if array.dtype.kind not in "iub":
        raise ValueError(f"values must be integers, not {array.dtype}")
    if array.dtype == np.uint64 and array.size and array.max() > INT64_MAX:
        raise ValueError("values must fit in int64")
    return np.ascontiguousarray(array, dtype=np.int64).ravel()


class Histogram:
    """A latency histogram for notebooks: a thin wrapper around ``(counts, meta)``.

    Parameters
    ----------
    lowest, highest, significant_digits : int
        As :func:`new_histogram`.

    Attributes
    ----------
    counts, meta : numpy.ndarray
        The arrays; njit code records into them with :func:`record` and friends.

    Examples
    --------
    >>> h = Histogram(lowest=1, highest=10**9, significant_digits=3)
    >>> h.record_many([120, 250, 250, 980, 15_000])
    >>> h.value_at_percentile(50)
    250
    >>> Histogram.decode(h.encode()).count
    5
    """

    def __init__(self, lowest=1, highest=3_600_000_000_000, significant_digits=3):
        self.counts, self.meta = new_histogram(lowest, highest, significant_digits)

    @classmethod
    def from_arrays(cls, counts, meta):
        """Wrap existing arrays (checked for consistency), without copying."""
        check_histogram(counts, meta)
        histogram = cls.__new__(cls)
        histogram.counts, histogram.meta = counts, meta
        return histogram

    def record(self, value, count=1):
        """Record ``count`` occurrences of the integer ``value`` (clamped to the range)."""
        record_n(self.counts, self.meta, int(value), int(count))

    def record_many(self, values):
        """Record every value of an array or sequence of integers."""
        record_many(self.counts, self.meta, _as_int64_values(values))

    def record_corrected(self, value, expected_interval):
        """Record ``value`` with coordinated-omission correction (:func:`record_corrected`)."""
        record_corrected(self.counts, self.meta, int(value), int(expected_interval))

    def value_at_percentile(self, percentile):
        """The value at ``percentile`` (0 to 100), HdrHistogram's semantics."""
        percentile = float(percentile)
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be between 0 and 100, not {percentile}")
        return int(value_at_percentile(self.counts, self.meta, percentile))

    def percentiles(self, percentiles=(50.0, 90.0, 99.0, 99.9, 99.99, 100.0)):
        """``{percentile: value}`` for each requested percentile."""
        return {p: self.value_at_percentile(p) for p in percentiles}

    def merge(self, other):
        """Add ``other``'s counts into this histogram; returns ``self``."""
        merge_into(self.counts, self.meta, other.counts, other.meta)
        return self

    def reset(self):
        """Forget every recorded value, keeping the layout."""
        reset(self.counts, self.meta)

    @property
    def count(self):
        """How many values were recorded."""
        return int(self.meta[TOTAL_COUNT])

    @property
    def clamped_count(self):
        """How many recorded values were outside [0, highest] and were clamped."""
        return int(self.meta[CLAMPED_COUNT])

    @property
    def min(self):
        """Smallest value recorded (exact, after clamping); 0 when empty."""
        return int(self.meta[MIN_VALUE]) if self.count else 0

    @property
    def max(self):
        """Largest value recorded (exact, after clamping); 0 when empty."""
        return int(self.meta[MAX_VALUE]) if self.count else 0

    @property
    def mean(self):
        """Mean, values counted at their bucket's middle (as HdrHistogram); 0.0 when empty."""
        return float(mean(self.counts, self.meta))

    @property
    def stddev(self):
        """Standard deviation, computed from the counts like HdrHistogram."""
        return float(stddev(self.counts, self.meta))

    @property
    def lowest(self):
        return int(self.meta[LOWEST])

    @property
    def highest(self):
        return int(self.meta[HIGHEST])

    @property
    def significant_digits(self):
        return int(self.meta[SIGNIFICANT_DIGITS])

    def encode(self):
        """HdrHistogram's compressed base64 form (see :func:`encode`)."""
        return encode(self.counts, self.meta)

    @classmethod
    def decode(cls, encoded):
        """A histogram read from HdrHistogram's compressed base64 form (:func:`decode`)."""
        histogram = cls.__new__(cls)
        histogram.counts, histogram.meta = decode(encoded)
        return histogram

    def __repr__(self):
        return (f"Histogram(lowest={self.lowest}, highest={self.highest}, "
                f"significant_digits={self.significant_digits}, count={self.count})")
