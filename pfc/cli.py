"""The ``pfc`` command: one entry point with a subcommand per job (``pfc COMMAND --help``).

``demo``     the main job on real images shipped with the install (:mod:`pfc.runner`), writes report.html
``train``    train a ResNet and measure every block (:func:`resnet_pfc.train`)
``figures``  Fig. 2 and Fig. 3 of a run (or study) directory
``solve``    UFM or MUFM on the Sec. IV-B data or on features in an .npz file, optionally certified
``check``    the theorem checks (:mod:`proofs_check`)
``report``   report.html of an existing study or run directory
``metrics``  collapse metrics of features saved in an .npz file
``ot``       optimal transport between a trained run's layers against Theorem 3's geodesic
``depth``    collapse against depth: LayerNorm ResNets and a transformer (:mod:`resnet_pfc.depth`)

The options of ``train``, ``demo`` and ``depth`` are generated from the fields of their configs
(:class:`resnet_pfc.config.TrainConfig`, :class:`pfc.config.StudyConfig`,
:class:`resnet_pfc.depth.DepthConfig`, declared with :mod:`ufm.options`), so their help,
bounds and defaults are written once, beside the class's documentation.

Every subcommand's parser sits beside its handler, so what
``pfc COMMAND --help`` promises and what the command does are read in one place. The work
itself lives elsewhere (:mod:`pfc.runner`, :mod:`resnet_pfc`, :mod:`mufm`, :mod:`proofs_check`);
each handler imports it when it runs, so that ``pfc --help`` does not load torch (none of these
imports hides a cycle: nothing below :mod:`pfc.cli` imports it).

Exit status: 0 on success, 2 for bad options or data (the message names the option and the
value), 1 when ``check`` finds a violated claim, 130 when interrupted (finished stages are kept).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from proofs_check.cli import CheckOptions
from resnet_pfc.config import TRAIN_DESCRIPTION, add_train_options
from ufm.cli import OneLineParser, add_version, check_output_file, guarded, one_line
from ufm.errors import CheckpointError, PFCError
from ufm.io import write_json
from ufm.options import add_options, options_from_args
from ufm.registry import METRICS
from ufm.validate import SEED_MAX

from .config import FULL, QUICK, StudyConfig
from .npz import load_npz
from .options import MetricsOptions, OTOptions, SolveOptions

#: Metrics printed by ``solve`` and ``metrics``, in registry order (raw traces left out).
METRIC_ORDER = tuple(name for name, spec in METRICS.items() if spec.direction != "none")


# ------------------------------------------------------------------------------------------
# argument types: argparse turns their ArgumentTypeError into "argument --x: ..." + exit 2
# ------------------------------------------------------------------------------------------


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    def conv(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {s!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {s[:40]!r}")
        return v

    conv.__name__ = f"integer >= {low}" + ("" if high is None else f" and <= {high}")
    return conv


def _float_above(low: float, *, strict: bool) -> Callable[[str], float]:
    """A finite number ``> low`` (``strict``) or ``>= low``."""
    bound = f"> {low:g}" if strict else f">= {low:g}"

    def conv(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {s!r}") from None
        if not np.isfinite(v) or v < low or (strict and v == low):
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {s!r}")
        return v

    conv.__name__ = f"number {bound}"
    return conv


_float_pos = _float_above(0.0, strict=True)
_float_nonneg = _float_above(0.0, strict=False)


def _device(s: str) -> str:
    if s in ("cpu", "cuda") or (s.startswith("cuda:") and s[5:].isdigit()):
        return s
    raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N; got {s!r}")


POS = _int_at_least(1)
NONNEG = _int_at_least(0)
SEED = _int_at_least(0, SEED_MAX)
TWO = _int_at_least(2)


def _print_metrics(title: str, m: dict[str, float]) -> None:
    print(title)
    bad = []
    for k in METRIC_ORDER:
        if k in m:
            print(f"  {k:<16} {m[k]:.6g}")
            if not np.isfinite(m[k]):
                bad.append(k)
    if bad:  # never a silent NaN: say so on stderr
        print(
            f"warning: {', '.join(bad)} not finite: undefined or out of float64 range on this data",
            file=sys.stderr,
        )


# ------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from .runner import run_study

    res = run_study(StudyConfig(**options_from_args(StudyConfig, args)))
    for n in res.get("networks", []):
        ll = n["last_layer"]
        missed = [f"{k.upper()} {g['value']:.3g} > {g['goal']:g}"
                  for k, g in n["goals"].items() if not g["met"]]  # fmt: skip
        missed += [f"{k.upper()} not {o['goal']}" for k, o in n["order_goals"].items()
                   if not o["met"]]  # fmt: skip
        print(
            f"{n['title']} ({n['blocks']} blocks): training accuracy "
            f"{n['train_accuracy']:.4f}; last layer PFC1 {ll['pfc1']:.3g}, PFC2 "
            f"{ll['pfc2']:.3g}, PFC3 {ll['pfc3']:.3g}, NC1 {ll['nc1']:.3g}; collapse goals "
            + ("met" if n["collapse_goals_met"] else "not met: " + ", ".join(missed))
        )
    ok = res.get("theorems_ok")
    print(
        f"theorem checks: {'every claim held' if ok else 'a claim was violated' if ok is False else 'not run'}"
    )
    print(f"report: {Path(res['report']).resolve()}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from resnet_pfc import train
    from resnet_pfc.config import train_config_from_args

    res = train(train_config_from_args(args))
    acc = "" if res.train_accuracy is None else f", training accuracy {res.train_accuracy:.4f}"
    print(f"run directory: {res.out_dir}{acc}, {res.elapsed_s:.1f} s")
    return 0


def _run_dir(path: str) -> Path:
    p = Path(path)
    if not (p / "metrics.csv").is_file() and (p / "train" / "metrics.csv").is_file():
        return p / "train"
    return p


#: What a reader of damaged files raises when a value has the wrong kind or is missing.
_DAMAGED = (KeyError, TypeError, AttributeError, ValueError, IndexError)


def _damaged(directory: str, exc: BaseException) -> CheckpointError:
    """The error for files of ``directory`` whose content does not have the expected form
    (read, but with a missing entry or a value of another kind)."""
    return CheckpointError(
        f"the files in {directory!r} are damaged or were written by another version "
        f"({type(exc).__name__}: {one_line(exc)[:200]}); rerun the command that wrote them "
        "(pfc train, or pfc demo --resume after deleting the damaged stage folder)"
    )


def cmd_figures(args: argparse.Namespace) -> int:
    from resnet_pfc.figures import draw_figures

    try:
        paths = draw_figures(_run_dir(args.run_dir))
    except _DAMAGED as exc:
        if isinstance(exc, PFCError):
            raise
        raise _damaged(args.run_dir, exc) from exc
    for path in paths:
        print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .html_report import write_html

    try:
        path = write_html(args.run_dir)
    except _DAMAGED as exc:
        if isinstance(exc, PFCError):
            raise
        raise _damaged(args.run_dir, exc) from exc
    print(path.resolve())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from proofs_check.cli import run_checks

    return run_checks(CheckOptions(**options_from_args(CheckOptions, args)), prog="pfc check")


def cmd_solve(args: argparse.Namespace) -> int:
    import mufm
    import ufm
    from mufm.experiment import make_data

    if args.data == "sec4b":
        X, y = make_data(args.K, args.n, args.d, noise=args.noise, seed=args.seed)
        src = f"Sec. IV-B data (K={args.K}, n={args.n}, d={args.d}, noise={args.noise})"
    else:
        X, y = load_npz(args.data, args.features, args.labels)
        src = f"{args.data} ({X.shape[0]} samples, d={X.shape[1]})"
    common = {
        "lam_w": args.lam_w,
        "lam_b": args.lam_b,
        "loss": args.loss,
        "bias": args.bias,
        "method": args.method,
        "backend": args.backend,
        "device": args.device,
        "max_iter": args.max_iter,
        "tol": args.tol,
        "seed": args.seed,
        "verbose": args.progress and sys.stderr.isatty(),  # no bar in logs
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.model == "mufm":
            res = mufm.solve(X, y, lam=args.lam, lam_h=args.lam_h, **common)
        else:
            res = ufm.solve(y, d=X.shape[1], lam_h=args.lam_h or 5e-4, **common)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"{args.model.upper()} on {src}")
    print(f"  objective        {res.objective:.12g}")
    print(
        f"  status           {res.status} ({res.n_iter} iterations, grad norm {res.grad_norm:.2e})"
    )
    _print_metrics("collapse metrics of the solution H:", res.metrics)
    out: dict[str, Any] = {
        "model": args.model,
        "objective": res.objective,
        "status": res.status,
        "n_iter": res.n_iter,
        "grad_norm": res.grad_norm,
        "metrics": res.metrics,
        "params": res.params,
    }
    if args.certify:
        if args.model == "mufm":
            K = int(np.max(y)) + 1
            if len(y) > 60:
                from .certificates import balanced_idx

                m = args.certify_per_class
                idx = balanced_idx(np.asarray(y), m, K)
                sub = mufm.solve(
                    X[idx], np.asarray(y)[idx], lam=args.lam, lam_h=args.lam_h, **common
                )
                cert = mufm.certify(sub)
                where = f"a class-balanced subsample of {m} per class (N={idx.size})"
            else:
                cert = mufm.certify(res)
                where = "the whole problem"
        else:
            cert = ufm.certify(res)
            where = "the whole problem (K x K reduction)"
        print(f"certificate on {where}:")
        print(f"  lower bound      {cert.bound:.12g}")
        print(f"  gap              {cert.gap:.3g} (relative {cert.rel_gap:.3g})")
        print(f"  feasible value   {cert.reconstruction_value:.12g}")
        print(f"  exact            {cert.exact} (rank {cert.rank}, tight {cert.tight})")
        print(f"  {cert.message}")
        out["certificate"] = {
            "on": where,
            "bound": cert.bound,
            "feasible_value": cert.reconstruction_value,
            "message": cert.message,
            "gap": cert.gap,
            "rel_gap": cert.rel_gap,
            "exact": cert.exact,
            "rank": cert.rank,
        }
    if args.json:
        write_json(Path(args.json), out)
        print(f"wrote {args.json}")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from ufm.metrics import collapse_metrics

    H, y = load_npz(args.file, args.features, args.labels, what="FILE")
    m = collapse_metrics(H, y)
    _print_metrics(f"Collapse metrics of {args.file} ({H.shape[0]} samples, d={H.shape[1]})", m)
    return 0


def cmd_ot(args: argparse.Namespace) -> int:
    from ufm.ot import ot_profile

    from .features import load_run_features

    feats, _, _ = load_run_features(_run_dir(args.run_dir))
    names = list(feats)
    d = feats[names[-1]].shape[1]
    kept = {k: v for k, v in feats.items() if v.shape[1] == d}
    left = [k for k in names if k not in kept]
    prof = ot_profile(kept, max_samples=args.max_samples, seed=args.seed)
    n = prof.params["N"]
    print(
        f"Optimal transport between the layers of {args.run_dir} ({prof.n_samples} of {n} "
        f"training samples, d={d}, uniform weights, exact network simplex)"
        + (f"; left out (another width): {', '.join(left)}" if left else "")
    )
    print(f"{'layer':>12} {'W2^2 step':>12} {'identity':>12} {'diag mass':>9} "
          f"{'W2^2 from 0':>12} {'geodesic':>12}")  # fmt: skip
    for r in prof.rows():
        print(
            f"{r['layer']:>12} {r['step_w2sq']:12.5g} {r['step_identity_cost']:12.5g} "
            f"{r['step_diagonal_mass']:9.4f} {r['from_first_w2sq']:12.5g} {r['geodesic_w2sq']:12.5g}"
        )
    s = prof.summary()
    print(
        f"first -> last: W2^2 {s['total_w2sq']:.6g}, identity coupling {s['total_identity_cost']:.6g} "
        f"(gap {s['plan_gap']:.3g}), diagonal mass {s['total_diagonal_mass']:.4f}"
    )
    print(
        f"geodesic check (Theorem 3): sum of steps / W2(first, last) = {s['path_ratio']:.4f} "
        f"(1 on a geodesic), step spread {s['step_spread']:.3f} (0 for equal steps), "
        f"max |W2(0,l) - (l/L) W2(0,L)| / W2(0,L) = {s['geodesic_deviation']:.3f}"
    )
    if args.json is not None:
        write_json(
            args.json,
            {"run_dir": str(args.run_dir), "left_out": left, "summary": s, "layers": prof.rows()},
        )
        print(f"wrote {args.json}")
    return 0


# ------------------------------------------------------------------------------------------
# parser
# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="pfc",
        description="Neural collapse across depth: train and measure ResNets, solve and certify "
        "UFM/MUFM, check the theorems, write reports. `pfc demo` runs the whole study.",
        epilog="Exit status: 0 ok, 1 a theorem claim violated (check), 2 bad options or data, "
        "130 interrupted.",
    )
    add_version(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser(
        "demo",
        help="the main job on real images that ship with the install; writes report.html",
        description="Train the paper's fully connected ResNet and a deep LayerNorm ResNet on "
        "real MNIST images that ship with the install (--dataset; recipes in "
        "docs/demo_recipe.md), measuring every block of both; solve and certify UFM and MUFM on the paper's Sec. "
        "IV-B problem and on the network's own layer-0 features (lam sweeps); run the theorem "
        "checks; write one self-contained report.html plus CSVs, PNGs, config.json and "
        "results.json. About 3 minutes of CPU on one thread; --quick is a smoke version (< 1 "
        "minute).",
    )
    add_options(d, StudyConfig, presets={"full": FULL, "--quick": QUICK})

    t = sub.add_parser(
        "train",
        help="train a ResNet and measure every block (a run directory)",
        description=TRAIN_DESCRIPTION,
    )
    add_train_options(t)

    f = sub.add_parser(
        "figures",
        help="draw Fig. 2 and Fig. 3 of a run or study directory",
        description="Draw Fig. 2 (metrics against epoch, one line per layer) and "
        "Fig. 3 (final metrics against relative position, with the geodesic "
        "prediction) into RUN_DIR/figures.",
    )
    f.add_argument("run_dir", metavar="RUN_DIR", help="a run directory or a study directory")

    s = sub.add_parser(
        "solve",
        help="solve UFM or MUFM (Sec. IV-B data or an .npz of features), optionally certify",
        description="Solve the UFM (free features) or the MUFM (features anchored to data X) "
        "and print the objective, the status and the collapse metrics of the solution.",
    )
    add_options(s, SolveOptions)

    c = sub.add_parser(
        "check",
        help="check Theorems 1-4 (proofs_check)",
        description="Run the theorem checks; exit status 1 when a claim that "
        "should hold is violated.",
    )
    add_options(c, CheckOptions)

    r = sub.add_parser(
        "report",
        help="write report.html of a study or run directory",
        description="Write one self-contained report.html (figures embedded) "
        "from the files of a `pfc demo` study or a `pfc train` run directory.",
    )
    r.add_argument("run_dir", metavar="RUN_DIR", help="a study or run directory")

    m = sub.add_parser("metrics", help="collapse metrics of features saved in an .npz file")
    m.add_argument("file", help="an .npz file with a feature array (N, ...) and labels (N,)")
    add_options(m, MetricsOptions)
    o = sub.add_parser(
        "ot",
        help="optimal transport between a run's layers against Theorem 3's geodesic (POT)",
        description="Feed the training split through a trained run's network and compute, "
        "with POT's exact solver and uniform weights, W2^2 between consecutive layers and from "
        "the first, the optimal plans' diagonal mass and cost against the identity coupling, "
        "and the profile against a constant-speed geodesic's equal steps (ufm.ot_profile). "
        "Layers of another width than the last are left out.",
    )
    o.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or a study with train/)")
    add_options(o, OTOptions)
    _add_depth_parser(sub)
    return p


def _check_outputs(args: argparse.Namespace) -> None:
    """Up-front checks of the result files a command will write (any subcommand with --json)."""
    if getattr(args, "json", None) is not None:
        check_output_file(args.json, "--json")


# ------------------------------------------------------------------------------------------
# depth: collapse against depth (resnet_pfc.depth); kept in one place
# ------------------------------------------------------------------------------------------


def cmd_depth(args: argparse.Namespace) -> int:
    from resnet_pfc.depth import DepthConfig, depth_config, depth_study
    from resnet_pfc.depth_config import SHOWN_SLOPES
    from ufm.registry import PFC

    opts = options_from_args(DepthConfig, args)
    res = depth_study(depth_config(args.preset, **opts))
    for s in res.slopes:
        if s["metric"] in SHOWN_SLOPES and s["metric"] not in PFC:
            print(
                f"{s['family']:20s} {s['init']:11s} {s['metric']:16s} slope {s['slope']:+.3f} "
                f"[{s['lo']:+.3f}, {s['hi']:+.3f}] {s['verdict']}"
            )
    flagged = [c for c in res.cells if c.get("not_at_optimum")]
    if flagged:
        print(
            f"{len(flagged)} of {len(res.cells)} cells are not at their optimum (full objective "
            "above a shallower cell's); see report.md"
        )
    if res.missing:
        print(f"{len(res.missing)} cells missing; rerun the same command to finish them")
    print(f"report: {(res.out_dir / 'report.md').resolve()}")
    return 0


def _add_depth_parser(sub: Any) -> None:
    from resnet_pfc.depth_config import DEPTH_PRESETS, DepthConfig

    p = sub.add_parser(
        "depth",
        help="collapse against depth at the regularised optimum: LayerNorm ResNets and "
        "transformers",
        description="Train each family (LayerNorm ResNets with one or two linear layers per "
        "block; transformers with pre-LN, post-LN or affine-free LayerNorm blocks) at several "
        "depths and seeds, with cross entropy or MSE, until a stationarity criterion holds or "
        "a cap; record the full regularised objective (loss + wd/2 ||theta||^2, by part) and "
        "flag cells not at their optimum (objective above a shallower cell's); optionally "
        "warm-start each depth from the shallower one plus identity blocks; measure every "
        "block (NC1-NC3, CDNV, the class-mean Gram eigenvalue ratio, the data-separation "
        "rate), fit log-log slopes against depth with a bootstrap interval over seeds, compare "
        "the last layer with the LayerNorm UFM optimum, and write CSV files, figures and "
        "report.md. Resumable: a rerun skips finished cells. --preset cpu (default): digits, "
        "depths 2 4 8, 3 seeds, both initialisations; --preset paper: MNIST on a GPU.",
    )
    p.add_argument(
        "--preset",
        choices=tuple(DEPTH_PRESETS),
        default="cpu",
        help="the named settings that every option below defaults to (default %(default)s)",
    )
    presets = {f"--preset {name}": values for name, values in DEPTH_PRESETS.items()}
    add_options(p, DepthConfig, presets=presets)


#: The function that runs each subcommand (``args.command``).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": cmd_demo,
    "train": cmd_train,
    "figures": cmd_figures,
    "solve": cmd_solve,
    "check": cmd_check,
    "report": cmd_report,
    "metrics": cmd_metrics,
    "ot": cmd_ot,
    "depth": cmd_depth,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pfc``; returns the exit status (usage errors in the options raise ``SystemExit(2)``
    from argparse, with one line on stderr)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        _check_outputs(args)
        return COMMANDS[args.command](args)

    return guarded(f"pfc {args.command}", body, resume_hint=hasattr(args, "resume"))


if __name__ == "__main__":
    raise SystemExit(main())
