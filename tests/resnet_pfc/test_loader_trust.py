"""Loading never executes code from a file: checkpoints and CIFAR pickles with a malicious
``__reduce__`` are refused with a toolkit error, and the payload never runs."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_data import write_cifar10

import resnet_pfc.data as D
from resnet_pfc.checkpoint import load_checkpoint, load_latest_checkpoint, save_checkpoint
from ufm.errors import CheckpointError, InputError


class _Evil:
    """Unpickling this runs ``touch marker`` (if the loader trusts the file)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("evil", [_Evil, _EvilEval])
def test_checkpoint_with_code_is_refused(tmp_path, evil):
    marker = tmp_path / "marker"
    path = tmp_path / "last.pt"
    torch.save({"format": 2, "epoch": 1, "payload": evil(marker)}, path)
    with pytest.raises(CheckpointError, match="cannot be read") as exc:
        load_checkpoint(path)
    assert "weights-only" in str(exc.value)
    assert not marker.exists()
    # a plain pickle (not torch's zip format) with the payload is refused as well
    path.write_bytes(pickle.dumps({"format": 2, "x": evil(marker)}, protocol=2))
    with pytest.raises(CheckpointError):
        load_latest_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_that_is_not_a_dict_or_lacks_keys(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(tmp_path / "list.pt")
    save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    with pytest.raises(CheckpointError, match="lacks"):
        load_latest_checkpoint(tmp_path / "last.pt", required=("model",))


def test_save_refuses_state_that_would_not_load_back(tmp_path):
    with pytest.raises(CheckpointError, match="weights-only"):
        save_checkpoint(tmp_path / "x.pt", {"obj": _Evil(tmp_path / "m")})
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "m").exists()


def test_two_generations_rotate(tmp_path):
    p = tmp_path / "ck" / "last.pt"
    for e in range(3):
        save_checkpoint(p, {"epoch": e})
    assert load_checkpoint(p)["epoch"] == 2
    assert load_checkpoint(tmp_path / "ck" / "last.prev.pt")["epoch"] == 1
    assert sorted(f.name for f in p.parent.iterdir()) == ["last.prev.pt", "last.pt"]
    # only the previous generation left (a crash between the two renames)
    p.unlink()
    with pytest.warns(UserWarning, match="previous checkpoint"):
        state, used = load_latest_checkpoint(p)
    assert state["epoch"] == 1 and used.name == "last.prev.pt"


# ------------------------------------------------------------------------------------------
# CIFAR pickles


@pytest.mark.parametrize("route", ["builtin", "torchvision"])
@pytest.mark.parametrize("evil", [_Evil, _EvilEval])
def test_cifar_pickle_with_code_is_refused(tmp_path, monkeypatch, route, evil):
    if route == "builtin":
        monkeypatch.setattr(D, "_torchvision_datasets", lambda: None)
    marker = tmp_path / "marker"
    write_cifar10(tmp_path, {"labels": [0], "data": evil(marker)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's md5 mismatch is reported as a warning
        with pytest.raises(InputError, match="not allowed in a CIFAR file"):
            D.load_dataset("cifar10", split="test", data_root=tmp_path)
    assert not marker.exists()


def test_cifar_object_array_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "_torchvision_datasets", lambda: None)
    arr = np.empty((1, 3072), dtype=object)
    arr[:] = 0
    write_cifar10(tmp_path, {"labels": [0], "data": arr})
    with pytest.raises(InputError, match="object arrays"):
        D.load_dataset("cifar10", split="test", data_root=tmp_path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_reader_accepts_real_layouts(tmp_path, monkeypatch, protocol):
    """Python-2 style (protocol 2, bytes keys) and modern protocols both read."""
    monkeypatch.setattr(D, "_torchvision_datasets", lambda: None)
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    obj = {b"batch_label": b"testing batch 1 of 1", b"labels": [0, 1, 2, 3], b"data": data}
    obj[b"filenames"] = [b"a.png"] * 4
    folder = write_cifar10(tmp_path, {})
    (folder / "test_batch").write_bytes(pickle.dumps(obj, protocol=protocol))
    ds = D.load_dataset("cifar10", split="test", data_root=tmp_path, normalize=False)
    assert ds.y.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(
        ds.x.reshape(4, -1).numpy() * 255, data.astype(np.float32), rtol=0, atol=1e-3
    )
