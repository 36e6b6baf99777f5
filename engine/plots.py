"""Plots of a run (matplotlib, the ``notebooks`` extra).

- :func:`plot_latency_percentiles`: the latency distribution the way
  HdrHistogram draws it: value against percentile on a log axis of
  ``1 / (1 - percentile)``, so the tail (99%, 99.9%, 99.99%) gets as much room
  as the median.
- :func:`plot_throughput`: events per second over time, from samples of the
  counters (:meth:`ringbook.engine.engine.Engine.stats`, or ``ringbook stat --json``).
"""

import numpy as np


def percentile_curve(histogram, points_per_decade=20, max_nines=6):
    """``(percentiles, values)`` of a :class:`~ringbook.kernels.hist.Histogram`, spread evenly on the
    log ``1 / (1 - p)`` axis from 0 to the percentile of the last value (at most ``max_nines`` nines)."""
    count = histogram.count
    if count == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    nines = min(max_nines, np.log10(max(count, 10)))
    exponents = np.linspace(0.0, nines, int(points_per_decade * nines) + 1)
    percentiles = 100.0 * (1.0 - 10.0 ** -exponents)
    values = np.array([histogram.value_at_percentile(p) for p in percentiles], np.int64)
    return percentiles, values


def plot_latency_percentiles(histogram, ax=None, label=None, unit="us"):
    """Latency against percentile, HdrHistogram-style. Returns the axes."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    scale = {"ns": 1.0, "us": 1e3, "ms": 1e6}[unit]
    percentiles, values = percentile_curve(histogram)
    x = 1.0 / (1.0 - percentiles / 100.0)
    ax.plot(x, values / scale, drawstyle="steps-post", label=label)
    ax.set_xscale("log")
    ticks = [1, 10, 100, 1000, 10_000, 100_000, 1_000_000]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    names = {1: "0%", 10: "90%", 100: "99%", 1000: "99.9%", 10_000: "99.99%", 100_000: "99.999%",
             1_000_000: "99.9999%"}
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: names.get(int(round(value)), "")))
    ax.set_xlabel("percentile")
    ax.set_ylabel(f"latency ({unit})")
    ax.set_title("tick-to-book latency by percentile")
    ax.grid(True, which="major", alpha=0.4)
    if label:
        ax.legend()
    return ax


def throughput_series(samples):
    """``(seconds, events_per_second)`` between consecutive counter samples.

    ``samples`` are dicts with ``elapsed_ns`` and ``book_events`` (what
    :meth:`~ringbook.engine.engine.Engine.stats` returns).
    """
    elapsed = np.array([s["elapsed_ns"] for s in samples], np.float64) / 1e9
    events = np.array([s["book_events"] for s in samples], np.float64)
    if len(samples) < 2:
        return np.zeros(0), np.zeros(0)
    seconds = np.diff(elapsed)
    keep = seconds > 0
    rates = np.diff(events)[keep] / seconds[keep]
    return elapsed[1:][keep], rates


def plot_throughput(samples, ax=None):
    """Events per second over time from counter samples. Returns the axes."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    seconds, rates = throughput_series(samples)
    ax.plot(seconds, rates)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("events / s")
    ax.set_title("throughput")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.4)
    return ax
