r"""Training one depth-study cell towards the regularised optimum, and its full objective.

The depth study's theorem (Sukenik, Lampert, Mondelli 2025) is about global optima of the
*regularised* objective over every parameter :math:`\theta` of the network,

.. math:: F(\theta) = \frac1N \sum_{i=1}^N \ell(f_\theta(x_i), y_i)
          + \frac{wd}{2} \|\theta\|^2,

which is what SGD with weight decay ``wd`` (coupled, PyTorch's ``weight_decay``) minimises.
This module computes :math:`F` exactly from a model (:func:`full_objective`, with the penalty
split by part, :data:`PARTS`), trains a cell with a stated stationarity criterion
(:func:`train_cell`), and builds the warm start of depth ``L'`` from a trained depth ``L < L'``
(:func:`warm_start`).

**The recorded full objective** (``full_objective`` in ``cell.json`` and ``depth_cells.csv``):
the training split exactly as :func:`resnet_pfc.data.load_dataset` returns it (``dataset``,
``per_class``, ``seed`` of the cell), the model in ``eval()`` mode (the depth families have no
dropout or batch norm, so ``train()`` gives the same values), one forward pass in the model's
dtype (float32) in chunks of :data:`EVAL_BATCH` samples, the logits cast to float64, the loss
*averaged* over the ``N`` samples (cross entropy; or ``mse``: :math:`\tfrac12\|z - e_y\|^2`
summed over classes, averaged over samples, as in :mod:`resnet_pfc.train`), plus
:math:`\tfrac{wd}{2}\sum_p \|p\|^2` over every parameter ``p`` of ``model.parameters()`` in
float64 (weights, biases, LayerNorm gains and shifts, positional embeddings: everything SGD
decays). :func:`resnet_pfc.depth.recompute_objective` redoes this from a cell's saved weights.

**Stationarity** (:func:`stationarity`): after each epoch the *epoch objective* -- the mean of
the minibatch losses over the epoch plus :math:`\tfrac{wd}{2}\|\theta\|^2` at the epoch's end --
and :math:`\|\theta\|^2` are recorded. With a window of ``N`` epochs, the relative change of a
trajectory ``v`` is :math:`|\bar v_{last\,N} - \bar v_{previous\,N}| / \bar v_{last\,N}` (means
over the last ``N`` and the ``N`` before; windowed means because the epoch objective carries
minibatch noise). The criterion holds when both relative changes are below ``tol``. Training
runs at the constant initial learning rate for at least ``min_epochs`` epochs, then until the
criterion holds or ``max_epochs`` (the cap); then ``anneal_epochs`` more epochs at a tenth of
the learning rate (to remove most of SGD's noise). Whether the criterion was met, and at which
epoch, is recorded per cell.

**Decay e-folds**: the sum over SGD steps of :math:`lr_t \cdot wd / (1 - \beta)` (``beta`` the
momentum): the number of e-folds by which weight decay alone would have shrunk the weights,
with momentum's steady-state amplification :math:`1/(1-\beta)` of the per-step decay
:math:`lr_t \cdot wd` (exact for a constant learning rate once the momentum buffer has
settled; an approximation for the first ~:math:`1/(1-\beta)` steps after a change of ``lr``).
A cell with few e-folds has not forgotten its initialisation's norm: its penalty is far from
the optimum's whatever its loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ufm.errors import DivergenceError, InputError
from ufm.losses import check_loss

from .checkpoint import load_checkpoint, save_checkpoint
from .families import TRANSFORMER_VARIANTS, WARM_FAMILIES
from .models import build_depth_model

__all__ = [
    "PARTS",
    "WARM_FAMILIES",
    "parameter_parts",
    "full_objective",
    "stationarity",
    "warm_start",
    "train_cell",
    "CellTraining",
]

#: The parts of the penalty: the classifier ``(W, b)``; the residual blocks' linear / attention
#: weights and biases; every LayerNorm's gain and shift (blocks', stem's and final); the
#: embedding (the ResNets' stem linear map, the transformer's token embedding and positions).
PARTS: tuple[str, ...] = ("classifier", "blocks", "layernorm", "embedding")
#: Samples per forward pass when the full objective is evaluated.
EVAL_BATCH = 1024


def parameter_parts(model: nn.Module) -> dict[str, str]:
    """The part of :data:`PARTS` each named parameter of ``model`` belongs to.

    Returns
    -------
    dict of str to str
        ``{parameter name: part}`` for every entry of ``model.named_parameters()``.
    """
    ln = {
        f"{mod_name}.{p_name}" if mod_name else p_name
        for mod_name, mod in model.named_modules()
        if isinstance(mod, nn.LayerNorm)
        for p_name, _ in mod.named_parameters(recurse=False)
    }
    out = {}
    for name, _ in model.named_parameters():
        if name in ln:
            out[name] = "layernorm"
        elif name.startswith("classifier."):
            out[name] = "classifier"
        elif name.startswith("blocks."):
            out[name] = "blocks"
        else:
            out[name] = "embedding"
    return out


def norm2_parts(model: nn.Module) -> dict[str, float]:
    """Squared norm of the parameters of each part, in float64 (``{part: sum ||p||^2}``)."""
    parts = parameter_parts(model)
    out = dict.fromkeys(PARTS, 0.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            out[parts[name]] += float(p.detach().double().pow(2).sum())
    return out


def _loss(logits: torch.Tensor, y: torch.Tensor, loss: str, K: int) -> torch.Tensor:
    if loss == "mse":
        target = F.one_hot(y, K).to(logits.dtype)
        return 0.5 * (logits - target).pow(2).sum(1)
    return F.cross_entropy(logits, y, reduction="none")


def full_objective(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    weight_decay: float,
    loss: str = "ce",
    num_classes: int | None = None,
) -> dict[str, float]:
    r"""The full regularised objective of ``model`` on ``(x, y)``, split by part.

    .. math:: F = \frac1N \sum_i \ell(f_\theta(x_i), y_i)
              + \frac{wd}{2} \sum_{part} \|\theta_{part}\|^2

    Parameters
    ----------
    model : nn.Module
        A depth-study model; evaluated in ``eval()`` mode (restored afterwards).
    x : tensor of shape (N, ...)
        Every training input (the whole split, not a batch).
    y : tensor of shape (N,)
        Labels ``0..K-1``.
    weight_decay : float
        ``wd`` (SGD's coupled weight decay minimises the loss plus ``wd/2 ||theta||^2``).
    loss : {"ce", "mse"}
    num_classes : int, optional
        ``K`` (default ``model.num_classes``).

    Returns
    -------
    dict
        ``objective``, ``loss`` (mean over samples), ``accuracy``, ``penalty``
        (``wd/2 * norm2``), ``norm2`` (all parameters) and ``norm2_<part>``,
        ``penalty_<part>`` for each of :data:`PARTS`.

    Raises
    ------
    InputError
        Unknown loss, or ``x`` and ``y`` of different lengths.
    """
    loss = check_loss(loss)
    if len(x) != len(y):
        raise InputError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    K = int(num_classes if num_classes is not None else model.num_classes)
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    tot = correct = 0.0
    try:
        with torch.no_grad():
            for i in range(0, len(y), EVAL_BATCH):
                xb = x[i : i + EVAL_BATCH].to(device=dev, dtype=dtype)
                yb = y[i : i + EVAL_BATCH].to(dev)
                z = model(xb).double()
                tot += float(_loss(z, yb, loss, K).sum())
                correct += float((z.argmax(1) == yb).sum())
    finally:
        model.train(was)
    n2 = norm2_parts(model)
    out: dict[str, float] = {"loss": tot / len(y), "accuracy": correct / len(y)}
    out["norm2"] = sum(n2.values())
    out["penalty"] = 0.5 * weight_decay * out["norm2"]
    out["objective"] = out["loss"] + out["penalty"]
    for p in PARTS:
        out[f"norm2_{p}"] = n2[p]
        out[f"penalty_{p}"] = 0.5 * weight_decay * n2[p]
    return out


def stationarity(values: list[float], window: int) -> float:
    """Relative change of the last ``window`` values' mean against the ``window`` before.

    ``inf`` while fewer than ``2 * window`` values exist.
    """
    if len(values) < 2 * window:
        return math.inf
    last = sum(values[-window:]) / window
    prev = sum(values[-2 * window : -window]) / window
    return abs(last - prev) / max(abs(last), 1e-300)


def warm_start(
    model: nn.Module, family: str, depth: int, *, input_shape: Any, num_classes: int, **build: Any
) -> nn.Module:
    """Depth ``depth`` initialised from a trained shallower ``model`` plus identity blocks.

    The trained blocks keep their parameters, in order; ``depth - len(model.blocks)`` blocks
    with *every* parameter 0 are appended after them (before the final LayerNorm and the
    classifier). For the families of :data:`WARM_FAMILIES` such a block is the identity (a
    post-LN ResNet block gives ``LN(h + 0) = h`` for ``h`` on LayerNorm's sphere, to LayerNorm's
    ``eps``; a pre-LN transformer block gives ``x + 0``) at zero penalty, so the new network has
    the old one's full objective (to float round-off): the warm-start chain's objective is
    non-increasing in depth by construction, up to what training then changes.

    Note that zero is a stationary point of an appended block's parameters in the ResNets
    (``ReLU'(0) = 0`` in PyTorch, and a zero first layer passes no gradient to the second), so
    those blocks stay identities under SGD; the transformer's biases receive gradient.

    Raises
    ------
    InputError
        ``family`` has no identity block, or ``depth`` is not deeper than ``model``.
    """
    if family not in WARM_FAMILIES:
        raise InputError(
            f"the warm start needs a family with an identity block, one of {WARM_FAMILIES}; "
            f"got {family!r} (a post-LN transformer block has none); train it independently"
        )
    old = len(model.blocks)
    if depth <= old:
        raise InputError(f"depth must exceed the trained model's {old} blocks, got {depth}")
    new = build_depth_model(family, input_shape, num_classes, blocks=depth, **build)
    new = new.to(device=next(model.parameters()).device, dtype=next(model.parameters()).dtype)
    state = model.state_dict()
    with torch.no_grad():
        for name, t in new.state_dict().items():
            if name.startswith("blocks."):
                i = int(name.split(".")[1])
                if i >= old:
                    t.zero_()
                    continue
            t.copy_(state[name])
    return new


@dataclass
class CellTraining:
    """What :func:`train_cell` returns (and checkpoints).

    Attributes
    ----------
    epochs : int
        Epochs trained in all.
    criterion_met : bool
        Whether the stationarity criterion held before the cap.
    stationary_epoch : int or None
        The epoch (1-based) at which it held.
    trajectory : dict of str to list
        Per epoch: ``epoch, lr, phase`` (``"main"``/``"anneal"``), ``train_loss`` (mean
        minibatch loss), ``train_acc``, ``norm2``, ``objective`` (the epoch objective),
        ``efolds`` (cumulative decay e-folds), ``rel_objective``, ``rel_norm2`` (the
        stationarity measures, None before ``2 * window`` main-phase epochs) and
        ``norm2_<part>`` for each of :data:`PARTS`.
    efolds : float
        Total decay e-folds.
    elapsed_s : float
    """

    epochs: int = 0
    criterion_met: bool = False
    stationary_epoch: int | None = None
    trajectory: dict[str, list[Any]] = field(default_factory=dict)
    efolds: float = 0.0
    elapsed_s: float = 0.0


_TRAJ = ("epoch", "lr", "phase", "train_loss", "train_acc", "norm2", "objective", "efolds")
_TRAJ += ("rel_objective", "rel_norm2", *(f"norm2_{p}" for p in PARTS))


def train_cell(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    loss: str = "ce",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-3,
    batch_size: int = 128,
    min_epochs: int = 100,
    max_epochs: int = 300,
    window: int = 20,
    tol: float = 1e-3,
    anneal_epochs: int = 0,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 10,
    say: Callable[[str], None] | None = None,
) -> CellTraining:
    """SGD (momentum, coupled weight decay on every parameter) until stationary or the cap.

    The schedule and the criterion are those of the module docstring. Minibatches are drawn
    from a generator seeded with ``(seed, epoch)``, so a run resumed from ``checkpoint`` (saved
    every ``checkpoint_every`` epochs and at the end) continues exactly as an uninterrupted one.

    Raises
    ------
    InputError
        Inconsistent epoch counts, an unknown loss.
    DivergenceError
        A non-finite loss or parameters.
    """
    if not 1 <= min_epochs <= max_epochs:
        raise InputError(
            f"need 1 <= min_epochs <= max_epochs, got min_epochs={min_epochs}, "
            f"max_epochs={max_epochs}"
        )
    loss = check_loss(loss)
    if window < 1 or not tol > 0:
        raise InputError(f"window must be >= 1 and tol > 0, got window={window}, tol={tol}")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    res = CellTraining(trajectory={k: [] for k in _TRAJ})
    anneal_left = anneal_epochs
    phase = "main"
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.is_file():
        st = load_checkpoint(ckpt)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        res = CellTraining(**st["result"])
        phase, anneal_left = st["phase"], st["anneal_left"]
    N = len(y)
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    t0 = time.perf_counter() - res.elapsed_s

    def save() -> None:
        if ckpt is None:
            return
        res.elapsed_s = time.perf_counter() - t0
        save_checkpoint(
            ckpt,
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "result": res.__dict__,
                "phase": phase,
                "anneal_left": anneal_left,
            },
        )

    while phase != "done":
        epoch = res.epochs + 1
        lr_now = lr if phase == "main" else lr / 10
        for g in opt.param_groups:
            g["lr"] = lr_now
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
        perm = torch.randperm(N, generator=gen)
        model.train()
        tot = correct = 0.0
        steps = 0
        for i in range(0, N, batch_size):
            idx = perm[i : i + batch_size]
            xb = x[idx].to(device=dev, dtype=dtype)
            yb = y[idx].to(dev)
            z = model(xb)
            lb = _loss(z, yb, loss, num_classes).mean()
            if not bool(torch.isfinite(lb)):
                raise DivergenceError(
                    f"training diverged: non-finite loss at epoch {epoch} (lr={lr_now:g}); "
                    "lower the learning rate"
                )
            tot += float(lb.detach()) * len(idx)
            correct += float((z.detach().argmax(1) == yb).sum())
            opt.zero_grad(set_to_none=True)
            lb.backward()
            opt.step()
            steps += 1
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise DivergenceError(
                f"training diverged: non-finite parameters after epoch {epoch} (lr={lr_now:g})"
            )
        parts = norm2_parts(model)
        n2 = sum(parts.values())
        res.efolds += steps * lr_now * weight_decay / (1.0 - momentum)
        tr = res.trajectory
        tr["epoch"].append(epoch)
        tr["lr"].append(lr_now)
        tr["phase"].append(phase)
        tr["train_loss"].append(tot / N)
        tr["train_acc"].append(correct / N)
        tr["norm2"].append(n2)
        for p in PARTS:
            tr[f"norm2_{p}"].append(parts[p])
        tr["objective"].append(tot / N + 0.5 * weight_decay * n2)
        tr["efolds"].append(res.efolds)
        main_obj = [v for v, ph in zip(tr["objective"], tr["phase"], strict=True) if ph == "main"]
        main_n2 = [v for v, ph in zip(tr["norm2"], tr["phase"], strict=True) if ph == "main"]
        r_obj, r_n2 = stationarity(main_obj, window), stationarity(main_n2, window)
        tr["rel_objective"].append(r_obj if math.isfinite(r_obj) else None)
        tr["rel_norm2"].append(r_n2 if math.isfinite(r_n2) else None)
        res.epochs = epoch
        if phase == "main":
            if epoch >= min_epochs and r_obj < tol and r_n2 < tol:
                res.criterion_met, res.stationary_epoch = True, epoch
            if res.criterion_met or epoch >= max_epochs:
                phase = "anneal" if anneal_left > 0 else "done"
        else:
            anneal_left -= 1
            if anneal_left <= 0:
                phase = "done"
        if say is not None and (epoch % 50 == 0 or phase == "done"):
            say(f"epoch {epoch}: objective {tr['objective'][-1]:.4g}, norm2 {n2:.4g}")
        if epoch % checkpoint_every == 0 or phase == "done":
            save()
    res.elapsed_s = time.perf_counter() - t0
    return res


def transformer_like(family: str) -> bool:
    """Whether ``family`` is one of the transformer variants."""
    return family in TRANSFORMER_VARIANTS
