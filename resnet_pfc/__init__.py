"""resnet_pfc: train ResNets and measure progressive feedforward collapse of every block.

Streaming measurement (no stored features) of the collapse metrics of every block's output,
the geodesic-line prediction between the first and last measured layer, the paper's models
(Table I), its training recipe with atomic checkpoints and resumption, DDP, figures and reports.

>>> from resnet_pfc import TrainConfig, train, measure, paper_model   # doctest: +SKIP
>>> res = train(TrainConfig(dataset="digits", epochs=10, out="runs/digits"))  # doctest: +SKIP

Command line: ``python -m resnet_pfc train --dataset digits --epochs 40 --out runs/digits``.

Layout: :mod:`~resnet_pfc.config` (the options of a run and their command line),
:mod:`~resnet_pfc.train` (the training loop), :mod:`~resnet_pfc.measure` (streaming metrics),
:mod:`~resnet_pfc.models`, :mod:`~resnet_pfc.data`, :mod:`~resnet_pfc.runs` (the files of a run
directory; :func:`~resnet_pfc.runs.load_run`), :mod:`~resnet_pfc.checkpoint` (atomic files and
checkpoints),
:mod:`~resnet_pfc.analysis`, :mod:`~resnet_pfc.figures`, :mod:`~resnet_pfc.report`,
:mod:`~resnet_pfc.depth` (the depth study).
"""

from __future__ import annotations

from ufm.lazy import lazy_package

# Public names load on first access (PEP 562, as in ufm): reading a run's CSV and `pfc report`
# need no torch. `train` and `measure` share their names with their modules: the package
# attribute stays the function (`from resnet_pfc.train import TrainConfig` still reaches the
# module, as does importlib.import_module("resnet_pfc.train")).
__getattr__, __dir__ = lazy_package(
    __name__,
    {
        "TrainConfig": ".config",
        "load_dataset": ".data",
        "draw_figures": ".figures",
        "LayerTaps": ".measure",
        "Measurement": ".measure",
        "measure": ".measure",
        **dict.fromkeys(
            ("TABLE_I", "ConvResNet", "FCResNet", "build_model", "paper_model"), ".models"
        ),
        "write_report": ".report",
        "load_run": ".runs",
        "read_csv": ".runs",
        "RunResult": ".train",
        "train": ".train",
    },
    shadowed=("train", "measure"),
)

__all__ = [
    "TrainConfig",
    "RunResult",
    "train",
    "read_csv",
    "load_run",
    "measure",
    "Measurement",
    "LayerTaps",
    "FCResNet",
    "ConvResNet",
    "paper_model",
    "build_model",
    "TABLE_I",
    "draw_figures",
    "write_report",
    "load_dataset",
]
