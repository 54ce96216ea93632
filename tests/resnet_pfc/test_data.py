"""Tests of resnet_pfc.data on files written here in the real on-disk formats (no network)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resnet_pfc import data as D
from resnet_pfc.data import DATASETS, balanced_subset, dataset_info, load_dataset
from ufm.errors import InputError, PFCWarning

# ------------------------------------------------------------------------------------------------
# writers of the real formats (written from the format descriptions, independently of the reader)


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = False) -> None:
    """IDX: 0x00 0x00 0x08 ndim, then big-endian uint32 sizes, then the bytes."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    payload = head + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def make_images(rng, n, c, h, w):
    return rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


def make_labels(rng, k, per):
    y = np.repeat(np.arange(k), per)
    return y[rng.permutation(y.size)]


def write_mnist(root: Path, folder: str, rng, *, per=(3, 2), gz=False):
    out = {}
    for split, prefix, n_per in (("train", "train", per[0]), ("test", "t10k", per[1])):
        y = make_labels(rng, 10, n_per)
        x = make_images(rng, y.size, 1, 28, 28)
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", x[:, 0], gz=gz)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", y, gz=gz)
        out[split] = (x, y)
    return out


def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_rows(x: np.ndarray) -> np.ndarray:
    """CIFAR row layout: 1024 red, then 1024 green, then 1024 blue, each row-major 32x32."""
    n = x.shape[0]
    rows = np.empty((n, 3072), dtype=np.uint8)
    for c in range(3):
        for h in range(32):
            rows[:, c * 1024 + h * 32 : c * 1024 + h * 32 + 32] = x[:, c, h, :]
    return rows


def write_cifar10(root: Path, rng, per=(1, 2)):
    folder = root / "cifar-10-batches-py"
    xs, ys = [], []
    for i in range(1, 6):
        y = make_labels(rng, 10, per[0])
        x = make_images(rng, y.size, 3, 32, 32)
        _pickle(
            folder / f"data_batch_{i}",
            {
                "batch_label": f"training batch {i} of 5",
                "labels": y.tolist(),
                "data": cifar_rows(x),
                "filenames": [f"f{j}.png" for j in range(y.size)],
            },
        )
        xs.append(x)
        ys.append(y)
    yt = make_labels(rng, 10, per[1])
    xt = make_images(rng, yt.size, 3, 32, 32)
    _pickle(folder / "test_batch", {"labels": yt.tolist(), "data": cifar_rows(xt)})
    names = [f"name{k}" for k in range(10)]
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 10})
    return {"train": (np.concatenate(xs), np.concatenate(ys)), "test": (xt, yt)}, names


def write_cifar100(root: Path, rng, per=(2, 1)):
    folder = root / "cifar-100-python"
    out = {}
    for split, n_per in (("train", per[0]), ("test", per[1])):
        y = make_labels(rng, 100, n_per)
        x = make_images(rng, y.size, 3, 32, 32)
        _pickle(
            folder / split,
            {"fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist(), "data": cifar_rows(x)},
        )
        out[split] = (x, y)
    names = [f"fine{k}" for k in range(100)]
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": ["c"] * 20})
    return out, names


def write_stl10(root: Path, rng, per=(2, 1)):
    """STL10 binary: uint8 images 3x96x96, each channel stored column-major; labels 1..10."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n_per in (("train", per[0]), ("test", per[1])):
        y = make_labels(rng, 10, n_per)
        x = make_images(rng, y.size, 3, 96, 96)
        (folder / f"{split}_X.bin").write_bytes(
            np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes()
        )
        (folder / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())
        out[split] = (x, y)
    return out


def expected(u8: np.ndarray, name: str) -> torch.Tensor:
    mean, std = D.NORMALISATION[name]
    m = np.asarray(mean, dtype=np.float64).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float64).reshape(1, -1, 1, 1)
    return torch.from_numpy((u8 / 255.0 - m) / s)


def check_loaded(ds, u8, y, name, split):
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert ds.name == name and ds.split == split
    assert ds.input_shape == dataset_info(name).input_shape == tuple(u8.shape[1:])
    assert ds.num_classes == dataset_info(name).num_classes
    np.testing.assert_array_equal(ds.y.numpy(), y)
    np.testing.assert_allclose(ds.x.double(), expected(u8, name), rtol=0, atol=2e-6)
    xi, yi = ds[3]
    assert xi.shape == ds.input_shape and int(yi) == int(y[3])


@pytest.fixture
def no_torchvision(monkeypatch):
    monkeypatch.setattr(D, "_torchvision_datasets", lambda: None)


@pytest.fixture
def lenient_torchvision(monkeypatch):
    """Make torchvision's md5 checks existence checks, so that its classes read the tiny files."""
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.stl10 as tv_stl

    def exists(fpath, md5=None):
        return Path(fpath).is_file()

    monkeypatch.setattr(tv_cifar, "check_integrity", exists)
    monkeypatch.setattr(tv_stl, "check_integrity", exists)


# ------------------------------------------------------------------------------------------------
# digits


def test_digits_split_sizes_and_stratification():
    from sklearn.datasets import load_digits

    labels = load_digits().target
    tr = load_dataset("digits", split="train")
    te = load_dataset("digits", split="test")
    assert (len(tr), len(te)) == (1347, 450)
    assert tr.input_shape == (1, 8, 8) and tr.num_classes == 10 and tr.loader == "sklearn"
    n_k = np.bincount(labels)
    np.testing.assert_array_equal(te.class_counts(), np.round(0.25 * n_k).astype(int))
    np.testing.assert_array_equal(tr.class_counts() + te.class_counts(), n_k)


def test_digits_split_is_a_partition_of_the_raw_images():
    from sklearn.datasets import load_digits

    b = load_digits()
    raw = {(int(t), img.tobytes()) for img, t in zip(b.images.astype(np.float32), b.target)}
    got = []
    for split in ("train", "test"):
        ds = load_dataset("digits", split=split, normalize=False)
        imgs = (ds.x.numpy()[:, 0] * 16).round().astype(np.float32)
        got += [(int(t), im.tobytes()) for im, t in zip(imgs, ds.y.numpy())]
    # duplicates exist in the digits, so compare multisets through sorted lists
    assert sorted(got) == sorted(
        (int(t), img.astype(np.float32).tobytes()) for img, t in zip(b.images, b.target)
    )
    assert set(got) == raw


def test_digits_normalisation_constants_match_training_split():
    raw = load_dataset("digits", split="train", normalize=False).x.double()
    np.testing.assert_allclose(float(raw.mean()), D.DIGITS_MEAN, atol=1e-5)
    np.testing.assert_allclose(float(raw.std(unbiased=False)), D.DIGITS_STD, atol=1e-5)
    ds = load_dataset("digits")
    np.testing.assert_allclose(ds.x.double(), (raw - D.DIGITS_MEAN) / D.DIGITS_STD, atol=1e-6)


def test_digits_split_does_not_depend_on_seed():
    a = load_dataset("digits", split="test", seed=0)
    b = load_dataset("digits", split="test", seed=5)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


# ------------------------------------------------------------------------------------------------
# per_class subsets


def test_per_class_balanced_deterministic_and_a_subset():
    full = load_dataset("digits")
    a = load_dataset("digits", per_class=7, seed=3)
    b = load_dataset("digits", per_class=7, seed=3)
    c = load_dataset("digits", per_class=7, seed=4)
    np.testing.assert_array_equal(a.class_counts(), np.full(10, 7))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    idx = balanced_subset(full.y.numpy(), 7, num_classes=10, seed=3)
    assert torch.equal(a.x, full.x[idx]) and torch.equal(a.y, full.y[idx])


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=2, max_size=6),
    per=st.integers(1, 12),
    seed=st.integers(0, 2**31),
)
def test_balanced_subset_invariants(counts, per, seed):
    k = len(counts)
    y = np.random.default_rng(seed).permutation(np.repeat(np.arange(k), counts))
    if per > min(counts):
        with pytest.raises(InputError, match="per_class"):
            balanced_subset(y, per, num_classes=k, seed=seed)
        return
    idx = balanced_subset(y, per, num_classes=k, seed=seed)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)  # sorted, no repeats
    np.testing.assert_array_equal(np.bincount(y[idx], minlength=k), np.full(k, per))
    np.testing.assert_array_equal(idx, balanced_subset(y, per, num_classes=k, seed=seed))


def test_per_class_too_large_names_the_class():
    with pytest.raises(InputError, match=r"per_class=46.*smallest class has 44"):
        load_dataset("digits", split="test", per_class=46)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_per_class_must_be_positive_int(bad):
    with pytest.raises(InputError, match="per_class"):
        load_dataset("digits", per_class=bad)


# ------------------------------------------------------------------------------------------------
# names, splits, info


def test_unknown_name_lists_valid_names():
    with pytest.raises(InputError) as err:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(err.value)
    with pytest.raises(InputError):
        load_dataset(3)


def test_name_aliases_and_info():
    assert D.canonical_name("Fashion-MNIST") == "fashion_mnist"
    assert D.canonical_name("CIFAR-10") == "cifar10"
    info = dataset_info("stl10")
    assert info.input_shape == (3, 96, 96) and info.dim == 27648 and info.num_classes == 10
    assert dataset_info("cifar100").num_classes == 100


@pytest.mark.parametrize("bad", ["val", "Train", None])
def test_bad_split(bad):
    with pytest.raises(InputError, match="split"):
        load_dataset("digits", split=bad)


def test_bad_seed_and_download():
    with pytest.raises(InputError, match="seed"):
        load_dataset("digits", seed=-1)
    with pytest.raises(InputError, match="download"):
        load_dataset("mnist", data_root="x", download="yes")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "stl10"])
def test_missing_root_says_where_and_what_to_do(tmp_path, name):
    with pytest.raises(InputError) as err:
        load_dataset(name, data_root=tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg
    assert "--data-root" in msg and "--download" in msg
    assert dataset_info(name).folder in msg


def test_default_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PFC_DATA_ROOT", str(tmp_path))
    assert D.default_data_root() == tmp_path
    with pytest.raises(InputError, match=str(tmp_path)):
        load_dataset("mnist")
    monkeypatch.delenv("PFC_DATA_ROOT")
    assert D.default_data_root() == Path("data")


# ------------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST (IDX files)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_through_torchvision(tmp_path, name, folder):
    truth = write_mnist(tmp_path, folder, np.random.default_rng(1))
    for split in ("train", "test"):
        ds = load_dataset(name, split=split, data_root=tmp_path)
        assert ds.loader == "torchvision"
        check_loaded(ds, *truth[split], name, split)
        assert len(ds.classes) == 10


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_builtin_reader_agrees(tmp_path, no_torchvision, name, folder):
    truth = write_mnist(tmp_path, folder, np.random.default_rng(2))
    ds = load_dataset(name, split="test", data_root=tmp_path)
    assert ds.loader == "builtin"
    check_loaded(ds, *truth["test"], name, "test")


def test_mnist_gz_only_files(tmp_path):
    truth = write_mnist(tmp_path, "MNIST", np.random.default_rng(3), gz=True)
    ds = load_dataset("mnist", data_root=tmp_path, per_class=2, seed=1)
    assert ds.loader == "builtin"
    x, y = truth["train"]
    idx = balanced_subset(y, 2, num_classes=10, seed=1)
    check_loaded(ds, x[idx], y[idx], "mnist", "train")


def test_mnist_normalize_false_is_pixels_over_255(tmp_path):
    truth = write_mnist(tmp_path, "MNIST", np.random.default_rng(4))
    ds = load_dataset("mnist", data_root=tmp_path, normalize=False)
    np.testing.assert_allclose(ds.x.numpy(), truth["train"][0] / 255.0, rtol=1e-7)


def test_idx_bad_magic_and_truncation(tmp_path, no_torchvision):
    write_mnist(tmp_path, "MNIST", np.random.default_rng(5))
    raw = tmp_path / "MNIST" / "raw"
    good = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(good[:-5])
    with pytest.raises(InputError, match="truncated"):
        load_dataset("mnist", data_root=tmp_path)
    (raw / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 2]) + good[4:])
    with pytest.raises(InputError, match="magic"):
        load_dataset("mnist", data_root=tmp_path)


def test_idx_errors_also_with_torchvision_installed(tmp_path):
    write_mnist(tmp_path, "MNIST", np.random.default_rng(6))
    raw = tmp_path / "MNIST" / "raw"
    good = (raw / "t10k-images-idx3-ubyte").read_bytes()
    (raw / "t10k-images-idx3-ubyte").write_bytes(good[:-5])
    with pytest.raises(InputError, match="truncated"):
        load_dataset("mnist", split="test", data_root=tmp_path)


def test_labels_out_of_range_and_count_mismatch(tmp_path):
    rng = np.random.default_rng(7)
    write_mnist(tmp_path, "MNIST", rng)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-labels-idx1-ubyte", np.full(30, 11))
    with pytest.raises(InputError, match="0..9"):
        load_dataset("mnist", data_root=tmp_path)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(29))
    with pytest.raises(InputError):
        load_dataset("mnist", data_root=tmp_path)


def test_download_passes_through_to_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def fake_download(self):
        calls.append(self.train)
        write_mnist(Path(self.root), "MNIST", np.random.default_rng(8))

    monkeypatch.setattr(tvd.MNIST, "download", fake_download)
    ds = load_dataset("mnist", data_root=tmp_path, download=True)
    assert calls == [True, False] and len(ds) == 30

    def offline(self):
        raise URLError("no network")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(InputError, match="download.*failed.*--data-root"):
        load_dataset("mnist", data_root=tmp_path / "other", download=True)


def test_download_needs_torchvision(tmp_path, no_torchvision):
    with pytest.raises(InputError, match="torchvision"):
        load_dataset("cifar10", data_root=tmp_path, download=True)


# ------------------------------------------------------------------------------------------------
# CIFAR10 / CIFAR100 (python pickles)


def test_cifar10_builtin_when_md5_disagrees(tmp_path):
    truth, names = write_cifar10(tmp_path, np.random.default_rng(10))
    for split in ("train", "test"):
        with pytest.warns(PFCWarning, match="md5"):
            ds = load_dataset("cifar10", split=split, data_root=tmp_path)
        assert ds.loader == "builtin" and ds.classes == names
        check_loaded(ds, *truth[split], "cifar10", split)


def test_cifar10_torchvision_route_agrees(tmp_path, lenient_torchvision):
    truth, names = write_cifar10(tmp_path, np.random.default_rng(11))
    ds = load_dataset("cifar10", data_root=tmp_path)
    assert ds.loader == "torchvision" and ds.classes == names
    check_loaded(ds, *truth["train"], "cifar10", "train")


def test_cifar100(tmp_path, lenient_torchvision):
    truth, names = write_cifar100(tmp_path, np.random.default_rng(12))
    ds = load_dataset("cifar100", split="test", data_root=tmp_path)
    assert ds.loader == "torchvision" and ds.num_classes == 100 and ds.classes == names
    check_loaded(ds, *truth["test"], "cifar100", "test")


def test_cifar100_builtin(tmp_path, no_torchvision):
    truth, names = write_cifar100(tmp_path, np.random.default_rng(13))
    ds = load_dataset("cifar100", data_root=tmp_path, per_class=1, seed=2)
    x, y = truth["train"]
    idx = balanced_subset(y, 1, num_classes=100, seed=2)
    check_loaded(ds, x[idx], y[idx], "cifar100", "train")
    assert ds.classes == names


def test_cifar_malformed(tmp_path, no_torchvision):
    write_cifar10(tmp_path, np.random.default_rng(14))
    folder = tmp_path / "cifar-10-batches-py"
    _pickle(folder / "test_batch", {"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(InputError, match="'labels'"):
        load_dataset("cifar10", split="test", data_root=tmp_path)
    _pickle(folder / "test_batch", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(InputError, match="3072"):
        load_dataset("cifar10", split="test", data_root=tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="pickle"):
        load_dataset("cifar10", split="test", data_root=tmp_path)
    (folder / "batches.meta").unlink()
    with pytest.raises(InputError, match="batches.meta"):
        load_dataset("cifar10", data_root=tmp_path)


def test_cifar_bytes_keys_accepted(tmp_path, no_torchvision):
    truth, _ = write_cifar10(tmp_path, np.random.default_rng(15))
    folder = tmp_path / "cifar-10-batches-py"
    x, y = truth["test"]
    _pickle(folder / "test_batch", {b"labels": y.tolist(), b"data": cifar_rows(x)})
    _pickle(folder / "batches.meta", {b"label_names": [b"a"] * 10})
    ds = load_dataset("cifar10", split="test", data_root=tmp_path)
    check_loaded(ds, x, y, "cifar10", "test")
    assert ds.classes == ["a"] * 10


# ------------------------------------------------------------------------------------------------
# STL10 (binary)


def test_stl10_builtin_and_torchvision_agree(tmp_path, lenient_torchvision):
    truth = write_stl10(tmp_path, np.random.default_rng(20))
    with pytest.warns(PFCWarning):  # torchvision also wants unlabeled_X.bin
        ds = load_dataset("stl10", data_root=tmp_path)
    assert ds.loader == "builtin" and ds.input_shape == (3, 96, 96)
    check_loaded(ds, *truth["train"], "stl10", "train")
    (tmp_path / "stl10_binary" / "unlabeled_X.bin").write_bytes(b"")
    for split in ("train", "test"):
        tv = load_dataset("stl10", split=split, data_root=tmp_path)
        assert tv.loader == "torchvision"
        check_loaded(tv, *truth[split], "stl10", split)


def test_stl10_bad_files(tmp_path, no_torchvision):
    write_stl10(tmp_path, np.random.default_rng(21))
    folder = tmp_path / "stl10_binary"
    (folder / "test_y.bin").write_bytes(bytes([0] * 10))  # labels are stored 1..10
    with pytest.raises(InputError, match="labels"):
        load_dataset("stl10", split="test", data_root=tmp_path)
    (folder / "test_X.bin").write_bytes(bytes(27648 + 1))
    with pytest.raises(InputError, match="multiple"):
        load_dataset("stl10", split="test", data_root=tmp_path)
