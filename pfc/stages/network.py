r"""Stage 3, ``network/``: the MUFM and the UFM on the trained network's own features.

*This project's extension, not the paper's* (the paper's Sec. IV-B is synthetic only): MUFM
with the trained network's own layer-0 features as data ``X`` (and its labels), swept over
``lam`` with the loss the network was trained with (and solved with the other loss at the
matched ``lam``: CE and MSE side by side); the network's last measured layer ``H_L`` compared
with the MUFM solution ``H*`` and with the UFM solution: collapse metrics side by side, the
alignment :math:`\langle H_L, H^*\rangle_F / (\|H_L\|_F \|H^*\|_F)` and the relative distance
:math:`\|H_L - H^*\|_F / \|H_L\|_F`; the MUFM layers of Theorem 3 against the network's layers;
certificates on a class-balanced subsample; the structural limit of the comparison
(:func:`structural_limit`: with ``lam_h = 0``, ``H* - X`` lies in the row space of the MUFM's
own ``W``, measured). Files: ``sweep.csv``, ``comparison.csv``, ``layers.csv``,
``certificates.json``, ``sweep.png``, ``layers.png``.

*Scale convention* (this project's choice). MUFM with the MSE loss is not scale invariant (its
targets are one-hot vectors), and trained features have an arbitrary scale. The network's
features are divided by one number, the root mean square row norm of the layer-0 features,
:math:`s = \|X\|_F/\sqrt N`, before solving; ``H*`` is mapped back by ``s``. Every comparison
reported (metrics, alignment, relative distance) is invariant to this common factor.

*Matched lam*. The ``lam`` of the sweep whose MUFM solution has the PFC1 closest (in log scale)
to the network's last layer; the comparison and the certificate use it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from tqdm.auto import tqdm

import mufm
import ufm
from ufm.errors import ConvergenceWarning
from ufm.io import read_json, save_png, write_csv, write_json
from ufm.metrics import alignment, collapse_metrics
from ufm.registry import CORE, LOG_SCALE, label

from ..certificates import balanced_idx, certify_mufm_subsample, certify_ufm_result
from ..config import StudyConfig
from ..features import load_run_features

__all__ = ["run", "structural_limit"]

_METRICS = CORE


def _bar(it: Any, enabled: bool, desc: str) -> Any:
    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True, disable=None) if enabled else it


def _metrics(H: np.ndarray, y: np.ndarray) -> dict[str, float]:
    m = collapse_metrics(H, y)
    return {k: float(m[k]) for k in (*_METRICS, "ncc_accuracy")}


def _trained_loss(run: Path) -> str:
    """The loss the network of the training stage was trained with (``"ce"`` or ``"mse"``)."""
    doc = read_json(run / "config.json", remedy="delete it, or pass --force") or {}
    raw = str(doc.get("config", {}).get("loss", "ce")).lower().replace("-", "_")
    return "mse" if raw in ("mse", "l2", "square", "squared") else "ce"


def structural_limit(X: np.ndarray, H: np.ndarray, W: np.ndarray, HL: np.ndarray) -> dict[str, Any]:
    r"""Where an MUFM solution (``lam_h = 0``) can move the data, measured.

    The first-order condition in ``h_i`` of the MUFM with ``lam_h = 0`` is
    :math:`\lambda (h_i - x_i) = -W^\top g_i` with :math:`g_i` the loss gradient in the logits
    (cross entropy or MSE alike), so the displacement ``H* - X`` lies in the row space of the
    solution's own ``W`` (dimension at most ``K``). The network's last layer ``H_L`` is under no
    such constraint, so no MUFM solution can come closer to it than the part of ``H_L - X``
    outside a ``K``-dimensional subspace.

    Parameters
    ----------
    X, H, HL : array of shape (N, d)
        Data, MUFM solution, network last layer (same scale).
    W : array of shape (K, d)
        The MUFM solution's classifier.

    Returns
    -------
    dict
        ``mufm_off_rowspace``: :math:`\|(I - P_W)(H^* - X)\| / \|H^* - X\|` (0 up to the
        solver tolerance: the constraint, verified); ``network_in_rowspace``:
        :math:`\|P_W (H_L - X)\| / \|H_L - X\|`; ``network_best_k_share``: the same share
        for the best ``K``-dimensional subspace (top ``K`` singular values of ``H_L - X``);
        ``distance_floor_own_w`` and ``distance_floor_any_k``: the resulting lower bounds on
        :math:`\|H_L - H\| / \|H_L\|` for any ``H - X`` in the row space of this ``W``, or
        in any ``K``-dimensional subspace; ``K_rank`` the numerical rank of ``W`` (singular values
        above ``1e-8`` of the largest).
    """
    K = W.shape[0]
    # orthonormal basis of rowspace(W); singular values below 1e-8 of the largest are solver
    # noise (the optimum's W has rank K - 1 with a bias or the CE loss: its columns sum to 0)
    U, sw, _ = np.linalg.svd(W.T, full_matrices=False)
    Q = U[:, sw > 1e-8 * max(float(sw.max(initial=0.0)), 1e-300)]
    disp = H - X
    net = HL - X
    nd, nn, nl = (float(np.linalg.norm(v)) for v in (disp, net, HL))
    off = disp - (disp @ Q) @ Q.T
    net_off = net - (net @ Q) @ Q.T
    sv = np.linalg.svd(net, compute_uv=False)
    top = float(np.sqrt(np.sum(sv[:K] ** 2)))
    tail = float(np.sqrt(np.sum(sv[K:] ** 2)))
    return {
        "K_rank": int(Q.shape[1]),
        "mufm_off_rowspace": float(np.linalg.norm(off)) / nd if nd > 0 else 0.0,
        "network_in_rowspace": float(np.linalg.norm(net - net_off)) / nn if nn > 0 else 0.0,
        "network_best_k_share": top / nn if nn > 0 else 0.0,
        "distance_floor_own_w": float(np.linalg.norm(net_off)) / nl,
        "distance_floor_any_k": tail / nl,
    }


def run(cfg: StudyConfig, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Solve and compare on the network's features into ``out/network``; return the stage
    document (see the module docstring)."""
    dn = out / "network"
    say("collecting the trained network's features of every measured layer (training set)")
    F, y, K = load_run_features(out / "train")
    trained = _trained_loss(out / "train")
    losses = (trained, "mse" if trained == "ce" else "ce")
    names = list(F)
    X_all, HL_all = F[names[0]], F[names[-1]]
    if cfg.features_per_class is not None:
        idx = balanced_idx(y, cfg.features_per_class, K)
    else:
        idx = np.arange(y.size)
    X, HL, yy = X_all[idx], HL_all[idx], y[idx]
    N, d = X.shape
    scale = float(np.sqrt(np.mean(np.sum(X * X, axis=1))))
    Xs, HLs = X / scale, HL / scale
    common = {"tol": cfg.tol, "seed": cfg.seed}

    def dist(H: np.ndarray) -> float:
        return float(np.linalg.norm(HLs - H) / np.linalg.norm(HLs))

    net_m = _metrics(HL, yy)
    data_m = _metrics(X, yy)
    target = max(net_m["pfc1"], 1e-300)
    sweep_rows: list[dict[str, Any]] = []
    matched: dict[str, dict[str, Any]] = {}
    for loss in losses:
        # the loss the network was trained with gets the whole sweep; the other loss (shown for
        # comparison) is solved at the first one's matched lam only (a CE sweep at full size
        # costs minutes)
        lams = cfg.lams if loss == trained else (matched[trained]["lam"],)
        say(
            f"MUFM ({loss.upper()} loss) on the network's layer-0 features (N={N}, d={d}): "
            f"{len(lams)} lam"
        )
        rows, sols = [], {}
        for lam in _bar(lams, cfg.progress, f"MUFM {loss} lam sweep"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                r = mufm.solve(Xs, yy, lam=lam, loss=loss, **common)
            H = np.asarray(r.H)
            sols[lam] = (H, np.asarray(r.W))
            m = _metrics(H, yy)
            rows.append(
                {
                    "loss": loss,
                    "lam": lam,
                    **{k: m[k] for k in _METRICS},
                    "alignment_data": alignment(H, Xs),
                    "alignment_network": alignment(HLs, H),
                    "rel_distance_network": dist(H),
                    "objective": r.objective,
                    "status": r.status,
                }
            )
        best = min(rows, key=lambda r: abs(math.log(max(r["pfc1"], 1e-300) / target)))
        best_align = max(rows, key=lambda r: r["alignment_network"])
        H_b, W_b = sols[best["lam"]]
        matched[loss] = {
            "lam": best["lam"],
            "H": H_b,
            "lam_best_alignment": best_align["lam"],
            "best_alignment": best_align["alignment_network"],
            "structural_limit": structural_limit(Xs, H_b, W_b, HLs),
        }
        sweep_rows += rows
    lam_star = matched[trained]["lam"]

    say("UFM with the same labels and dimension")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ures = ufm.solve(yy, d=d, seed=cfg.seed, tol=cfg.tol)
    Hu = np.asarray(ures.H)
    ufm_m = _metrics(Hu, yy)
    H_star = matched[trained]["H"]

    def row(name: str, H: np.ndarray | None, m: dict[str, float]) -> dict[str, Any]:
        out_r: dict[str, Any] = {"model": name, **{k: m[k] for k in _METRICS}}
        if H is None:
            return out_r | {"alignment_network": 1.0, "rel_distance_network": 0.0}
        return out_r | {"alignment_network": alignment(HLs, H), "rel_distance_network": dist(H)}

    comparison = [
        row("network layer 0 (data X)", Xs, data_m),
        row(f"network last layer ({names[-1]})", None, net_m),
    ]
    for loss in losses:
        tag = "trained with; matched" if loss == trained else "other loss; same"
        Hm = matched[loss]["H"]
        comparison.append(
            row(
                f"MUFM H* ({loss.upper()}, {tag} lam={matched[loss]['lam']:g})",
                Hm,
                _metrics(Hm, yy),
            )
        )
    comparison.append(row("UFM", Hu, ufm_m))
    # the UFM optimum is determined up to rotation: its alignment with the network is only
    # meaningful after the best rotation (orthogonal Procrustes on the features)
    U, _, Vt = np.linalg.svd(Hu.T @ HLs, full_matrices=False)
    Hu_rot = Hu @ (U @ Vt)
    comparison[-1]["alignment_network_rotated"] = alignment(HLs, Hu_rot)

    # Theorem 3: MUFM layers on the straight line against the network's layers
    L = len(names) - 1
    layers_rows = []
    mufm_layers = [Xs + (l / L) * (H_star - Xs) for l in range(L + 1)]
    for l, name in enumerate(names):
        mn = _metrics(F[name][idx], yy)
        mm = _metrics(mufm_layers[l], yy)
        layers_rows.append(
            {
                "layer": name,
                "position": l / L,
                **{f"network_{k}": mn[k] for k in _METRICS},
                **{f"mufm_{k}": mm[k] for k in _METRICS},
            }
        )

    write_csv(
        dn / "sweep.csv",
        list(sweep_rows[0]),
        [list(r.values()) for r in sweep_rows],
    )
    cols = ["model", *_METRICS, "alignment_network", "rel_distance_network"]
    write_csv(dn / "comparison.csv", cols, [[r.get(c) for c in cols] for r in comparison])
    write_csv(dn / "layers.csv", list(layers_rows[0]), [list(r.values()) for r in layers_rows])
    _plot_network(
        dn, [r for r in sweep_rows if r["loss"] == trained], net_m, data_m, layers_rows, lam_star
    )

    m_c = cfg.certify_per_class
    say(
        f"certifying MUFM ({trained.upper()}) on the network's features: {m_c} per class "
        f"(N={m_c * K}, SDP)"
    )
    certs = [
        certify_mufm_subsample(
            f"network features MUFM ({trained.upper()}, lam={lam_star:g}), {m_c}/class",
            Xs,
            yy,
            m_c,
            K,
            lam_star,
            common | {"seed": cfg.seed, "loss": trained},
        ),
        certify_ufm_result(f"network labels UFM (N={N}, K x K reduction)", ures),
    ]
    write_json(dn / "certificates.json", certs)
    return {
        "stage": "network",
        "extension": (
            "this project's extension, not the paper's: the paper's Sec. IV-B solves the MUFM "
            "on synthetic Gaussian data only; here its data X are the trained network's "
            "layer-0 features and its solution is compared with the network's last layer"
        ),
        "trained_loss": trained,
        "losses": list(losses),
        "N": N,
        "d": d,
        "K": K,
        "scale": scale,
        "layers": names,
        "lam_matched": lam_star,
        "lam_best_alignment": matched[trained]["lam_best_alignment"],
        "best_alignment": matched[trained]["best_alignment"],
        "by_loss": {loss: {k: v for k, v in m.items() if k != "H"} for loss, m in matched.items()},
        "structural_limit": matched[trained]["structural_limit"],
        "sweep": sweep_rows,
        "comparison": comparison,
        "layer_comparison": layers_rows,
        "certificates": certs,
    }


def _plot_network(
    dn: Path,
    sweep: list[dict[str, Any]],
    net_m: dict[str, float],
    data_m: dict[str, float],
    layers_rows: list[dict[str, Any]],
    lam_star: float,
) -> None:
    floor = 1e-16
    lams = [r["lam"] for r in sweep]
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    # log scale for every metric but PFC3 (an error rate that can be exactly 0)
    panels = [(k, label(k), k != "pfc3") for k in _METRICS] + [
        ("alignment_network", "alignment of H* with the network's last layer", False),
        ("rel_distance_network", "||H_L - H*|| / ||H_L||", False),
    ]
    for i, (key, title, logy) in enumerate(panels):
        ax = fig.add_subplot(2, 3, i + 1)
        vals = [max(r[key], floor) if logy else r[key] for r in sweep]
        ax.plot(lams, vals, "o-", label="MUFM H*(lam)")
        if key in net_m:
            ax.axhline(
                max(net_m[key], floor) if logy else net_m[key],
                color="tab:red",
                label="network last layer",
            )
            ax.axhline(
                max(data_m[key], floor) if logy else data_m[key],
                color="gray",
                ls="--",
                label="network layer 0",
            )
        ax.axvline(lam_star, color="k", ls=":", lw=1)
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("lam")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(
        f"MUFM on the trained network's layer-0 features (dotted: matched lam={lam_star:g})"
    )
    save_png(fig, dn / "sweep.png")

    fig = Figure(figsize=(12, 3.4), layout="constrained")
    pos = [r["position"] for r in layers_rows]
    for i, key in enumerate(_METRICS):
        ax = fig.add_subplot(1, 4, i + 1)
        logy = key in LOG_SCALE
        f = (lambda v: max(v, floor)) if logy else (lambda v: v)
        ax.plot(pos, [f(r[f"network_{key}"]) for r in layers_rows], "o-", label="network layers")
        ax.plot(pos, [f(r[f"mufm_{key}"]) for r in layers_rows], "s--", label="MUFM layers (Thm 3)")
        if logy:
            ax.set_yscale("log")
        ax.set_title(key.upper(), fontsize=9)
        ax.set_xlabel("relative position l/L")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"Network layers against the MUFM straight line at lam={lam_star:g}")
    save_png(fig, dn / "layers.png")
