"""Readers of the paper's data-set file formats, independent of torchvision.

MNIST/Fashion-MNIST idx files (optionally gzipped), the CIFAR-10/100 Python pickles (through a
restricted unpickler that builds only dicts, lists, strings, numbers and NumPy arrays, so a
crafted file raises :class:`~ufm.errors.InputError` instead of executing code) and the STL10
binary files. Each reader (``read_mnist``, ``read_fashion_mnist``, ``read_cifar10``, ``read_cifar100``,
``read_stl10``, named by the :class:`~resnet_pfc.datasets.DatasetSpec` of its set) takes ``(root, split)`` and returns
``(uint8 images (N, C, H, W), int64 labels, class names)``; the structure (magic numbers, sizes,
label ranges) is checked instead of checksums. :mod:`resnet_pfc.data` chooses between these and
torchvision and normalises the images.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ufm.errors import InputError

from .datasets import DATASET_SPECS

__all__ = [
    "read_mnist",
    "read_fashion_mnist",
    "read_cifar10",
    "read_cifar100",
    "read_stl10",
    "MNIST_CLASSES",
    "FASHION_CLASSES",
    "STL10_CLASSES",
    "check_labels",
]


MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
STL10_CLASSES = [
    "airplane",
    "bird",
    "car",
    "cat",
    "deer",
    "dog",
    "horse",
    "monkey",
    "ship",
    "truck",
]


def check_labels(labels: np.ndarray, k: int, what: str) -> None:
    """Labels must be integers in ``0..k-1``; ``what`` names them in the error."""
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise InputError(
            f"{what} hold values {int(labels.min())}..{int(labels.max())}, expected 0..{k - 1}; "
            "the files are corrupted or belong to another data set"
        )


# ----------------------------------------------------------------------------------------------
# builtin readers of the same formats


def _read_bytes(path: Path) -> bytes:
    if path.is_file():
        return path.read_bytes()
    gz = path.with_name(path.name + ".gz")
    try:
        return gzip.decompress(gz.read_bytes())
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        # a download cut short, or another file under the name
        raise InputError(
            f"{str(gz)!r} is not a complete gzip file ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:120]}); the download was cut short or the file is "
            "corrupted: delete it and download the data set again (--download)"
        ) from exc


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x00000800 + ndim, big-endian int32 sizes)."""
    data = _read_bytes(path)
    if len(data) < 4 + 4 * ndim:
        raise InputError(f"{str(path)!r} is too short to be an IDX file ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:
        raise InputError(
            f"{str(path)!r} has IDX magic number {magic:#010x}, expected {0x0800 + ndim:#010x} "
            f"(unsigned bytes, {ndim} dimension(s)); the file is corrupted or of another kind"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise InputError(
            f"{str(path)!r} declares shape {tuple(dims)} ({int(np.prod(dims))} bytes) but holds "
            f"{body.size} data bytes; the file is truncated or corrupted"
        )
    return body.reshape(dims)


def _read_mnist_like(key: str) -> Any:
    folder = DATASET_SPECS[key].folder
    default_classes = MNIST_CLASSES if key == "mnist" else FASHION_CLASSES

    def read(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        prefix = "train" if split == "train" else "t10k"
        images = _read_idx(root / folder / f"{prefix}-images-idx3-ubyte", 3)
        labels = _read_idx(root / folder / f"{prefix}-labels-idx1-ubyte", 1).astype(np.int64)
        if images.shape[0] != labels.shape[0]:
            raise InputError(
                f"{key} {split}: {images.shape[0]} images but {labels.shape[0]} labels under "
                f"{str(root / folder)!r}; the files do not belong together"
            )
        check_labels(labels, 10, f"{key} {split} labels")
        return images[:, None, :, :], labels, default_classes

    return read


def _checked_dtype(*args: Any) -> np.dtype:
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"object arrays are not allowed (dtype {dt})")
    return dt


def _numpy_global(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


#: The only globals a CIFAR python pickle needs: NumPy's array reconstruction (NumPy 1 and 2
#: module names; ``_frombuffer`` for protocol-5 pickles) and the array and dtype types.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Python 3 writes bytes under protocol 2 as _codecs.encode(str, "latin1"); a codec only
    # transforms data.
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, tuples, strings, bytes, numbers and NumPy
    arrays of plain dtypes: any other global (``os.system``, ``builtins.eval``, ...) is refused,
    so a crafted file raises instead of executing code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR file (only NumPy arrays, "
                "lists, dicts, strings and numbers are)"
            )
        if name == "dtype":
            return _checked_dtype
        if module == "_codecs":
            import codecs

            return codecs.encode
        try:
            return _numpy_global(module, name)
        except (ImportError, AttributeError):
            # NumPy 2 reads NumPy 1 pickles (numpy.core.*) and vice versa through the other name.
            alt = (
                module.replace("numpy._core", "numpy.core")
                if "_core" in module
                else (module.replace("numpy.core", "numpy._core"))
            )
            return _numpy_global(alt, name)


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, TypeError) as exc:
        raise InputError(
            f"{str(path)!r} is not a readable CIFAR pickle ({type(exc).__name__}: {exc}); "
            "replace it with a fresh copy of the data set"
        ) from exc
    except (IndexError, KeyError, MemoryError, RecursionError) as exc:
        raise InputError(f"{str(path)!r} is a corrupted CIFAR pickle ({exc!r})") from exc
    if not isinstance(obj, dict):
        raise InputError(f"{str(path)!r} holds a {type(obj).__name__}, expected a CIFAR dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    entry = _unpickle(path)
    for need in ("data", label_key):
        if need not in entry:
            raise InputError(
                f"{str(path)!r} has no {need!r} entry (keys: {sorted(entry)}); "
                "the file is corrupted or of another CIFAR version"
            )
    data = _integer_array(entry["data"], path, "data", high=255).astype(np.uint8)
    labels = _integer_array(entry[label_key], path, label_key)
    if labels.ndim != 1:
        raise InputError(
            f"{str(path)!r}: {label_key!r} has shape {labels.shape}, expected one label per "
            "image; the file is corrupted or of another CIFAR version"
        )
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise InputError(
            f"{str(path)!r}: data of shape {data.shape} with {labels.shape[0]} labels, expected "
            "(n, 3072) with n labels"
        )
    check_labels(labels, k, f"labels in {str(path)!r}")
    return data.reshape(-1, 3, 32, 32), labels


def _integer_array(value: Any, path: Path, key: str, *, high: int | None = None) -> np.ndarray:
    """Entry ``key`` of a CIFAR batch as an int64 array: integers only (no silent rounding or
    wrapping of floats, text or values beyond ``0..high``)."""
    fix = "the file is corrupted or of another CIFAR version: replace it with a fresh copy"
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise InputError(
            f"{str(path)!r}: entry {key!r} is not an array ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:100]}); {fix}"
        ) from exc
    if arr.dtype.kind not in "iu":
        raise InputError(
            f"{str(path)!r}: entry {key!r} holds {arr.dtype} values, expected integers; {fix}"
        )
    if arr.size and (int(arr.min()) < 0 or (high is not None and int(arr.max()) > high)):
        raise InputError(
            f"{str(path)!r}: entry {key!r} holds values {int(arr.min())}..{int(arr.max())}, "
            f"expected 0..{high if high is not None else 'K-1'}; {fix}"
        )
    return arr.astype(np.int64)


def _names(path: Path, key: str) -> list[str]:
    meta = _unpickle(path)
    names = meta.get(key)
    if names is None:
        raise InputError(f"{str(path)!r} has no {key!r} entry (keys: {sorted(meta)})")
    if not isinstance(names, list | tuple) or not all(isinstance(n, bytes | str) for n in names):
        raise InputError(
            f"{str(path)!r}: {key!r} must be a list of class names, got "
            f"{type(names).__name__}; the file is corrupted: replace it with a fresh copy"
        )
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def read_cifar10(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = root / DATASET_SPECS["cifar10"].folder
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_cifar_batch(folder / f, "labels", 10) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, _names(folder / "batches.meta", "label_names")


def read_cifar100(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = root / DATASET_SPECS["cifar100"].folder
    images, labels = _cifar_batch(folder / split, "fine_labels", 100)
    return images, labels, _names(folder / "meta", "fine_label_names")


def read_stl10(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = root / DATASET_SPECS["stl10"].folder
    raw = np.fromfile(folder / f"{split}_X.bin", dtype=np.uint8)
    per_image = 3 * 96 * 96
    if raw.size % per_image:
        raise InputError(
            f"{str(folder / f'{split}_X.bin')!r} holds {raw.size} bytes, not a multiple of "
            f"{per_image} (one 3x96x96 image); the file is truncated or corrupted"
        )
    # The binary stores each channel column-major; swap to (C, H, W) row-major.
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    labels = np.fromfile(folder / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
    if labels.size != images.shape[0]:
        raise InputError(
            f"stl10 {split}: {images.shape[0]} images but {labels.size} labels under "
            f"{str(folder)!r}; the files do not belong together"
        )
    check_labels(labels, 10, f"stl10 {split} labels (stored 1..10)")
    names_file = folder / "class_names.txt"
    classes = names_file.read_text().splitlines() if names_file.is_file() else STL10_CLASSES
    return images, labels, classes


#: The idx-file readers (``(root, split)``, as :attr:`resnet_pfc.datasets.DatasetSpec.reader`).
read_mnist = _read_mnist_like("mnist")
read_fashion_mnist = _read_mnist_like("fashion_mnist")
