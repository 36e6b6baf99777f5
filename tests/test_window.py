import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ringbook.kernels import window
from tests import naive
from tests.llvm_ir import allocation_calls

quantile_lists = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.lists(st.integers(-50, 50), max_size=100), quantile_lists)
def test_int_window_equals_numpy_nearest(capacity, samples, qs):
    # Small value range: many ties, which selection must handle like a sort.
    ours = window.Window(capacity, np.int64)
    ours.record_many(samples)
    latest = samples[-capacity:]
    assert len(ours) == len(latest)
    if not latest:
        with pytest.raises(ValueError):
            ours.quantiles(qs)
        return
    expected = np.quantile(np.array(latest), qs, method="nearest")
    assert ours.quantiles(qs).tolist() == expected.tolist()
    assert [ours.quantile(q) for q in qs] == [naive.nearest_quantile(latest, q) for q in qs]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.lists(st.floats(-1e9, 1e9), min_size=1, max_size=100),
       quantile_lists)
def test_float_window_equals_numpy_nearest(capacity, samples, qs):
    ours = window.Window(capacity, np.float64)
    for sample in samples:
        ours.record(sample)
    expected = np.quantile(np.array(samples[-capacity:]), qs, method="nearest")
    assert ours.quantiles(qs).tolist() == expected.tolist()


def test_percentiles_of_ten_thousand_latencies_equal_numpy():
    rng = np.random.default_rng(3)
    ours = window.Window(10_000)
    latencies = rng.lognormal(10, 1, 25_000).astype(np.int64)
    ours.record_many(latencies)
    percentiles = (50, 95, 99, 99.9, 0, 100)
    expected = np.percentile(latencies[-10_000:], percentiles, method="nearest")
    assert list(ours.percentiles(percentiles).values()) == expected.tolist()
    assert np.array_equal(np.sort(ours.values), np.sort(latencies[-10_000:]))


@pytest.mark.parametrize("pattern", ["sorted", "reversed", "equal", "organ_pipe", "sawtooth"])
def test_selection_on_adversarial_orders(pattern):
    n = 1001
    data = {
        "sorted": np.arange(n), "reversed": np.arange(n)[::-1].copy(),
        "equal": np.full(n, 7),
        "organ_pipe": np.concatenate([np.arange(500), np.arange(501)[::-1]]),
        "sawtooth": np.arange(n) % 17,
    }[pattern].astype(np.int64)
    for k in (0, 1, n // 2, n - 2, n - 1):
        scratch = data.copy()
        window.select(scratch, 0, n - 1, k)
        assert scratch[k] == np.sort(data)[k]
        assert scratch[:k].max(initial=scratch[k]) <= scratch[k] <= scratch[k + 1:].min(
            initial=scratch[k])


def test_heapsort_fallback_sorts_a_subrange():
    data = np.random.default_rng(5).integers(0, 100, 300).astype(np.float64)
    expected = data.copy()
    expected[10:250] = np.sort(expected[10:250])
    window._heapsort(data, 10, 249)
    assert np.array_equal(data, expected)


def test_quantiles_in_any_order_and_repeated():
    ours = window.Window(100)
    ours.record_many(np.random.default_rng(9).permutation(1000)[:100])
    qs = [0.99, 0.5, 0.5, 0.0, 1.0, 0.95, 0.25]
    latest = ours.values.copy()
    assert ours.quantiles(qs).tolist() == np.quantile(latest, qs, method="nearest").tolist()


def test_queries_leave_the_buffer_alone_and_reset_empties():
    ours = window.Window(5)
    ours.record_many([9, 3, 7])
    ours.quantiles([0.1, 0.9])
    assert ours.values[:3].tolist() == [9, 3, 7]
    ours.reset()
    assert len(ours) == 0
    with pytest.raises(ValueError):
        ours.quantile(0.5)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError):
        window.Window(0)
    with pytest.raises(ValueError):
        window.Window(10, np.int32)
    ours = window.Window(10)
    ours.record(1)
    with pytest.raises(ValueError):
        ours.quantile(1.5)
    with pytest.raises(ValueError):
        ours.record_many([1.5])
    values, scratch, meta = window.new_window(4)
    window.check_window(values, scratch, meta)
    meta[window.NEXT] = 4
    with pytest.raises(ValueError):
        window.check_window(values, scratch, meta)


I64_ARRAY, F64_ARRAY = numba.int64[::1], numba.float64[::1]


@pytest.mark.parametrize("kernel, signature", [
    (window.record, (I64_ARRAY, I64_ARRAY, numba.int64)),
    (window.quantile, (I64_ARRAY, I64_ARRAY, I64_ARRAY, numba.float64)),
    (window.quantiles, (I64_ARRAY, I64_ARRAY, I64_ARRAY, F64_ARRAY, I64_ARRAY)),
])
@pytest.mark.slow
def test_hot_kernels_allocate_nothing(kernel, signature):
    assert allocation_calls(kernel, signature) == []
