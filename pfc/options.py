"""Options of ``pfc solve``, ``pfc metrics`` and ``pfc ot``, declared once on dataclass fields
(:mod:`ufm.options`): each command's flags, bounds, help and checks come from these fields, as
those of ``pfc train`` come from :class:`resnet_pfc.TrainConfig`, of ``pfc demo`` from
:class:`pfc.config.StudyConfig`, of ``pfc depth`` from :class:`resnet_pfc.depth_config.DepthConfig`
and of ``pfc check`` from :class:`proofs_check.cli.CheckOptions`.

This module loads neither torch nor the solvers (``pfc --help`` reads it).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ufm.engine.registry import method_names
from ufm.losses import LOSSES
from ufm.options import documented, option
from ufm.validate import SEED_MAX

__all__ = [
    "SolveOptions",
    "MetricsOptions",
    "OTOptions",
]


def device_arg(s: str) -> str:
    """A torch device on the command line: ``cpu``, ``cuda`` or ``cuda:N``.

    Raises
    ------
    argparse.ArgumentTypeError
        Anything else (argparse reports it as a usage error naming the option).
    """
    if s in ("cpu", "cuda") or (s.startswith("cuda:") and s[5:].isdigit()):
        return s
    raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N; got {s!r}")


_JSON = "write the results as JSON to PATH (atomically)"


@documented
@dataclass(frozen=True)
class SolveOptions:
    """Options of ``pfc solve``: a UFM or MUFM on the paper's Sec. IV-B data or on features
    saved in an ``.npz`` file, optionally certified."""

    model: str = option(str, "mufm (features anchored to X) or ufm (free features)",
                        default="mufm", choices=("mufm", "ufm"))  # fmt: skip
    data: str = option(str, "'sec4b' (the paper's synthetic data) or an .npz file",
                       default="sec4b")  # fmt: skip
    features: str = option(str, "feature array in the .npz", default="H")
    labels: str = option(str, "label array in the .npz", default="y")
    K: int = option(int, "Sec. IV-B classes", default=4, low=2, high=10_000)
    n: int = option(int, "Sec. IV-B samples per class", default=50, low=1, high=1_000_000)
    d: int = option(int, "Sec. IV-B dimension", default=16, low=1, high=100_000)
    noise: float = option(float, "Sec. IV-B noise", default=0.5, low=0)
    lam: float = option(float, "transport coefficient", default=0.1, low=0, positive=True)
    lam_w: float = option(float, "weight decay", default=5e-4, low=0, positive=True)
    lam_h: float = option(float, "feature penalty (MUFM; the UFM uses 5e-4 when 0)",
                          default=0.0, low=0)  # fmt: skip
    lam_b: float = option(float, "bias penalty", default=5e-4, low=0)
    loss: str = option(str, "training loss", default="mse", choices=LOSSES)
    bias: bool = option("no", "classifier without bias", default=True)
    method: str | None = option(
        str, "solver method", default=None, choices=method_names(),
        shown="suffstats for mse (N-independent Newton on W, b), lbfgs for ce",
    )  # fmt: skip
    backend: str | None = option(str, "array backend", default=None, choices=("numpy", "torch"),
                                 shown="that of the data")  # fmt: skip
    device: str | None = option(device_arg, "cpu or cuda (torch backend)", default=None,
                                shown="cpu")  # fmt: skip
    max_iter: int | None = option(int, "iteration budget", default=None, low=1,
                                  shown="the method's")  # fmt: skip
    tol: float | None = option(float, "gradient-norm tolerance", default=None, low=0,
                               positive=True, shown="the backend's")  # fmt: skip
    seed: int = option(int, "seed of the data and the start", default=0, low=0, high=SEED_MAX)
    certify: bool = option(bool, "certify the solution (MUFM: SDP, on a balanced subsample "
                           "if N > 60)", default=False)  # fmt: skip
    certify_per_class: int = option(int, "per-class subsample of the MUFM certificate when "
                                    "N > 60", default=2, low=1)  # fmt: skip
    json: str | None = option(str, _JSON, default=None, shown="none")
    progress: bool = option("no", "no progress bars", default=True)


@documented
@dataclass(frozen=True)
class MetricsOptions:
    """Options of ``pfc metrics FILE`` (the file is positional)."""

    features: str = option(str, "name of the feature array", default="H")
    labels: str = option(str, "name of the label array", default="y")


@documented
@dataclass(frozen=True)
class OTOptions:
    """Options of ``pfc ot RUN_DIR`` (the run directory is positional)."""

    max_samples: int = option(int, "transport a seeded subset beyond this many samples",
                              default=2000, low=2, high=100_000)  # fmt: skip
    seed: int = option(int, "seed of the subset", default=0, low=0, high=SEED_MAX)
    json: str | None = option(str, "also write the profile to PATH", default=None, shown="none")
