"""A run's summary: count, throughput, errors, and mean/min/max latency.

What a price engine reports at the end of a run, kept in one int64 array made by
:func:`new_summary` (entries at the index constants below) and updated from njit
code in O(1) with no allocation:

- ``record(summary, timestamp_ns, latency_ns)``: an operation that succeeded;
- ``record_error(summary, timestamp_ns)``: one that failed (it has no latency).

Throughput is operations (successes and errors) per second between the first
(earliest) and the last (latest) timestamp; the error rate is errors per
operation; the latency statistics cover the successful operations.
"""

import numpy as np

from ringbook.kernels.jit_options import kernel
from ringbook.kernels.limits import INT64_MAX, INT64_MIN

# Indices into the summary array.
COUNT = 0  #: operations recorded, successes and errors
ERRORS = 1  #: operations that failed
FIRST_TIMESTAMP = 2  #: earliest timestamp seen, ns; INT64_MAX when empty
LAST_TIMESTAMP = 3  #: latest timestamp seen, ns; INT64_MIN when empty
LATENCY_SUM = 4  #: sum of the successful operations' latencies, ns
LATENCY_MIN = 5  #: INT64_MAX when there is no latency yet
LATENCY_MAX = 6  #: INT64_MIN when there is no latency yet
SUMMARY_LEN = 7


@kernel
def _stamp(summary, timestamp_ns):
    summary[COUNT] += 1
    summary[FIRST_TIMESTAMP] = min(summary[FIRST_TIMESTAMP], timestamp_ns)
    summary[LAST_TIMESTAMP] = max(summary[LAST_TIMESTAMP], timestamp_ns)


@kernel
def record(summary, timestamp_ns, latency_ns):
    """Count a successful operation at ``timestamp_ns`` that took ``latency_ns``."""
    timestamp_ns = np.int64(timestamp_ns)
    latency_ns = np.int64(latency_ns)
    _stamp(summary, timestamp_ns)
    summary[LATENCY_SUM] += latency_ns
    summary[LATENCY_MIN] = min(summary[LATENCY_MIN], latency_ns)
    summary[LATENCY_MAX] = max(summary[LATENCY_MAX], latency_ns)


@kernel
def record_error(summary, timestamp_ns):
    """Count a failed operation at ``timestamp_ns``."""
    _stamp(summary, np.int64(timestamp_ns))
    summary[ERRORS] += 1


@kernel
def record_many(summary, timestamps_ns, latencies_ns, failed):
    """Record operation ``i`` as an error where ``failed[i]``, else as a success."""
    for i in range(min(len(timestamps_ns), len(latencies_ns), len(failed))):
        if failed[i]:
            record_error(summary, timestamps_ns[i])
        else:
            record(summary, timestamps_ns[i], latencies_ns[i])


@kernel
def merge_into(summary, other):
    """Add the summary ``other`` into ``summary``."""
    summary[COUNT] += other[COUNT]
    summary[ERRORS] += other[ERRORS]
    summary[FIRST_TIMESTAMP] = min(summary[FIRST_TIMESTAMP], other[FIRST_TIMESTAMP])
    summary[LAST_TIMESTAMP] = max(summary[LAST_TIMESTAMP], other[LAST_TIMESTAMP])
    summary[LATENCY_SUM] += other[LATENCY_SUM]
    summary[LATENCY_MIN] = min(summary[LATENCY_MIN], other[LATENCY_MIN])
    summary[LATENCY_MAX] = max(summary[LATENCY_MAX], other[LATENCY_MAX])


@kernel
def reset(summary):
    """Empty the summary."""
    summary[COUNT] = 0
    summary[ERRORS] = 0
    summary[FIRST_TIMESTAMP] = INT64_MAX
    summary[LAST_TIMESTAMP] = INT64_MIN
    summary[LATENCY_SUM] = 0
    summary[LATENCY_MIN] = INT64_MAX
    summary[LATENCY_MAX] = INT64_MIN


def new_summary():
    """An empty summary: an int64 array of :data:`SUMMARY_LEN` entries."""
    summary = np.zeros(SUMMARY_LEN, dtype=np.int64)
    reset(summary)
    return summary


def summary_dict(summary):
    """The summary as plain Python numbers.

    Returns
    -------
    dict
        ``count``, ``errors``, ``error_rate`` (errors / count), ``duration_s``
        (last - first timestamp), ``throughput_per_s`` (count / duration_s),
        ``latency_mean_ns``, ``latency_min_ns``, ``latency_max_ns``. Rates and
        latencies without data (nothing recorded, a zero duration, no success)
        are NaN or None.
    """
    count = int(summary[COUNT])
    errors = int(summary[ERRORS])
    successes = count - errors
    duration_ns = int(summary[LAST_TIMESTAMP]) - int(summary[FIRST_TIMESTAMP]) if count else 0
    return {
        "count": count,
        "errors": errors,
        "error_rate": errors / count if count else float("nan"),
        "duration_s": duration_ns / 1e9,
        "throughput_per_s": count / (duration_ns / 1e9) if duration_ns > 0 else float("nan"),
        "latency_mean_ns": int(summary[LATENCY_SUM]) / successes if successes else float("nan"),
        "latency_min_ns": int(summary[LATENCY_MIN]) if successes else None,
        "latency_max_ns": int(summary[LATENCY_MAX]) if successes else None,
    }


class Summary:
    """A run's summary for notebooks, around the array ``.summary``.

    Examples
    --------
    >>> s = Summary()
    >>> s.record(0, 1_500)
    >>> s.record(500_000_000, 2_500)
    >>> s.record_error(1_000_000_000)
    >>> d = s.as_dict()
    >>> d["throughput_per_s"], d["error_rate"], d["latency_mean_ns"]
    (3.0, 0.3333333333333333, 2000.0)
    """

    def __init__(self):
        self.summary = new_summary()

    def record(self, timestamp_ns, latency_ns):
        """Count a successful operation."""
        record(self.summary, int(timestamp_ns), int(latency_ns))

    def record_error(self, timestamp_ns):
        """Count a failed operation."""
        record_error(self.summary, int(timestamp_ns))

    def record_many(self, timestamps_ns, latencies_ns, failed=None):
        """Count many operations; ``failed`` (booleans) marks the errors."""
        timestamps_ns = np.ascontiguousarray(timestamps_ns, dtype=np.int64).ravel()
        latencies_ns = np.ascontiguousarray(latencies_ns, dtype=np.int64).ravel()
        if failed is None:
            failed = np.zeros(len(timestamps_ns), dtype=np.bool_)
        failed = np.ascontiguousarray(failed, dtype=np.bool_).ravel()
        if not len(timestamps_ns) == len(latencies_ns) == len(failed):
            raise ValueError("timestamps, latencies and failed must have the same length")
        record_many(self.summary, timestamps_ns, latencies_ns, failed)

    def merge(self, other):
        """Add ``other``'s operations; returns ``self``."""
        merge_into(self.summary, other.summary)
        return self

    def reset(self):
        reset(self.summary)

    def as_dict(self):
        """See :func:`summary_dict`."""
        return summary_dict(self.summary)

    def __repr__(self):
        return f"Summary({self.as_dict()})"
