"""The depth study's report (``report.md``): tables of every cell, the slope fits with their
verdicts, the flags; from the config and the rows that :mod:`resnet_pfc.depth` wrote."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .depth_config import OPTIMUM_RTOL, PARTS, SHOWN_SLOPES, DepthConfig, is_number

__all__ = [
    "verdict",
]


def verdict(fit: dict[str, float]) -> str:
    if not math.isfinite(fit["slope"]):
        return "not fitted"
    if fit["hi"] < 0:
        return "falls"
    if fit["lo"] > 0:
        return "rises"
    return "no clear trend"


def _g(v: Any, spec: str = ".3g") -> str:
    return format(v, spec) if is_number(v) and v == v else "n/a"


def _groups(
    cfg: DepthConfig, cells: list[dict[str, Any]]
) -> Iterator[tuple[str, str, int, list[dict[str, Any]]]]:
    """The cells of each (family, initialisation, depth) that has any, in report order."""
    for f in cfg.families:
        for init in ("independent", "warm"):
            for L in cfg.depths:
                rs = [
                    c for c in cells if c["family"] == f and c["depth"] == L and c["init"] == init
                ]
                if rs:
                    yield f, init, L, rs


def _med(rows: list[dict[str, Any]], k: str) -> float:
    v = [r[k] for r in rows if is_number(r.get(k)) and r[k] == r[k]]
    return float(np.median(v)) if v else math.nan


def report_text(
    cfg: DepthConfig,
    cells: list[dict[str, Any]],
    slopes: list[dict[str, Any]],
    missing: list[tuple[Any, ...]],
) -> str:
    flagged = [r for r in cells if r.get("not_at_optimum")]
    lines = [
        "# Collapse against depth",
        "",
        f"Preset `{cfg.preset}`: data set `{cfg.train.dataset}`, loss `{cfg.train.loss}`, families "
        f"{', '.join(cfg.families)}, depths {list(cfg.depths)}, seeds {list(cfg.seeds)}, width "
        f"{cfg.train.width}, weight decay {cfg.train.weight_decay:g} on every parameter, SGD momentum "
        f"{cfg.train.momentum:g}, batch {cfg.train.batch_size}, lr {cfg.train.lr:g} (ResNets) / "
        f"{cfg.transformer_lr:g} (transformers), constant for at least {cfg.epochs} / "
        f"{cfg.transformer_epochs} epochs, then until stationary (relative change of the epoch "
        f"objective and of ||theta||^2 between the means of the last {cfg.window} epochs and "
        f"the {cfg.window} before < {cfg.tol:g}) or a cap of {cfg.max_epochs} / "
        f"{cfg.transformer_max_epochs} epochs, then {cfg.anneal_epochs} epochs at lr/10. "
        f"Initialisation: `{cfg.init}`.",
        "",
        "Everything below is measured in these SGD runs, at this budget: the theorem under test "
        "(Sukenik, Lampert, Mondelli 2025) is about *global optima* of the regularised "
        "objective, and a trained network is an upper bound on its optimum, not the optimum.",
        "",
        "## Are the cells at their optimum?",
        "",
        "Full objective F = mean loss + wd/2 ||theta||^2 over *every* parameter (classifier, "
        "blocks, LayerNorm gains and shifts, embedding), evaluated after training on the whole "
        "training split (`resnet_pfc.depth.recompute_objective` redoes it from the saved "
        "weights). Zeroing a block makes it an identity at zero penalty, so the optimum of F "
        "cannot rise with depth: a cell whose F exceeds that of a shallower cell of the same "
        f"family, seed and chain (by more than a relative {OPTIMUM_RTOL:g}) is **not at its "
        "optimum**.",
        "",
    ]
    if flagged:
        lines.append(
            f"**{len(flagged)} of {len(cells)} cells are not at their optimum**: "
            + ", ".join(
                f"{r['family']} L={r['depth']} s={r['seed']}"
                + (" (warm)" if r["init"] == "warm" else "")
                for r in flagged
            )
            + ". Their NC values describe where SGD stopped, not the optimum the theorem is "
            "about, and the slope verdicts of their families say so."
        )
    else:
        lines.append(
            f"No cell is flagged: in every chain F does not rise with depth ({len(cells)} cells)."
        )
    lines += [
        "",
        "Median over seeds. F parts: wd/2 ||.||^2 of the classifier, the blocks, the LayerNorm "
        "gains and shifts, the embedding. e-folds: sum over steps of lr wd/(1-momentum). "
        "stationary: seeds whose criterion held before the cap.",
        "",
        "| family | init | depth | F | loss | classifier | blocks | LayerNorm | embedding | "
        "epochs | e-folds | stationary | flagged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f, init, L, rs in _groups(cfg, cells):
        met = sum(bool(r.get("criterion_met")) for r in rs)
        nfl = sum(bool(r.get("not_at_optimum")) for r in rs)
        lines.append(
            f"| {f} | {init} | {L} | {_g(_med(rs, 'full_objective'), '.4g')} | "
            f"{_g(_med(rs, 'full_loss'), '.3g')} | "
            + " | ".join(_g(_med(rs, f"full_penalty_{p}"), ".3g") for p in PARTS)
            + f" | {_g(_med(rs, 'epochs'), '.0f')} | {_g(_med(rs, 'efolds'), '.2g')} | "
            f"{met}/{len(rs)} | {nfl}/{len(rs)} |"
        )
    warm_rows = [r for r in cells if r["init"] == "warm"]
    if warm_rows:
        lines += [
            "",
            "### Warm start against independent training",
            "",
            "Warm: depth L starts from the trained next-shallower cell (same family and seed) "
            "plus identity blocks with every parameter 0 (the same full objective at the "
            "start), then trains with the same schedule. Median over seeds; "
            "F_indep - F_warm > 0 means independent training stopped higher.",
            "",
            "| family | depth | F independent | F warm | F_indep - F_warm | NC1 independent | "
            "NC1 warm | CDNV independent | CDNV warm |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for f in cfg.families:
            for L in cfg.depths:
                ri = [
                    r
                    for r in cells
                    if r["family"] == f and r["depth"] == L and r["init"] == "independent"
                ]
                rw = [r for r in warm_rows if r["family"] == f and r["depth"] == L]
                if not ri or not rw:
                    continue
                di = _med(ri, "full_objective") - _med(rw, "full_objective")
                lines.append(
                    f"| {f} | {L} | {_g(_med(ri, 'full_objective'), '.4g')} | "
                    f"{_g(_med(rw, 'full_objective'), '.4g')} | {_g(di, '.3g')} | "
                    f"{_g(_med(ri, 'nc1'))} | {_g(_med(rw, 'nc1'))} | "
                    f"{_g(_med(ri, 'cdnv'))} | {_g(_med(rw, 'cdnv'))} |"
                )
        lines += [
            "",
            "Zero is a stationary point of an inserted ResNet block's parameters (ReLU'(0) = 0; "
            "a zero first layer passes no gradient to the second), so in the ResNets the "
            "inserted blocks stay identities and the warm chain is the shallowest network "
            "trained longer; in the pre-LN transformers the inserted blocks' biases move.",
        ]
    if "transformer_post" in cfg.families:
        lines += [
            "",
            "`transformer_post` (post-LN blocks) has no identity block (a zero block maps every "
            "token to 0, a unit-gain LayerNorm does not fix the stream), so its objective need "
            "not be monotone at the optimum; its flag compares it with shallower cells all the "
            "same, and it has no warm chain.",
        ]
    lines += [
        "",
        "## Collapse against depth, as measured",
        "",
        "The paper's statement (Sukenik, Lampert, Mondelli 2025, abstract): global optima of "
        "deep regularised ResNets and transformers with LayerNorm are approximately collapsed, "
        "the approximation getting tighter as depth grows. It states no slope; none is "
        "compared here. Below: the least-squares slope of log(metric) against log(depth) over "
        "the cells of each family and chain, its 95% bootstrap interval (seeds resampled "
        "within each depth) and the verdict: *falls* (interval below 0), *rises* (above 0) or "
        "*no clear trend*, with the depths whose cells are not at their optimum.",
        "",
        "| family | init | metric | slope | 95% interval | cells | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    shown = (*SHOWN_SLOPES, "full_objective")
    for s in slopes:
        if s["metric"] not in shown:
            continue
        lines.append(
            f"| {s['family']} | {s['init']} | {s['metric']} | {_g(s['slope'])} | "
            f"[{_g(s['lo'])}, {_g(s['hi'])}] | {s['n']} | {s['verdict']} |"
        )
    lines += [
        "",
        "Other slopes (PFC2, PFC3, the LN-UFM objective gap) are in `depth_slopes.csv`.",
        "",
        "Last-layer NC1, CDNV (Galanti et al. 2022; does not invert Sigma_B) and the "
        "class-mean Gram eigenvalue ratio (largest / smallest nonzero eigenvalue; 1 at a "
        "simplex ETF), median over seeds, and the law of data separation's fitted per-layer "
        "ratio of NC1 over the residual stream (He and Su 2023; R^2 of the log-linear fit):",
        "",
        "| family | init | depth | train acc | NC1 | CDNV | eig ratio | NC3 | sep. ratio | "
        "sep. R^2 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f, init, L, rs in _groups(cfg, cells):
        lines.append(
            f"| {f} | {init} | {L} | {_g(_med(rs, 'train_accuracy'), '.4f')} | "
            f"{_g(_med(rs, 'nc1'))} | {_g(_med(rs, 'cdnv'))} | "
            f"{_g(_med(rs, 'gram_eig_ratio'))} | {_g(_med(rs, 'nc3'))} | "
            f"{_g(_med(rs, 'separation_rate'))} | {_g(_med(rs, 'separation_r2'))} |"
        )
    lines += [
        "",
        "## The last layer against the LN-UFM optimum",
        "",
        "Relative gap (F_net - F*)/|F*| of the network's last-layer (H, W, b) in the LN-UFM "
        f"objective (loss `{cfg.train.loss}`, lam_w = lam_b = {cfg.train.weight_decay:g}; this counts the "
        "classifier's penalty only, so it cannot reveal the other parts' penalty: see the full "
        "objective above), median over seeds.",
        "",
        "| family | init | depth | gap | NC1 net | NC1 LN-UFM | NC3 net | sphere dev |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f, init, L, rs in _groups(cfg, cells):
        lines.append(
            f"| {f} | {init} | {L} | {_g(_med(rs, 'objective_gap_rel'))} | "
            f"{_g(_med(rs, 'nc1'))} | {_g(_med(rs, 'lnufm_nc1'))} | "
            f"{_g(_med(rs, 'nc3'))} | {_g(_med(rs, 'sphere_dev'))} |"
        )
    opt_file = Path(cfg.out) / "lnufm_optimum.json"
    if opt_file.is_file():
        opt = json.loads(opt_file.read_text())
        lines += [
            "",
            f"F* = {opt['objective']:.6g}: `ufm.solve(y, d={opt['key']['d']}, "
            f"features='layernorm', loss='{cfg.train.loss}', lam_w={cfg.train.weight_decay:g}, "
            f"lam_b={cfg.train.weight_decay:g})` on the training labels (status {opt['status']}); "
            f"the balanced closed form `ufm.layernorm_etf_optimum` gives "
            f"{_g(opt.get('etf_objective'), '.6g')} (certified optimal: "
            f"{opt.get('etf_certified')}; exact for balanced classes, here class sizes "
            f"{min(opt['key']['counts'])}..{max(opt['key']['counts'])}). F_net puts the "
            "network's last-layer features through `ufm.layernorm_normalize` first.",
        ]
    if not any(is_number(r.get("lnufm_objective")) for r in cells):
        lines += ["", "(No LN-UFM comparison: it needs width >= number of classes.)"]
    lines += ["", "## Cells", ""]
    lines.append(f"{len(cells)} of {len(cells) + len(missing)} cells finished.")
    if missing:
        lines.append(
            "Missing (family, depth, seed[, init]): "
            + ", ".join("(" + ", ".join(map(str, m)) + ")" for m in missing)
            + ". Rerun the same command to finish them."
        )
    lines.append("")
    return "\n".join(lines)
