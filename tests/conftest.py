import os
from pathlib import Path

import pytest

#: Real exchange data beside the project (read-only ground truth); see its README.
SHARED_DATA = Path(os.environ.get("RINGBOOK_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    """The ``../shared/data`` folder, or a skip when this machine lacks it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real exchange data not found at {SHARED_DATA}")
    return SHARED_DATA


if os.environ.get("RINGBOOK_COMPILE_REPORT"):
    pytest_plugins = ["tests.compile_report"]  # where a run spends its time compiling
