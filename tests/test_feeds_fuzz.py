"""Fuzzing the readers: random mutations of real data (hypothesis) and a short coverage-guided
run (atheris, in a child process); only FeedError may come out."""

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringbook.engine.feeds.source import Feed, FeedError
from ringbook.engine.feeds.lobster import OrderbookFile
from tests import feeds_fuzz

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seed_inputs(shared_data):
    inputs = feeds_fuzz.seeds(shared_data)
    assert len(inputs) == 3 * 5
    return inputs


def test_seeds_read_cleanly(seed_inputs):
    for data in seed_inputs:
        outcome = feeds_fuzz.exercise(data)
        assert isinstance(outcome, (Feed, OrderbookFile)), outcome
        assert len(outcome) > 0


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_seeds_raise_only_feed_errors(seed_inputs, data):
    seed = bytearray(data.draw(st.sampled_from(seed_inputs)))
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(1, len(seed) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "cut", "duplicate"]))
        if action == "flip":
            seed[position] = data.draw(st.sampled_from(b',.-+"[]{}:\n 0123456789aeE\x00\xff'))
        elif action == "insert":
            seed[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del seed[position:position + data.draw(st.integers(1, 20))]
        elif action == "cut":
            del seed[position:]
        else:
            seed[position:position] = seed[position:position + data.draw(st.integers(1, 200))]
        if len(seed) < 2:
            break
    outcome = feeds_fuzz.exercise(bytes(seed))
    assert outcome is None or isinstance(outcome, (Feed, OrderbookFile, FeedError))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(data=st.binary(max_size=600))
def test_any_bytes_raise_only_feed_errors(data):
    outcome = feeds_fuzz.exercise(data)
    assert outcome is None or isinstance(outcome, (Feed, OrderbookFile, FeedError))


@pytest.mark.slow
def test_coverage_guided_run(shared_data, tmp_path):
    """A short atheris run over the real-data seeds; ``tests/feeds_fuzz.py`` runs longer ones."""
    pytest.importorskip("atheris")
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "feeds_fuzz.py"), "-runs=3000"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**__import__("os").environ, "RINGBOOK_SHARED_DATA": str(shared_data),
                                 "RINGBOOK_FUZZ_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 3000 runs" in result.stderr


def test_a_mangled_symbol_beside_a_snapshot_is_a_feed_error(seed_inputs):
    # Found by the mutation test: byte 100 of the Binance capture doubled.
    seed = next(data for data in seed_inputs if data[:1] == b"\x02")
    mangled = seed[:101] + seed[100:]
    outcome = feeds_fuzz.exercise(mangled)
    assert outcome is None or isinstance(outcome, (Feed, FeedError))
