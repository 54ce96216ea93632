"""Small shared test inputs: a tiny training run and fake CIFAR-10 folders.

Importable from every test module (``tests/conftest.py`` puts ``tests/`` on ``sys.path``),
including module-scoped fixtures, which cannot take the function-scoped ``tiny_run`` fixture.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

#: A tiny training run on the embedded digits (keyword arguments of ``TrainConfig``).
TINY_RUN = dict(
    dataset="digits",
    per_class=10,
    width=16,
    blocks=2,
    batch_size=20,
    eval_every=1,
    geodesic_points=11,
    geodesic_pass2_points=3,
    eval_batch_size=64,
    progress=False,
    figures=False,
)


def write_cifar10(root: Path, test_batch: object, meta: object | None = None) -> Path:
    """A ``cifar-10-batches-py`` folder under ``root`` with five good training batches of ten
    images, the given ``test_batch`` object and ``meta`` (ten label names by default)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    good = {"labels": list(range(10)), "data": rng.integers(0, 256, (10, 3072), dtype=np.uint8)}
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(good, protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(test_batch, protocol=2))
    meta = {"label_names": list("abcdefghij")} if meta is None else meta
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return folder
