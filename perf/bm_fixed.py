"""Decimal strings to int64 fixed point: njit scan versus Python's Decimal and float.

The input is what a Binance depth feed sends: 100,000 decimal strings (prices
like "61737.63000000", quantities like "0.00012345") in a JSON-ish buffer
``[["price","quantity"],...]``. Every figure is the time per value:

- ``fixed_scan_decimals``: :func:`ringbook.kernels.fixed.scan_decimals` over the whole
  buffer in njit, delimiters included, at scale 8;
- ``decimal_peer``: ``int(Decimal(s) * 10**8)`` over the same strings, already
  split (the exact conversion a Python feed would write);
- ``float_peer``: ``float(s)`` over the same strings (fast, but not exact).

Targets: at least 10x faster than ``decimal_peer`` and 3x faster than ``float_peer``.

Run: ``python perf/bm_fixed.py -o perf/results/fixed.json`` (``--fast`` for a quick look).
"""

import time
from decimal import Decimal

import numpy as np

from harness import Comparison, bench, run_subject

from ringbook.kernels.fixed import OK, parse_decimals, scan_decimals
from ringbook.kernels.jit_options import kernel

VALUES = 100_000
SCALE = 8


def binance_like_strings(count, seed=20240808):
    """Alternating prices and quantities with 8 decimals, as Binance spot sends them."""
    generator = np.random.default_rng(seed)
    prices = generator.integers(5_500_000, 6_500_000, count // 2)  # cents
    quantities = generator.integers(1, 500_000_000, count // 2)  # 1e-8 units
    strings = []
    for price, quantity in zip(prices.tolist(), quantities.tolist()):
        strings.append(f"{price // 100}.{price % 100:02d}000000")
        strings.append(f"{quantity // 10 ** 8}.{quantity % 10 ** 8:08d}")
    return strings


@kernel
def scan_repeatedly(buffer, out, loops):
    """Scan the whole buffer ``loops`` times; the count, so the work is not optimised away."""
    total = 0
    for _ in range(loops):
        count, status, _position = scan_decimals(buffer, 0, len(buffer), SCALE, out)
        if status != OK:
            return -1
        total += count
    return total


def time_scan(loops, buffer, out):
    started = time.perf_counter()
    total = scan_repeatedly(buffer, out, loops)
    elapsed = time.perf_counter() - started
    assert total == loops * len(out)
    return elapsed


def time_decimal(loops, strings):
    factor = 10 ** SCALE
    started = time.perf_counter()
    for _ in range(loops):
        for text in strings:
            int(Decimal(text) * factor)
    return time.perf_counter() - started


def time_float(loops, strings):
    started = time.perf_counter()
    for _ in range(loops):
        for text in strings:
            float(text)
    return time.perf_counter() - started


STRINGS = binance_like_strings(VALUES)
TEXT = "[" + ",".join(f'["{STRINGS[i]}","{STRINGS[i + 1]}"]'
                      for i in range(0, len(STRINGS), 2)) + "]"
BUFFER = np.frombuffer(bytearray(TEXT.encode("ascii")), dtype=np.uint8)
OUT = np.empty(VALUES, dtype=np.int64)

# Check the kernel against the peer once, and compile, before timing starts.
assert parse_decimals(TEXT, SCALE).tolist() == [int(Decimal(s) * 10 ** SCALE) for s in STRINGS]
scan_repeatedly(BUFFER, OUT, 1)

BENCHMARKS = {
    "fixed_scan_decimals": bench(time_scan, BUFFER, OUT, inner_loops=VALUES),
    "decimal_peer": bench(time_decimal, STRINGS, inner_loops=VALUES),
    "float_peer": bench(time_float, STRINGS, inner_loops=VALUES),
}
COMPARISONS = [
    Comparison("fixed_scan_decimals", "decimal_peer", at_least=10,
               means="faster than int(Decimal(s) * 10**8), per value"),
    Comparison("fixed_scan_decimals", "float_peer", at_least=3,
               means="faster than float(s), which is inexact"),
]

if __name__ == "__main__":
    run_subject("Fixed point", BENCHMARKS, COMPARISONS, metadata={"fixed_values": str(VALUES)})
