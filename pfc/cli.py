"""The ``pfc`` command: one entry point with a subcommand per job.

``pfc demo`` runs the main job on the embedded digits data; ``pfc metrics FILE.npz`` measures
features saved by the user. Every subcommand has ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from ufm.errors import PFCError

METRIC_ORDER = ["pfc1", "pfc2", "pfc3", "ncc_accuracy", "nc1", "nc2_equinorm", "nc2_equiangular",
                "nc3", "nc4"]


def _print_metrics(title: str, m: dict[str, float]) -> None:
    print(title)
    for k in METRIC_ORDER:
        if k in m:
            print(f"  {k:<16} {m[k]:.6g}")


def cmd_demo(args: argparse.Namespace) -> int:
    from sklearn.datasets import load_digits

    from ufm.metrics import collapse_metrics

    X, y = load_digits(return_X_y=True)
    m = collapse_metrics(X, y)
    _print_metrics(
        f"Collapse metrics of the input layer: scikit-learn digits, N={len(y)}, d={X.shape[1]}, "
        f"K={int(y.max()) + 1}", m)
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from ufm.metrics import collapse_metrics

    try:
        data = np.load(args.file)
    except (OSError, ValueError) as exc:
        raise PFCError(f"cannot read {args.file!r}: {exc}; pass an .npz with arrays H and y") from exc
    for key in (args.features, args.labels):
        if key not in data:
            raise PFCError(f"{args.file!r} has no array {key!r} (it has {sorted(data)}); "
                           "choose with --features / --labels")
    H = data[args.features].reshape(len(data[args.features]), -1)
    m = collapse_metrics(H, data[args.labels])
    _print_metrics(f"Collapse metrics of {args.file} ({H.shape[0]} samples, d={H.shape[1]})", m)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pfc",
        description="Neural collapse across depth: metrics, UFM/MUFM solvers, theorem checks, "
                    "ResNet measurement.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = sub.add_parser("demo", help="run the main job on the embedded digits data")
    d.set_defaults(func=cmd_demo)
    m = sub.add_parser("metrics", help="collapse metrics of features saved in an .npz file")
    m.add_argument("file", help="an .npz file with a feature array (N, ...) and labels (N,)")
    m.add_argument("--features", default="H", help="name of the feature array (default H)")
    m.add_argument("--labels", default="y", help="name of the label array (default y)")
    m.set_defaults(func=cmd_metrics)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PFCError as exc:
        print(f"pfc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
