"""resnet_pfc: train ResNets and measure progressive feedforward collapse of every block.

Streaming measurement (no stored features) of the collapse metrics of every block's output,
the geodesic-line prediction between the first and last measured layer, the paper's models
(Table I), its training recipe with atomic checkpoints and resumption, DDP, figures and reports.

>>> from resnet_pfc import TrainConfig, train, measure_layers, paper_model   # doctest: +SKIP
>>> res = train(TrainConfig(dataset="digits", epochs=10, out="runs/digits"))  # doctest: +SKIP

Command line: ``python -m resnet_pfc train --dataset digits --epochs 40 --out runs/digits``.
"""

from __future__ import annotations

# Every public name is imported eagerly (the one approach of ufm, mufm and resnet_pfc): torch
# dominates the import time and these modules add milliseconds (python -X importtime).
# `train` and `measure` share their names with their modules: the functions are bound last, so
# `resnet_pfc.train` is always the function (`from resnet_pfc.train import TrainConfig` still
# reaches the module, as does importlib.import_module("resnet_pfc.train")).
from .data import load_dataset
from .figures import draw_figures
from .measure import LayerTaps, Measurement, measure_layers, measure_run
from .measure import measure as measure
from .models import TABLE_I, ConvResNet, FCResNet, build_model, paper_model
from .report import write_report
from .train import RunResult, TrainConfig, read_csv
from .train import train as train

__all__ = [
    "ConvResNet",
    "FCResNet",
    "LayerTaps",
    "Measurement",
    "RunResult",
    "TABLE_I",
    "TrainConfig",
    "build_model",
    "draw_figures",
    "load_dataset",
    "measure",
    "measure_layers",
    "measure_run",
    "paper_model",
    "read_csv",
    "train",
    "write_report",
]
