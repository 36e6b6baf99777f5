import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ringbook.kernels import summary
from tests import naive
from tests.llvm_ir import allocation_calls

operations = st.lists(st.tuples(st.integers(0, 10**12), st.integers(0, 10**9), st.booleans()),
                      max_size=60)


def _same(left, right):
    assert left.keys() == right.keys()
    for key in left:
        if isinstance(left[key], float) and math.isnan(left[key]):
            assert math.isnan(right[key]), key
        elif left[key] is None or right[key] is None:  # no latency recorded yet
            assert left[key] is right[key], key
        else:
            assert left[key] == pytest.approx(right[key], rel=1e-12), key


@settings(max_examples=60, deadline=None)
@given(operations)
def test_summary_equals_naive(ops):
    ours = summary.Summary()
    for timestamp, latency, failed in ops:
        if failed:
            ours.record_error(timestamp)
        else:
            ours.record(timestamp, latency)
    _same(ours.as_dict(), naive.run_summary(ops))


@settings(max_examples=30, deadline=None)
@given(operations, operations)
def test_record_many_and_merge(first, second):
    left, right = summary.Summary(), summary.Summary()
    for ours, ops in ((left, first), (right, second)):
        ours.record_many([t for t, _, _ in ops], [lat for _, lat, _ in ops],
                         [failed for _, _, failed in ops])
    _same(left.merge(right).as_dict(), naive.run_summary(first + second))


def test_throughput_and_error_rate():
    ours = summary.Summary()
    for i in range(1001):
        ours.record(i * 1_000_000, 100 + i)  # one a millisecond for one second
    for _ in range(10):
        ours.record_error(500_000_000)
    result = ours.as_dict()
    assert result["count"] == 1011
    assert result["duration_s"] == 1.0
    assert result["throughput_per_s"] == 1011.0
    assert result["error_rate"] == 10 / 1011
    assert (result["latency_min_ns"], result["latency_max_ns"]) == (100, 1100)
    assert result["latency_mean_ns"] == 600.0
    ours.reset()
    assert ours.as_dict()["count"] == 0 and ours.as_dict()["latency_min_ns"] is None


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        summary.Summary().record_many([1, 2], [3])


def test_record_allocates_nothing():
    assert allocation_calls(summary.record, (numba.int64[::1], numba.int64, numba.int64)) == []
    assert allocation_calls(summary.record_error, (numba.int64[::1], numba.int64)) == []


def test_empty_summary_is_nan_not_an_error():
    result = summary.Summary().as_dict()
    assert result["count"] == 0 and math.isnan(result["throughput_per_s"])
    assert np.array_equal(summary.new_summary(), summary.new_summary())
