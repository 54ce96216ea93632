"""Light paths leave torch unloaded: ``import ufm``, ``pfc --help``, reading a run's CSV and the
report modules; numpy metrics work in a process where torch was not loaded at import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize(
    "statement",
    [
        "import ufm",
        "import ufm.metrics",
        "from ufm.metrics import effective_depth",
        "import resnet_pfc",
        "from resnet_pfc.runs import read_csv",
        "import pfc.html_report, resnet_pfc.report, resnet_pfc.figures",
    ],
)
def test_light_imports_leave_torch_out(statement):
    assert _run(f"{statement}\nimport sys\nprint('torch' in sys.modules)") == "False"


def test_import_ufm_leaves_pot_numba_and_cvxpy_out():
    code = (
        "import sys, ufm\nprint([m for m in ('ot', 'numba', 'cvxpy', 'torch') if m in sys.modules])"
    )
    assert _run(code) == "[]"


def test_pfc_help_leaves_torch_out():
    code = (
        "import sys, contextlib, io\nfrom pfc.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "print('torch' in sys.modules)"
    )
    assert _run(code) == "False"


def test_read_csv_and_effective_depth_leave_torch_out(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text(
        "epoch,split,layer,layer_index,position,pfc1\n1,train,input,0,0,0.5\n1,train,block1,1,1,0.25\n"
    )
    code = (
        "import sys\nfrom resnet_pfc.runs import read_csv\nfrom ufm.metrics import effective_depth\n"
        f"rows = read_csv({str(p)!r})\nassert len(rows) == 2, rows\n"
        "assert effective_depth([0.5, 0.1, 0.001], epsilon=0.01) == 2\n"
        "print('torch' in sys.modules)"
    )
    assert _run(code) == "False"


def test_numpy_metrics_without_torch_preloaded():
    # torch is not loaded by the import; the first computation loads what it needs and agrees
    # with the same call in this process
    import numpy as np

    import ufm

    rng = np.random.default_rng(0)
    H, y = rng.standard_normal((60, 7)), np.arange(60) % 3
    code = (
        "import sys, numpy as np, ufm\nassert 'torch' not in sys.modules\n"
        "rng = np.random.default_rng(0)\nH, y = rng.standard_normal((60, 7)), np.arange(60) % 3\n"
        "print(repr(ufm.collapse_metrics(H, y)['pfc1']))"
    )
    assert float(_run(code)) == ufm.collapse_metrics(H, y)["pfc1"]


def test_package_attributes_stay_functions():
    code = (
        "import ufm, ufm.solve, ufm.threads, ufm.objective, ufm.certify\n"
        "import resnet_pfc, resnet_pfc.train, resnet_pfc.measure\n"
        "print(all(callable(f) and not hasattr(f, '__path__') and type(f).__name__ == 'function'"
        " for f in (ufm.solve, ufm.threads, ufm.objective, ufm.certify, resnet_pfc.train,"
        " resnet_pfc.measure)))"
    )
    assert _run(code) == "True"


def test_public_names_resolve():
    import resnet_pfc
    import ufm

    for pkg in (ufm, resnet_pfc):
        for name in pkg.__all__:
            assert getattr(pkg, name) is not None, name
        assert set(pkg.__all__) <= set(dir(pkg))
    with pytest.raises(AttributeError):
        ufm.not_a_name  # noqa: B018
