import time

import pytest

from ringbook.kernels import clock


def _bracketed_pair():
    """(ticks, ns) read as close together as Python allows: the ns bracketed by stamps."""
    before = clock.stamp()
    ns = time.perf_counter_ns()
    after = clock.stamp()
    return (before + after) // 2, ns


def test_tsc_duration_agrees_with_perf_counter_within_0_1_percent():
    calibration = clock.calibrate()
    ticks0, ns0 = _bracketed_pair()
    time.sleep(0.1)
    ticks1, ns1 = _bracketed_pair()
    measured = calibration.to_ns(ticks1 - ticks0)
    assert measured == pytest.approx(ns1 - ns0, rel=1e-3)


def test_calibration_is_quick_and_reports_its_error():
    calibration = clock.calibrate()
    assert calibration.duration_ns <= 60e6  # 50 ms budget plus one round
    if calibration.source == "tsc":
        assert calibration.relative_error < 1e-4
        assert 0.1 < calibration.ticks_per_ns < 10  # 100 MHz .. 10 GHz


def test_stamp_maps_to_monotonic_time():
    calibration = clock.calibrate()
    ticks, ns = _bracketed_pair()
    assert abs(calibration.to_monotonic_ns(ticks) - ns) < 200_000  # 0.2 ms


def test_monotonic_ns_is_perf_counter_clock():
    before = time.perf_counter_ns()
    ns = clock.monotonic_ns()
    after = time.perf_counter_ns()
    assert before <= ns <= after


def test_ticks_to_ns_matches_calibration():
    calibration = clock.calibrate()
    assert clock.ticks_to_ns(1_000_000, calibration.ns_per_tick) == pytest.approx(
        calibration.to_ns(1_000_000))


def test_tsc_invariant_needs_both_cpu_flags():
    assert clock.TSC_INVARIANT == ({"constant_tsc", "nonstop_tsc"} <= clock.CPU_FLAGS)
