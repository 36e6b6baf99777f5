"""What ``pip install .`` puts on a machine: one top-level name, ``ringbook``."""

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True)
    (path,) = out.glob("ringbook-*.whl")
    return path


@pytest.mark.slow
def test_wheel_holds_only_the_ringbook_package(wheel):
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"ringbook"}


@pytest.mark.slow
def test_fresh_venv_imports_ringbook_and_not_the_bare_names(wheel, tmp_path):
    # The venv sees this interpreter's numba and numpy, but nothing from the
    # repository: it runs from an empty folder.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--force-reinstall", "--ignore-installed", str(wheel)], check=True,
                   capture_output=True)
    probe = ("import importlib.util as u, ringbook.kernels.book, ringbook.engine.ring, ringbook;"
             "print(ringbook.kernels.book.__file__);"
             "print(u.find_spec('kernels') is None, u.find_spec('engine') is None);"
             "print(ringbook.new_book.__module__)")
    lines = subprocess.run([str(python), "-c", probe], cwd=tmp_path, check=True, capture_output=True,
                           text=True).stdout.split()
    assert lines[0].startswith(str(env_dir)), lines[0]
    assert lines[1:3] == ["True", "True"]
    assert lines[3] == "ringbook.kernels.book"


def test_every_top_level_name_resolves_to_its_module():
    """``ringbook.<name>`` is each export's own object (a renamed attribute would fail here,
    not in a user's notebook)."""
    import importlib

    import ringbook

    for name in ringbook.__all__:
        module_name, attribute = ringbook._EXPORTS[name]
        assert getattr(ringbook, name) is getattr(importlib.import_module(module_name), attribute), name
