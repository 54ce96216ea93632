"""The data-set registry (resnet_pfc.datasets): one spec per set, one canonicaliser for every
entry point, and a data set added by one DatasetSpec."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from resnet_pfc import train
from resnet_pfc.config import PRESETS, TrainConfig, dataset_arg, resolve_config
from resnet_pfc.data import load_dataset
from resnet_pfc.datasets import (
    DATASET_SPECS,
    DATASETS,
    DatasetSpec,
    canonical_name,
    register_dataset,
    unregister_dataset,
)
from resnet_pfc.runs import read_csv
from ufm.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "spelling, name",
    [
        ("fashionmnist", "fashion_mnist"),
        ("Fashion-MNIST", "fashion_mnist"),
        ("mnist-5k", "mnist_5k"),
        ("MNIST5K", "mnist_5k"),
        ("CIFAR-10", "cifar10"),
        ("cifar_100", "cifar100"),
        ("STL-10", "stl10"),
    ],
)
def test_every_entry_point_accepts_every_spelling(spelling, name):
    assert canonical_name(spelling) == name
    assert dataset_arg(spelling) == name  # --dataset of pfc train, python -m resnet_pfc, pfc depth
    assert resolve_config(TrainConfig(dataset=spelling, out="x")).dataset == name


def test_unknown_names_are_refused_alike():
    with pytest.raises(InputError, match="valid names are digits, mnist_5k"):
        canonical_name("imagenet")
    with pytest.raises(argparse.ArgumentTypeError, match="valid names"):
        dataset_arg("imagenet")
    with pytest.raises(InputError, match="valid names"):
        load_dataset("imagenet")


def test_pfc_train_parses_an_alias():
    from pfc.cli import build_parser

    args = build_parser().parse_args(["train", "--dataset", "fashionmnist", "--out", "r"])
    assert args.dataset == "fashion_mnist"


def test_tables_are_read_off_the_specs():
    assert DATASETS == tuple(DATASET_SPECS)
    assert PRESETS == {n: dict(s.preset) for n, s in DATASET_SPECS.items()}
    for s in DATASET_SPECS.values():
        assert s.embedded == (s.name in ("digits", "mnist_5k"))
        assert len(s.mean) == len(s.std) == s.input_shape[0]


def test_no_other_module_lists_the_data_sets():
    # a data set is declared once: besides the registry only the paper's Table I (models.py,
    # which DatasetSpec.table_i keys) and the readers of each format (formats.py) name them
    pattern = ('"cifar100"', '"stl10"')
    hits = [
        str(p.relative_to(ROOT))
        for pkg in ("resnet_pfc", "pfc", "ufm", "mufm", "proofs_check")
        for p in (ROOT / pkg).rglob("*.py")
        if all(t in p.read_text() for t in pattern)
    ]
    assert sorted(hits) == [
        "resnet_pfc/datasets.py",
        "resnet_pfc/formats.py",
        "resnet_pfc/models.py",
    ], hits


def _toy_reader(root, split):
    rng = np.random.default_rng(0 if split == "train" else 1)
    y = np.repeat(np.arange(3), 12)
    x = (rng.random((36, 1, 4, 4)) * 255).astype(np.uint8)
    x[np.arange(36), 0, y, y] = 255  # a class-dependent bright pixel
    return x, y, ["a", "b", "c"]


@pytest.fixture
def toy_dataset():
    spec = DatasetSpec(
        "toy_pixels", 3, (1, 4, 4), 36, 36, (0.5,), (0.3,), reader=_toy_reader,
        preset={"epochs": 2, "lr": 0.1, "eval_every": 1}, aliases=("toypixels",),
    )  # fmt: skip
    register_dataset(spec)
    yield spec
    unregister_dataset(spec.name)
    assert "toy_pixels" not in DATASET_SPECS


def test_a_registered_data_set_trains(toy_dataset, tmp_path):
    ds = load_dataset("Toy-Pixels")
    assert len(ds) == 36 and ds.num_classes == 3 and ds.input_shape == (1, 4, 4)
    out = tmp_path / "run"
    train(TrainConfig(dataset="toypixels", out=str(out), width=8, blocks=2, progress=False,
                      figures=False, batch_size=12, geodesic_points=3, geodesic_pass2_points=3))  # fmt: skip
    rows = read_csv(out / "metrics.csv")
    assert {r["epoch"] for r in rows} == {0, 1, 2}  # initialisation, then the preset's 2 epochs
    with pytest.raises(InputError, match="taken"):
        register_dataset(toy_dataset)
    with pytest.raises(InputError, match="not a data set added"):
        unregister_dataset("mnist")


@pytest.mark.parametrize(
    "out, match",
    [
        ("nonsense", "must return \\(images, labels, class names\\)"),
        ((np.zeros((4, 1, 4, 4)), np.array([0, 1, 0, 3]), None), "labels outside 0..2"),
        ((np.zeros((4, 1, 4, 4)), np.array([0.0, 1.0, 0.0, 1.0]), None), "labels outside"),
        ((np.zeros((4, 1, 3, 3)), np.array([0, 1, 0, 1]), None), "expected \\(N, 1, 4, 4\\)"),
        ((np.zeros((4, 1, 4, 4)), np.array([0, 1, 0]), None), "labels of shape \\(3,\\)"),
    ],
)
def test_a_readers_output_is_checked(out, match):
    spec = DatasetSpec("toy_bad", 3, (1, 4, 4), 4, 4, (0.5,), (0.3,), reader=lambda r, s: out)
    register_dataset(spec)
    try:
        with pytest.raises(InputError, match=match):
            load_dataset("toy_bad")
    finally:
        unregister_dataset("toy_bad")
