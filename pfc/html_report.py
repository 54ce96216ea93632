"""One self-contained ``report.html`` for a study directory or a :mod:`resnet_pfc` run directory.

Everything is read back from the files on disk (the stages' ``stage.json``, CSVs and PNGs), so
the report of an interrupted or resumed study shows what exists and says what is missing. The
report depends only on the files, :mod:`pfc.config` (the stage names) and the run analysis of
:mod:`resnet_pfc.analysis`, never on the runner that wrote them (:mod:`pfc.runner` calls
:func:`write_html`, not the other way round).
Figures are embedded as ``data:image/png;base64`` URIs: the file needs no other asset.
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any

from resnet_pfc.analysis import collapse_check, layer_summary, rising_metrics, tpt_check
from resnet_pfc.runs import read_csv, read_run_config
from ufm.errors import CheckpointError
from ufm.io import atomic_write_text, read_json
from ufm.registry import CORE, METRICS, PFC, label

from .config import STAGES

__all__ = ["write_html", "render_html"]

#: Metrics of the per-layer table, in registry order (raw traces left out).
_SHOWN = tuple(name for name, spec in METRICS.items() if spec.direction != "none")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.ok{color:#176f2c;font-weight:600}.bad{color:#a4161a;font-weight:600}
.note{color:#555;font-size:.92em}code,pre{background:#f6f6f6;padding:.1em .3em}
pre{padding:.6em;overflow-x:auto;font-size:.85em}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.4g}"
    return _e(v)


def _yes(flag: Any, yes: str = "yes", no: str = "no") -> str:
    if flag is None:
        return "<span>undetermined</span>"
    return f'<span class="ok">{yes}</span>' if flag else f'<span class="bad">{no}</span>'


def _table(rows: list[dict[str, Any]], cols: list[str], heads: list[str] | None = None) -> str:
    heads = heads or cols
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{_num(r.get(c))}</td>" for c in cols) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return f'<p class="note">(figure {_e(path.name)} not found)</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _read_json(path: Path) -> Any:
    return read_json(path, remedy="delete it, or pass --force to start the study afresh")


def _training_section(
    run: Path, stage: dict[str, Any] | None, heading: str, study: bool
) -> list[str]:
    if not (run / "metrics.csv").is_file():
        return [f"<h2>{_e(heading)}</h2>", "<p>Not run yet.</p>"]
    rows = read_csv(run / "metrics.csv")
    tpt = stage["tpt"] if stage else tpt_check(rows)
    summ = stage["summary"] if stage else layer_summary(rows)
    doc = read_run_config(run / "config.json")
    cfg = doc.get("config", {})
    s = [f"<h2>{_e(heading)}</h2>"]
    if cfg:
        s.append(
            f"<p>Data set <code>{_e(cfg.get('dataset'))}</code> "
            f"({_e(doc.get('train_samples'))} training samples, K = {_e(doc.get('num_classes'))}), "
            f"{_e(doc.get('model_kind'))} with {_e(doc.get('blocks'))} blocks of width d = "
            f"{_e(doc.get('feature_dim'))}; {_e(cfg.get('epochs'))} epochs of SGD (lr "
            f"{_e(cfg.get('lr'))}, momentum {_e(cfg.get('momentum'))}, weight decay "
            f"{_e(cfg.get('weight_decay'))}, batch {_e(cfg.get('batch_size'))}, loss "
            f"{_e({'ce': 'cross entropy', 'mse': 'MSE'}.get(cfg.get('loss', 'ce')))}, lr divided by "
            f"10 after epochs {_e(cfg.get('milestones'))}), seed {_e(cfg.get('seed'))}. Every "
            f"layer measured every {_e(cfg.get('eval_every'))} epochs on the training set"
            + (" and the test set" if cfg.get("eval_test") else "")
            + ".</p>"
        )
    loss_txt = (
        f"the training loss fell from {_num(tpt.get('train_loss_at_tpt'))} at epoch "
        f"{_num(tpt.get('tpt_epoch'))} to {_num(tpt.get('train_loss_final'))} at the last epoch "
        f"(ratio {_num(tpt.get('loss_ratio'))})"
        if tpt.get("loss_ratio") is not None
        else "the loss trend inside the TPT could not be determined"
    )
    last = ""
    if tpt.get("loss_falling_last") is not None:
        last = (
            f" Between the last two measurements (epochs {_num(tpt.get('previous_epoch'))} and "
            f"{_num(tpt.get('final_epoch'))}) it "
            + ("still fell" if tpt["loss_falling_last"] else "no longer fell (a plateau)")
            + f": {_num(tpt.get('train_loss_previous'))} → {_num(tpt.get('train_loss_final'))}."
        )
    s.append(
        "<p><b>Terminal phase of training.</b> 100% training accuracy: "
        f"{_yes(tpt.get('reached_100'))} (accuracy {_num(tpt.get('train_accuracy_final'))} at "
        f"epoch {_num(tpt.get('final_epoch'))}, 100% from epoch {_num(tpt.get('tpt_epoch'))} on). "
        f"Training loss still falling after that: {_yes(tpt.get('loss_falling'))}; {loss_txt}."
        f"{last} In TPT: {_yes(tpt.get('in_tpt'))}.</p>"
    )
    recipe = (stage or {}).get("recipe")
    if recipe:
        s.append("<h3>What differs from the paper's recipe, and why</h3>")
        s.append(
            "<table><tr><th>option</th><th>paper (Sec. IV-A)</th><th>used here</th>"
            "<th>why</th></tr>"
        )
        for r in recipe:
            style = ' class="bad"' if r.get("differs") else ""
            s.append(
                f"<tr><td>{_e(r['option'])}</td><td>{_num(r['paper'])}</td>"
                f"<td{style}>{_num(r['demo'])}</td>"
                f'<td style="text-align:left">{_e(r.get("why") or "same")}</td></tr>'
            )
        s.append(
            '</table><p class="note">Generated from the values this run used. The paper\'s '
            "weight decay, batch size and lr were lost from its text; the values shown for the "
            "paper are Papyan, Han and Donoho's (2020) defaults (MATH.md). The trials behind "
            "the recipe are in <code>docs/demo_recipe.md</code>; the paper's own recipe on real "
            "MNIST images is reproduced by <code>scripts/reproduce_mnist5k.py</code> "
            "(<code>docs/results/mnist5k/</code>).</p>"
        )
    s.extend(_collapse_block(summ, (stage or {}).get("collapse"), study=study))
    test = (stage or {}).get("test")
    if test:
        s.extend(_test_block(test))
    rising = (stage or {}).get("rising")
    if rising is None:
        rising = rising_metrics(rows)
    s.append(_rising_text(rising))
    figs = run / "figures"
    s.append("<h3>Every layer during training: heat maps (log colour scale)</h3>")
    s.append(
        '<p class="note">Rows are layers (0 = stage input), columns measured epochs; grey '
        "dotted lines mark the lr drops, the green dashed line the start of the terminal "
        "phase (when there is one).</p>"
    )
    s.append(_img(figs / "heatmap_train.png", "heat maps"))
    s.append("<h3>Fig. 2: collapse metrics of every layer during training</h3>")
    s.append(_img(figs / "fig2_train.png", "Fig. 2"))
    s.append(
        "<h3>Fig. 3: final metrics against relative position, with the geodesic prediction</h3>"
    )
    s.append(_img(figs / "fig3_train.png", "Fig. 3"))
    s.append(f"<h3>Per-layer table (final epoch {_num(summ['final_epoch'])}, training set)</h3>")
    s.append(_table(summ["layers"], ["layer", "position", *_SHOWN]))
    s.append("<h3>Do PFC1-3 decrease across depth?</h3><ul>")
    words = {
        "strict": ("yes", "strictly: every block lowers it"),
        "weak": ("yes", "weakly: non-increasing, with ties"),
        "undefined": (None, "undefined (missing values)"),
    }
    for k, v in summ["monotone"].items():
        flag, text = words.get(v["kind"], ("no", f"it rises at {v['rises_at']}"))
        s.append(
            f"<li><b>{_e(k.upper())}</b>: "
            + (_yes(flag == "yes") if flag else "")
            + f" ({_e(text)})</li>"
        )
    s.append("</ul>")
    depth = summ.get("effective_depth")
    s.append(
        f"<p><b>Effective depth</b> (epsilon = {_num(summ.get('epsilon'))}: the first layer whose "
        "NCC error is at most epsilon): "
        + (
            "no layer qualifies"
            if depth is None
            else f"layer {depth} ({_e(summ.get('effective_depth_layer'))})"
        )
        + f" of {_num(summ.get('blocks'))} blocks.</p>"
    )
    return s


def _test_block(test: dict[str, Any]) -> list[str]:
    col = test["collapse"]
    names = col["layers"]
    first, last = names[0], names[-1]
    rows = []
    for k, vals in col["per_layer"].items():
        rows.append(
            f"<tr><td><b>{_e(k.upper())}</b></td><td>{_num(vals[0])}</td><td>{_num(vals[-1])}"
            f"</td><td>{_yes(col['strictly_decreasing'][k])}</td></tr>"
        )
    return [
        f"<h3>The test split beside it (accuracy {_num(test.get('accuracy'))})</h3>",
        f"<table><tr><th>metric</th><th>{_e(first)}</th><th>{_e(last)}</th>"
        "<th>decreases strictly through every block?</th></tr>",
        *rows,
        "</table>",
        '<p class="note">The goals are stated for the training split (collapse is a property '
        "of the training data's features); the test split shows how much of it carries over "
        "to unseen images.</p>",
    ]


def _rising_text(rising: list[dict[str, Any]]) -> str:
    if not rising:
        return (
            "<p><b>During training</b>, no collapse metric ended above its best value in any "
            "layer (tolerance 5% + 0.001).</p>"
        )
    items = []
    for r in rising:
        last = r.get("last_layer")
        where = (
            f"in {len(r['layers'])} of {r['n_layers']} layers"
            if len(r["layers"]) > 3
            else "in " + ", ".join(map(str, r["layers"]))
        )
        tail = (
            f"; last layer {_num(last['best'])} at epoch {_num(last['best_epoch'])} → "
            f"{_num(last['final'])} at the end"
            if last
            else ""
        )
        items.append(f"<li><b>{_e(label(r['metric']))}</b> rose {_e(where)}{tail}</li>")
    return (
        '<p class="bad">Metrics that rose during training (final value above the best value '
        "of the same layer by more than 5% + 0.001):</p><ul>" + "".join(items) + "</ul>"
    )


def _collapse_block(
    summ: dict[str, Any], col: dict[str, Any] | None, *, study: bool = False
) -> list[str]:
    """Per-layer PFC1-3 and NC1, the order goals per metric, and the collapse goals."""
    col = col or collapse_check(summ)
    names = col["layers"]
    many = len(names) > 12
    shown = list(range(len(names)))
    if many:  # a 35-layer row does not fit: first, every few, last
        step = max(1, (len(names) - 1) // 8)
        shown = sorted(set(range(0, len(names), step)) | {len(names) - 1})
    orders = col.get("order_goals") or {
        k: {"goal": "strict", "met": v} for k, v in col["strictly_decreasing"].items()
    }
    s = [
        "<h3>Collapse across depth at the final epoch (training set)</h3>",
        "<table><tr><th>metric</th>"
        + "".join(f"<th>{_e(names[i])}</th>" for i in shown)
        + "<th>order across the blocks (goal)</th><th>goal (last layer)</th>"
        "<th>goal met?</th></tr>",
    ]
    for k, vals in col["per_layer"].items():
        g = col["goals"].get(k)
        goal = "—" if g is None else f"≤ {_num(g['goal'])}"
        met = "—" if g is None else _yes(g["met"], "yes", f"no ({_num(g['value'])})")
        o = orders.get(k)
        otxt = (
            _yes(col["strictly_decreasing"][k], "strictly decreasing", "not strict")
            if o is None
            else _yes(o["met"], f"{o['goal']}: yes", f"{o['goal']}: no")
        )
        s.append(
            f"<tr><td><b>{_e(k.upper())}</b></td>"
            + "".join(f"<td>{_num(vals[i])}</td>" for i in shown)
            + f"<td>{otxt}</td><td>{goal}</td><td>{met}</td></tr>"
        )
    s.append("</table>")
    if many:
        s.append(
            f'<p class="note">{len(shown)} of the {len(names)} layers shown; the per-layer '
            "table below has all of them.</p>"
        )
    missed = [f"{k.upper()} = {_num(g['value'])} (goal ≤ {_num(g['goal'])})"
              for k, g in col["goals"].items() if not g["met"]]  # fmt: skip
    missed += [f"{k.upper()} is not {o['goal']} across the blocks"
               for k, o in orders.items() if not o["met"]]  # fmt: skip
    if missed:
        where = " within the demo's budget" if study else ""
        s.append(
            f'<p class="bad">Collapse goals not met{where}: '
            + "; ".join(missed)
            + (". The trials in docs/demo_recipe.md show what was tried." if study else ".")
            + "</p>"
        )
    else:
        s.append(
            '<p class="ok">Every collapse goal is met: the last layer is within every bound '
            "and every metric has its order across the blocks.</p>"
        )
    return s


def _cert_table(certs: list[dict[str, Any]]) -> str:
    rows = []
    for c in certs:
        r = dict(c)
        r["exact_txt"] = "yes" if c.get("exact") else "no (lower bound only)"
        rows.append(r)
    return _table(
        rows,
        ["problem", "N", "K", "d", "lam", "bound", "value", "gap", "rel_gap", "rank", "exact_txt"],
        ["problem", "N", "K", "d", "lam", "bound", "solver value", "gap", "rel. gap",
         "rank", "exact (global optimum)"],
    )  # fmt: skip


def _sec4b_section(d4: Path, stage: dict[str, Any] | None) -> list[str]:
    s = ["<h2>2. The paper's Sec. IV-B problem: MUFM against UFM</h2>"]
    if not stage:
        return s + ["<p>Not run yet.</p>"]
    p = stage["params"]
    s.append(
        f"<p>K = {_e(p['K'])} classes of n = {_e(p['n'])} Gaussian samples (noise "
        f"{_e(p['noise'])}) around centres uniform on the unit sphere of R^{_e(p['d'])}; MSE loss, "
        f"lam_W = {_e(p['lam_w'])}, lam_b = {_e(p['lam_b'])}, UFM feature penalty "
        f"{_e(p['lam_h_ufm'])}; solver {_e(p['method'])}.</p>"
    )
    s.append(
        f"<h3>Fig. 4: collapse of the data, the MUFM (lam = {_num(p['lam'])}) and the UFM</h3>"
    )
    s.append(_img(d4 / "fig4_metrics.png", "Fig. 4"))
    rows = [{"model": k, **v} for k, v in stage["fig4"].items()]
    s.append(_table(rows, ["model", *CORE, "ncc_accuracy"]))
    lams = stage["sweep"]["lam"]
    s.append(
        f"<h3>Fig. 5: the MUFM solution over lam = {_num(lams[0])} … {_num(lams[-1])} "
        f"({math.log10(lams[-1] / lams[0]):.0f} decades)</h3>"
    )
    s.append(_img(d4 / "fig5_sweep.png", "Fig. 5"))
    sw = stage["sweep"]
    rows = [{k: sw[k][i] for k in sw} for i in range(len(lams))]
    s.append(_table(rows, ["lam", *CORE, "alignment", "objective"]))
    s.append("<h3>Certificates</h3>")
    s.append(_cert_table(stage["certificates"]))
    return s


def _network_section(stage: dict[str, Any] | None, dn: Path) -> list[str]:
    s = ["<h2>3. The trained network against the MUFM and UFM predictions</h2>"]
    if not stage:
        return s + ["<p>Not run yet.</p>"]
    s.append(
        '<p class="note"><b>This comparison is this project\'s extension, not the '
        "paper's</b>: the paper's Sec. IV-B solves the MUFM on synthetic Gaussian data only "
        "(section 2 above). Here the MUFM's data are the trained network's own layer-0 "
        "features, and its solution is set beside the network's last layer.</p>"
    )
    trained = stage.get("trained_loss")
    if trained:
        s.append(
            f"<p>The network was trained with the <b>{_e(trained.upper())}</b> loss; the MUFM "
            f"is swept with that loss and, for comparison, solved with "
            f"{_e(' and '.join(x.upper() for x in stage['losses'] if x != trained))} at the "
            "same matched lam.</p>"
        )
    s.append(
        f"<p>MUFM solved with the network's own layer-0 features as data X (N = {stage['N']}, "
        f"d = {stage['d']}, K = {stage['K']}, divided by their RMS row norm "
        f"{_num(stage['scale'])}; every number below is invariant to that common scale). "
        f"<b>Matched lam</b> = {_num(stage['lam_matched'])}: the lam of the sweep whose PFC1 is "
        "closest to the network's last layer. The UFM uses the same labels and dimension. "
        "Alignment = &lt;H_L, H&gt;<sub>F</sub> / (‖H_L‖ ‖H‖); relative distance = "
        "‖H_L − H‖ / ‖H_L‖, with H_L the network's last measured layer.</p>"
    )
    cmp_rows = stage["comparison"]
    s.append(
        _table(
            cmp_rows,
            ["model", *CORE, "alignment_network", "rel_distance_network"],
            ["features", *map(label, CORE), "alignment with H_L", "rel. distance to H_L"],
        )
    )
    u = cmp_rows[-1]
    s.append(
        f'<p class="note">The UFM optimum is fixed only up to a rotation; after the best '
        f"rotation (orthogonal Procrustes) its alignment with H_L is "
        f"{_num(u.get('alignment_network_rotated'))}. The sweep's best alignment of H* with "
        f"H_L is {_num(stage['best_alignment'])} at lam = {_num(stage['lam_best_alignment'])}."
        "</p>"
    )
    lim = stage.get("structural_limit")
    if lim:
        s.append(
            "<h3>Why the MUFM cannot reach the network's last layer (a structural limit)</h3>"
            "<p>With no feature penalty (lam_h = 0, the paper's MUFM) the first-order condition "
            "in each feature is lam (h<sub>i</sub> − x<sub>i</sub>) = −W<sup>T</sup> "
            "g<sub>i</sub>, g<sub>i</sub> the loss gradient in the logits (CE and MSE alike): "
            "the displacement H* − X lies in the row space of the solution's own W, at most "
            f"K = {stage['K']} of the d = {stage['d']} dimensions. Measured at the matched lam "
            f"({_e(str(trained).upper())}): the part of H* − X outside rowspace(W) is "
            f"{_num(lim['mufm_off_rowspace'])} of ‖H* − X‖ (zero up to the solver tolerance: "
            "the constraint holds). The network's own displacement H<sub>L</sub> − X has "
            f"{_num(lim['network_in_rowspace'])} of its norm in that row space, and "
            f"{_num(lim['network_best_k_share'])} in the best {stage['K']}-dimensional "
            "subspace. So no MUFM solution with this W can come closer to H<sub>L</sub> than "
            f"a relative distance of {_num(lim['distance_floor_own_w'])}, and none with any "
            f"K-dimensional displacement closer than {_num(lim['distance_floor_any_k'])}.</p>"
        )
        other = {k: v for k, v in (stage.get("by_loss") or {}).items() if k != trained}
        for loss, rec in other.items():
            sl = rec["structural_limit"]
            s.append(
                f'<p class="note">{_e(loss.upper())} MUFM (lam {_num(rec["lam"])}): '
                f"off-rowspace part {_num(sl['mufm_off_rowspace'])}, distance floor with its W "
                f"{_num(sl['distance_floor_own_w'])}.</p>"
            )
    s.append(_img(dn / "sweep.png", "network MUFM sweep"))
    s.append("<h3>Layers: the network against the MUFM straight line (Theorem 3)</h3>")
    s.append(_img(dn / "layers.png", "network vs MUFM layers"))
    keys = ["layer", "position"] + [f"{w}_{k}" for k in PFC for w in ("network", "mufm")]
    s.append(_table(stage["layer_comparison"], keys))
    s.append("<h3>Certificates</h3>")
    s.append(_cert_table(stage["certificates"]))
    return s


def _proofs_section(stage: dict[str, Any] | None) -> list[str]:
    s = ["<h2>4. Theorem checks (proofs_check)</h2>"]
    if not stage:
        return s + ["<p>Not run yet.</p>"]
    s.append(
        f"<p>Seed {_e(stage['seed'])}, {_e(stage['instances'])} instances for Theorems 1-2 (a "
        f"tenth for the solver-based Theorems 3-4). All claims that should hold held: "
        f"{_yes(stage['ok'])}.</p>"
    )
    rows = []
    for r in stage["results"]:
        rows.append(
            {
                "theorem": r["name"],
                "tried": r["n_tried"],
                "in assumptions": r["n_assumptions_met"],
                "confirmed": r["n_confirmed"],
                "violated": r["n_violations"],
                "inconclusive": r["n_inconclusive"],
                "worst margin": r["worst_margin"],
                "outside": ", ".join(f"{k}: {v}" for k, v in r["outside"].items()) or "—",
                "counterexamples": ", ".join(
                    f"{k}: {v}" for k, v in r["details"].get("counterexample_counts", {}).items()
                )
                or "—",
            }
        )
    cols = ["theorem", "tried", "in assumptions", "confirmed", "violated", "inconclusive"]
    cols += ["worst margin", "outside", "counterexamples"]
    s.append(_table(rows, cols))
    from proofs_check import COUNTEREXAMPLE_KINDS  # loads the solvers: only for a study

    seen = {k for r in stage["results"] for k in r["details"].get("counterexample_counts", {})}
    if seen:
        s.append(
            "<p><b>Counterexample kinds</b> (only <i>violation</i> is a failed claim):</p><ul>"
            + "".join(
                f"<li><code>{_e(k)}</code>: {_e(COUNTEREXAMPLE_KINDS.get(k, 'see proofs_check'))}"
                "</li>"
                for k in sorted(seen)
            )
            + "</ul>"
        )
    s.append(
        "<ul>"
        + "".join(f"<li>{_e(r['name'])}: {_e(r['claim'])}</li>" for r in stage["results"])
        + "</ul>"
    )
    notes = str(stage.get("table", "")).split("\n\n", 1)
    if len(notes) == 2 and notes[1].strip():
        s.append(
            "<p>What the numbers say (Theorem 1: the c &lt; 0 rise is a certified consequence "
            "of PFC1'(0) = −2ac/b<sup>2</sup>; Theorem 2: the distribution of the "
            "per-direction critical transport cost, there is no single threshold; Theorem 4: "
            "the observed lam<sub>0</sub> of each instance on a dense log grid):</p>"
            f"<pre>{_e(notes[1].strip())}</pre>"
        )
    return s


def _network_summary(doc: dict[str, Any]) -> str:
    net = doc.get("network") or {"title": "the network", "architecture": ""}
    col = doc.get("collapse") or collapse_check(doc["summary"])
    t = doc["tpt"]
    ll = col["last_layer"]
    goals = ", ".join(f"{k.upper()} ≤ {_num(g['goal'])}" for k, g in col["goals"].items())
    orders = col.get("order_goals") or {}
    strict = [k.upper() for k, o in orders.items() if o["goal"] == "strict"]
    weak = [k.upper() for k, o in orders.items() if o["goal"] != "strict"]
    claim = (
        f"{', '.join(strict)} decrease strictly through every block"
        + (f", {', '.join(weak)} does not rise" if weak else "")
        + f", and the last layer is collapsed ({goals})"
    )
    measured = ", ".join(f"{k.upper()} {_num(v)}" for k, v in ll.items())
    test = (doc.get("test") or {}).get("collapse")
    test_txt = ""
    if test:
        test_txt = (
            "; test split: "
            + ", ".join(f"{k.upper()} {_num(v)}" for k, v in test["last_layer"].items())
            + f" (test accuracy {_num((doc.get('test') or {}).get('accuracy'))})"
        )
    missed = [f"{k.upper()} = {_num(g['value'])} (goal ≤ {_num(g['goal'])})"
              for k, g in col["goals"].items() if not g["met"]]  # fmt: skip
    missed += [f"{k.upper()} not {o['goal']} across the blocks"
               for k, o in orders.items() if not o["met"]]  # fmt: skip
    verdict = (
        _yes(True, "held: every goal met")
        if not missed
        else '<span class="bad">did not hold: ' + _e("; ".join(missed)) + "</span>"
    )
    regime = (
        f"training accuracy {_num(t.get('train_accuracy_final'))}, "
        + (
            "in the terminal phase from epoch " + _num(t.get("tpt_epoch"))
            if t.get("in_tpt")
            else "not in the terminal phase"
        )  # fmt: skip
        + (
            "; the training loss still fell between the last two measurements (not stationary)"
            if t.get("loss_falling_last")
            else "; the training loss no longer fell at the end (a plateau)"
            if t.get("loss_falling_last") is False
            else ""
        )
    )
    rising = [
        f"{label(r['metric'])} ({len(r['layers'])} of {r['n_layers']} layers"
        + (", the last one included)" if r.get("last_layer") else ", not the last)")
        for r in doc.get("rising") or []
    ]
    rise_txt = (
        "; metrics that rose during training (final value above the layer's best since "
        "epoch 1): " + _e("; ".join(rising))
        if rising
        else "; no metric rose during training"
    )
    cfg_epochs = (doc.get("summary") or {}).get("final_epoch")
    return (
        f"<li><b>{_e(net.get('title'))}</b> ({_e(net.get('architecture'))}, {_num(cfg_epochs)} "
        f"epochs on {_e(doc.get('dataset', '?'))}). Claim: {_e(claim)}. Measured (training "
        f"split, final epoch, last layer): {_e(measured)}{_e(test_txt)}. Verdict: {verdict}. "
        f"Regime: {_e(regime)}{rise_txt}.</li>"
    )


def _ot_claims_text(claims: list[dict[str, Any]]) -> str:
    out = []
    for c in claims:
        held = {True: "held", False: "did not hold", None: "undefined"}[c["held"]]
        rel = ">=" if c["name"] == "identity_optimal" else "<="
        out.append(
            f"{_e(c['claim'])}: {held} (measured {_num(c['measured'])}, needed {rel} "
            f"{_num(c['threshold'])})"
        )
    return "; ".join(out)


def _ot_summary(stage: dict[str, Any]) -> list[str]:
    rows = []
    for e in (stage.get("networks") or {}).values():
        s = e["summary"]
        rows.append(
            f"<li>Optimal transport between the layers of {_e(e['title'])} "
            f"({s['n_layers']} layers of one width, {s['n_samples']} training samples; Theorem 3 "
            f"predicts a constant-speed geodesic whose steps are optimal maps): "
            f"{_ot_claims_text(e['claims'])}.</li>"
        )
    return rows


def _ot_section(stage: dict[str, Any] | None, do: Path) -> list[str]:
    if not stage or not stage.get("networks"):
        return []
    tol = stage.get("tolerances", {})
    parts = [
        "<h2>1d. Optimal transport between layers (Theorem 3)</h2>",
        '<p class="note">Theorem 3: the MUFM\'s layers are the constant-speed Wasserstein-2 '
        "geodesic from the data to the collapsed features. For each trained network, the "
        "features of its layers of one width (the same "
        f"{_e(stage.get('max_samples'))} training samples in every layer, seed "
        f"{_e(stage.get('seed'))}) are transported exactly (POT's network simplex, "
        "<code>ufm.ot_profile</code>). Three claims, each of which can fail "
        "(<code>ufm.ot_claims</code>): the network's own map between consecutive layers is an "
        f"optimal plan (diagonal mass >= 1 - {_num(tol.get('mass'))}); the steps are equal "
        f"(largest relative deviation from the mean step <= {_num(tol.get('spread'))}); the "
        "steps add up to W2(first, last) (ratio <= "
        f"1 + {_num(tol.get('path'))}; a detour makes it larger).</p>",
    ]
    rows = []
    for e in stage["networks"].values():
        s = e["summary"]
        c = {x["name"]: x for x in e["claims"]}
        rows.append(
            {
                "network": e["title"],
                "layers": s["n_layers"],
                "W2^2 first-last": s["total_w2sq"],
                "min diag mass": s["min_step_diagonal_mass"],
                "step spread": s["step_spread"],
                "path ratio": s["path_ratio"],
                "geodesic dev.": s["geodesic_deviation"],
                "claims held": ", ".join(
                    f"{k}: {_num(v['held']) if v['held'] is not None else 'undefined'}"
                    for k, v in c.items()
                ),
            }
        )
    parts.append(_table(rows, list(rows[0])))
    if (do / "steps.png").is_file():
        parts.append(_img(do / "steps.png", "W2 steps of each network"))
    return parts


def _summary(stages: dict[str, Any]) -> list[str]:
    s = ["<h2>Summary</h2><ul>"]
    for key in ("train", "deep"):
        doc = stages.get(key)
        if doc and not doc.get("skipped") and "summary" in doc:
            s.append(_network_summary(doc))
    if stages.get("ot"):
        s += _ot_summary(stages["ot"])
    nw = stages.get("network")
    if nw:
        c = nw["comparison"]
        loss = str(nw.get("trained_loss", "")).upper()
        s.append(
            f"<li>The FC network's last layer vs MUFM {_e(loss)} (this project's extension; "
            f"matched lam {_num(nw['lam_matched'])}): PFC1 "
            f"{_num(c[1]['pfc1'])} vs {_num(c[2]['pfc1'])}, PFC2 {_num(c[1]['pfc2'])} vs "
            f"{_num(c[2]['pfc2'])}, alignment {_num(c[2]['alignment_network'])}, relative "
            f"distance {_num(c[2]['rel_distance_network'])}; UFM PFC1 {_num(c[-1]['pfc1'])}, "
            f"PFC2 {_num(c[-1]['pfc2'])}.</li>"
        )
    certs = (stages.get("sec4b") or {}).get("certificates", []) + (nw or {}).get("certificates", [])
    if certs:
        n_ex = sum(bool(c["exact"]) for c in certs)
        s.append(
            f"<li>Certificates: {n_ex} of {len(certs)} certified exact (global optimum, the "
            "bound attained by a feasible point); the others are lower bounds only.</li>"
        )
    pr = stages.get("proofs")
    if pr:
        s.append(
            f"<li>Theorem checks: every claim held inside its assumptions: {_yes(pr['ok'])} "
            "(counterexample kinds other than violations mark where an assumption is needed; "
            "see the legend in section 4).</li>"
        )
    s.append("</ul>")
    return s


def render_html(directory: str | os.PathLike[str]) -> str:
    """The report of a study directory (or of a resnet_pfc run directory) as one HTML string.

    Raises
    ------
    CheckpointError
        ``directory`` is neither a study directory nor a run directory.
    """
    d = Path(directory)
    is_study = (d / "results.json").is_file() or any(
        (d / s / "stage.json").is_file() for s in STAGES
    )
    is_run = (d / "metrics.csv").is_file()
    if not (is_study or is_run or (d / "train" / "metrics.csv").is_file()):
        raise CheckpointError(
            f"{str(d)!r} is neither a study directory (from `pfc demo`) nor a run directory "
            "(from `pfc train`, with metrics.csv); pass one of those"
        )
    stages = {s: _read_json(d / s / "stage.json") for s in STAGES}
    for s, doc in stages.items():
        if doc is not None and not isinstance(doc, dict):
            raise CheckpointError(
                f"{str(d / s / 'stage.json')!r} holds a JSON {type(doc).__name__}, not a stage "
                "record; it was damaged: delete it and rerun `pfc demo --resume`"
            )
    stages = {k: v for k, v in stages.items() if v}
    parts = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">']
    title = f"PFC study: {d.resolve().name}"
    parts.append(f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>")
    parts.append(f"<h1>{_e(title)}</h1>")
    cfg = read_run_config(d / "config.json")
    if "study" in cfg:
        st = cfg["study"]
        parts.append(
            f'<p class="note">Progressive feedforward collapse, measured and predicted: seed '
            f"{_e(st.get('seed'))}{' (quick smoke version)' if st.get('quick') else ''}. "
            "Files beside this report: train/ and deep/ (run directories of the two networks: "
            "metrics.csv, geodesic.csv, figures/), ot/ (profile.csv, steps.png), sec4b/ (fig4/fig5 CSV+PNG), network/ (sweep.csv, comparison.csv, "
            "layers.csv), proofs/ (proofs_check.json), results.json, config.json.</p>"
        )
    if is_study:
        parts += _summary(stages)
    if is_run:
        parts += _training_section(d, None, "Training and per-layer measurement", study=False)
    else:
        deep = stages.get("deep")
        has_deep = (d / "deep" / "metrics.csv").is_file() and not (deep or {}).get("skipped")
        parts += _training_section(
            d / "train",
            stages.get("train"),
            "1. The paper's fully connected ResNet: training and per-layer measurement",
            study=is_study,
        )
        if has_deep or (is_study and deep is None):
            parts += _training_section(
                d / "deep",
                deep,
                "1b. The deep LayerNorm ResNet: training and per-layer measurement",
                study=is_study,
            )
        if (d / "deep" / "networks.png").is_file():
            parts.append("<h2>1c. Both networks at the final epoch</h2>")
            parts.append(
                '<p class="note">Every layer of each network against its relative position '
                "l/L (the networks have different depths); solid: training split, dashed: "
                "test split. PFC3 is floored at 1e-4 to show it on the log axis.</p>"
            )
            parts.append(_img(d / "deep" / "networks.png", "both networks"))
    if is_study:
        parts += _ot_section(stages.get("ot"), d / "ot")
        parts += _sec4b_section(d / "sec4b", stages.get("sec4b"))
        parts += _network_section(stages.get("network"), d / "network")
        parts += _proofs_section(stages.get("proofs"))
    if cfg:
        vers = cfg.get("versions", {})
        opts = cfg.get("study", cfg.get("config", {}))
        parts.append("<h2>Configuration</h2>")
        parts.append(
            "<pre>" + _e("\n".join(f"{k} = {v}" for k, v in opts.items())) + "</pre>"
            '<p class="note">Versions: '
            + _e(", ".join(f"{k} {v}" for k, v in vers.items()))
            + "</p>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(directory: str | os.PathLike[str]) -> Path:
    """Write ``directory/report.html`` atomically and return its path."""
    return atomic_write_text(Path(directory) / "report.html", render_html(directory))
