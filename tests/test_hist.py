import base64
import gzip
import struct
import zlib

import numba
import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings, strategies as st

from ringbook.kernels import hist
from tests import naive
from tests.llvm_ir import allocation_calls

LOWEST, HIGHEST, DIGITS = 1, 10**12, 3
PERCENTILES = [0.0, 0.1, 1.0, 10.0, 25.0, 33.3333, 50.0, 66.7, 90.0, 99.0, 99.9, 99.99,
               99.999, 100.0]

values_strategy = st.lists(st.integers(0, HIGHEST), min_size=1, max_size=200)


def _hdrh_counts(reference):
    """``get_count_at_index`` for every index, read as one array (a loop took seconds)."""
    stored = min(reference.counts_len, reference.encoder.payload.counts_len)
    counts = np.zeros(reference.counts_len, dtype=np.int64)
    counts[:stored] = np.ctypeslib.as_array(reference.counts)[:stored]
    return counts


def _both(values, lowest=LOWEST, highest=HIGHEST, digits=DIGITS):
    ours = hist.Histogram(lowest, highest, digits)
    ours.record_many(values)
    reference = HdrHistogram(lowest, highest, digits)
    for value in values:
        reference.record_value(int(value))
    return ours, reference


def _lognormal_latencies(count, seed=7):
    rng = np.random.default_rng(seed)
    return np.minimum(rng.lognormal(11, 1.5, count), HIGHEST).astype(np.int64)


@pytest.mark.parametrize("lowest, highest, digits", [
    (1, 1000, 1), (1, 3_600_000_000_000, 3), (1000, 3_600_000_000_000, 2),
    (3, 10**6, 4), (1, 2**61, 5), (2**20, 2**40, 3), (1, 2, 1)])
def test_layout_matches_hdrh(lowest, highest, digits):
    layout = hist.histogram_layout(lowest, highest, digits)
    reference = HdrHistogram(lowest, highest, digits)
    assert layout["COUNTS_LEN"] == reference.counts_len
    assert layout["BUCKET_COUNT"] == reference.bucket_count
    assert layout["UNIT_MAGNITUDE"] == reference.unit_magnitude
    assert layout["SUB_BUCKET_HALF_COUNT_MAGNITUDE"] == reference.sub_bucket_half_count_magnitude
    assert layout["SUB_BUCKET_MASK"] == reference.sub_bucket_mask


@pytest.mark.parametrize("lowest, highest, digits", [
    (0, 100, 3), (1, 1, 3), (1, 100, 0), (1, 100, 6), (2**41, 2**50, 3), (1, 2**62, 3)])
def test_invalid_layouts_are_refused(lowest, highest, digits):
    with pytest.raises(ValueError):
        hist.new_histogram(lowest, highest, digits)


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(values_strategy)
def test_counts_and_percentiles_equal_hdrh(values):
    ours, reference = _both(values)
    assert np.array_equal(ours.counts, _hdrh_counts(reference))
    assert ours.count == reference.get_total_count() == len(values)
    assert (ours.min, ours.max) == (min(values), max(values))
    for percentile in PERCENTILES:
        expected = reference.get_value_at_percentile(percentile)
        assert ours.value_at_percentile(percentile) == expected
    assert ours.mean == pytest.approx(reference.get_mean_value(), rel=1e-12)
    assert ours.stddev == pytest.approx(reference.get_stddev(), rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(values_strategy, st.floats(0.0, 100.0), st.sampled_from([(1, 1), (1, 3), (1000, 2),
                                                                 (3, 5)]))
def test_percentile_equals_naive_reference(values, percentile, lowest_and_digits):
    lowest, digits = lowest_and_digits
    ours = hist.Histogram(lowest, HIGHEST, digits)
    ours.record_many(values)
    assert ours.value_at_percentile(percentile) == naive.hdr_value_at_percentile(
        values, percentile, lowest, digits)


@pytest.mark.parametrize("digits", [1, 2, 3, 4, 5])
def test_percentiles_within_resolution_of_numpy_inverted_cdf(digits):
    # With n = 1024 samples and p = 100 k / 1024 the rank is exactly k in floating
    # point, for HdrHistogram's rounding and for numpy's inverted CDF alike.
    samples = _lognormal_latencies(1024, seed=digits)
    ours = hist.Histogram(1, HIGHEST, digits)
    ours.record_many(samples)
    quantiles = np.arange(1, 1025) / 1024
    expected = np.quantile(samples, quantiles, method="inverted_cdf")
    got = np.array([ours.value_at_percentile(100 * q) for q in quantiles])
    assert np.all(got >= expected)
    assert np.all(got - expected <= expected / 10**digits)
    bottom = ours.value_at_percentile(0)  # the bottom of the smallest sample's bucket
    assert samples.min() - samples.min() / 10**digits <= bottom <= samples.min()


def test_our_encoding_decodes_in_hdrh():
    ours, reference = _both(_lognormal_latencies(5000))
    decoded = HdrHistogram.decode(ours.encode())
    assert np.array_equal(_hdrh_counts(decoded), ours.counts)
    assert decoded.get_total_count() == ours.count
    assert (decoded.lowest_trackable_value, decoded.highest_trackable_value,
            decoded.significant_figures) == (LOWEST, HIGHEST, DIGITS)
    for percentile in PERCENTILES:
        assert decoded.get_value_at_percentile(percentile) == ours.value_at_percentile(percentile)


def test_hdrh_encoding_decodes_here():
    ours, reference = _both(_lognormal_latencies(5000))
    decoded = hist.Histogram.decode(reference.encode())
    assert np.array_equal(decoded.counts, ours.counts)
    assert decoded.count == reference.get_total_count()
    assert (decoded.min, decoded.max) == (reference.get_min_value(), reference.get_max_value())
    for percentile in PERCENTILES:
        assert decoded.value_at_percentile(percentile) == reference.get_value_at_percentile(
            percentile)


def test_values_above_highest_from_hdrh_decode_here():
    # hdrh records up to the top of the last bucket, beyond highest.
    reference = HdrHistogram(1, 1000, 2)
    for value in (5, 1000, 1020, 1023):
        assert reference.record_value(value)
    decoded = hist.Histogram.decode(reference.encode())
    assert decoded.max == reference.get_max_value() == 1023
    for percentile in (0.0, 50.0, 75.0, 80.0, 100.0):
        assert decoded.value_at_percentile(percentile) == reference.get_value_at_percentile(
            percentile)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2**40), max_size=50), st.sampled_from([(1, 2**45, 1),
                                                                     (1000, 2**41, 4)]))
def test_encode_decode_round_trip(values, layout):
    ours = hist.Histogram(*layout)
    ours.record_many(values)
    decoded = hist.Histogram.decode(ours.encode())
    assert np.array_equal(decoded.counts, ours.counts)
    assert decoded.meta[hist.TOTAL_COUNT] == len(values)
    assert HdrHistogram.decode(ours.encode()).get_total_count() == len(values)


@pytest.mark.parametrize("counts", [
    [0], [5], [0, 0, 3], [1, 0, 2, 0, 0, 0, 7], [2**62, 0, 2**63 - 1, 1, 63, 64, 8191, 8192],
])
def test_count_words_match_the_format(counts):
    counts = np.array(counts, dtype=np.int64)
    out = np.zeros(9 * len(counts), dtype=np.uint8)
    used = hist._encode_counts(counts, len(counts), out)
    assert out[:used].tobytes() == naive.zigzag_leb128(naive.hdr_count_words(counts))
    decoded = np.zeros(len(counts), dtype=np.int64)
    assert hist._decode_counts(out[:used], decoded) == len(counts)
    assert np.array_equal(decoded, counts)


def _blob(payload_header_fields, varints, envelope_cookie=0x1C849314):
    payload = zlib.compress(struct.pack(">IIIIqqd", *payload_header_fields) + varints)
    return base64.b64encode(struct.pack(">II", envelope_cookie, len(payload)) + payload)


@pytest.mark.parametrize("encoded", [
    "not base64 at all!",
    base64.b64encode(b"\x1c\x84"),
    _blob((0x1C849313, 1, 0, 3, 1, 1000, 1.0), b"\x02", envelope_cookie=0x12345678),
    _blob((0x12345678, 1, 0, 3, 1, 1000, 1.0), b"\x02"),
    _blob((0x1C849313, 1, 0, 9, 1, 1000, 1.0), b"\x02"),  # 9 significant digits
    _blob((0x1C849313, 1, 0, 3, 0, 1000, 1.0), b"\x02"),  # lowest 0
    _blob((0x1C849313, 1, 4, 3, 1, 1000, 1.0), b"\x02"),  # normalizing offset
    _blob((0x1C849313, 5, 0, 3, 1, 1000, 1.0), b"\x02"),  # length beyond the data
    _blob((0x1C849313, 1, 0, 3, 1, 1000, 1.0), b"\x80"),  # word cut short
    _blob((0x1C849313, 3, 0, 3, 1, 1000, 1.0), b"\xff\xff\x7f"),  # zero run past the end
    _blob((0x1C849313, 10**6, 0, 3, 1, 1000, 1.0), b"\x02"),  # absurd length
])
def test_malformed_encodings_raise_value_error(encoded):
    with pytest.raises(ValueError):
        hist.Histogram.decode(encoded)


def test_corrupt_compressed_payload_raises_value_error():
    valid = base64.b64decode(hist.Histogram(1, 1000, 3).encode())
    corrupt = valid[:8] + bytes(b ^ 0x55 for b in valid[8:])
    with pytest.raises(ValueError):
        hist.Histogram.decode(base64.b64encode(corrupt))


def test_out_of_range_values_are_clamped_and_counted():
    ours = hist.Histogram(1, 10**6, 3)
    for value in (-1, -(2**63), 10**6 + 1, 2**63 - 1, 500):
        ours.record(value)
    ours.record_many(np.array([-5, 2**62, 7], dtype=np.int64))
    assert ours.count == 8
    assert ours.clamped_count == 6
    assert (ours.min, ours.max) == (0, 10**6)
    counts = np.zeros_like(ours.counts)
    for value in (0, 0, 10**6, 10**6, 500, 0, 10**6, 7):
        hist.record(counts, np.copy(ours.meta), value)
    assert np.array_equal(counts, ours.counts)
    assert ours.value_at_percentile(100) == naive.hdr_equivalent_range(10**6, 1, 3)[1]


def test_record_n_and_negative_counts():
    ours = hist.Histogram(1, 10**6, 2)
    ours.record(1234, count=5)
    ours.record(99, count=-3)  # ignored
    assert ours.count == 5
    assert ours.counts.sum() == 5
    assert (ours.min, ours.max) == (1234, 1234)


@pytest.mark.parametrize("value, interval", [
    (10_000, 100), (10_000, 0), (10_000, 10_000), (10_001, 10_000), (5, 7),
    (987_654_321, 1_000), (3 * 10**9, 1), (10**13, 10**9)])
def test_coordinated_omission_correction_matches_hdrh(value, interval):
    ours = hist.Histogram(1, 10**12, 3)
    ours.record_corrected(value, interval)
    expected = hist.Histogram(1, 10**12, 3)
    clamped = min(value, 10**12)
    if clamped - interval < 10**7 or interval <= 0:  # the naive loop stays short
        expected.record_many(naive.coordinated_omission_values(clamped, interval))
        assert np.array_equal(ours.counts, expected.counts)
        assert ours.min == min(naive.coordinated_omission_values(clamped, interval))
    # hdrh's loop also records the remainder below the interval; HdrHistogram's
    # does not. They agree when the interval divides the value.
    if value <= 10**9 and (interval <= 0 or (value % interval == 0 and value // interval < 10**5)):
        reference = HdrHistogram(1, 10**12, 3)
        reference.record_corrected_value(value, interval)
        assert np.array_equal(ours.counts, _hdrh_counts(reference))
    assert ours.count == ours.counts.sum()
    if interval > 0:
        assert ours.count == max(clamped // interval, 1)


def test_merge_same_layout_adds_counts():
    first, second = _lognormal_latencies(300, seed=1), _lognormal_latencies(400, seed=2)
    left = hist.Histogram(1, HIGHEST, 3)
    left.record_many(first)
    left.record(-4)
    right = hist.Histogram(1, HIGHEST, 3)
    right.record_many(second)
    both = hist.Histogram(1, HIGHEST, 3)
    both.record_many(np.concatenate([first, second, [-4]]))
    left.merge(right)
    assert np.array_equal(left.counts, both.counts)
    assert np.array_equal(left.meta, both.meta)


def test_merge_other_layout_rerecords_buckets():
    source = hist.Histogram(1000, 10**9, 2)
    source.record_many([1, 2500, 123_456, 10**9])
    target = hist.Histogram(1, 10**6, 3)
    target.merge(source)
    expected = hist.Histogram(1, 10**6, 3)
    for value in (1, 2500, 123_456, 10**9):  # each lands at its source bucket's bottom
        expected.record(naive.hdr_equivalent_range(value, 1000, 2)[0])
    assert np.array_equal(target.counts, expected.counts)
    assert target.count == 4
    assert target.clamped_count == 1


def test_reset_empties_and_empty_histogram_reads_zero():
    ours = hist.Histogram(1, 10**6, 3)
    ours.record_many([5, 50, 500])
    ours.reset()
    assert ours.count == 0 and not ours.counts.any()
    assert (ours.min, ours.max, ours.mean, ours.stddev) == (0, 0, 0.0, 0.0)
    assert ours.value_at_percentile(99) == 0
    assert hist.Histogram.decode(ours.encode()).count == 0
    assert HdrHistogram.decode(ours.encode()).get_total_count() == 0


def test_percentiles_dict_and_bad_percentile():
    ours = hist.Histogram(1, 10**6, 3)
    ours.record_many(np.arange(1, 101))
    assert ours.percentiles((50, 99, 100)) == {50: 50, 99: 99, 100: 100}
    out = np.zeros(3, dtype=np.int64)
    hist.values_at_percentiles(ours.counts, ours.meta, np.array([50.0, 99.0, 100.0]), out)
    assert out.tolist() == [50, 99, 100]
    with pytest.raises(ValueError):
        ours.value_at_percentile(101)


def test_from_arrays_checks_consistency():
    counts, meta = hist.new_histogram(1, 10**6, 3)
    assert hist.Histogram.from_arrays(counts, meta).counts is counts
    with pytest.raises(ValueError):
        hist.Histogram.from_arrays(counts[:-1], meta)
    bad_meta = meta.copy()
    bad_meta[hist.UNIT_MAGNITUDE] = 5
    with pytest.raises(ValueError):
        hist.Histogram.from_arrays(counts, bad_meta)


@numba.njit
def _user_loop(counts, meta, start, step, n):
    # What a strategy's own njit code does: record as it goes.
    for i in range(n):
        hist.record(counts, meta, start + i * step)
    return hist.value_at_percentile(counts, meta, 50.0)


def test_callable_from_user_njit_code():
    ours = hist.Histogram(1, 10**6, 3)
    median = _user_loop(ours.counts, ours.meta, 10, 10, 101)
    assert median == ours.value_at_percentile(50) == 510
    assert ours.count == 101


I64, I64_ARRAY, F64 = numba.int64, numba.int64[::1], numba.float64


@pytest.mark.parametrize("kernel, signature", [
    (hist.record, (I64_ARRAY, I64_ARRAY, I64)),
    (hist.record_n, (I64_ARRAY, I64_ARRAY, I64, I64)),
    (hist.record_many, (I64_ARRAY, I64_ARRAY, I64_ARRAY)),
    (hist.record_corrected, (I64_ARRAY, I64_ARRAY, I64, I64)),
    (hist.value_at_percentile, (I64_ARRAY, I64_ARRAY, F64)),
    (hist.values_at_percentiles, (I64_ARRAY, I64_ARRAY, numba.float64[::1], I64_ARRAY)),
    (hist.merge_into, (I64_ARRAY, I64_ARRAY, I64_ARRAY, I64_ARRAY)),
    (hist.reset, (I64_ARRAY, I64_ARRAY)),
])
@pytest.mark.slow
def test_hot_kernels_allocate_nothing(kernel, signature):
    assert allocation_calls(kernel, signature) == []


def test_real_feed_latencies(shared_data):
    # Binance spot capture: the gaps between the local receive times (ns) of
    # consecutive messages, a real heavy-tailed distribution of durations.
    with gzip.open(shared_data / "binance" / "spot_btcusdt_20240808.gz") as feed:
        received = np.array([int(line.split(b" ", 1)[0]) for line in feed], dtype=np.int64)
    latencies = np.diff(received)
    assert len(latencies) > 40_000
    ours = hist.Histogram(1, HIGHEST, 3)
    ours.record_many(latencies)
    assert ours.clamped_count == int((latencies < 0).sum())
    clamped = np.maximum(latencies, 0)
    reference = HdrHistogram(1, HIGHEST, 3)
    for value in clamped.tolist():
        reference.record_value(value)
    assert np.array_equal(ours.counts, _hdrh_counts(reference))
    ordered = np.sort(clamped)
    for percentile in (50.0, 90.0, 99.0, 99.9, 100.0):
        got = ours.value_at_percentile(percentile)
        assert got == reference.get_value_at_percentile(percentile)
        sample = ordered[max(1, int(percentile * len(ordered) / 100 + 0.5)) - 1]
        assert sample <= got <= sample + sample // 1000
