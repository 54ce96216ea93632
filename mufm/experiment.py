"""The paper's numerical experiment on MUFM versus UFM (Sec. IV-B, Figs. 4 and 5).

Data: ``K`` class centres drawn uniformly from the unit sphere of ``R^d``, and ``n`` samples per
class ``x = c_k + noise * g`` with standard Gaussian ``g`` (MATH.md section 8). Fig. 4 compares
the collapse metrics of the data, of the MUFM solution (transport coefficient ``lam``) and of
the UFM solution (no data); Fig. 5 sweeps ``lam`` over several decades and plots PFC1, PFC2,
PFC3 and the alignment of the MUFM features with the data.

The paper's constants (learning rate, epochs, penalties, sizes) were lost from its text; the
defaults here are this project's choice (documented in :func:`run_experiment`) and the paper's
plain gradient descent is available as ``method="gd"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ufm.errors import InputError
from ufm.io import save_png, write_csv
from ufm.metrics import alignment, collapse_metrics
from ufm.registry import CORE
from ufm.solve import solve as ufm_solve
from ufm.validate import check_int, check_scalar, check_seed, describe

from .solve import solve as mufm_solve

__all__ = ["make_data", "run_experiment", "ExperimentResult", "FIG4_METRICS"]

#: The metrics of the Sec. IV-B figures (Figs. 4 and 5): the core registry group.
FIG4_METRICS = CORE


def make_data(
    K: int, n: int, d: int, *, noise: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes around centres uniform on the unit sphere (PFC paper Sec. IV-B).

    .. math::

        c_k = g_k / \\|g_k\\|, \\quad g_k \\sim \\mathcal N(0, I_d); \\qquad
        x_{k,j} = c_k + \\sigma\\, \\varepsilon_{k,j}, \\quad
        \\varepsilon_{k,j} \\sim \\mathcal N(0, I_d),

    with ``sigma = noise``. Normalised Gaussians are uniform on the sphere.

    Parameters
    ----------
    K : int
        Number of classes, ``>= 2``.
    n : int
        Samples per class, ``>= 1``.
    d : int
        Dimension, ``>= 1``.
    noise : float, default 0.5
        Standard deviation per coordinate around the centre.
    seed : int, default 0
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    X : numpy.ndarray of shape (K * n, d)
        Samples, class by class.
    y : numpy.ndarray of shape (K * n,)
        Labels ``repeat(arange(K), n)``.

    Raises
    ------
    InputError
        ``K < 2``, ``n < 1``, ``d < 1``, negative or non-finite ``noise``, bad ``seed``.
    """
    K = check_int(K, "K", low=2)
    n = check_int(n, "n", low=1)
    d = check_int(d, "d", low=1)
    noise = check_scalar(noise, "noise", low=0.0)
    seed = check_seed(seed)
    if K * n * d > 2**30:
        raise InputError(
            f"make_data(K={K}, n={n}, d={d}) would build {K * n * d:.3g} float64 entries "
            f"(about {K * n * d * 8 / 2**30:.3g} GiB), above the limit of 2**30 (8 GiB); "
            "use a smaller K, n or d"
        )
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((K, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    with np.errstate(over="ignore"):
        X = centres[:, None, :] + noise * rng.standard_normal((K, n, d))
    if not np.isfinite(X).all():
        # noise near float64's limit overflowed to inf (noise=1e308 returned -inf data)
        raise InputError(
            f"noise={noise:g} overflows float64 in the samples; use noise <= 1e300 "
            "(the classes are then indistinguishable long before that)"
        )
    return X.reshape(K * n, d), np.repeat(np.arange(K), n)


@dataclass(frozen=True, eq=False)
class ExperimentResult:
    """Tables and files of :func:`run_experiment`.

    Attributes
    ----------
    fig4 : dict of str to dict of str to float
        ``{"data": {...}, "mufm": {...}, "ufm": {...}}``, each with ``pfc1, pfc2, pfc3, nc1``
        (and ``ncc_accuracy``).
    sweep : dict of str to numpy.ndarray
        Fig. 5: ``lam`` and, per ``lam``, ``pfc1, pfc2, pfc3, nc1, alignment, objective``
        and ``converged`` (as 0/1).
    paths : dict of str to pathlib.Path
        ``fig4_png, fig4_csv, fig5_png, fig5_csv``.
    params : dict
        Every setting used.
    """

    fig4: dict[str, dict[str, float]]
    sweep: dict[str, np.ndarray]
    paths: dict[str, Path]
    params: dict[str, Any] = field(default_factory=dict)


def _metrics(H: np.ndarray, y: np.ndarray) -> dict[str, float]:
    m = collapse_metrics(H, y)
    return {k: float(m[k]) for k in (*FIG4_METRICS, "ncc_accuracy")}


def run_experiment(
    out_dir: str | os.PathLike[str],
    *,
    K: int = 4,
    n: int = 50,
    d: int = 16,
    noise: float = 0.5,
    lam: float = 1.0,
    lams: Sequence[float] | np.ndarray | None = None,
    lam_w: float = 5e-3,
    lam_h_ufm: float = 5e-3,
    lam_b: float = 5e-4,
    loss: str = "mse",
    method: str = "lbfgs",
    seed: int = 0,
    max_iter: int | None = None,
    tol: float | None = None,
) -> ExperimentResult:
    """Reproduce Figs. 4 and 5 of the PFC paper (Sec. IV-B): MUFM between the data and the ETF.

    Solves the MUFM (MATH.md section 5, ``lam_h = 0`` as in the paper)

    .. math::

        \\min_{W,b,H} \\frac1N \\sum_i \\Big[\\tfrac12\\|W h_i + b - e_{y_i}\\|^2
            + \\frac{\\lambda}{2}\\|h_i - x_i\\|^2\\Big] + \\frac{\\lambda_W}{2}\\|W\\|_F^2
            + \\frac{\\lambda_b}{2}\\|b\\|^2

    on :func:`make_data` data, and the UFM (``lam = 0``, feature penalty ``lam_h_ufm``) with the
    same labels. Theorem 4 predicts that for large ``lam`` the MUFM solution stays close to the
    data (alignment -> 1) yet is more collapsed than it, and small ``lam`` moves it towards the
    simplex ETF of the UFM.

    Writes ``fig4_metrics.csv``/``.png`` (bar chart, log scale, of PFC1, PFC2, PFC3, NC1 for
    data, MUFM and UFM) and ``fig5_sweep.csv``/``.png`` (PFC1, PFC2, PFC3 and alignment against
    ``lam``, log-scaled axes; the data's values dashed), each atomically.

    Parameters
    ----------
    out_dir : path
        Output folder (created if missing).
    K, n, d : int, default 4, 50, 16
        Classes, samples per class, dimension (this project's choice; the paper's sizes were
        lost from its text).
    noise : float, default 0.5
        Per-coordinate standard deviation of the data around the class centres.
    lam : float, default 1.0
        Transport coefficient of the Fig. 4 MUFM solution.
    lams : sequence of float, optional
        Fig. 5 sweep; default ``numpy.logspace(-3, 2, 11)`` (five decades). At least two
        positive values.
    lam_w, lam_b : float, default 5e-3, 5e-4
        Weight and bias penalties (MUFM and UFM).
    lam_h_ufm : float, default 5e-3
        Feature penalty of the UFM (the MUFM uses ``lam_h = 0``).
    loss : {"mse", "ce"}, default "mse"
        The paper uses MSE.
    method : {"lbfgs", "gd"}, default "lbfgs"
        Solver; ``"gd"`` is the paper's plain gradient descent (slow).
    seed : int, default 0
        Seeds the data and the solvers' initialisation.
    max_iter, tol : optional
        Passed to the solvers.

    Returns
    -------
    ExperimentResult
        Tables (``fig4``, ``sweep``) and written ``paths``.

    Raises
    ------
    InputError
        Bad sizes, constants, ``lams`` with fewer than two values or non-positive ones, or an
        ``out_dir`` that is an existing file.

    References
    ----------
    Wang, Gai, Zhang, "Progressive Feedforward Collapse of ResNet Training", Sec. IV-B.
    """
    lams_arr = np.logspace(-3, 2, 11) if lams is None else np.asarray(lams, dtype=np.float64)
    if lams_arr.ndim != 1 or lams_arr.size < 2:
        raise InputError(f"lams must be a 1-d sequence of at least 2 values, got {describe(lams)}")
    if not np.all(np.isfinite(lams_arr)) or np.any(lams_arr <= 0):
        raise InputError(f"every value of lams must be finite and > 0, got {lams_arr.tolist()}")
    lam = check_scalar(lam, "lam", low=0.0, low_inclusive=False)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"out_dir {str(out)!r} exists and is not a directory; pick a folder")
    X, y = make_data(K, n, d, noise=noise, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    common = {"lam_w": lam_w, "lam_b": lam_b, "loss": loss, "method": method, "seed": seed}
    common |= {"max_iter": max_iter, "tol": tol}

    res_mufm = mufm_solve(X, y, lam=lam, **common)
    res_ufm = ufm_solve(y, d=d, lam_h=lam_h_ufm, **common)
    fig4 = {
        "data": _metrics(X, y),
        "mufm": _metrics(np.asarray(res_mufm.H), y),
        "ufm": _metrics(np.asarray(res_ufm.H), y),
    }

    cols: dict[str, list[float]] = {k: [] for k in (*FIG4_METRICS, "alignment", "objective")}
    cols["converged"] = []
    for lam_i in lams_arr:
        r = mufm_solve(X, y, lam=float(lam_i), **common)
        H = np.asarray(r.H)
        m = _metrics(H, y)
        for k in FIG4_METRICS:
            cols[k].append(m[k])
        cols["alignment"].append(float(alignment(H, X)))
        cols["objective"].append(float(r.objective))
        cols["converged"].append(float(r.converged))
    sweep = {"lam": lams_arr.copy()} | {k: np.asarray(v) for k, v in cols.items()}

    paths = {
        "fig4_csv": out / "fig4_metrics.csv",
        "fig4_png": out / "fig4_metrics.png",
        "fig5_csv": out / "fig5_sweep.csv",
        "fig5_png": out / "fig5_sweep.png",
    }
    write_csv(
        paths["fig4_csv"],
        ["model", *FIG4_METRICS, "ncc_accuracy"],
        [[name, *(row[k] for k in (*FIG4_METRICS, "ncc_accuracy"))] for name, row in fig4.items()],
    )
    header = ["lam", *FIG4_METRICS, "alignment", "objective", "converged"]
    write_csv(
        paths["fig5_csv"],
        header,
        [
            [float(sweep[k][i]) if k != "converged" else int(sweep[k][i]) for k in header]
            for i in range(lams_arr.size)
        ],
    )
    _plot(fig4, sweep, lam, paths)
    params = {"K": K, "n": n, "d": d, "noise": noise, "lam": lam, "lam_h_ufm": lam_h_ufm}
    params |= {k: v for k, v in common.items()}
    return ExperimentResult(fig4=fig4, sweep=sweep, paths=paths, params=params)


def _plot(
    fig4: dict[str, dict[str, float]],
    sweep: dict[str, np.ndarray],
    lam: float,
    paths: dict[str, Path],
) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    floor = 1e-16  # exact zeros (a perfect ETF) cannot be shown on a log axis
    fig = Figure(figsize=(8.5, 4))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.27
    xs = np.arange(len(FIG4_METRICS))
    for j, (name, label) in enumerate(
        [("data", "data"), ("mufm", f"MUFM (lam={lam:g})"), ("ufm", "UFM")]
    ):
        vals = [max(fig4[name][k], floor) for k in FIG4_METRICS]
        ax.bar(xs + (j - 1) * width, vals, width, label=label)
    ax.set_yscale("log")
    ax.set_xticks(xs, [k.upper() for k in FIG4_METRICS])
    ax.set_ylabel("metric (log scale)")
    ax.set_title("Collapse of the data, the MUFM and the UFM solutions")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    save_png(fig, paths["fig4_png"], dpi=120)

    fig = Figure(figsize=(9, 6))
    lams = sweep["lam"]
    panels = [
        ("pfc1", "PFC1", True),
        ("pfc2", "PFC2", True),
        ("pfc3", "PFC3", False),
        ("alignment", "alignment with data", False),
    ]
    for idx, (key, title, logy) in enumerate(panels):
        ax = fig.add_subplot(2, 2, idx + 1)
        vals = np.maximum(sweep[key], floor) if logy else sweep[key]
        ax.plot(lams, vals, "o-")
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        if key in fig4["data"]:
            ref = max(fig4["data"][key], floor) if logy else fig4["data"][key]
            ax.axhline(ref, ls="--", color="gray", label="data")
            ax.legend()
        ax.set_xlabel("lam (transport coefficient)")
        ax.set_title(title)
    fig.tight_layout()
    save_png(fig, paths["fig5_png"], dpi=120)
