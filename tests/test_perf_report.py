"""perf/report.py writes the tables a reader needs from pyperf files, and every
benchmark script's declaration names benchmarks it really has."""

import importlib
import inspect
import json
import sys
from pathlib import Path

import pyperf
import pytest

PERF = Path(__file__).resolve().parents[1] / "perf"
sys.path.insert(0, str(PERF))

harness = importlib.import_module("harness")
report = importlib.import_module("report")

SCRIPTS = sorted(path.stem for path in PERF.glob("bm_*.py")) + ["first_event"]


def write_suite(path, subject, medians, comparisons, peers=None, cpu="Test CPU"):
    """A pyperf file as ``harness.run_subject`` leaves it: one benchmark per median."""
    metadata = {harness.SUBJECT_KEY: subject,
                harness.COMPARISONS_KEY: json.dumps([c.__dict__ for c in comparisons]),
                "numba_version": "0.0", "cpu_model_name": cpu, "machine": "x86_64"}
    if peers:
        metadata[harness.PEERS_KEY] = json.dumps(peers)
    for name, median in medians.items():
        run = pyperf.Run([median] * 3, metadata=dict(metadata, name=name, unit="second"))
        pyperf.add_runs(str(path), pyperf.Benchmark([run]))


def test_tables_say_met_or_not_met_and_name_a_missing_peer(tmp_path):
    write_suite(tmp_path / "bm_fixed.json", "Fixed point",
                {"ours": 10e-9, "slow_peer": 200e-9, "close_peer": 20e-9}, [
                    harness.Comparison("ours", "slow_peer", at_least=10, means="vs slow"),
                    harness.Comparison("ours", "close_peer", at_least=3, means="vs close"),
                    harness.Comparison("ours", "absent_peer", at_least=2, means="vs absent",
                                       peer_package="absentpkg"),
                    harness.Limit("ours", at_most=5e-9, means="at most 5 ns"),
                ], peers={"absentpkg": "not installed"})
    write_suite(tmp_path / "bm_other.json", "Other", {"mine": 1.5}, [
        harness.Limit("mine", at_most=2.0, means="within 2 s"),
        harness.Comparison("mine", "mine", means="reported only")])
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nstale\n{report.END}\nrest\n")
    out = tmp_path / "RESULTS.md"
    report.write(tmp_path, report=out, readme=readme)

    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows[0].endswith("| 20.0x | >= 10x | met |")
    assert rows[1].endswith("| 2.00x | >= 3x | not met |")
    assert "absentpkg not installed" in rows[2] and rows[2].endswith("not met (not measured) |")
    assert rows[3].endswith("| <= 5 ns | not met |")
    assert rows[4].endswith("| <= 2 s | met |")
    assert rows[5].endswith("| 1.00x |  |  |")  # no target: no verdict
    assert text.index("## Fixed point") < text.index("## Other")  # the scripts' order first
    assert "Test CPU" in text and len(text.splitlines()) < 150
    headline = readme.read_text()
    assert "stale" not in headline and headline.startswith("intro\n") and headline.endswith("rest\n")
    assert headline.count("| Fixed point |") == 4 and "| Other | within 2 s |" in headline

    # One script run again: the other's table and README rows stay as they were.
    fixed_table = text[text.index("## Fixed point"):text.index("## Other")]
    again = tmp_path / "again"
    again.mkdir()
    write_suite(again / "bm_other.json", "Other", {"mine": 3.0}, [
        harness.Limit("mine", at_most=2.0, means="within 2 s")], peers={"otherpkg": "1.0"}, cpu="Other CPU")
    report.write(again, report=out, readme=readme)
    text = out.read_text()
    assert text[text.index("## Fixed point"):text.index("## Other")] == fixed_table
    assert [line for line in text.splitlines() if line.startswith("| `mine`")] == [
        "| `mine`: within 2 s | 3 s |  |  | <= 2 s | not met |"]
    assert "Not in this run" in text and "`perf/bm_fixed.py`" not in text.split("Not in this run")[1]
    assert "absentpkg not installed" in text and "otherpkg 1.0" in text and text.count("## Machine") == 1
    machine = next(line for line in text.splitlines() if line.startswith("Machines: "))
    assert machine.startswith("Machines: Other CPU (x86_64)") and " for Other; Test CPU " in machine
    assert machine.endswith(" for Fixed point; shared with other work while these ran.")
    # Again: each table keeps the machine it ran on.
    report.write(again, report=out, readme=readme)
    assert next(line for line in out.read_text().splitlines() if line.startswith("Machines: ")) == machine
    headline = readme.read_text()
    assert headline.count("| Fixed point |") == 4 and "| Other | within 2 s | 3 s |" in headline
    assert headline.index("| Fixed point |") < headline.index("| Other |")


@pytest.mark.slow
@pytest.mark.parametrize("stem", SCRIPTS)
def test_each_script_declares_its_benchmarks_once_and_they_run(stem):
    """Importing a script checks it against its peers; then each benchmark runs once."""
    try:
        module = importlib.import_module(stem)
    except ImportError as error:  # a peer that is not installed
        pytest.skip(f"{stem}: {error}")
    if not hasattr(module, "COMPARISONS"):
        pytest.skip(f"{stem} does not declare its benchmarks with harness.run_subject yet")
    assert module.COMPARISONS and all(comparison.means for comparison in module.COMPARISONS)
    if hasattr(module, "BENCHMARKS"):
        table = module.BENCHMARKS
    elif hasattr(module, "Benchmarks"):
        table = module.benchmark_table(module.Benchmarks())
    else:
        pytest.skip(f"{stem} builds its benchmarks from inputs it makes in main(); its run checks them")
    names = set(table)
    # Figures measured outside pyperf (add_values) have names made at run time; only a
    # script that adds none must name pyperf benchmarks in every comparison.
    if "add_values" not in inspect.getsource(module):
        for comparison in module.COMPARISONS:
            assert comparison.ours in names or getattr(comparison, "unit", "s") == "x"
            assert getattr(comparison, "peer", None) in (None, *names)
    if stem in ("bm_ring", "first_event"):
        return  # cross-core threads and fresh processes: the benchmark run exercises them
    for row in table.values():
        assert row.func(1, *row.args) > 0
