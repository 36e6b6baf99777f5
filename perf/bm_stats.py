"""Latency statistics: histogram record and percentile query against the ``hdrh``
package, window percentiles against ``numpy.percentile``, on the same data.

Run: ``python perf/bm_stats.py -o perf/results/stats.json`` (``--fast`` for a quick look).
"""

import time

import numpy as np
from ddsketch import DDSketch
from hdrh.histogram import HdrHistogram

from harness import Comparison, Limit, bench, run_subject

from ringbook.kernels import hist, window
from ringbook.kernels.jit_options import kernel

LOWEST, HIGHEST, DIGITS = 1, 3_600_000_000_000, 3
RECORD_VALUES = 100_000  # per njit timing call
PEER_RECORD_VALUES = 10_000  # per Python timing call: the peers are slow
WINDOW_SIZE = 10_000
WINDOW_QUANTILES = np.array([0.50, 0.95, 0.99])
PERCENTILE = 99.0

# Latencies in nanoseconds: log-normal around 60 µs with a long tail.
latencies = np.random.default_rng(42).lognormal(11, 1.2, RECORD_VALUES).astype(np.int64)
peer_latencies = latencies[:PEER_RECORD_VALUES].tolist()


@kernel
def _record_each(counts, meta, values):
    for value in values:
        hist.record(counts, meta, value)


@kernel
def _query_repeatedly(counts, meta, percentile, loops):
    total = 0
    for _ in range(loops):
        total += hist.value_at_percentile(counts, meta, percentile)
    return total


@kernel
def _window_quantiles_repeatedly(values, meta, scratch, qs, out, loops):
    for _ in range(loops):
        window.quantiles(values, meta, scratch, qs, out)


# Inputs built and every driver compiled at import, before the runner times anything.
record_counts, record_meta = hist.new_histogram(LOWEST, HIGHEST, DIGITS)
_record_each(record_counts, record_meta, latencies)

query_counts, query_meta = hist.new_histogram(LOWEST, HIGHEST, DIGITS)
hist.record_many(query_counts, query_meta, latencies)
_query_repeatedly(query_counts, query_meta, PERCENTILE, 1)
query_peer = HdrHistogram(LOWEST, HIGHEST, DIGITS)
for latency in latencies.tolist():
    query_peer.record_value(latency)
assert query_peer.get_value_at_percentile(PERCENTILE) == hist.value_at_percentile(
    query_counts, query_meta, PERCENTILE)

window_values, window_scratch, window_meta = window.new_window(WINDOW_SIZE, np.int64)
window.record_many(window_values, window_meta, latencies[-WINDOW_SIZE:])
window_out = np.zeros(len(WINDOW_QUANTILES), dtype=np.int64)
_window_quantiles_repeatedly(window_values, window_meta, window_scratch, WINDOW_QUANTILES,
                             window_out, 1)
window_data = window_values.copy()
assert np.array_equal(window_out, np.percentile(window_data, WINDOW_QUANTILES * 100,
                                                method="nearest"))


def time_hist_record(loops):
    start = time.perf_counter()
    for _ in range(loops):
        _record_each(record_counts, record_meta, latencies)
    return time.perf_counter() - start


def time_hdrh_record(loops):
    peer = HdrHistogram(LOWEST, HIGHEST, DIGITS)
    record_value = peer.record_value
    start = time.perf_counter()
    for _ in range(loops):
        for latency in peer_latencies:
            record_value(latency)
    return time.perf_counter() - start


def time_ddsketch_add(loops):
    sketch = DDSketch(relative_accuracy=10**-DIGITS)
    add = sketch.add
    start = time.perf_counter()
    for _ in range(loops):
        for latency in peer_latencies:
            add(latency)
    return time.perf_counter() - start


def time_hist_percentile(loops):
    start = time.perf_counter()
    _query_repeatedly(query_counts, query_meta, PERCENTILE, loops)
    return time.perf_counter() - start


def time_hdrh_percentile(loops):
    get_value_at_percentile = query_peer.get_value_at_percentile
    start = time.perf_counter()
    for _ in range(loops):
        get_value_at_percentile(PERCENTILE)
    return time.perf_counter() - start


def time_window_quantiles(loops):
    start = time.perf_counter()
    _window_quantiles_repeatedly(window_values, window_meta, window_scratch, WINDOW_QUANTILES,
                                 window_out, loops)
    return time.perf_counter() - start


def time_numpy_percentile(loops):
    percentiles = WINDOW_QUANTILES * 100
    start = time.perf_counter()
    for _ in range(loops):
        np.percentile(window_data, percentiles, method="nearest")
    return time.perf_counter() - start


BENCHMARKS = {
    "hist_record_njit": bench(time_hist_record, inner_loops=RECORD_VALUES),
    "hdrh_record_value": bench(time_hdrh_record, inner_loops=PEER_RECORD_VALUES),
    "ddsketch_add": bench(time_ddsketch_add, inner_loops=PEER_RECORD_VALUES),
    "hist_value_at_percentile_njit": bench(time_hist_percentile),
    "hdrh_get_value_at_percentile": bench(time_hdrh_percentile),
    "window_p50_p95_p99_njit": bench(time_window_quantiles),
    "numpy_percentile_nearest": bench(time_numpy_percentile),
}
COMPARISONS = [
    Limit("hist_record_njit", at_most=10e-9, means="at most 10 ns a value"),
    Comparison("hist_record_njit", "hdrh_record_value", at_least=50,
               means="faster than hdrh's record_value", peer_package="hdrhistogram"),
    Comparison("hist_record_njit", "ddsketch_add", means="faster than DDSketch.add",
               peer_package="ddsketch"),
    Comparison("hist_value_at_percentile_njit", "hdrh_get_value_at_percentile", at_least=20,
               means="faster p99 query than hdrh", peer_package="hdrhistogram"),
    Comparison("window_p50_p95_p99_njit", "numpy_percentile_nearest", at_least=1,
               means="faster window p50/p95/p99 than numpy.percentile", peer_package="numpy"),
]

if __name__ == "__main__":
    run_subject("Latency statistics", BENCHMARKS, COMPARISONS)
