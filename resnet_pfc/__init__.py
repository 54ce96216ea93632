"""resnet_pfc: train ResNets and measure progressive feedforward collapse of every block.

Streaming measurement (no stored features) of the collapse metrics of every block's output,
the geodesic-line prediction between the first and last measured layer, the paper's models
(Table I), its training recipe with atomic checkpoints and resumption, DDP, figures and reports.

>>> from resnet_pfc import TrainConfig, train, measure_layers, paper_model   # doctest: +SKIP
>>> res = train(TrainConfig(dataset="digits", epochs=10, out="runs/digits"))  # doctest: +SKIP

Command line: ``python -m resnet_pfc train --dataset digits --epochs 40 --out runs/digits``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# `train` and `measure` share their names with their modules: bind the functions eagerly so that
# `resnet_pfc.train` is always the function (`from resnet_pfc.train import TrainConfig` still
# reaches the module, as does importlib.import_module("resnet_pfc.train")).
from .measure import measure as measure
from .train import train as train

_LAZY = {
    "TrainConfig": "train",
    "RunResult": "train",
    "read_csv": "train",
    "measure_layers": "measure",
    "measure_run": "measure",
    "Measurement": "measure",
    "LayerTaps": "measure",
    "FCResNet": "models",
    "ConvResNet": "models",
    "paper_model": "models",
    "build_model": "models",
    "TABLE_I": "models",
    "draw_figures": "figures",
    "write_report": "report",
    "load_dataset": "data",
}

__all__ = sorted([*_LAZY, "train", "measure"])


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'resnet_pfc' has no attribute {name!r}")
    value = getattr(import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
