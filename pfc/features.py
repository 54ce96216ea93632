"""Features of every measured layer of a trained :mod:`resnet_pfc` run, read back from its files.

:func:`load_run_features` rebuilds the network of a run directory with
:func:`resnet_pfc.runs.load_run` (its ``config.json`` and newest readable checkpoint) and returns
the features of every measured layer on the training split.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from resnet_pfc.data import load_dataset
from resnet_pfc.measure import LayerTaps
from resnet_pfc.runs import load_run

__all__ = ["load_run_features"]


def load_run_features(
    run_dir: str | os.PathLike[str], *, batch_size: int = 512
) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """All measured layers of the trained network of a run, on its training split.

    Parameters
    ----------
    run_dir : path-like
        A run directory of :func:`resnet_pfc.train.train` (``config.json`` and
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
    tc, model = load_run(run_dir)
    ds = load_dataset(
        tc.dataset, split="train", data_root=tc.data_root, per_class=tc.per_class, seed=tc.seed
    )
    dtype = next(model.parameters()).dtype
    layers = model.measured_layers()
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in layers}

    def keep(label: str, h: torch.Tensor) -> None:
        feats[label].append(h.detach().reshape(h.shape[0], -1).to(torch.float64))

    with torch.no_grad(), LayerTaps(model, layers, keep):
        for i in range(0, len(ds), batch_size):
            model(ds.x[i : i + batch_size].to(dtype))
    F = {k: torch.cat(v).numpy() for k, v in feats.items()}
    return F, ds.y.numpy().astype(np.int64), int(ds.num_classes)
