"""The notebooks run from top to bottom without error and draw their figures."""

from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(path):
    """Execute a notebook in its own folder with the python3 kernel; the executed notebook."""
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
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


def test_book_replay():
    """Replays the real LOBSTER and Binance files, or a synthetic market without them."""
    real = (SHARED_DATA / "lobster").is_dir() and (SHARED_DATA / "binance").is_dir()
    notebook = execute(NOTEBOOKS / "book_replay.ipynb")  # raises CellExecutionError on any error
    text = printed(notebook)
    assert figures(notebook) == 2  # LOBSTER and Binance
    assert ("data: real" in text) == real
    assert text.count("mismatches      0") == 2 and text.count("  OK") == 2
    if real:
        assert "checked         564 bookTickers" in text and "checked         999 orderbook rows" in text


@pytest.mark.slow
def test_engine_tour():
    """Runs the engine for a few seconds, reads its counters, plots latency and throughput, replays."""
    pytest.importorskip("ringbook.engine.journal")
    notebook = execute(NOTEBOOKS / "engine_tour.ipynb")
    text = printed(notebook)
    assert figures(notebook) == 1  # one figure, two panels
    assert "mismatched" in text and " 0 mismatched" in text
    assert "messages seen by the callback:" in text
