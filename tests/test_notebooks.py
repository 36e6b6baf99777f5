"""The notebooks run from top to bottom without error and draw their figures."""

import tempfile
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(path, scratch=None):
    """Execute a notebook in its own folder with the python3 kernel; the executed notebook.

    ``scratch``: the prefix of the temporary folder the notebook makes, which must be gone
    once its kernel has stopped (a run must not leave its files behind).
    """
    def scratch_folders():
        return set(Path(tempfile.gettempdir()).glob(scratch + "*")) if scratch else set()

    before = scratch_folders()
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    assert scratch_folders() <= before, f"{path.name} left {sorted(scratch_folders() - before)}"
    return notebook


def outputs(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def printed(notebook):
    return "".join(output.get("text", "") for output in outputs(notebook) if output.output_type == "stream")


def figures(notebook):
    return sum("image/png" in output.get("data", {}) for output in outputs(notebook))


def test_saved_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), path.name


@pytest.mark.slow
def test_book_replay():
    """Replays the real LOBSTER and Binance files, or a synthetic market without them."""
    real = (SHARED_DATA / "lobster").is_dir() and (SHARED_DATA / "binance").is_dir()
    notebook = execute(NOTEBOOKS / "book_replay.ipynb", "book-replay-")  # raises CellExecutionError on any error
    text = printed(notebook)
    assert figures(notebook) == 2  # LOBSTER and Binance
    assert ("data: real" in text) == real
    assert text.count("mismatches      0") == 2 and text.count("  OK") == 2
    if real:
        assert "checked         564 bookTickers" in text and "checked         999 orderbook rows" in text


@pytest.mark.slow
def test_research_at_scale():
    """30 synthetic days (and the real files) on a local Dask cluster: snapshots, a callback, plots."""
    pytest.importorskip("distributed")
    real = (SHARED_DATA / "lobster").is_dir() and (SHARED_DATA / "binance").is_dir()
    notebook = execute(NOTEBOOKS / "research_at_scale.ipynb", "research-at-scale-")
    text = printed(notebook)
    assert figures(notebook) == 2
    assert "days: 30 synthetic, real files: " + ("3" if real else "0") in text
    assert ("33 files done, 0 failed" if real else "30 files done, 0 failed") in text
    assert "already done, 0 redone" in text
    assert "equal to the shards' own counts: True" in text


@pytest.mark.slow
def test_engine_tour():
    """Runs the engine for a few seconds, reads its counters, plots latency and throughput, replays."""
    notebook = execute(NOTEBOOKS / "engine_tour.ipynb", "engine-tour-")
    text = printed(notebook)
    assert figures(notebook) == 1  # one figure, two panels
    assert "mismatched" in text and " 0 mismatched" in text
    assert "messages seen by the callback:" in text
