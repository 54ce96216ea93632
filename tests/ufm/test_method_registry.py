"""The registry of solver methods (ufm.engine.registry, issue 21 point 1).

A method is declared once; the pipeline, the option checks, the error messages and the CLI
choices query the registry. Adding one is a runner and a ``register`` call: the toy method
below (plain fixed-step gradient descent on ``(W, b, H)``) is registered in a fixture, solves a
small problem through ``ufm.solve`` and ``mufm.solve``, and is removed again.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

import mufm
import ufm
from ufm.engine.methods import Raw
from ufm.engine.registry import (
    Method,
    default_method,
    get_method,
    method_names,
    positive,
    register,
    unregister,
)
from ufm.errors import InputError
from ufm.status import Status

ROOT = Path(__file__).resolve().parents[2]
Y = np.repeat(np.arange(3), 4)


def run_toy(pb, start, *, max_iter, tol, progress, step=0.05, **_):
    """Fixed-step gradient descent on (W, b, H) in balanced coordinates (no safeguard)."""
    W0, b0, H0 = start
    v = pb.pack(W0, b0, H0)
    f, g = pb.fg_joint(v)
    gn = math.sqrt(pb.ops.dot(g, g))
    hf, hg, it = [f], [gn], 0
    while it < max_iter and gn > tol:
        v = v - step * g
        f, g = pb.fg_joint(v)
        gn = math.sqrt(pb.ops.dot(g, g))
        it += 1
        hf.append(f)
        hg.append(gn)
        progress.update(1, f, gn)
    W, b, H = pb.unpack(v)
    status = Status.CONVERGED if gn <= tol else Status.MAX_ITER
    return Raw(W, b, H, status, it, hf, hg)


@pytest.fixture
def toy():
    m = register(
        Method(
            "toy-gd",
            "toy fixed-step gradient descent",
            run_toy,
            max_iter=200_000,
            options={"step": positive},  # an option of its own, shared in name with gd
            data_start=False,
        )
    )
    yield m
    unregister("toy-gd")


KW = {"lam_w": 0.03, "lam_h": 0.03}  # well conditioned: plain gradient descent converges fast


def test_a_registered_method_solves_through_both_front_ends(toy):
    assert "toy-gd" in method_names() and get_method("toy-gd") is toy
    ref = ufm.solve(Y, d=4, method="lbfgs", tol=1e-10, **KW)
    res = ufm.solve(Y, d=4, method="toy-gd", tol=1e-8, step=0.2, **KW)
    assert res.converged and res.method == "toy-gd" and res.params["method"] == "toy-gd"
    assert res.params["max_iter"] == 200_000  # the method's own default budget
    assert res.objective == pytest.approx(ref.objective, rel=1e-9)
    assert res.metrics["pfc1"] < 1e-8
    X = np.random.default_rng(0).standard_normal((12, 4)) + 2 * np.eye(3, 4)[Y]
    kw = {"lam": 1.0, "lam_w": 0.05, "loss": "ce", "bias": False}
    res = mufm.solve(X, Y, method="toy-gd", tol=1e-8, step=0.2, **kw)
    assert res.converged and res.method == "toy-gd" and res.params["init"].startswith("normal")
    assert res.objective == pytest.approx(mufm.solve(X, Y, tol=1e-10, **kw).objective, rel=1e-12)


def test_an_unregistered_method_is_refused_with_the_registry_names(toy):
    with pytest.raises(InputError, match="toy-gd"):
        ufm.solve(Y, d=4, method="nope")
    unregister("toy-gd")
    with pytest.raises(InputError, match=r"method must be one of \('suffstats'"):
        ufm.solve(Y, d=4, method="toy-gd")
    register(toy)  # the fixture removes it again


def test_method_options_and_losses_come_from_the_declaration(toy):
    res = ufm.solve(Y, d=4, method="toy-gd", max_iter=3, tol=1e-8)
    assert res.n_iter == 3 and res.status is Status.MAX_ITER
    with pytest.raises(InputError, match="step applies to method='gd' or method='toy-gd' only"):
        ufm.solve(Y, d=4, method="lbfgs", step=0.1)
    with pytest.raises(InputError, match="step"):
        ufm.solve(Y, d=4, method="toy-gd", step=-1.0)
    with pytest.raises(InputError, match=r"supports loss in \('mse',\).*'lbfgs', 'gd', 'toy-gd'"):
        ufm.solve(Y, d=4, method="suffstats", loss="ce")


def test_registry_refuses_bad_declarations():
    with pytest.raises(InputError, match="already registered"):
        register(Method("gd", "again", run_toy))
    with pytest.raises(InputError, match="already the default"):
        register(Method("toy-2", "second default", run_toy, default_for=("mse",)))
    with pytest.raises(InputError, match="does not support"):
        Method("toy-3", "x", run_toy, losses=("mse",), default_for=("ce",))
    with pytest.raises(InputError, match="loss"):
        Method("toy-4", "x", run_toy, losses=("MSE",))
    with pytest.raises(InputError, match="runner"):
        Method("toy-5", "x", "no_colon")
    with pytest.raises(InputError, match="no method named"):
        unregister("toy-6")
    assert default_method("mse").name == "suffstats" and default_method("ce").name == "lbfgs"
    budgets = {n: get_method(n).default_max_iter("mse") for n in method_names()}
    assert budgets == {"suffstats": 1_000, "lbfgs": 10_000, "lbfgs-h": 10_000, "gd": 100_000}
    assert get_method("gd").default_max_iter("ce") == 1_000_000


_COMPARE = re.compile(r"""(==|!=|\bin)\s*\(?[^)\n]*["'](suffstats|lbfgs|lbfgs-h|gd)["']""")


def test_no_method_name_is_compared_as_a_string_outside_the_registry():
    hits = []
    for pkg in ("ufm", "mufm"):
        for p in sorted((ROOT / pkg).rglob("*.py")):
            if p.relative_to(ROOT).as_posix() == "ufm/engine/registry.py":
                continue
            for i, line in enumerate(p.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if _COMPARE.search(code) and ("if " in code or "return" in code):
                    hits.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, hits
