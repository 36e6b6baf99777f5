"""Run every benchmark script and write ``perf/RESULTS.md`` from their pyperf files.

Each script declares its benchmarks and comparisons once (see ``harness.py``)
and stores the comparisons in the metadata of its results; this module reads a
folder of those files (``perf/results/`` by default, ignored by git) and writes
one table per subject: benchmark, ringbook, peer, ratio, target, met. A
footnote gives the machine, the versions, the dates and the exact commands.
The rows with a target also go into README.md's Benchmarks section, between
``<!-- results:begin -->`` and ``<!-- results:end -->``.

Run a full set (each script under the shared lock, one after the other), then
write the report::

    python perf/report.py run --lock /tmp/ringbook-bench.lock
    python perf/report.py write

``run`` deletes the folder's old files first (pyperf will not overwrite one)
and records each command it ran, with its date, in ``commands.json`` beside
the results; ``run SCRIPT ...`` runs only those scripts (their stems, e.g.
``bm_ring``). ``write`` reads whatever files are there; the table of a script
without one stays as the report had it, with its README rows, and the footnote
spans both runs.
"""

import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyperf

from harness import COMPARISONS_KEY, CONTEXT_KEY, PEERS_KEY, SUBJECT_KEY

PERF = Path(__file__).resolve().parent
ROOT = PERF.parent
RESULTS = PERF / "results"
REPORT = PERF / "RESULTS.md"
README = ROOT / "README.md"
COMMANDS = "commands.json"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

#: Every script of a full run, in report order, with the pyperf options it runs with.
SCRIPTS = {
    "bm_fixed": ["-p", "4", "-n", "3", "-w", "1"],
    "bm_stats": ["-p", "4", "-n", "3", "-w", "1"],
    "bm_feeds": ["-p", "4", "-n", "3", "-w", "1"],
    "bm_book": ["-p", "4", "-n", "3", "-w", "1"],
    "bm_ring": ["-p", "4", "-n", "3", "-w", "1"],
    "first_event": ["-p", "2", "-n", "3", "-w", "1"],
    "bm_journal": ["-p", "2", "-n", "3", "-w", "1"],
    "bm_batch": ["-p", "6", "-n", "5", "-w", "0"],
    "bm_pipeline": ["-p", "1", "-n", "3", "-w", "0"],
    "bm_wait": ["-p", "2", "-n", "3", "-w", "1"],
    "bm_ipc": ["-p", "1", "-n", "3", "-w", "0"],
}


def command_for(stem, folder):
    """The command line that runs script ``stem`` into ``folder``."""
    return [sys.executable, str(PERF / f"{stem}.py"), *SCRIPTS.get(stem, []),
            "-o", str(folder / f"{stem}.json")]


def run(stems, folder, lock=None):
    """Run each script of ``stems`` (under ``flock lock`` if given); record its command."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / COMMANDS
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for stem in stems:
        (folder / f"{stem}.json").unlink(missing_ok=True)
        command = command_for(stem, folder)
        if lock:
            command = ["flock", lock, *command]
        started = datetime.datetime.now(datetime.timezone.utc)
        print("$", shlex.join(command), flush=True)
        status = subprocess.run(command, cwd=ROOT).returncode
        manifest[stem] = {"command": shlex.join(_shown(command)),
                          "started": started.strftime("%Y-%m-%d %H:%M UTC"), "status": status}
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
        if status:
            print(f"{stem} failed with status {status}", file=sys.stderr)


def _shown(command):
    """``command`` as a reader would type it: paths relative to the repository."""
    shown = []
    for part in command:
        if part == sys.executable:
            part = "python"
        elif part.startswith(str(ROOT) + os.sep):
            part = os.path.relpath(part, ROOT)
        shown.append(part)
    return shown


# ---------------------------------------------------------------------------
# Reading results.

def load(folder):
    """``[(stem, suite)]`` for every pyperf file in ``folder``, in report order."""
    paths = {path.stem: path for path in folder.glob("*.json") if path.name != COMMANDS}
    order = [stem for stem in SCRIPTS if stem in paths] + sorted(set(paths) - set(SCRIPTS))
    return [(stem, pyperf.BenchmarkSuite.load(str(paths[stem]))) for stem in order]


def metadata_of(suite):
    """The metadata of the suite's first benchmark (the runner's, shared by all)."""
    return suite.get_benchmarks()[0].get_metadata()


def format_time(seconds):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"


def format_value(value, unit):
    return f"{value:.2f}x" if unit == "x" else format_time(value)


def format_ratio(ratio):
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.0f}x" if ratio >= 100 else f"{ratio:.1f}x"


def rows_of(suite):
    """``[(benchmark, ringbook, peer, ratio, target, met, means)]`` of one subject."""
    medians = {bench.get_name(): bench.median() for bench in suite.get_benchmarks()}
    metadata = metadata_of(suite)
    comparisons = json.loads(metadata.get(COMPARISONS_KEY, "[]"))
    versions = json.loads(metadata.get(PEERS_KEY, "{}"))
    rows = []
    for comparison in comparisons:
        ours = comparison["ours"]
        unit = comparison.get("unit", "s")
        mine = format_value(medians[ours], unit) if ours in medians else "not measured"
        if comparison["kind"] == "limit":
            target = f"<= {format_value(comparison['at_most'], unit)}"
            met = "not met" if ours not in medians else (
                "met" if medians[ours] <= comparison["at_most"] else "not met")
            rows.append((ours, mine, "", "", target, met, comparison["means"]))
            continue
        peer, package = comparison["peer"], comparison.get("peer_package")
        target = f">= {comparison['at_least']:g}x" if comparison.get("at_least") else ""
        if peer in medians and ours in medians:
            ratio = medians[peer] / medians[ours]
            ratio_text = format_ratio(ratio)
            met = ("met" if ratio >= comparison["at_least"] else "not met") if target else ""
            peer_text = f"`{peer}` {format_time(medians[peer])}"
        else:
            missing = versions.get(package) == "not installed"
            peer_text = f"`{peer}`: {package} not installed" if missing else f"`{peer}`: not measured"
            ratio_text, met = "", "not met (not measured)" if target else ""
        rows.append((ours, mine, peer_text, ratio_text, target, met, comparison["means"]))
    return rows


# ---------------------------------------------------------------------------
# Writing.

HEADER = """# Benchmark results

Generated by `perf/report.py` from the pyperf files of the latest run of each script; do
not edit by hand. Each figure is a pyperf median, per operation (per value, event, line or
message). A ratio is the peer's median time over ringbook's, both measured in the
same run: higher is better for ringbook. A target row says met or not met. The
machine is a shared virtual machine (its load while these ran is in the
footnote): compare ratios, not absolute times, across machines. Investigations
behind these figures: `perf/NOTES.md`.
"""


def subject_table(stem, suite):
    metadata = metadata_of(suite)
    context = json.loads(metadata.get(CONTEXT_KEY, "{}"))
    inputs = "".join(f"; {key} {value}" for key, value in context.items())
    lines = [f"## {metadata.get(SUBJECT_KEY, stem)} (`perf/{stem}.py`{inputs})", "",
             "| benchmark | ringbook | peer | ratio | target | met? |", "|---|---|---|---|---|---|"]
    for ours, mine, peer, ratio, target, met, means in rows_of(suite):
        lines.append(f"| `{ours}`: {means} | {mine} | {peer} | {ratio} | {target} | {met} |")
    return lines


HEADLINE = ["| subject | what | ringbook | ratio | target | met? |", "|---|---|---|---|---|---|"]


def headline_rows(stem, suite):
    """The README's rows of one subject: one per target."""
    subject = metadata_of(suite).get(SUBJECT_KEY, stem)
    return [f"| {subject} | {means} | {mine} | {ratio} | {target} | {met} |"
            for ours, mine, peer, ratio, target, met, means in rows_of(suite) if target]


def footnote(results, before="", kept=()):
    """The machines, versions and runs of ``results``; ``before``, the footnote of the report
    whose tables of ``kept`` subjects stay, adds their machine, its versions and its runs' span."""
    first = metadata_of(results[0][1])
    versions = {"Python": first.get("python_version", "?").split(" ")[0]}
    for name in ("numba", "llvmlite", "numpy"):
        versions[name] = first.get(f"{name}_version", "?")
    for _, suite in results:
        versions.update(json.loads(metadata_of(suite).get(PEERS_KEY, "{}")))
    dates = [f"{suite.get_benchmarks()[0].get_dates()[0]:%Y-%m-%d %H:%M}" for _, suite in results]
    loads = [load for _, suite in results for load in suite_loads(suite)]
    kept_versions = re.search(r"^Versions: (.*)\.$", before, re.MULTILINE)
    if kept_versions:
        versions = {**dict(item.rsplit(" ", 1) for item in kept_versions.group(1).split(", ")), **versions}
    runs = re.search(r"^Runs: (\S+ \S+) to (\S+ \S+) UTC(?:, load average ([\d.]+)-([\d.]+))?", before,
                     re.MULTILINE)
    if runs:
        dates += [runs.group(1), runs.group(2)]
        loads += [float(load) for load in runs.group(3, 4) if load]
    machine = (f"{first.get('cpu_model_name', '?')} ({first.get('machine', '?')}), {first.get('cpu_count', '?')} "
               f"cores, {first.get('platform', '?')}")
    earlier = machines_of(before)
    subjects = {metadata_of(suite).get(SUBJECT_KEY, stem): machine for stem, suite in results}
    subjects.update({subject: earlier.get(subject, earlier.get(None, "?")) for subject in kept})
    machines = {}
    for subject, its_machine in subjects.items():
        machines.setdefault(its_machine, []).append(subject)
    if len(machines) == 1:
        where = f"Machine: {machine}"
    else:   # tables kept from a run on another machine
        where = "Machines: " + "; ".join(f"{name} for {', '.join(names)}" for name, names in machines.items())
    return ["## Machine, versions, runs", "", f"{where}; shared with other work while these ran.",
            "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + ".",
            f"Runs: {min(dates)} to {max(dates)} UTC"
            + (f", load average {min(loads):.1f}-{max(loads):.1f}" if loads else "")
            + "; every script run by `python perf/report.py run`, with the options it sets."]


def machines_of(footnote_text):
    """``{subject: machine}`` from a footnote's machine line (``{None: machine}`` for one machine)."""
    line = re.search(r"^Machines?: (.*); shared with other work while these ran\.$", footnote_text, re.MULTILINE)
    if not line:
        return {}
    if line.group(0).startswith("Machine: "):
        return {None: line.group(1)}
    found = {}
    for entry in line.group(1).split("; "):
        machine, subjects = entry.rsplit(" for ", 1)
        found.update({subject: machine for subject in subjects.split(", ")})
    return found


def kept_tables(text, fresh):
    """``{stem: (subject, lines)}``: the tables of a report's scripts that are not in ``fresh``."""
    kept = {}
    for block in text.split("\n## ")[1:]:
        found = re.match(r"(.*) \(`perf/(\w+)\.py`", block)
        if found and found.group(2) not in fresh:
            table = block.split("\n\nNot in this run", 1)[0]
            kept[found.group(2)] = found.group(1), ("## " + table.strip()).splitlines()
    return kept


def suite_loads(suite):
    """The machine's 1-minute load averages over the suite's runs, as pyperf recorded them."""
    loads = [run.get_metadata().get("load_avg_1min") for bench in suite.get_benchmarks()
             for run in bench.get_runs()]
    return [load for load in loads if load is not None]


def write(folder, report=REPORT, readme=README):
    results = load(folder)
    if not results:
        raise SystemExit(f"no pyperf files in {folder}")
    before = report.read_text() if report.is_file() else ""
    fresh = dict(results)
    kept = kept_tables(before, fresh)
    order = [stem for stem in SCRIPTS if stem in fresh or stem in kept] + [stem for stem in fresh
                                                                            if stem not in SCRIPTS]
    lines = HEADER.splitlines()
    for stem in order:
        lines += [""] + (subject_table(stem, fresh[stem]) if stem in fresh else kept[stem][1])
    missing = [stem for stem in SCRIPTS if stem not in order]
    if missing:
        lines += ["", "Not in this run (no results file): "
                  + ", ".join(f"`perf/{stem}.py`" for stem in missing) + "."]
    lines += [""] + footnote(results, before.split("## Machine, versions, runs", 1)[-1] if kept else "",
                             [subject for subject, _ in kept.values()])
    report.write_text("\n".join(lines) + "\n")
    if readme and readme.is_file():
        text = readme.read_text()
        if BEGIN in text and END in text:
            start, rest = text.split(BEGIN, 1)
            table, after = rest.split(END, 1)
            rows = list(HEADLINE)
            for stem in order:   # a kept table keeps its rows too
                rows += headline_rows(stem, fresh[stem]) if stem in fresh else [
                    row for row in table.strip().splitlines() if row.startswith(f"| {kept[stem][0]} |")]
            readme.write_text(start + BEGIN + "\n" + "\n".join(rows) + "\n" + END + after)
    print(f"wrote {report} ({len(lines)} lines)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "write"))
    parser.add_argument("scripts", nargs="*", help="script stems to run (default: all)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder of pyperf files")
    parser.add_argument("--lock", help="run each script under `flock LOCK`")
    args = parser.parse_args(argv)
    if args.action == "run":
        run(args.scripts or list(SCRIPTS), args.results, args.lock)
    else:
        write(args.results)


if __name__ == "__main__":
    main()
