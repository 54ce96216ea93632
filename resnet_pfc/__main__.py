"""Command line: ``python -m resnet_pfc train|figures|report ...`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ufm.cli import OneLineParser, add_version, guarded

from .config import TRAIN_DESCRIPTION, add_train_options, train_config_from_args

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m resnet_pfc",
        description="Train ResNets and measure progressive feedforward collapse of every block.",
    )
    add_version(p)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        "train",
        help="train a model and measure every block (writes a run directory)",
        description=TRAIN_DESCRIPTION + " Launch with torchrun for DDP.",
    )
    add_train_options(t)
    f = sub.add_parser("figures", help="draw Fig. 2 and Fig. 3 of a run directory")
    f.add_argument("run_dir")
    r = sub.add_parser("report", help="write report.md of a run directory")
    r.add_argument("run_dir")
    r.add_argument("--epsilon", type=float, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 on success, 2 on bad options, data or files (one line on stderr),
    130 when interrupted (a resumable run keeps its last checkpoint)."""
    args = build_parser().parse_args(argv)
    return guarded(
        f"python -m resnet_pfc {args.command}",
        lambda: _run(args),
        resume_hint=args.command == "train",
    )


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        from .train import train

        res = train(train_config_from_args(args))
        if res.train_accuracy is not None:
            print(
                f"done: {res.out_dir} (train accuracy {res.train_accuracy:.4f}, "
                f"{res.elapsed_s:.1f} s)"
            )
    elif args.command == "figures":
        from .figures import draw_figures

        for path in draw_figures(args.run_dir):
            print(path)
    elif args.command == "report":
        from .report import write_report

        print(write_report(args.run_dir, epsilon=args.epsilon))
    return 0


if __name__ == "__main__":
    sys.exit(main())
