"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


# A block that starts another Python compiles its kernels afresh there: slow when cold.
@pytest.mark.parametrize("index", [pytest.param(index, marks=pytest.mark.slow) if "subprocess" in block
                                   else index for index, block in enumerate(BLOCKS)])
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), {})


def test_readme_has_examples():
    assert len(BLOCKS) >= 2
