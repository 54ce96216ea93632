"""Stage 2, ``sec4b/``: the paper's Sec. IV-B experiment and certificates of its solutions.

:func:`mufm.run_experiment` (Figs. 4 and 5: the data, the MUFM and the UFM; ``lam`` swept over
the study's grid, at least four decades) on the preset's Gaussian classes, then SDP
certificates of the MUFM solution on class-balanced subsamples and the ``K x K`` certificate of
the UFM solution (``certificates.json``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import mufm
import ufm
from mufm.experiment import make_data
from ufm.io import write_json

from ..certificates import certify_mufm_subsample, certify_ufm_result
from ..config import StudyConfig, stage_preset

__all__ = ["run"]


def run(cfg: StudyConfig, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Run the Sec. IV-B experiment into ``out/sec4b``; return the stage document."""
    pre = stage_preset(cfg)
    p = dict(pre["sec4b"])
    d4 = out / "sec4b"
    say(
        f"Sec. IV-B: MUFM vs UFM on K={p['K']} Gaussian classes (n={p['n']}, d={p['d']}), lam "
        f"swept over {math.log10(cfg.lams[-1] / cfg.lams[0]):.0f} decades ({len(cfg.lams)} values)"
    )
    exp = mufm.run_experiment(
        d4,
        K=p["K"],
        n=p["n"],
        d=p["d"],
        lam=p["lam"],
        lams=list(cfg.lams),
        seed=cfg.seed,
        tol=cfg.tol,
    )
    X, y = make_data(p["K"], p["n"], p["d"], seed=cfg.seed)
    common = {"lam_w": exp.params["lam_w"], "lam_b": exp.params["lam_b"], "tol": cfg.tol}
    certs = []
    for m in pre["sec4b_certify_per_class"]:
        say(f"certifying the Sec. IV-B MUFM solution on {m} samples per class (SDP)")
        certs.append(
            certify_mufm_subsample(f"Sec. IV-B MUFM, {m}/class", X, y, m, p["K"], p["lam"], common)
        )
    ures = ufm.solve(
        y, d=p["d"], lam_w=exp.params["lam_w"], lam_h=exp.params["lam_h_ufm"],
        lam_b=exp.params["lam_b"], seed=cfg.seed, tol=cfg.tol,
    )  # fmt: skip
    certs.append(certify_ufm_result("Sec. IV-B UFM (K x K reduction)", ures))
    write_json(d4 / "certificates.json", certs)
    return {
        "stage": "sec4b",
        "params": exp.params,
        "fig4": exp.fig4,
        "sweep": {k: np.asarray(v).tolist() for k, v in exp.sweep.items()},
        "certificates": certs,
    }
