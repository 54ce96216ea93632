"""The data sets, declared once: one :class:`DatasetSpec` each, and the one name canonicaliser.

Everything the toolkit knows about a data set without reading a file lives on its spec: classes,
image shape, split sizes, normalisation, the folder and files under the data root per split,
the reader, the training presets, the paper's Table I row it uses, its aliases and its
torchvision class. :mod:`resnet_pfc.data` (loading), :mod:`resnet_pfc.formats` (the readers'
folders), :mod:`resnet_pfc.config` (presets, ``--dataset``, the paper's model) and :mod:`pfc`
read this registry; nothing else lists data sets. The module imports neither torch nor the
readers, so option parsers (``pfc --help``) can list the names.

Adding a data set is one :class:`DatasetSpec` in ``_SPECS`` (or :func:`register_dataset` at run
time) plus, for a new file format, its reader in :mod:`resnet_pfc.formats`.

>>> from resnet_pfc.datasets import canonical_name, DATASET_SPECS
>>> canonical_name("Fashion-MNIST"), DATASET_SPECS["cifar10"].num_classes
('fashion_mnist', 10)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from ufm.errors import InputError
from ufm.validate import describe

__all__ = [
    "DatasetSpec",
    "DATASET_SPECS",
    "DATASETS",
    "canonical_name",
    "register_dataset",
    "unregister_dataset",
]


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about one data set (no file access).

    Attributes
    ----------
    name : str
        Canonical name (lower case, ``_`` between words).
    num_classes : int
        Number of classes ``K``.
    input_shape : tuple of int
        Shape ``(C, H, W)`` of one image.
    train_size, test_size : int
        Number of samples in the full splits.
    mean, std : tuple of float
        Per-channel normalisation constants (after scaling pixels to ``[0, 1]``).
    folder : str
        Folder under ``data_root`` that holds the files (empty for an embedded set).
    split_files : dict of str to tuple of str
        The files each split needs (``"train"``, ``"test"``), relative to ``data_root``; empty
        for an embedded set (``digits``, ``mnist_5k``), which needs no data root.
    reader : str or callable
        ``(root, split) -> (images (N, C, H, W) with values in [0, pixel_max], int labels,
        class names)``, or ``"module:function"`` naming it (imported on first use, so that
        this module stays light). ``root`` is ``None`` for an embedded set.
    pixel_max : float
        Largest pixel value of the reader's images (255 for 8-bit images, 16 for ``digits``).
    preset : dict
        Training defaults when a field of :class:`resnet_pfc.TrainConfig` is ``None``:
        ``epochs``, ``lr``, ``eval_every``.
    table_i : str or None
        Key of :data:`resnet_pfc.models.TABLE_I` whose paper model this set uses (``None``: the
        fully connected default).
    aliases : tuple of str
        Other spellings accepted by :func:`canonical_name` (after lower-casing and ``-`` to
        ``_``).
    torchvision : str or None
        Class name in ``torchvision.datasets`` that reads and downloads it (``None``: none).
    loader : str
        How it is read, recorded in the data set (``"sklearn"``, ``"packaged-file"``,
        ``"builtin"``).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    train_size: int
    test_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    reader: str | Callable[..., Any]
    folder: str = ""
    split_files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    pixel_max: float = 255.0
    preset: Mapping[str, Any] = field(
        default_factory=lambda: {"epochs": 350, "lr": 0.05, "eval_every": 10}
    )
    table_i: str | None = None
    aliases: tuple[str, ...] = ()
    torchvision: str | None = None
    loader: str = "builtin"

    @property
    def dim(self) -> int:
        """Number of input features ``C*H*W``."""
        return int(np.prod(self.input_shape))

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of both splits, relative to ``data_root`` (each once, in order)."""
        return tuple(dict.fromkeys(f for fs in self.split_files.values() for f in fs))

    @property
    def embedded(self) -> bool:
        """Whether it ships with the toolkit or its dependencies (no data root needed)."""
        return not self.split_files

    def read(self, root: Any, split: str) -> tuple[Any, Any, list[str] | None]:
        """Call the reader (resolving a ``"module:function"`` name first)."""
        fn = self.reader
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        out = fn(root, split)
        if not (isinstance(out, tuple) and len(out) == 3):
            raise InputError(
                f"the reader of data set {self.name!r} must return (images, labels, class "
                f"names), got {describe(out)}; fix its DatasetSpec.reader"
            )
        images, labels, classes = out
        shape = getattr(images, "shape", None)
        lab = np.asarray(labels)
        if shape is None or tuple(shape[1:]) != tuple(self.input_shape) or lab.shape != shape[:1]:
            raise InputError(
                f"the reader of data set {self.name!r} returned images of shape {shape} and "
                f"labels of shape {lab.shape}; expected (N, {', '.join(map(str, self.input_shape))}"
                ") and (N,) as its DatasetSpec.input_shape says"
            )
        if lab.size and (
            not np.issubdtype(lab.dtype, np.integer)
            or lab.min() < 0
            or lab.max() >= self.num_classes
        ):
            raise InputError(
                f"the reader of data set {self.name!r} returned labels outside 0..{self.num_classes - 1}"
                f" ({describe(labels)}); the files are corrupted or the DatasetSpec's num_classes "
                "is wrong"
            )
        return images, lab, classes


# Per data set constants computed from the files (recomputed and compared in the tests).
_DIGITS = {"mean": (0.30570,), "std": (0.37619,)}
_MNIST5K = {"mean": (0.13107,), "std": (0.30828,)}
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _in(folder: str, files: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    return {s: tuple(f"{folder}/{f}" for f in fs) for s, fs in files.items()}


_CIFAR10 = "cifar-10-batches-py"
_CIFAR100 = "cifar-100-python"
_STL10 = "stl10_binary"

_SPECS = (
    DatasetSpec(
        "digits", 10, (1, 8, 8), 1347, 450, **_DIGITS,
        reader="resnet_pfc.data:read_digits", pixel_max=16.0,
        preset={"epochs": 60, "lr": 0.1, "eval_every": 5}, table_i="digits", loader="sklearn",
    ),
    DatasetSpec(
        "mnist_5k", 10, (1, 28, 28), 4000, 1000, **_MNIST5K,
        reader="resnet_pfc.data:read_mnist_5k",
        preset={"epochs": 350, "lr": 0.01, "eval_every": 10}, table_i="mnist",
        aliases=("mnist5k",), loader="packaged-file",
    ),
    DatasetSpec(
        "mnist", 10, (1, 28, 28), 60000, 10000, (0.1307,), (0.3081,),
        reader="resnet_pfc.formats:read_mnist", folder="MNIST/raw",
        split_files=_in("MNIST/raw", _MNIST_FILES),
        preset={"epochs": 350, "lr": 0.01, "eval_every": 10}, table_i="mnist",
        torchvision="MNIST",
    ),
    DatasetSpec(
        "fashion_mnist", 10, (1, 28, 28), 60000, 10000, (0.2860,), (0.3530,),
        reader="resnet_pfc.formats:read_fashion_mnist", folder="FashionMNIST/raw",
        split_files=_in("FashionMNIST/raw", _MNIST_FILES), table_i="fashion_mnist",
        aliases=("fashionmnist",), torchvision="FashionMNIST",
    ),
    # CIFAR10's std is the per-pixel one (0.247/0.243/0.261), not the frequently copied
    # 0.2023/0.1994/0.2010, which is the std of per-image means.
    DatasetSpec(
        "cifar10", 10, (3, 32, 32), 50000, 10000,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        reader="resnet_pfc.formats:read_cifar10", folder=_CIFAR10,
        split_files=_in(_CIFAR10, {
            "train": (*(f"data_batch_{i}" for i in range(1, 6)), "batches.meta"),
            "test": ("test_batch", "batches.meta"),
        }),
        table_i="cifar10", aliases=("cifar_10",), torchvision="CIFAR10",
    ),
    DatasetSpec(
        "cifar100", 100, (3, 32, 32), 50000, 10000,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        reader="resnet_pfc.formats:read_cifar100", folder=_CIFAR100,
        split_files=_in(_CIFAR100, {"train": ("train", "meta"), "test": ("test", "meta")}),
        table_i="cifar100", aliases=("cifar_100",), torchvision="CIFAR100",
    ),
    DatasetSpec(
        "stl10", 10, (3, 96, 96), 5000, 8000,
        (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713),
        reader="resnet_pfc.formats:read_stl10", folder=_STL10,
        split_files=_in(_STL10, {
            "train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin"),
        }),
        table_i="stl10", aliases=("stl_10",), torchvision="STL10",
    ),
)  # fmt: skip

_REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in _SPECS}
#: Every data set, by canonical name (a read-only view; :func:`register_dataset` adds one).
DATASET_SPECS: Mapping[str, DatasetSpec] = MappingProxyType(_REGISTRY)
#: The built-in data sets' names, in order.
DATASETS: tuple[str, ...] = tuple(s.name for s in _SPECS)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def canonical_name(name: Any) -> str:
    """The canonical name of data set ``name``: case, ``-``/``_`` and the aliases of its
    :class:`DatasetSpec` are free (``"Fashion-MNIST"``, ``"fashionmnist"`` and
    ``"fashion_mnist"`` all give ``"fashion_mnist"``). Every entry point (``load_dataset``,
    ``TrainConfig``, ``--dataset``) goes through it.

    Raises
    ------
    ufm.errors.InputError
        Not a string, or not a registered data set; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise InputError(
            f"dataset must be a string, one of {', '.join(_REGISTRY)}; got {describe(name)}"
        )
    key = _key(name)
    for spec in _REGISTRY.values():
        if key == spec.name or key in spec.aliases:
            return spec.name
    raise InputError(
        f"unknown data set name {name!r}; valid names are {', '.join(_REGISTRY)} (case and "
        "'-'/'_' are free, e.g. mnist-5k, Fashion-MNIST)"
    )


def register_dataset(spec: DatasetSpec) -> None:
    """Add a data set to :data:`DATASET_SPECS` (a new name, no clash with another's aliases).

    Raises
    ------
    InputError
        ``spec`` is not a :class:`DatasetSpec`, or its name or an alias is taken.
    """
    if not isinstance(spec, DatasetSpec):
        raise InputError(f"register_dataset takes a DatasetSpec, got {describe(spec)}")
    taken = {n for s in _REGISTRY.values() for n in (s.name, *s.aliases)}
    clash = sorted(taken & {spec.name, *spec.aliases})
    if clash or spec.name != _key(spec.name):
        raise InputError(
            f"data set name {spec.name!r} must be lower case with '_' and new; taken: {clash}"
        )
    _REGISTRY[spec.name] = spec


def unregister_dataset(name: str) -> None:
    """Remove a data set added by :func:`register_dataset` (the built-in ones stay).

    Raises
    ------
    InputError
        ``name`` is built in or not registered.
    """
    if name in DATASETS or name not in _REGISTRY:
        raise InputError(f"{name!r} is not a data set added by register_dataset")
    del _REGISTRY[name]
