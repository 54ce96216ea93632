"""The files of a run directory: names, CSV schemas, reading and writing.

A run directory (written by :func:`resnet_pfc.train`, every file atomically)::

    config.json          every option after defaults are resolved, plus library versions
    metrics.csv          one row per (epoch, split, layer): METRIC_COLUMNS
    geodesic.csv         one row per (epoch, split, t) of the line prediction: GEODESIC_COLUMNS
    checkpoints/last.pt  written after every epoch (the previous one kept as last.prev.pt)
    figures/             fig2_<split>.png, fig3_<split>.png
    report.md            monotonicity across layers at the final epoch and the effective depth

Readers (:mod:`resnet_pfc.figures`, :mod:`resnet_pfc.report`, :mod:`pfc`) use this module, not the
training code; :func:`load_run` gives a finished run's config and trained model.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ufm import io as ufm_io
from ufm.errors import CheckpointError, InputError
from ufm.io import read_json
from ufm.registry import CLASSIFIER, METRICS

from .checkpoint import load_latest_checkpoint
from .config import TrainConfig, config_from_dict, make_model, resolve_config

if TYPE_CHECKING:
    from .models import MeasuredModel

__all__ = [
    "CHECKPOINT",
    "SPLITS",
    "MEASURED_METRICS",
    "METRIC_COLUMNS",
    "read_csv",
    "check_rows",
    "read_run_config",
    "versions",
    "load_run",
]

CONFIG_JSON = "config.json"
METRICS_CSV = "metrics.csv"
GEODESIC_CSV = "geodesic.csv"
#: The newest checkpoint, relative to the run directory.
CHECKPOINT = Path("checkpoints") / "last.pt"
#: The splits a run measures: the only values of the ``split`` column (file names such as
#: ``figures/fig2_<split>.png`` are built from them, so nothing else is ever accepted).
SPLITS: tuple[str, ...] = ("train", "test")

#: Metrics measured at every layer, in column order: the metrics of :data:`ufm.METRICS` marked
#: ``per_layer``, in registry order.
MEASURED_METRICS: tuple[str, ...] = tuple(n for n, s in METRICS.items() if s.per_layer)
#: Columns of metrics.csv (one row per epoch, split, layer).
METRIC_COLUMNS: tuple[str, ...] = (
    "epoch",
    "split",
    "layer",
    "layer_index",
    "position",
    "distance",
    *MEASURED_METRICS,
    "loss",
    "accuracy",
    "train_loss",
    "train_acc",
    "lr",
)
#: Columns of geodesic.csv (one row per epoch, split, t); ``layer`` names the layer at that t.
#: The line has no classifier, so NC3 and NC4 are absent.
_LINE_METRICS = tuple(m for m in MEASURED_METRICS if m not in CLASSIFIER)
GEODESIC_COLUMNS: tuple[str, ...] = ("epoch", "split", "t", "layer", *_LINE_METRICS)
_TEXT_COLUMNS = ("split", "layer")


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read metrics.csv / geodesic.csv back: numbers as int or float, empty cells as None.

    The rows are checked with :func:`check_rows` (the ``split`` of every row is one of
    :data:`SPLITS`, epochs and layer indices are non-negative integers, metric cells are
    numbers or empty), so what the readers build from them (file names, plots, tables) never
    sees a crafted or damaged value.

    Raises
    ------
    InputError
        The file is not CSV, a line has more or fewer cells than the header, a column the
        file's kind needs is missing, or a cell holds a value its column cannot have (the
        message names the file, the line, the column and the value).
    """

    def conv(s: str) -> Any:
        if s == "":
            return None
        try:
            return int(s)
        except ValueError:
            pass
        try:
            return float(s)
        except ValueError:
            return s

    rows = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if None in row or None in row.values():
                    named = sum(v is not None for k, v in row.items() if k is not None)
                    n_cells = named + len(row.get(None) or [])
                    # more cells than the header (key None) or fewer (value None)
                    raise InputError(
                        f"{str(path)!r} is malformed: line {reader.line_num} has "
                        f"{n_cells} cells for "
                        f"{len(reader.fieldnames or [])} columns; the file was damaged or "
                        "edited: rerun the training (or restore the file)"
                    )
                rows.append({k: (v if k in _TEXT_COLUMNS else conv(v)) for k, v in row.items()})
            header = list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{str(path)!r} is not a readable CSV file ({exc})") from exc
    kind = GEODESIC_CSV if "t" in header else METRICS_CSV
    need = _REQUIRED[kind]
    missing = [c for c in need if c not in header]
    if missing:
        raise InputError(
            f"{str(path)!r} is not a run's {kind}: it has no column(s) {missing} (header "
            f"{header[:8]}{' ...' if len(header) > 8 else ''}); the file was damaged or "
            "edited: rerun the training (or restore the file)"
        )
    check_rows(rows, where=repr(str(path)), first_line=2)
    return rows


#: Columns each kind of run CSV must have (the readers index them).
_REQUIRED = {
    METRICS_CSV: ("epoch", "split", "layer", "layer_index", "position"),
    GEODESIC_CSV: ("epoch", "split", "t"),
}
#: Columns that hold non-negative integers.
_INT_COLUMNS = ("epoch", "layer_index")


def check_rows(rows: Any, *, where: str, first_line: int | None = None) -> list[dict[str, Any]]:
    """Check rows of metrics.csv / geodesic.csv (read from a file or restored from a
    checkpoint) before anything is built from them.

    Every row must be a dict; its ``split`` one of :data:`SPLITS` (figure file names are made
    from it); ``epoch`` and ``layer_index`` non-negative integers; ``layer`` text; every
    other cell a finite or non-finite number or empty (``None``).

    Parameters
    ----------
    rows : list of dict
    where : str
        How the messages name the source (a file, a checkpoint).
    first_line : int, optional
        The file line of ``rows[0]`` (messages then name lines); otherwise they name row
        indices.

    Returns
    -------
    list of dict
        ``rows``, unchanged.

    Raises
    ------
    InputError
        Naming the source, the line (or row), the column and the value, and what to do.
    """
    fix = "the file was damaged or edited: rerun the training (or restore the file)"
    if not isinstance(rows, list):
        raise InputError(f"{where} holds {type(rows).__name__} rows, not a list; {fix}")
    for i, row in enumerate(rows):
        at = f"line {first_line + i}" if first_line is not None else f"row {i}"
        if not isinstance(row, dict):
            raise InputError(f"{where}: {at} is {type(row).__name__}, not a row; {fix}")
        for k, v in row.items():
            if k == "split":
                ok = v in SPLITS
                want = f"one of {list(SPLITS)}"
            elif k in _TEXT_COLUMNS:
                ok, want = isinstance(v, str), "text"
            elif k in _INT_COLUMNS:
                ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
                want = "an integer >= 0"
            else:
                ok = v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                want = "a number or empty"
            if not ok:
                raise InputError(
                    f"{where}: {at}, column {str(k)!r} holds {str(v)[:60]!r}, which must be "
                    f"{want}; {fix}"
                )
    return rows


def read_run_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's (or study's) ``config.json``, checked; ``{}`` when the file does not exist.

    Returns
    -------
    dict
        The document: a JSON object whose ``"config"``, ``"study"`` and ``"versions"``
        entries, where present, are objects, and whose ``"config"`` entry's ``milestones``
        (where present) is a list of integers.

    Raises
    ------
    InputError
        The file is not valid JSON, or not of that form (the message names the file, the
        entry and what to do).
    """
    p = Path(path)
    remedy = "rerun the training, or delete it (figures then lack the lr marks)"
    fix = f"it was damaged or edited: {remedy}"
    try:
        doc = read_json(p, remedy=remedy)
    except CheckpointError as exc:
        raise InputError(str(exc)) from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InputError(
            f"{str(p)!r} holds a JSON {type(doc).__name__}, not an object of options; {fix}"
        )
    for key in ("config", "study", "versions"):
        if key in doc and not isinstance(doc[key], dict):
            raise InputError(
                f"{str(p)!r}: entry {key!r} is a JSON {type(doc[key]).__name__}, not an "
                f"object; {fix}"
            )
    ms = doc.get("config", {}).get("milestones")
    if ms is not None and (
        not isinstance(ms, list)
        or not all(isinstance(m, int) and not isinstance(m, bool) for m in ms)
    ):
        raise InputError(
            f"{str(p)!r}: config.milestones must be a list of epochs, got {str(ms)[:60]!r}; {fix}"
        )
    return doc


def rows_from_measurement(
    m: Any, epoch: int, split: str, extra: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The metrics.csv and geodesic.csv rows of one :class:`resnet_pfc.measure.Measurement`.

    ``extra`` (training loss, accuracy, lr) is added to every metrics row.
    """
    rows = []
    for i, (lab, met) in enumerate(m.layers.items()):
        row = {
            "epoch": epoch,
            "split": split,
            "layer": lab,
            "layer_index": i,
            "position": m.positions[lab],
            "distance": m.distances[lab],
        }
        row.update({k: met.get(k) for k in MEASURED_METRICS})
        row.update(loss=m.loss, accuracy=m.accuracy, **extra)
        rows.append(row)
    geo = []
    if m.geodesic is not None:
        at: dict[float, str] = {}
        for lab, pos in m.positions.items():
            at.setdefault(pos, lab)
        for j, t in enumerate(m.geodesic["t"]):
            row = {"epoch": epoch, "split": split, "t": float(t), "layer": at.get(float(t), "")}
            for k in GEODESIC_COLUMNS[4:]:
                if k in m.geodesic:
                    v = float(m.geodesic[k][j])
                    row[k] = None if math.isnan(v) else v
            geo.append(row)
    return rows, geo


def versions() -> dict[str, str]:
    """Library versions recorded in a run's config.json: :func:`ufm.io.versions` of torch, numpy
    and (if installed) torchvision."""
    return ufm_io.versions(("torch", "numpy", "torchvision"))


def load_run(
    run_dir: str | os.PathLike[str], *, device: str = "cpu"
) -> tuple[TrainConfig, MeasuredModel]:
    """The resolved config and the trained model (eval mode, the run's dtype) of a run directory.

    Reads ``config.json`` and ``checkpoints/last.pt`` (its previous generation, with a warning,
    when it is unreadable); the model is rebuilt with
    :func:`resnet_pfc.config.make_model` and gets the checkpoint's weights. Use it to extract
    features (:class:`resnet_pfc.measure.LayerTaps` on ``model.measured_layers()``).

    Raises
    ------
    CheckpointError
        No config.json or checkpoint, or one that does not fit the config.
    """
    run = Path(run_dir)
    path = run / CONFIG_JSON
    try:
        doc = json.loads(path.read_text())
        cfg = resolve_config(config_from_dict(doc["config"]))
        input_shape = tuple(int(v) for v in doc["input_shape"])
        num_classes = int(doc["num_classes"])
    except FileNotFoundError:
        raise CheckpointError(f"{run} has no {CONFIG_JSON}; run the training first") from None
    except (OSError, ValueError, KeyError, TypeError, InputError) as exc:
        raise CheckpointError(f"{path} is not a run's config ({exc})") from exc
    dtype = torch_dtype(cfg.dtype)
    model = make_model(cfg, input_shape, num_classes).to(device=device, dtype=dtype)
    state, _ = load_latest_checkpoint(run / CHECKPOINT, required=("model",))
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"the checkpoint in {run} does not fit its config.json ({str(exc)[:300]})"
        ) from exc
    model.eval()
    return cfg, model


def torch_dtype(name: str) -> Any:
    """The torch dtype of a config's ``dtype`` option."""
    import torch

    return torch.float64 if name == "float64" else torch.float32
