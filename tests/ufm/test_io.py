"""Atomic writes: the old file survives a failing write, and no temporary file is left."""

from __future__ import annotations

import pytest

from ufm.io import atomic_write, atomic_write_text


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    atomic_write_text(p, "one")
    assert p.read_text() == "one"

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_text() == "one"
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.txt"]
    atomic_write(p, lambda f: f.write("two\n"), mode="w")
    assert p.read_text() == "two\n"
    with pytest.raises(ValueError, match="mode must be"):
        atomic_write(p, lambda f: None, mode="a")


# ------------------------------------------------------------------------------------------
# CSV, PNG, JSON and versions (the one writer of each for the whole toolkit)
# ------------------------------------------------------------------------------------------


def test_csv_round_trips_floats_exactly_and_writes_none_as_empty(tmp_path):
    import csv
    import math

    import numpy as np

    from ufm.io import csv_text, write_csv

    vals = [0.1 + 0.2, 1e-300, -2.5e17, float("nan"), float("inf"), np.float64(1 / 3)]
    rows = [["a", v, None, 3] for v in vals]
    p = write_csv(tmp_path / "x" / "t.csv", ["name", "value", "empty", "int"], rows)
    assert p.read_text() == csv_text(["name", "value", "empty", "int"], rows)
    got = list(csv.reader(p.read_text().splitlines()))
    assert got[0] == ["name", "value", "empty", "int"]
    for want, (name, v, empty, i) in zip(vals, got[1:], strict=True):
        assert name == "a" and empty == "" and i == "3"
        back = float(v)
        assert (math.isnan(want) and math.isnan(back)) or back == want  # exact, not approximate
    assert "\r" not in p.read_text()


def test_jsonable_converts_numpy_and_non_finite_values():
    import json
    from fractions import Fraction
    from pathlib import Path

    import numpy as np

    from ufm.io import jsonable

    x = {
        1: np.arange(3, dtype=np.int32),
        "f": (np.float32(0.5), float("nan"), -np.inf),
        "b": np.bool_(False),
        "q": Fraction(1, 4),
        "p": Path("a/b"),
        "n": {"deep": [np.int64(7)]},
    }
    got = jsonable(x)
    assert got == {
        "1": [0, 1, 2],
        "f": [0.5, None, None],
        "b": False,
        "q": 0.25,
        "p": "a/b",
        "n": {"deep": [7]},
    }
    assert type(got["b"]) is bool and type(got["n"]["deep"][0]) is int
    json.dumps(got, allow_nan=False)  # strict JSON


def test_json_write_read_and_damaged_file(tmp_path):
    import numpy as np

    from ufm.errors import CheckpointError
    from ufm.io import read_json, write_json

    p = write_json(tmp_path / "r.json", {"v": np.float64(2.0), "bad": float("nan")})
    assert read_json(p) == {"v": 2.0, "bad": None}
    assert read_json(tmp_path / "missing.json") is None
    p.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON.*pass --force"):
        read_json(p, remedy="pass --force")


def test_save_png_is_a_deterministic_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from ufm.io import save_png

    def draw():
        fig = Figure(figsize=(2, 2))
        fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
        return fig

    a = save_png(draw(), tmp_path / "a.png", dpi=50).read_bytes()
    b = save_png(draw(), tmp_path / "sub" / "b.png", dpi=50).read_bytes()
    assert a[:8] == b"\x89PNG\r\n\x1a\n" and a == b
    assert b"Software" not in a
    assert [x.name for x in tmp_path.iterdir() if x.name.startswith(".")] == []


def test_versions_lists_python_toolkit_and_importable_packages():
    import sys

    import numpy as np

    import ufm
    from ufm.io import versions

    v = versions(("numpy", "no_such_module_xyz"))
    assert list(v) == ["python", "platform", "pfc_toolkit", "numpy"]
    assert v["python"] == sys.version.split()[0]
    assert v["numpy"] == np.__version__ and v["pfc_toolkit"] == ufm.__version__


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_honour_the_umask(tmp_path, umask):
    """Every file written atomically gets 0o666 & ~umask (mkstemp alone gives 0o600)."""
    import os
    import stat

    from resnet_pfc.checkpoint import save_checkpoint
    from ufm.io import atomic_write_text, new_file_mode, write_json

    old = os.umask(umask)
    try:
        assert new_file_mode() == 0o666 & ~umask
        paths = [
            atomic_write_text(tmp_path / "a.txt", "x"),
            write_json(tmp_path / "b.json", {"a": 1}),
        ]
        save_checkpoint(tmp_path / "c.pt", {"epoch": 1})
        paths.append(tmp_path / "c.pt")
    finally:
        os.umask(old)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


def test_csv_text_takes_mapping_rows_like_sequences():
    from ufm.io import csv_text

    header = ("epoch", "split", "pfc1")
    seq = csv_text(header, [(1, "train", 0.1), (2, "test", None)])
    maps = csv_text(
        header,
        [{"epoch": 1, "split": "train", "pfc1": 0.1, "extra": 9}, {"epoch": 2, "split": "test"}],
    )
    assert maps == seq == "epoch,split,pfc1\n1,train,0.1\n2,test,\n"
