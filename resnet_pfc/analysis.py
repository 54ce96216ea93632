"""Analysis of a training run: terminal phase, per-layer summary, monotonicity, collapse goals.

Everything here reads the rows of a run's ``metrics.csv`` (:func:`resnet_pfc.runs.read_csv`)
or the summary built from them; nothing trains or measures. Used by ``resnet_pfc``'s report,
``pfc demo`` and the reproduction script.
"""

from __future__ import annotations

import math
from typing import Any

from ufm.errors import CheckpointError, InputError
from ufm.metrics import effective_depth
from ufm.registry import CORE, LAYER, METRICS, names
from ufm.validate import check_scalar

__all__ = [
    "tpt_check",
    "layer_summary",
    "monotonicity",
    "collapse_check",
    "rising_metrics",
    "COLLAPSE_GOALS",
    "ORDER_GOALS",
]

#: Default goals for the last layer at the final epoch (training split): a collapsed layer
#: (issue 18). The report states, with the measured values, whether each is met.
COLLAPSE_GOALS: dict[str, float] = {"pfc1": 0.1, "pfc2": 0.1, "nc1": 0.05}

#: Default order goals across the layers at the final epoch: ``"strict"`` (every block lowers
#: the metric) or ``"non-increasing"`` (ties allowed: PFC3 is a count of misclassified samples
#: and reaches 0 before the last block).
ORDER_GOALS: dict[str, str] = {
    "pfc1": "strict",
    "pfc2": "strict",
    "pfc3": "non-increasing",
    "nc1": "strict",
}


def monotonicity(values: list[float]) -> tuple[str, int | None]:
    """Classify a sequence over layers 0..L.

    Returns
    -------
    (str, int or None)
        ``("strict", None)``, ``("weak", None)`` (non-increasing with ties) or
        ``("no", l)`` with ``l`` the first index where ``values[l] > values[l-1]``;
        ``("undefined", None)`` if a value is missing or NaN.
    """
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return "undefined", None
    for i in range(1, len(values)):
        if values[i] > values[i - 1]:
            return "no", i
    if all(values[i] < values[i - 1] for i in range(1, len(values))):
        return "strict", None
    return "weak", None


def tpt_check(rows: list[dict[str, Any]], split: str = "train") -> dict[str, Any]:
    """Did a run reach the terminal phase of training (TPT)?

    TPT (Papyan et al.): the training error has reached zero while the training loss is still
    being pushed down. Checked from ``metrics.csv`` rows at the measured epochs:

    * ``train_accuracy_final``: accuracy of the trained network on the whole training set in
      eval mode at the last epoch (the ``accuracy`` column); ``reached_100`` when it is 1.
    * ``tpt_epoch``: the first measured epoch from which that accuracy stays 1.
    * ``loss_falling``: the mean training loss over the epoch (``train_loss``) at the last
      epoch is below its value at ``tpt_epoch`` (the loss kept falling inside the TPT);
      ``loss_ratio`` is their ratio. ``loss_falling_last`` additionally compares the last two
      measured epochs (with weight decay the loss settles on a plateau at the end).

    Returns
    -------
    dict
    """
    first = [r for r in rows if r["split"] == split and r["layer_index"] == 0]
    first.sort(key=lambda r: r["epoch"])
    if not first:
        raise CheckpointError(
            f"metrics.csv has no rows of split {split!r}; the run has not measured that split "
            "(yet): train (or resume) it, or restore the file"
        )
    accs = [(r["epoch"], r.get("accuracy")) for r in first]
    final_acc = accs[-1][1]
    tpt_epoch = None
    for i in range(len(accs)):
        if all(a is not None and a >= 1.0 for _, a in accs[i:]):
            tpt_epoch = accs[i][0]
            break
    losses = {r["epoch"]: r.get("train_loss") for r in first if r.get("train_loss") is not None}
    out: dict[str, Any] = {
        "final_epoch": accs[-1][0],
        "train_accuracy_final": final_acc,
        "reached_100": bool(final_acc is not None and final_acc >= 1.0),
        "tpt_epoch": tpt_epoch,
        "train_loss_final": losses.get(accs[-1][0]),
        "train_loss_at_tpt": None if tpt_epoch is None else losses.get(tpt_epoch),
        "loss_falling": None,
        "loss_ratio": None,
        "loss_falling_last": None,
    }
    lf, lt = out["train_loss_final"], out["train_loss_at_tpt"]
    if lf is not None and lt is not None and tpt_epoch != accs[-1][0]:
        out["loss_falling"] = bool(lf < lt)
        out["loss_ratio"] = lf / lt if lt > 0 else None
    eps = sorted(losses)
    if len(eps) >= 2:
        out["loss_falling_last"] = bool(losses[eps[-1]] < losses[eps[-2]])
        out["train_loss_previous"] = losses[eps[-2]]
        out["previous_epoch"] = eps[-2]
    out["in_tpt"] = bool(out["reached_100"] and out["loss_falling"])
    return out


def layer_summary(rows: list[dict[str, Any]], split: str = "train") -> dict[str, Any]:
    """Per-layer metrics at the final epoch of ``split``, their monotonicity across the layers
    (:func:`monotonicity`) and the effective depth (PFC3 <= 0.01).

    Parameters
    ----------
    rows : list of dict
        Rows of a run's ``metrics.csv`` (:func:`resnet_pfc.runs.read_csv`).
    split : {"train", "test"}
    """
    srows = [r for r in rows if r["split"] == split]
    final = max(r["epoch"] for r in srows)
    fr = sorted((r for r in srows if r["epoch"] == final), key=lambda r: r["layer_index"])
    table = [
        {
            k: r.get(k)
            for k in ("layer", "position", *(m for m in METRICS if METRICS[m].direction != "none"))
        }
        for r in fr
    ]
    mono = {}
    for k in CORE:
        kind, at = monotonicity([r.get(k) for r in fr])
        mono[k] = {"kind": kind, "rises_at": None if at is None else fr[at]["layer"]}
    errs = [r.get("pfc3") for r in fr]
    depth = None
    if all(e is not None for e in errs):
        depth = effective_depth([min(max(e, 0.0), 1.0) for e in errs], epsilon=0.01)
    return {
        "final_epoch": final,
        "layers": table,
        "monotone": mono,
        "effective_depth": depth,
        "effective_depth_layer": None if depth is None else fr[depth]["layer"],
        "epsilon": 0.01,
        "blocks": len(fr) - 1,
    }


def collapse_check(
    summary: dict[str, Any],
    targets: dict[str, float] | None = None,
    orders: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Per-layer PFC1-3 and NC1 at the final epoch, strict decrease, and the collapse goals.

    Parameters
    ----------
    summary : dict
        The per-layer summary of the training stage (``layers`` ordered from the stage input to
        the last block).

    Returns
    -------
    dict
        ``per_layer`` (metric -> list over layers, with ``layers`` the layer names),
        ``strictly_decreasing`` (metric -> bool: every block lowers it), ``last_layer``
        (metric -> value), ``goals`` (metric -> {"goal", "value", "met"} for
        ``targets``, default :data:`COLLAPSE_GOALS`), ``all_goals_met`` (every value goal),
        ``order_goals`` (metric -> {"goal": "strict" | "non-increasing", "met"} for
        ``orders``, default :data:`ORDER_GOALS`), ``non_increasing`` (metric -> bool) and
        ``collapse_goals_met`` (every value goal and every order goal).
    """
    layers = summary["layers"]
    per_layer = {k: [r.get(k) for r in layers] for k in CORE}
    strict, weak = {}, {}
    for k, vals in per_layer.items():
        ok = all(v is not None and math.isfinite(v) for v in vals)
        strict[k] = bool(ok and all(b < a for a, b in zip(vals, vals[1:], strict=False)))
        weak[k] = bool(ok and all(b <= a for a, b in zip(vals, vals[1:], strict=False)))
    last = {k: vals[-1] for k, vals in per_layer.items()}
    goals = {}
    for k, g in (COLLAPSE_GOALS if targets is None else targets).items():
        v = last.get(k)
        goals[k] = {"goal": g, "value": v, "met": bool(v is not None and v <= g)}
    order_goals = {}
    for k, kind in (ORDER_GOALS if orders is None else orders).items():
        if kind not in ("strict", "non-increasing"):
            raise InputError(
                f"order goal of {k} must be 'strict' or 'non-increasing', got {kind!r}"
            )
        met = strict.get(k, False) if kind == "strict" else weak.get(k, False)
        order_goals[k] = {"goal": kind, "met": bool(met)}
    all_met = all(g["met"] for g in goals.values())
    return {
        "layers": [r.get("layer") for r in layers],
        "per_layer": per_layer,
        "strictly_decreasing": strict,
        "non_increasing": weak,
        "last_layer": last,
        "goals": goals,
        "all_goals_met": all_met,
        "order_goals": order_goals,
        "collapse_goals_met": bool(all_met and all(g["met"] for g in order_goals.values())),
    }


def rising_metrics(
    rows: list[dict[str, Any]],
    split: str = "train",
    metrics: tuple[str, ...] = LAYER,
    rel_tol: float = 0.05,
    abs_tol: float = 1e-3,
    from_epoch: int = 1,
) -> list[dict[str, Any]]:
    """Metrics that rise during training: the final value is above the layer's best value.

    For every measured layer and metric, the minimum over the measured epochs from
    ``from_epoch`` on (default 1: the initialisation, epoch 0, is not part of training) is
    compared with
    the value at the final epoch; the metric counts as risen in that layer when
    ``final > best * (1 + rel_tol) + abs_tol`` (collapse metrics fall as training goes on,
    so a final value well above an earlier one means training moved away from collapse).

    Raises
    ------
    InputError
        An unknown metric name or a negative or non-finite tolerance.

    Returns
    -------
    list of dict
        One entry per metric that rose in at least one layer: ``metric``, ``layers`` (names of
        the layers where it rose), ``n_layers`` (measured layers), and for the last layer
        ``best``, ``best_epoch`` and ``final`` (or ``None`` where it did not rise there).
    """
    rel_tol = check_scalar(rel_tol, "rel_tol")
    abs_tol = check_scalar(abs_tol, "abs_tol")
    names(tuple(metrics))  # unknown metric names are refused, with the known ones
    srows = [r for r in rows if r["split"] == split]
    if not srows:
        return []
    final = max(r["epoch"] for r in srows)
    by_layer: dict[int, list[dict[str, Any]]] = {}
    for r in srows:
        by_layer.setdefault(r["layer_index"], []).append(r)
    out = []
    last_idx = max(by_layer)
    for k in metrics:
        rose, last = [], None
        for idx in sorted(by_layer):
            pts = [
                (r["epoch"], r.get(k))
                for r in by_layer[idx]
                if r["epoch"] >= from_epoch
                and isinstance(r.get(k), int | float)
                and math.isfinite(r[k])
            ]
            fin = [v for e, v in pts if e == final]
            if len(pts) < 2 or not fin:
                continue
            best_epoch, best = min(pts, key=lambda p: p[1])
            if fin[0] > best * (1 + rel_tol) + abs_tol:
                rose.append(by_layer[idx][0]["layer"])
                if idx == last_idx:
                    last = {"best": best, "best_epoch": best_epoch, "final": fin[0]}
        if rose:
            out.append(
                {
                    "metric": k,
                    "layers": rose,
                    "n_layers": len(by_layer),
                    "last_layer": last,
                }
            )
    return out
