r"""Streaming collapse measurement of any PyTorch model's layers through forward hooks.

The measurement never stores features. Forward hooks on the named modules flatten each layer's
output to ``(batch, d)`` and feed it at once to one :class:`ufm.metrics.CollapseAccumulator` per
layer (memory ``O(K d)`` per layer); the model is run over the data at most twice (pass 1: class
counts, means and within-class scatter; pass 2 with the frozen means: NCC accuracy, NC1, NC4),
all layers in the same passes. The geodesic-line prediction between the first and the last
measured layer,

.. math:: H(t) = (1 - t) H_0 + t H_L, \qquad t \in [0, 1],

is streamed by a :class:`ufm.metrics.LineAccumulator` from the statistics of both layers and their
cross terms (MATH.md section 7). The only features held at any time are the current batch of
the first measured layer (needed for the line and for the distance positions).

Relative positions (MATH.md section 3, Fig. 3): ``"index"`` gives ``l / L``; ``"distance"``
gives :math:`\|H_l - H_0\|_F / \|H_L - H_0\|_F`, streamed as a sum of squared row distances.

Distributed use: pass ``group`` (or ``distributed=True``) when every process of a
``torch.distributed`` group measures its own shard of the data (disjoint, covering the set once);
the accumulators are reduced with ``all_reduce`` after each pass, so every rank gets the metrics of
the whole set. In ``eval()`` mode (which :func:`measure` sets) a sample's features do not
depend on the other samples of its batch (batch norm uses its running statistics), so the result
equals a single-process measurement up to float64 round-off in the merges.

>>> from resnet_pfc.measure import measure                               # doctest: +SKIP
>>> res = measure(model, loader, ["layer1", "layer2", "layer3"])       # doctest: +SKIP
>>> res.layers["layer3"]["pfc1"]                                        # doctest: +SKIP

The hooks, the two streaming passes with their all-reduce, the geodesic line and the public
entry points share one pass protocol.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ufm.errors import DegenerateInputError, InputError, PFCWarning
from ufm.metrics import CollapseAccumulator, LineAccumulator
from ufm.registry import CLASSIFIER, METRICS, SECOND_PASS, TRACES
from ufm.threads import thread_policy

__all__ = [
    "Measurement",
    "measure",
    "measure_model",
    "LayerTaps",
]

#: Metrics available after pass 1 (per layer) and those that need pass 2.
PASS1_KEYS = (
    *(n for n, s in METRICS.items() if s.per_layer and s.formula is not None),
    *TRACES,
)
PASS2_KEYS = tuple(m for m in SECOND_PASS if m not in CLASSIFIER)


@dataclass(frozen=True)
class Measurement:
    """The result of :func:`measure`.

    Attributes
    ----------
    layers : dict of str to dict of str to float
        Per layer label, the dict of :func:`ufm.metrics.collapse_metrics` (``pfc1, pfc2, pfc3,
        ncc_accuracy, nc1, nc2_equinorm, nc2_equiangular, tr_sigma_w, tr_sigma_b`` and, where a
        classifier was given, ``nc3, nc4``). A layer whose metrics are undefined (e.g. all class
        means equal) holds NaN values when ``strict=False``.
    positions : dict of str to float
        Relative position of each layer (``position`` mode), first 0, last 1.
    distances : dict of str to float
        :math:`\\|H_l - H_0\\|_F / \\|H_L - H_0\\|_F` (NaN when the last equals the first).
    geodesic : dict of str to ndarray or None
        The line prediction on ``geodesic_grid``: ``t`` and per ``t`` the pass-1 metrics, plus
        ``ncc_accuracy, pfc3, nc1`` where evaluated (NaN elsewhere).
    geodesic_at_layers : dict of str to dict of str to float
        The line prediction at each layer's relative position.
    loss, accuracy : float or None
        Mean cross entropy and accuracy of the model's output (when it is ``(batch, K)`` logits).
    num_samples : int
        Number of samples measured (all ranks together).
    """

    layers: dict[str, dict[str, float]]
    positions: dict[str, float]
    distances: dict[str, float]
    geodesic: dict[str, np.ndarray] | None = None
    geodesic_at_layers: dict[str, dict[str, float]] = field(default_factory=dict)
    loss: float | None = None
    accuracy: float | None = None
    num_samples: int = 0


def _first_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, list | tuple) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    raise InputError(
        f"a measured module returned {type(x).__name__}, not a tensor; measure a module whose "
        "output (or first output) is the feature tensor"
    )


class LayerTaps:
    """Forward hooks that hand every measured layer's flattened batch to a callback.

    Parameters
    ----------
    model : nn.Module
    layers : mapping of label to module name
        Module names as in ``model.named_modules()``; a suffix ``":input"`` taps the module's
        input instead of its output (a forward pre-hook).
    callback : callable ``(label, features (batch, d)) -> None``

    Use as a context manager; the hooks are removed on exit.
    """

    def __init__(self, model: nn.Module, layers: Mapping[str, str], callback: Any):
        modules = dict(model.named_modules())
        self._handles: list[Any] = []
        self._targets: list[tuple[str, nn.Module, bool]] = []
        for label, name in layers.items():
            base, sep, which = str(name).partition(":")
            if sep and which not in ("input", "output"):
                raise InputError(
                    f"layer {label!r}: suffix must be ':input' or ':output', got {name!r}"
                )
            if base not in modules:
                avail = [n for n in modules if n][:20]
                raise InputError(
                    f"layer {label!r}: model has no module named {base!r}; some names: {avail} "
                    "(see model.named_modules())"
                )
            self._targets.append((label, modules[base], which == "input"))
        self.callback = callback

    def __enter__(self) -> LayerTaps:
        for label, mod, on_input in self._targets:
            if on_input:

                def pre(_m: nn.Module, args: Any, label: str = label) -> None:
                    self.callback(label, _first_tensor(args))

                self._handles.append(mod.register_forward_pre_hook(pre))
            else:

                def post(_m: nn.Module, _a: Any, out: Any, label: str = label) -> None:
                    self.callback(label, _first_tensor(out))

                self._handles.append(mod.register_forward_hook(post))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _as_layer_map(layers: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(layers, Mapping):
        out = {str(k): str(v) for k, v in layers.items()}
    elif isinstance(layers, str):
        out = {layers: layers}
    else:
        out = {str(v): str(v) for v in layers}
    if not out:
        raise InputError("layers is empty; name at least one module to measure")
    return out


def _infer_num_classes(loader: Iterable[Any]) -> int:
    ds = getattr(loader, "dataset", None)
    K = getattr(ds, "num_classes", None)
    if isinstance(K, int):
        return K
    tensors = getattr(ds, "tensors", None)
    if tensors is not None and len(tensors) >= 2:
        return int(tensors[1].max()) + 1
    hi = -1
    for batch in loader:
        hi = max(hi, int(torch.as_tensor(batch[1]).max()))
    return hi + 1


def _nan_metrics(keys: Iterable[str]) -> dict[str, float]:
    return {k: math.nan for k in keys}


def _all_reduce_sum(values: list[float], group: Any, device: torch.device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, group=group)
    return [float(v) for v in t]


@thread_policy(model="model")
def measure(
    model: nn.Module,
    loader: Iterable[Any],
    layers: Mapping[str, str] | Sequence[str],
    num_classes: int | None = None,
    *,
    classifier: Mapping[str, tuple[Any, Any]] | None = None,
    passes: int = 2,
    line: bool | tuple[str, str] = False,
    geodesic_grid: Sequence[float] | int = 101,
    geodesic_pass2_grid: Sequence[float] | int = 11,
    position: str = "index",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    group: Any = None,
    distributed: bool = False,
    strict: bool = True,
    progress: bool = False,
) -> Measurement:
    """Collapse metrics of named layers of any model (and optionally the geodesic line), streamed.

    Parameters
    ----------
    model : nn.Module
        Any model; put in ``eval()`` mode for the measurement and restored afterwards.
    loader : iterable of ``(x, y)`` batches
        E.g. a :class:`torch.utils.data.DataLoader`. It is iterated ``passes`` times.
    layers : mapping of label to module name, or sequence of module names
        The measured layers in forward order (the first is the line's start ``H_0``, the last
        its end ``H_L``). Outputs are flattened to ``(batch, d)``; ``"name:input"`` taps a
        module's input.
    num_classes : int, optional
        ``K``; default ``loader.dataset.num_classes``, else ``max(y) + 1`` of the data.
    classifier : mapping of label to ``(W (K, d), b (K,) or None)``, optional
        Classifier acting on that layer's flattened features; adds NC3 and NC4.
    passes : {1, 2}
        1 skips NCC accuracy, PFC3, NC1 and NC4 (one forward pass only).
    line : bool or (str, str)
        Stream the geodesic prediction between the first and last layer (``True``) or between
        two given labels (``d`` must agree).
    geodesic_grid : int or sequence of float
        Points of ``[0, 1]`` where the line's pass-1 metrics are reported (an int means that many
        equispaced points).
    geodesic_pass2_grid : int or sequence of float
        Points where the line's pass-2 metrics (NCC accuracy, PFC3, NC1) are evaluated, in
        addition to the layers' relative positions; each point costs one accumulator update per
        batch in pass 2.
    position : {"index", "distance"}
        Relative position convention (MATH.md section 3).
    device, dtype : optional
        Where / in which dtype to run the model (default: the model's first parameter's).
    group, distributed : optional
        Reduce over a ``torch.distributed`` group (``distributed=True`` uses the default group).
        Each rank must feed a disjoint shard.
    strict : bool
        If ``False``, a layer whose metrics are undefined gets NaN values and a
        :class:`ufm.errors.PFCWarning` instead of an error.
    progress : bool
        Show a tqdm bar over the batches.

    Returns
    -------
    Measurement
        ``.layers`` holds the per-layer metrics (``{label: {"pfc1": ..., "nc1": ..., ...}}``),
        with the positions, distances, the line (when asked) and the model's loss and accuracy.

    Raises
    ------
    InputError
        Unknown module names, a layer firing other than once per batch, non-finite features.
    DegenerateInputError
        A class without samples, or all class means equal at a layer (with ``strict=True``).

    Notes
    -----
    Per layer, the metrics are those of MATH.md section 3 on the features of the whole data set,

    .. math:: \\mathrm{PFC1} = \\operatorname{tr}\\Sigma_W / \\operatorname{tr}\\Sigma_B,

    computed by the accumulators exactly (no approximation), so they equal
    :func:`ufm.metrics.collapse_metrics` on stored features up to float64 round-off.
    """
    lmap = _as_layer_map(layers)
    labels = list(lmap)
    if passes not in (1, 2):
        raise InputError(f"passes must be 1 or 2, got {passes!r}")
    if position not in ("index", "distance"):
        raise InputError(f"position must be 'index' or 'distance', got {position!r}")
    K = _infer_num_classes(loader) if num_classes is None else int(num_classes)
    if K < 2:
        raise DegenerateInputError(f"collapse needs at least K=2 classes, got K={K}")
    if line is True:
        if len(labels) < 2:
            raise InputError("line=True needs at least two measured layers")
        line_ends: tuple[str, str] | None = (labels[0], labels[-1])
    elif line:
        line_ends = (str(line[0]), str(line[1]))
        for lab in line_ends:
            if lab not in lmap:
                raise InputError(f"line end {lab!r} is not one of the layers {labels}")
    else:
        line_ends = None
    if distributed and group is None:
        import torch.distributed as dist

        group = dist.group.WORLD
    dist_on = distributed or group is not None

    param = next(model.parameters(), None)
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    if dtype is None:
        dtype = param.dtype if param is not None else torch.float32

    classifier = dict(classifier or {})
    accs = {}
    for lab in labels:
        W, b = classifier.get(lab, (None, None))
        accs[lab] = CollapseAccumulator(K, W=W, b=b)
    fine = (
        np.linspace(0.0, 1.0, geodesic_grid)
        if isinstance(geodesic_grid, int)
        else (np.asarray(geodesic_grid, dtype=float))
    )
    coarse = (
        np.linspace(0.0, 1.0, geodesic_pass2_grid)
        if isinstance(geodesic_pass2_grid, int)
        else np.asarray(geodesic_pass2_grid, dtype=float)
    )
    lineacc = LineAccumulator(K, coarse) if line_ends is not None else None
    first = labels[0]
    need_first = lineacc is not None or len(labels) > 1

    state: dict[str, Any] = {"y": None, "h0": None, "a": None, "fired": {}, "phase": 1}
    dist2 = dict.fromkeys(labels, 0.0)
    dead: set[str] = set()  # layers whose pass 1 was degenerate (strict=False): no pass 2

    def consume(label: str, h: torch.Tensor) -> None:
        y = state["y"]
        h = h.detach().reshape(h.shape[0], -1)
        if h.shape[0] != y.shape[0]:
            raise InputError(
                f"layer {label!r} produced {h.shape[0]} rows for a batch of {y.shape[0]} "
                "samples; measure modules whose output is samples first"
            )
        fired = state["fired"]
        fired[label] = fired.get(label, 0) + 1
        if fired[label] > 1:
            raise InputError(
                f"layer {label!r} ran more than once in one forward pass (a shared module?); "
                "measure a module that runs once per sample"
            )
        if not (state["phase"] == 2 and label in dead):
            accs[label].update(h, y)
        if need_first and label == first:
            # Clone: the next module may modify its input in place.
            state["h0"] = h.clone()
        elif need_first and state["h0"] is None:
            raise InputError(
                f"layer {label!r} ran before the first measured layer {first!r}; list the "
                "layers in forward order"
            )
        if state["phase"] == 1 and need_first and label != first:
            h0 = state["h0"]
            if h0.shape == h.shape:
                dist2[label] += float(((h.to(torch.float64) - h0.to(torch.float64)) ** 2).sum())
            else:
                dist2[label] = math.nan
        if lineacc is not None:
            a_lab, b_lab = line_ends
            if label == a_lab:
                state["a"] = state["h0"] if label == first else h.clone()
            if label == b_lab:
                if state["a"] is None:
                    raise InputError(
                        f"line end {b_lab!r} ran before {a_lab!r}; give the ends in forward order"
                    )
                lineacc.update(state["a"], h, y)

    was_training = model.training
    model.eval()
    loss_sum = correct = 0.0
    count = 0
    try:
        with torch.no_grad(), LayerTaps(model, lmap, consume):
            for p in range(1, passes + 1):
                state["phase"] = p
                it: Iterable[Any] = loader
                if progress:
                    from tqdm.auto import tqdm

                    # disable=None: no carriage-return redraws when the output is not a terminal (a log)
                    it = tqdm(loader, desc=f"measure pass {p}/{passes}", leave=False, disable=None)
                for batch in it:
                    x, y = batch[0], batch[1]
                    x = x.to(device=device, dtype=dtype)
                    y = torch.as_tensor(y).to(device=device, dtype=torch.int64)
                    state.update(y=y, h0=None, a=None, fired={})
                    out = model(x)
                    missing = [lab for lab in labels if lab not in state["fired"]]
                    if missing:
                        raise InputError(
                            f"layer(s) {missing} did not run in the forward pass; check the "
                            "module names"
                        )
                    if p == 1:
                        count += int(y.shape[0])
                        if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] == K:
                            out64 = out.to(torch.float64)
                            loss_sum += float(F.cross_entropy(out64, y, reduction="sum"))
                            correct += float((out64.argmax(1) == y).sum())
                        else:
                            loss_sum = math.nan
                if p == 1:
                    if dist_on:
                        for acc in accs.values():
                            acc.all_reduce(group)
                        if lineacc is not None:
                            lineacc.all_reduce(group)
                        sums = _all_reduce_sum(
                            [loss_sum, correct, float(count), *dist2.values()], group, device
                        )
                        loss_sum, correct, count = sums[0], sums[1], int(round(sums[2]))
                        dist2 = dict(zip(labels, sums[3:], strict=True))
                    if passes == 2:
                        for lab in labels:
                            if not _end_first_pass(accs[lab], strict):
                                dead.add(lab)
                # Positions are known after pass 1; the line's pass-2 grid includes them.
                if p == 1:
                    positions, distances = _positions(labels, dist2, position)
                    if lineacc is not None:
                        lineacc.ts = np.unique(
                            np.concatenate([coarse, np.clip(list(positions.values()), 0, 1)])
                        )
                        if passes == 2:
                            lineacc.end_first_pass()
            if passes == 2 and dist_on:
                for acc in accs.values():
                    if acc.phase == 2:
                        acc.all_reduce(group)
                if lineacc is not None:
                    lineacc.all_reduce(group)
    finally:
        model.train(was_training)

    results: dict[str, dict[str, float]] = {}
    for lab in labels:
        results[lab] = _compute(accs[lab], lab, strict)
    geo = None
    geo_layers: dict[str, dict[str, float]] = {}
    if lineacc is not None:
        geo, geo_layers = _geodesic(lineacc, fine, positions, strict)
    have_logits = count > 0 and math.isfinite(loss_sum)
    return Measurement(
        layers=results,
        positions=positions,
        distances=distances,
        geodesic=geo,
        geodesic_at_layers=geo_layers,
        loss=loss_sum / count if have_logits else None,
        accuracy=correct / count if have_logits else None,
        num_samples=count,
    )


def _end_first_pass(acc: CollapseAccumulator, strict: bool) -> bool:
    try:
        acc.end_first_pass()
    except DegenerateInputError:
        if strict:
            raise
        return False
    return True


def _compute(acc: CollapseAccumulator, label: str, strict: bool) -> dict[str, float]:
    try:
        return acc.compute()
    except DegenerateInputError as exc:
        if strict:
            raise DegenerateInputError(f"layer {label!r}: {exc}") from exc
        warnings.warn(
            f"layer {label!r}: metrics undefined ({exc}); NaN recorded", PFCWarning, stacklevel=3
        )
        keys = PASS1_KEYS + (PASS2_KEYS if acc.phase == 2 else ())
        if acc.W is not None:
            keys += tuple(m for m in CLASSIFIER if acc.phase == 2 or m not in SECOND_PASS)
        return _nan_metrics(keys)


def _positions(
    labels: list[str], dist2: dict[str, float], mode: str
) -> tuple[dict[str, float], dict[str, float]]:
    L = len(labels) - 1
    last = dist2[labels[-1]]
    if L >= 1 and math.isfinite(last) and last > 0:
        distances = {lab: math.sqrt(dist2[lab] / last) for lab in labels}
    else:
        distances = dict.fromkeys(labels, math.nan)
    if mode == "index" or L < 1:
        positions = {lab: (i / L if L else 0.0) for i, lab in enumerate(labels)}
    else:
        if not all(math.isfinite(v) for v in distances.values()):
            raise InputError(
                "position='distance' needs layers of one width with the last different from "
                "the first; use position='index'"
            )
        positions = distances
    return positions, distances


def _geodesic(
    lineacc: LineAccumulator, fine: np.ndarray, positions: dict[str, float], strict: bool
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    try:
        grid = np.unique(np.concatenate([fine, lineacc.ts]))
        out = lineacc.compute(grid)
        if lineacc.phase == 2:
            second = lineacc.compute()
            idx = np.searchsorted(grid, lineacc.ts)
            for key in PASS2_KEYS:
                if key in second:
                    col = np.full(grid.shape, np.nan)
                    col[idx] = second[key]
                    out[key] = col
    except DegenerateInputError as exc:
        if strict:
            raise DegenerateInputError(f"geodesic line: {exc}") from exc
        warnings.warn(f"geodesic line: metrics undefined ({exc})", PFCWarning, stacklevel=3)
        return {"t": fine.copy()}, {}
    at_layers: dict[str, dict[str, float]] = {}
    for lab, pos in positions.items():
        j = int(np.argmin(np.abs(out["t"] - pos)))
        at_layers[lab] = {k: float(v[j]) for k, v in out.items() if k != "t"}
    return out, at_layers


def measure_model(model: nn.Module, loader: Iterable[Any], cfg: Any, **options: Any) -> Measurement:
    """Every measured layer of a toolkit model, its classifier and the geodesic line.

    :func:`measure` on ``model.measured_layers()`` with the model's
    ``measured_classifier()`` on the last layer, ``line=True``, ``strict=False`` (a degenerate
    layer gives NaN metrics, not an error), and the geodesic grids and layer positions of the
    training configuration ``cfg``. This is the measurement that training records in
    ``metrics.csv`` and ``geodesic.csv``.

    Parameters
    ----------
    model : nn.Module
        A model of :mod:`resnet_pfc.models` (``measured_layers``, ``measured_classifier``,
        ``num_classes``).
    loader : iterable of ``(x, y)`` batches
    cfg : TrainConfig
        Read: ``geodesic_points``, ``geodesic_pass2_points``, ``position``.
    **options
        Further keywords of :func:`measure` (``device``, ``dtype``, ``group``, ``line``,
        ...); they override the choices above.

    Returns
    -------
    Measurement
    """
    layers = model.measured_layers()
    kw: dict[str, Any] = {"classifier": {list(layers)[-1]: model.measured_classifier()}}
    kw |= {"line": True, "strict": False, "position": cfg.position}
    kw |= {"geodesic_grid": cfg.geodesic_points, "geodesic_pass2_grid": cfg.geodesic_pass2_points}
    return measure(model, loader, layers, model.num_classes, **kw | options)
