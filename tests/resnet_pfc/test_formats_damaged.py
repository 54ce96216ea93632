"""Damaged or crafted data-set files give one clear error naming the file (never a raw
ValueError or EOFError from NumPy or gzip)."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest
from tiny_data import write_cifar10

import resnet_pfc.data as D
from ufm.errors import InputError


def _idx(arr: np.ndarray) -> bytes:
    head = (0x0800 + arr.ndim).to_bytes(4, "big")
    head += b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write_mnist_gz(root: Path, cut: dict[str, int] | None = None) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 20)):
        files = {
            f"{prefix}-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (n, 28, 28))),
            f"{prefix}-labels-idx1-ubyte.gz": _idx(np.arange(n) % 10),
        }
        for name, data in files.items():
            blob = gzip.compress(data)
            if cut and name in cut:
                blob = blob[: cut[name]]
            (raw / name).write_bytes(blob)
    return raw


@pytest.mark.parametrize("route", ["builtin", "torchvision"])
@pytest.mark.parametrize("where", [40, 200, -8])
def test_truncated_mnist_gz_is_a_clear_error(tmp_path, monkeypatch, route, where):
    if route == "builtin":
        monkeypatch.setattr(D, "_torchvision_datasets", lambda: None)
    blob_len = len(gzip.compress(_idx(np.random.default_rng(0).integers(0, 256, (30, 28, 28)))))
    cut = where if where > 0 else blob_len + where
    _write_mnist_gz(tmp_path, {"train-images-idx3-ubyte.gz": cut})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match=r"train-images-idx3-ubyte\.gz") as exc:
            D.load_dataset("mnist", split="train", data_root=tmp_path)
    assert "download" in str(exc.value)


def test_intact_mnist_gz_reads(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "_torchvision_datasets", lambda: None)
    _write_mnist_gz(tmp_path)
    ds = D.load_dataset("mnist", split="test", data_root=tmp_path)
    assert len(ds) == 20 and ds.y.tolist() == [i % 10 for i in range(20)]


_DATA = np.zeros((2, 3072), dtype=np.uint8)


@pytest.mark.parametrize(
    "batch,match",
    [
        ({"labels": [0, 1], "data": [[1, 2], [3]]}, "entry 'data' is not an array"),
        ({"labels": [0, 1], "data": "text"}, "entry 'data' holds <U4 values"),
        (
            {"labels": [0, 1], "data": np.full((2, 3072), 300)},
            r"values 300\.\.300, expected 0\.\.255",
        ),
        ({"labels": [0, 1], "data": np.full((2, 3072), -1)}, "values -1..-1"),
        ({"labels": [0, 1], "data": np.full((2, 3072), 0.5)}, "float64 values, expected integers"),
        ({"labels": ["a", "b"], "data": _DATA}, "entry 'labels' holds <U1 values"),
        ({"labels": [0.5, 1.5], "data": _DATA}, "entry 'labels' holds float64"),
        ({"labels": [[0, 1]], "data": _DATA}, "one label per image"),
        ({"labels": [0, 2**70], "data": _DATA}, "entry 'labels'"),
        ({"labels": [0, 12], "data": _DATA}, "expected 0..9"),
        ({"labels": 3, "data": _DATA}, "one label per image"),
    ],
)
def test_crafted_cifar_batch_is_a_clear_error(tmp_path, monkeypatch, batch, match):
    monkeypatch.setattr(D, "_torchvision_datasets", lambda: None)
    write_cifar10(tmp_path, batch)
    with pytest.raises(InputError, match=match) as exc:
        D.load_dataset("cifar10", split="test", data_root=tmp_path)
    assert "test_batch" in str(exc.value)


@pytest.mark.parametrize("names", [3, [1, 2], "abc"])
def test_crafted_cifar_class_names(tmp_path, monkeypatch, names):
    monkeypatch.setattr(D, "_torchvision_datasets", lambda: None)
    write_cifar10(tmp_path, {"labels": [0, 1], "data": _DATA}, {"label_names": names})
    with pytest.raises(InputError, match="batches.meta.*list of class names"):
        D.load_dataset("cifar10", split="test", data_root=tmp_path)
