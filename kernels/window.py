"""Exact percentiles over the last N samples: a circular buffer and a selection.

A window is three arrays made by :func:`new_window`:

``values``
    the circular buffer of the last ``capacity`` samples (int64 or float64);
``scratch``
    a buffer of the same size and dtype that quantile queries reorder, so the
    buffer itself is never disturbed and no query allocates;
``meta``
    int64: ``meta[CAPACITY]``, ``meta[RECORDED]`` (samples ever recorded) and
    ``meta[NEXT]`` (where the next sample goes).

Recording is O(1). A quantile ``q`` follows numpy's ``method='nearest'`` exactly:
the element at index ``round_half_even((n - 1) * q)`` of the sorted window of the
``n = min(recorded, capacity)`` latest samples. It is found by selection (an
introselect: quickselect with a median-of-three pivot, falling back to heapsort
when the partitions keep coming out lopsided) into ``scratch``: O(n) expected,
O(n log n) at worst, never a full sort. NaN samples have no defined order and
are not supported.
"""

import numpy as np
from numba.cpython.unsafe.numbers import leading_zeros

from ringbook.kernels.jit_options import kernel

# Indices into ``meta``.
CAPACITY = 0  #: how many samples the window holds
RECORDED = 1  #: samples recorded since creation (or reset)
NEXT = 2  #: index in ``values`` the next sample is written to
META_LEN = 3


@kernel
def record(values, meta, value):
    """Add ``value`` to the window, replacing the oldest sample once it is full. O(1)."""
    position = meta[NEXT]
    values[position] = value
    position += 1
    meta[NEXT] = position if position < meta[CAPACITY] else 0
    meta[RECORDED] += 1


@kernel
def record_many(values, meta, new_values):
    """Add every element of ``new_values`` in order (only the last ``capacity`` stay)."""
    for value in new_values:
        record(values, meta, value)


@kernel
def size(meta):
    """How many samples the window holds now: ``min(recorded, capacity)``."""
    return min(meta[RECORDED], meta[CAPACITY])


@kernel
def reset(meta):
    """Empty the window."""
    meta[RECORDED] = 0
    meta[NEXT] = 0


@kernel
def _sift_down(data, start, root, end):
    """Restore the max-heap rooted at ``root`` of ``data[start:end]``."""
    while True:
        child = 2 * (root - start) + 1 + start
        if child >= end:
            return
        if child + 1 < end and data[child] < data[child + 1]:
            child += 1
        if not data[root] < data[child]:
            return
        data[root], data[child] = data[child], data[root]
        root = child


@kernel
def _heapsort(data, left, right):
    """Sort ``data[left:right + 1]`` in place: O(n log n) at worst, no allocation."""
    end = right + 1
    for root in range(left + (end - left) // 2 - 1, left - 1, -1):
        _sift_down(data, left, root, end)
    for last in range(right, left, -1):
        data[left], data[last] = data[last], data[left]
        _sift_down(data, left, left, last)


@kernel
def select(data, left, right, k):
    """Reorder ``data[left:right + 1]`` so that ``data[k]`` holds its sorted value.

    Afterwards nothing in ``data[left:k]`` is greater than ``data[k]`` and nothing
    in ``data[k + 1:right + 1]`` is smaller. Requires ``left <= k <= right``.
    Quickselect with a median-of-three pivot and Hoare partitioning (fast with
    many equal values); after ``2 * log2(n)`` rounds without finishing it sorts
    the remaining range with heapsort, which bounds the worst case.
    """
    rounds_left = 2 * (64 - leading_zeros(np.int64(right - left + 1)))
    while left < right:
        if rounds_left == 0:
            _heapsort(data, left, right)
            return
        rounds_left -= 1
        middle = left + (right - left) // 2
        # Order left, middle, right: the median pivots, the outer two stop the scans.
        if data[middle] < data[left]:
            data[middle], data[left] = data[left], data[middle]
        if data[right] < data[left]:
            data[right], data[left] = data[left], data[right]
        if data[right] < data[middle]:
            data[right], data[middle] = data[middle], data[right]
        pivot = data[middle]
        low = left
        high = right
        while low <= high:
            while data[low] < pivot:
                low += 1
            while pivot < data[high]:
                high -= 1
            if low <= high:
                data[low], data[high] = data[high], data[low]
                low += 1
                high -= 1
        # Now data[left:high + 1] <= pivot <= data[low:right + 1], and anything
        # strictly between high and low equals the pivot.
        if k <= high:
            right = high
        elif k >= low:
            left = low
        else:
            return


@kernel
def _nearest_index(count, q):
    """numpy's ``method='nearest'`` index: round-half-even of ``(count - 1) * q``."""
    index = np.int64(np.rint((count - 1) * min(max(np.float64(q), 0.0), 1.0)))
    return min(max(index, 0), count - 1)


@kernel
def quantile(values, meta, scratch, q):
    """The ``q``-quantile (0 to 1) of the window, as ``numpy.quantile(window, q,
    method='nearest')``; 0 when the window is empty. O(n) expected, no allocation."""
    count = size(meta)
    if count == 0:
        return scratch.dtype.type(0)
    for i in range(count):
        scratch[i] = values[i]
    k = _nearest_index(count, q)
    select(scratch, 0, count - 1, k)
    return scratch[k]


@kernel
def quantiles(values, meta, scratch, qs, out):
    """``out[i]`` = the ``qs[i]``-quantile of the window (``method='nearest'``).

    One copy into ``scratch``, then one selection per quantile, each confined to
    the part of ``scratch`` that the earlier selections left unsettled. No
    allocation; ``out`` is left unchanged when the window is empty.
    """
    count = size(meta)
    if count == 0:
        return
    for i in range(count):
        scratch[i] = values[i]
    for i in range(min(len(qs), len(out))):
        k = _nearest_index(count, qs[i])
        left = 0
        right = count - 1
        settled = False
        # An earlier selection at index j left every element on its correct side
        # of j: select between the nearest settled indices around k.
        for j in range(i):
            earlier = _nearest_index(count, qs[j])
            if earlier == k:
                settled = True
            elif earlier < k:
                left = max(left, earlier + 1)
            else:
                right = min(right, earlier - 1)
        if not settled:
            select(scratch, left, right, k)
        out[i] = scratch[k]


def new_window(capacity=10_000, dtype=np.int64):
    """Allocate an empty window: ``(values, scratch, meta)``.

    Parameters
    ----------
    capacity : int
        How many of the latest samples the window keeps (at least 1).
    dtype : numpy dtype
        ``int64`` (nanoseconds, ticks) or ``float64``.
    """
    capacity = int(capacity)
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, not {capacity}")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.int64), np.dtype(np.float64)):
        raise ValueError(f"dtype must be int64 or float64, not {dtype}")
    meta = np.zeros(META_LEN, dtype=np.int64)
    meta[CAPACITY] = capacity
    return np.zeros(capacity, dtype=dtype), np.zeros(capacity, dtype=dtype), meta


def check_window(values, scratch, meta):
    """Raise ValueError unless ``(values, scratch, meta)`` is a consistent window."""
    if not (isinstance(meta, np.ndarray) and meta.dtype == np.int64 and meta.shape == (META_LEN,)):
        raise ValueError(f"meta must be an int64 array of {META_LEN} entries")
    capacity = int(meta[CAPACITY])
    for name, array in (("values", values), ("scratch", scratch)):
        if not (isinstance(array, np.ndarray) and array.ndim == 1 and len(array) == capacity
                and array.dtype in (np.dtype(np.int64), np.dtype(np.float64))):
            raise ValueError(f"{name} must be an int64 or float64 array of {capacity} entries")
    if values.dtype != scratch.dtype:
        raise ValueError("values and scratch must have the same dtype")
    if meta[RECORDED] < 0 or not 0 <= meta[NEXT] < capacity:
        raise ValueError("meta's positions are out of range")


class Window:
    """Exact percentiles of the last ``capacity`` samples, for notebooks.

    Attributes
    ----------
    values, scratch, meta : numpy.ndarray
        The arrays; njit code records with :func:`record` and queries with
        :func:`quantile` / :func:`quantiles`.

    Examples
    --------
    >>> w = Window(capacity=4)
    >>> w.record_many([5, 1, 9, 7, 3])   # 5 drops out
    >>> w.percentiles((50, 100))
    {50: 7, 100: 9}
    """

    def __init__(self, capacity=10_000, dtype=np.int64):
        self.values, self.scratch, self.meta = new_window(capacity, dtype)

    def _coerce(self, value):
        return self.values.dtype.type(value)

    def record(self, value):
        """Add one sample."""
        record(self.values, self.meta, self._coerce(value))

    def record_many(self, samples):
        """Add every sample of an array or sequence, in order."""
        samples = np.asarray(samples)
        if self.values.dtype.kind == "i" and samples.size and samples.dtype.kind not in "iub":
            raise ValueError(f"an int64 window takes integers, not {samples.dtype}")
        record_many(self.values, self.meta,
                    np.ascontiguousarray(samples, dtype=self.values.dtype).ravel())

    def reset(self):
        """Forget every sample."""
        reset(self.meta)

    def __len__(self):
        return int(size(self.meta))

    @property
    def capacity(self):
        return int(self.meta[CAPACITY])

    def _checked_quantiles(self, qs):
        qs = np.ascontiguousarray(qs, dtype=np.float64).ravel()
        if not np.all((qs >= 0.0) & (qs <= 1.0)):
            raise ValueError("quantiles must be between 0 and 1")
        if len(self) == 0:
            raise ValueError("the window is empty")
        return qs

    def quantile(self, q):
        """``numpy.quantile(window, q, method='nearest')``, without sorting."""
        q = float(self._checked_quantiles([q])[0])
        return self.values.dtype.type(quantile(self.values, self.meta, self.scratch, q)).item()

    def quantiles(self, qs):
        """An array of the window's quantiles ``qs`` (``method='nearest'``)."""
        qs = self._checked_quantiles(qs)
        out = np.empty(len(qs), dtype=self.values.dtype)
        quantiles(self.values, self.meta, self.scratch, qs, out)
        return out

    def percentiles(self, percentiles=(50.0, 95.0, 99.0)):
        """``{percentile: value}``, as ``numpy.percentile(window, p, method='nearest')``."""
        percentiles = tuple(percentiles)
        values = self.quantiles(np.asarray(percentiles, dtype=np.float64) / 100.0)
        return {p: value.item() for p, value in zip(percentiles, values)}

    def __repr__(self):
        return f"Window(capacity={self.capacity}, size={len(self)}, dtype={self.values.dtype})"
