"""Features of every measured layer of a trained :mod:`resnet_pfc` run, read back from its files.

:func:`load_run_features` rebuilds the network of a run directory from its ``config.json`` and
its newest checkpoint and returns the features of every measured layer on the training split.
It uses only public names of :mod:`resnet_pfc` (the options of
:class:`resnet_pfc.train.TrainConfig` via :func:`dataclasses.fields`, the checkpoint loader of
:mod:`resnet_pfc.checkpoint`). When :mod:`resnet_pfc` offers a public run loader, this module
shrinks to a call of it.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from resnet_pfc.checkpoint import load_latest_checkpoint
from resnet_pfc.data import load_dataset
from resnet_pfc.measure import LayerTaps
from resnet_pfc.train import TrainConfig, make_model, resolve_config
from ufm.errors import CheckpointError
from ufm.io import read_json

__all__ = ["load_run_features", "run_config", "LAST_CHECKPOINT"]

#: Where :func:`resnet_pfc.train` keeps the newest checkpoint, relative to its run directory.
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"

_REMEDY = "delete it, or pass --force to start the study afresh"


def run_config(run_dir: str | os.PathLike[str]) -> TrainConfig:
    """The resolved :class:`~resnet_pfc.train.TrainConfig` of a run directory (its config.json).

    Raises
    ------
    CheckpointError
        ``run_dir`` has no ``config.json``, or it is damaged.
    """
    run = Path(run_dir)
    doc = read_json(run / "config.json", remedy=_REMEDY)
    if doc is None:
        raise CheckpointError(f"{run} has no config.json; run the training stage first")
    raw = dict(doc["config"])
    if raw.get("milestones") is not None:
        raw["milestones"] = tuple(raw["milestones"])
    known = {f.name for f in fields(TrainConfig)}
    return resolve_config(TrainConfig(**{k: v for k, v in raw.items() if k in known}))


def load_run_features(
    run_dir: str | os.PathLike[str], *, batch_size: int = 512
) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """All measured layers of the trained network of a run, on its training split.

    Parameters
    ----------
    run_dir : path-like
        A run directory of :func:`resnet_pfc.train` (``config.json`` and
        ``checkpoints/last.pt``, or its previous generation when that is unreadable).
    batch_size : int, default 512
        Samples per forward pass.

    Returns
    -------
    features : dict of str to array of shape (N, d_l)
        Layer label (stem output, then each block, as :meth:`measured_layers` names them) to
        its features, float64, samples first, in the order of the training split.
    y : array of int64, shape (N,)
        Labels ``0..K-1``.
    K : int
        Number of classes.

    Raises
    ------
    CheckpointError
        No ``config.json`` or no readable checkpoint in ``run_dir``.
    """
    run = Path(run_dir)
    tc = run_config(run)
    ds = load_dataset(
        tc.dataset, split="train", data_root=tc.data_root, per_class=tc.per_class, seed=tc.seed
    )
    K = int(ds.num_classes)
    dtype = torch.float64 if tc.dtype == "float64" else torch.float32
    model = make_model(tc, tuple(ds.input_shape), K).to(dtype=dtype)
    state, _ = load_latest_checkpoint(run / LAST_CHECKPOINT, required=("model",))
    model.load_state_dict(state["model"])
    model.eval()
    layers = model.measured_layers()
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in layers}

    def keep(label: str, h: torch.Tensor) -> None:
        feats[label].append(h.detach().reshape(h.shape[0], -1).to(torch.float64))

    with torch.no_grad(), LayerTaps(model, layers, keep):
        for i in range(0, len(ds), batch_size):
            model(ds.x[i : i + batch_size].to(dtype))
    F = {k: torch.cat(v).numpy() for k, v in feats.items()}
    return F, ds.y.numpy().astype(np.int64), K
