r"""The study (``pfc demo``): stage order, resume protocol, ``config.json``/``results.json``.

:func:`run_study` runs the stages of :data:`pfc.config.STAGES` in order (each in
:mod:`pfc.stages`: ``train``, ``deep``, ``ot``, ``sec4b``, ``network``, ``proofs``). Each stage writes its own
folder under the study directory ``out`` and its ``stage.json`` last (atomically), so that an
interrupted study keeps every finished stage and ``resume=True`` skips them (a resumed study
must have the same options, except those of :data:`RESUME_FREE`). Then ``report.html`` (one
self-contained file, :mod:`pfc.html_report`), ``config.json`` (every option and library
versions) and ``results.json`` (the headline numbers, :func:`headline`; no timings, so two runs
with the same seed give the same file; timings go to ``timings.json``).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scipy.linalg  # noqa: F401  - load the BLAS libraries before limiting their threads
import torch
from threadpoolctl import threadpool_limits

from resnet_pfc.analysis import collapse_check
from ufm.errors import CheckpointError, InputError
from ufm.io import jsonable, read_json, run_lock, versions, write_json
from ufm.options import with_options
from ufm.registry import CORE

from .config import STAGES, StudyConfig, config_doc, resolve_study_config
from .html_report import write_html
from .stages import deep, network, ot, proofs, sec4b, train

__all__ = ["run_study", "headline", "STAGE_RUNS", "RESUME_FREE"]

#: The function of each stage, ``run(cfg, out, say) -> dict`` (its ``stage.json``).
STAGE_RUNS: dict[str, Callable[[StudyConfig, Path, Callable[[str], None]], dict[str, Any]]] = {
    "train": train.run,
    "deep": deep.run,
    "ot": ot.run,
    "sec4b": sec4b.run,
    "network": network.run,
    "proofs": proofs.run,
}

#: Options that may change between a study and its resumption.
RESUME_FREE = frozenset({"resume", "force", "progress", "threads", "out"})

_REMEDY = "delete it, or pass --force to start the study afresh"

_METRICS = CORE

#: Libraries whose versions go to config.json.
_VERSIONS = ("numpy", "scipy", "torch", "cvxpy")


class _Status:
    """Short status lines (to stderr, so that stdout carries only the results)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"[pfc demo {time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr)


def _prepare_out(cfg: StudyConfig, out: Path) -> None:
    prev = read_json(out / "config.json", remedy=_REMEDY)
    has_stages = any((out / s).exists() for s in STAGES)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; choose a folder for the study")
    if cfg.force:
        for s in STAGES:
            if (out / s).is_dir():
                shutil.rmtree(out / s)
        for f in ("results.json", "timings.json", "report.html", "config.json"):
            if (out / f).is_file():
                (out / f).unlink()
        return
    if (prev is not None or has_stages) and not cfg.resume:
        raise CheckpointError(
            f"--out {str(out)!r} already holds a study; pass --resume to keep its finished "
            "stages, --force to start afresh (deletes its stage folders), or choose another --out"
        )
    if cfg.resume and prev is not None:
        old = prev.get("study", {})
        now = config_doc(cfg)
        gone = sorted(set(old) - set(now))
        if gone:  # written by a version with other options: they cannot be compared
            raise CheckpointError(
                f"cannot resume the study in {str(out)!r}: its config.json has options this "
                f"version does not know ({', '.join(gone)}); it was written by another version "
                "of pfc. Pass --force to start afresh, or choose another --out"
            )
        diff = [k for k in sorted(now) if k not in RESUME_FREE and k in old and old[k] != now[k]]
        if diff:
            detail = ", ".join(f"{k}: {old[k]!r} -> {now[k]!r}" for k in diff)
            raise CheckpointError(
                f"cannot resume the study in {str(out)!r}: options differ ({detail}); resume "
                "with the original options, or pass --force to start afresh"
            )


def run_study(config: StudyConfig | None = None, **overrides: Any) -> dict[str, Any]:
    r"""Run the whole study (see the module docstring) and return the ``results.json`` dict.

    The stages are those of :mod:`pfc.stages`; the network comparison uses the MUFM
    with the scale convention and the matched ``lam`` of :mod:`pfc.stages.network`.

    Parameters
    ----------
    config : StudyConfig, optional
        Options; keyword ``overrides`` replace fields (a mapping for ``fc`` or ``deep`` replaces
        some of that network's training options).

    Returns
    -------
    dict
        The headline numbers (also in ``out/results.json``), with ``"report"`` the path of
        ``report.html``.

    Raises
    ------
    InputError
        Bad options.
    CheckpointError
        ``out`` already holds a study and neither ``resume`` nor ``force`` is set, or a resumed
        study was started with other options.

    Notes
    -----
    The network comparison uses the MUFM of MATH.md section 5 with the network's layer-0
    features as data,

    .. math:: \min_{W,b,H} \frac1N\sum_i\Big[\tfrac12\|W h_i + b - e_{y_i}\|^2
              + \frac{\lambda}{2}\|h_i - x_i\|^2\Big] + \frac{\lambda_W}{2}\|W\|_F^2
              + \frac{\lambda_b}{2}\|b\|^2 .
    """
    cfg = resolve_study_config(with_options(config or StudyConfig(), overrides))
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; choose a folder for the study")
    # one writer per study folder: a second demo into it is refused while this one runs
    with run_lock(out, option="--out", command="pfc demo"):
        return _run_study(cfg, out)


def _run_study(cfg: StudyConfig, out: Path) -> dict[str, Any]:
    """The body of :func:`run_study`, run while holding the study folder's lock."""
    _prepare_out(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    say = _Status(cfg.progress)
    write_json(
        out / "config.json",
        {"study": config_doc(cfg), "versions": versions(_VERSIONS), "stages": list(STAGES)},
    )

    prev_threads = torch.get_num_threads()
    timings: dict[str, float] = read_json(out / "timings.json", remedy=_REMEDY) or {}
    stage_docs: dict[str, Any] = {}
    try:
        torch.set_num_threads(cfg.threads)
        with threadpool_limits(limits=cfg.threads):
            for i, name in enumerate(STAGES, 1):
                marker = out / name / "stage.json"
                if cfg.resume and marker.is_file():
                    say(f"[{i}/{len(STAGES)}] {name}: finished earlier, kept ({marker})")
                    stage_docs[name] = read_json(marker, remedy=_REMEDY)
                    continue
                say(f"[{i}/{len(STAGES)}] {name}")
                t0 = time.perf_counter()
                doc = STAGE_RUNS[name](cfg, out, say)
                timings[name] = time.perf_counter() - t0
                write_json(marker, doc)
                write_json(out / "timings.json", timings)
                stage_docs[name] = doc
    finally:
        torch.set_num_threads(prev_threads)
    results = headline(stage_docs)
    write_json(out / "results.json", results)
    say("writing the report")
    path = write_html(out)
    timings["total_s"] = sum(v for k, v in timings.items() if k in STAGES)
    write_json(out / "timings.json", timings)
    return results | {"report": str(path)}


def _cert_summary(certs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: c[k] for k in ("problem", "bound", "gap", "exact")} for c in certs]


def _trained(doc: Any) -> bool:
    return isinstance(doc, dict) and not doc.get("skipped") and "summary" in doc


def network_entry(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``results.json`` entry of one trained network (a ``train`` or ``deep`` stage document).

    ``split`` is the split of ``last_layer``, ``strictly_decreasing`` and the goals (the
    training split, final epoch); ``test_last_layer`` is the test split's last layer.
    ``collapse_goals_met``: every value goal of the last layer
    (:data:`resnet_pfc.analysis.COLLAPSE_GOALS`) and every order goal across the layers
    (:data:`resnet_pfc.analysis.ORDER_GOALS`) holds.
    """
    net = doc.get("network") or {"name": "fc", "model": "fc"}
    col = doc.get("collapse") or collapse_check(doc["summary"])
    test = (doc.get("test") or {}).get("collapse")
    layers = doc["summary"]["layers"]
    return {
        "name": net.get("name"),
        "title": net.get("title"),
        "model": net.get("model"),
        "dataset": doc.get("dataset"),
        "blocks": net.get("blocks", len(layers) - 1),
        "width": net.get("width"),
        "split": "train",
        "final_epoch": doc["summary"].get("final_epoch"),
        "train_accuracy": doc["tpt"].get("train_accuracy_final"),
        "in_tpt": doc["tpt"].get("in_tpt"),
        "last_layer": {k: col["last_layer"].get(k) for k in _METRICS},
        "first_layer": {k: col["per_layer"][k][0] for k in _METRICS},
        "strictly_decreasing": dict(col["strictly_decreasing"]),
        "non_increasing": dict(col.get("non_increasing", {})),
        "goals": col["goals"],
        "order_goals": col.get("order_goals", {}),
        "collapse_goals_met": bool(col.get("collapse_goals_met", col["all_goals_met"])),
        "rising_during_training": [r["metric"] for r in doc.get("rising") or []],
        "test_last_layer": None
        if test is None
        else {k: test["last_layer"].get(k) for k in _METRICS},
        "test_accuracy": None if test is None else _test_accuracy(doc),
    }


def _test_accuracy(doc: dict[str, Any]) -> float | None:
    return (doc.get("test") or {}).get("accuracy")


def headline(stages: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a study from its stage documents (deterministic)."""
    res: dict[str, Any] = {}
    nets = [network_entry(stages[k]) for k in ("train", "deep") if _trained(stages.get(k))]
    ot_nets = (stages.get("ot") or {}).get("networks") or {}
    for n in nets:
        if n["name"] in ot_nets:
            n["ot"] = {k: ot_nets[n["name"]][k] for k in ("summary", "claims")}
    if nets:
        res["networks"] = nets
    tr = stages.get("train")
    if tr:
        s = tr["summary"]
        res["training"] = {
            **{k: tr["tpt"].get(k) for k in ("train_accuracy_final", "tpt_epoch", "in_tpt")},
            **{k: tr["tpt"].get(k) for k in ("train_loss_final", "loss_ratio", "loss_falling")},
        }
        res["monotone_across_depth"] = {k: v["kind"] for k, v in s["monotone"].items()}
        res["effective_depth"] = s["effective_depth"]
        res["last_layer"] = {k: s["layers"][-1].get(k) for k in _METRICS}
        res["first_layer"] = {k: s["layers"][0].get(k) for k in _METRICS}
        col = tr.get("collapse") or collapse_check(s)
        res["per_layer"] = {"layers": col["layers"], **col["per_layer"]}
        res["strictly_decreasing"] = col["strictly_decreasing"]
        res["collapse_goals"] = col["goals"]
        res["all_collapse_goals_met"] = col["all_goals_met"]
    sb = stages.get("sec4b")
    if sb:
        res["sec4b_fig4"] = sb["fig4"]
        res["sec4b_certificates"] = _cert_summary(sb["certificates"])
    nw = stages.get("network")
    if nw:
        res["network_vs_models"] = nw["comparison"]
        res["lam_matched"] = nw["lam_matched"]
        if "structural_limit" in nw:
            res["network_trained_loss"] = nw["trained_loss"]
            res["network_structural_limit"] = nw["structural_limit"]
        res["network_certificates"] = _cert_summary(nw["certificates"])
    pr = stages.get("proofs")
    if pr:
        res["theorems_ok"] = pr["ok"]
        res["theorems"] = {
            r["name"]: {k: r[k] for k in ("n_tried", "n_assumptions_met", "n_violations")}
            for r in pr["results"]
        }
    return jsonable(res)
