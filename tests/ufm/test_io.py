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
