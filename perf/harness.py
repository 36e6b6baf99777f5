"""What every pyperf script in ``perf/`` shares: one ``Runner`` with the versions
and machine in its metadata, the benchmarks of a subject declared once, and the
ratio of each kernel to its peer printed at the end of the same run and stored
in the results, where ``perf/report.py`` reads it.

A script builds its inputs and compiles its njit drivers at import time, so that
each pyperf worker process compiles (or loads from cache) before timing starts
and compile time is never measured.

Declaring a subject
-------------------
A script names each benchmark once, in a table, and states its comparisons once,
in another::

    BENCHMARKS = {
        "fixed_scan_decimals": bench(time_scan, BUFFER, OUT, inner_loops=VALUES),
        "decimal_peer": bench(time_decimal, STRINGS, inner_loops=VALUES),
    }
    COMPARISONS = [
        Comparison("fixed_scan_decimals", "decimal_peer", at_least=10,
                   means="times faster than int(Decimal(s) * 10**8)", peer_package=None),
        Limit("fixed_scan_decimals", at_most=50e-9, means="time per value"),
    ]

    if __name__ == "__main__":
        run_subject("Fixed point", BENCHMARKS, COMPARISONS)

:func:`run_subject` makes the runner, stores the subject, the comparisons and the
peers' versions in its metadata, times every benchmark in table order, and prints
the ratios. A :class:`Comparison`'s ratio is the peer's median time over ours
(higher is better for ours); its target, if any, is met when the ratio is at
least ``at_least``. A :class:`Limit` is met when our median is at most
``at_most`` (in the benchmark's unit: seconds for timings). A comparison without
``at_least`` is reported, not judged. :func:`add_values` adds a measurement taken
outside pyperf's workers (one value per repetition) to the same output file.

Scripts not yet declared this way keep working: :func:`make_runner` and
:func:`report_ratios` are unchanged. To adopt the declaration, a script turns its
``{name: runner.bench_time_func(name, func, *args, inner_loops=n)}`` into
``BENCHMARKS = {name: bench(func, *args, inner_loops=n)}``, its ``(ours, peer)``
pairs into ``COMPARISONS``, and its ``make_runner()`` ... ``report_ratios(...)``
into one ``run_subject(title, BENCHMARKS, COMPARISONS)`` call; then adds its
name and pyperf options to ``report.SCRIPTS`` so that a full run includes it.

Run a full set into ``perf/results/`` (ignored by git) and write
``perf/RESULTS.md`` with ``perf/report.py``; see its docstring for the commands.
"""

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import platform
import shutil
import tempfile
from pathlib import Path

import llvmlite
import numba
import numpy
import pyperf

from ringbook.engine.feeds import synthetic
from ringbook.engine.system import cpu_model

#: The runner metadata key holding a subject's comparisons (a JSON list).
COMPARISONS_KEY = "ringbook_comparisons"
SUBJECT_KEY = "ringbook_subject"
PEERS_KEY = "ringbook_peer_versions"
#: The script's own metadata (inputs, sizes), as a JSON object the report prints.
CONTEXT_KEY = "ringbook_context"


def synthetic_folder(name, make):
    """A folder of synthetic files that ``make(folder)`` writes, made once and kept in the
    temporary folder for pyperf's worker processes (each would make it again), under a name
    that changes with the generator's code."""
    code = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"ringbook_bm_{name}_{code}"
    if not folder.is_dir():
        made = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        make(made)
        with contextlib.suppress(OSError):   # another process made it first
            made.rename(folder)
        shutil.rmtree(made, ignore_errors=True)
    return folder


def tardis_file(rows=400_000):
    """A synthetic tardis ``incremental_book_L2`` day of one symbol, gzip: larger than a reader's
    block, as real days are (the shared sample has 15 rows)."""
    folder = synthetic_folder(f"tardis_{rows}", lambda folder: synthetic.write_tardis_incremental(
        folder / "binance-futures_incremental_book_L2_2024-08-09_BTCUSDT.csv.gz", rows=rows))
    return next(folder.glob("*.csv.gz"))


def make_runner(**kwargs):
    """A ``pyperf.Runner`` whose results carry numba, llvmlite and numpy versions."""
    runner = pyperf.Runner(**kwargs)
    runner.metadata.update({
        "numba_version": numba.__version__,
        "llvmlite_version": llvmlite.__version__,
        "numpy_version": numpy.__version__,
        "cpu_model_name": cpu_model(),
        "machine": platform.machine(),
    })
    return runner


def report_ratios(benchmarks, pairs):
    """Print ``peer median / ours median`` for each ``(ours, peer)`` name pair.

    ``benchmarks`` maps names to what ``bench_time_func`` returned: a
    ``pyperf.Benchmark`` in the main process, ``None`` in workers (which print
    nothing).
    """
    if any(benchmarks.get(name) is None for pair in pairs for name in pair):
        return
    print()
    print("Ratios (peer median time / ours; higher is better for ours):")
    for ours, peer in pairs:
        ratio = benchmarks[peer].median() / benchmarks[ours].median()
        print(f"  {ours} vs {peer}: {ratio:.2f}x")


@dataclasses.dataclass(frozen=True)
class Bench:
    """One timed function: ``func(loops, *args)`` returns the seconds ``loops`` took."""

    func: object
    args: tuple
    inner_loops: int = None


def bench(func, *args, inner_loops=None):
    """A :class:`Bench` row of a script's ``BENCHMARKS`` table."""
    return Bench(func, args, inner_loops)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Ours against a peer measured in the same run.

    Parameters
    ----------
    ours, peer : str
        Benchmark names. The ratio is ``median(peer) / median(ours)``.
    at_least : float, optional
        The target: the least ratio that meets it. None: reported only.
    means : str
        What the ratio says, for a reader of the results.
    peer_package : str, optional
        The distribution the peer comes from (its version goes in the results;
        a peer whose package is missing is reported as not installed).
    """

    ours: str
    peer: str
    at_least: float = None
    means: str = ""
    peer_package: str = None
    kind: str = "ratio"


@dataclasses.dataclass(frozen=True)
class Limit:
    """Ours against a fixed bound: met when ``median(ours) <= at_most``.

    ``at_most`` is in the benchmark's unit: seconds for timings (``unit="s"``),
    a plain ratio for values added with :func:`add_values` (``unit="x"``).
    ``means`` says what is bounded (for example "100 M events/s: at most 10 ns
    an event").
    """

    ours: str
    at_most: float
    means: str = ""
    unit: str = "s"
    kind: str = "limit"


def peer_versions(comparisons):
    """``{package: version or "not installed"}`` for the peers of ``comparisons``."""
    versions = {}
    for comparison in comparisons:
        package = getattr(comparison, "peer_package", None)
        if package:
            try:
                versions[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                versions[package] = "not installed"
    return versions


def run_subject(subject, benchmarks, comparisons, runner=None, metadata=None):
    """Time every benchmark of ``benchmarks`` (name -> :class:`Bench`) and print the ratios.

    The subject's title, ``comparisons``, peer versions and the script's own
    ``metadata`` (inputs, sizes: shown under the subject's table) go into the
    runner's metadata, so every result file says what it is compared with. Returns
    ``(runner, results)``: results map names to ``pyperf.Benchmark`` in the
    main process, ``None`` in workers.
    """
    runner = runner or make_runner()
    runner.metadata[SUBJECT_KEY] = subject
    runner.metadata[COMPARISONS_KEY] = json.dumps([dataclasses.asdict(c) for c in comparisons])
    versions = peer_versions(comparisons)
    if versions:
        runner.metadata[PEERS_KEY] = json.dumps(versions)
    if metadata:
        runner.metadata.update(metadata)
        runner.metadata[CONTEXT_KEY] = json.dumps(metadata)
    results = {name: runner.bench_time_func(name, row.func, *row.args, inner_loops=row.inner_loops)
               for name, row in benchmarks.items()}
    if runner.args.worker:
        return runner, results
    # Figures added later with add_values are not pyperf results: their ratios are the report's.
    pairs = [(c.ours, c.peer) for c in comparisons
             if c.kind == "ratio" and c.ours in results and c.peer in results]
    if pairs:
        report_ratios(results, pairs)
    for limit in (c for c in comparisons if c.kind == "limit" and results.get(c.ours) is not None):
        median = results[limit.ours].median()
        verdict = "met" if median <= limit.at_most else "not met"
        print(f"  {limit.ours}: median {median:.4g} <= {limit.at_most:g} ({limit.means}): {verdict}")
    return runner, results


def add_values(runner, name, values, unit="second"):
    """Add ``values``, measured in this process outside pyperf's workers, as benchmark ``name``.

    Appended to the runner's ``-o`` file (if any) as one run with the runner's
    metadata, so the report reads them like any other benchmark. ``unit`` is
    pyperf's: ``"second"``, or ``"integer"`` for anything else (a ratio).
    """
    if not runner.args.output or not values:
        return None
    metadata = dict(runner.metadata, name=name, unit=unit)
    result = pyperf.Benchmark([pyperf.Run([float(value) for value in values], metadata=metadata)])
    pyperf.add_runs(runner.args.output, result)
    return result
