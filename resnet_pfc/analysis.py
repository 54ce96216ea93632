"""Analysis of a training run: terminal phase, per-layer summary, monotonicity, collapse goals.

Everything here reads the rows of a run's ``metrics.csv`` (:func:`resnet_pfc.runs.read_csv`)
or the summary built from them; nothing trains or measures. Used by ``resnet_pfc``'s report,
``pfc demo`` and the reproduction script.
"""

from __future__ import annotations

import math
from typing import Any

from ufm.errors import CheckpointError
from ufm.metrics import effective_depth
from ufm.registry import CORE

__all__ = ["tpt_check", "layer_summary", "monotonicity", "collapse_check", "COLLAPSE_GOALS"]

#: Default goals for the last layer at the final epoch (training split): a clearly collapsed
#: layer. The report states, with the measured values, whether each is met.
COLLAPSE_GOALS: dict[str, float] = {"pfc1": 0.1, "pfc2": 0.3, "nc1": 0.1}


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
        raise CheckpointError(f"metrics.csv has no rows of split {split!r}")
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
            for k in ("layer", "position", "pfc1", "pfc2", "pfc3", "ncc_accuracy", "nc1")
            + ("nc2_equinorm", "nc2_equiangular", "nc3", "nc4")
        }
        for r in fr
    ]
    mono = {}
    for k in ("pfc1", "pfc2", "pfc3", "nc1"):
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
    summary: dict[str, Any], targets: dict[str, float] | None = None
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
        ``targets``, default :data:`COLLAPSE_GOALS`) and ``all_goals_met``.
    """
    layers = summary["layers"]
    per_layer = {k: [r.get(k) for r in layers] for k in CORE}
    strict = {}
    for k, vals in per_layer.items():
        ok = all(v is not None and math.isfinite(v) for v in vals)
        strict[k] = bool(ok and all(b < a for a, b in zip(vals, vals[1:], strict=False)))
    last = {k: vals[-1] for k, vals in per_layer.items()}
    goals = {}
    for k, g in (COLLAPSE_GOALS if targets is None else targets).items():
        v = last.get(k)
        goals[k] = {"goal": g, "value": v, "met": bool(v is not None and v <= g)}
    return {
        "layers": [r.get("layer") for r in layers],
        "per_layer": per_layer,
        "strictly_decreasing": strict,
        "last_layer": last,
        "goals": goals,
        "all_goals_met": all(g["met"] for g in goals.values()),
    }
