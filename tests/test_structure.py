"""Structural rules of CONTRIBUTING.md, checked on the source tree.

- each decision declared once: ``LOSSES`` has one definition (``ufm/losses.py``);
- across a package line only public names are imported (no ``_private`` module or name);
- metric lists read the registry: no literal tuple of the core metric names outside it;
- one file writer, one CSV writer, one version record: only ``ufm/io.py`` defines them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ufm", "mufm", "proofs_check", "resnet_pfc", "pfc")
_FROM = re.compile(r"\s*from\s+((?:" + "|".join(PACKAGES) + r")(?:\.\w+)*)\s+import\s+(.+)")


def _sources():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def test_losses_defined_once():
    defs = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in _sources()
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.match(r"\s*LOSSES\s*(:[^=]*)?=", line)
    ]
    assert defs == ["ufm/losses.py:22"] or (len(defs) == 1 and defs[0].startswith("ufm/losses.py"))


@pytest.mark.parametrize(
    "name", ["atomic_write", "atomic_write_bytes", "atomic_write_text", "csv_text", "write_csv"]
)
def test_file_writers_defined_once_in_ufm_io(name):
    defs = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in _sources()
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.match(rf"def {name}\(", line)
    ]
    assert len(defs) == 1 and defs[0].startswith("ufm/io.py:"), defs


def test_one_version_record():
    # versions are gathered by ufm.io.versions; a package may only name the libraries it records
    bodies = [
        p.relative_to(ROOT)
        for p in _sources()
        if re.search(r"^\s*\"platform\": platform\.platform\(\)", p.read_text(), re.M)
    ]
    assert [str(b) for b in bodies] == ["ufm/io.py"]


_PRIVATE_WRITE = re.compile(r"^\s*(?!self\._)([A-Za-z_][\w.]*)\._[a-z]\w*\s*(=|\+=|-=)[^=]")


def test_no_module_writes_another_objects_private_fields():
    # a class sets its own private state (its constructors may, on the new instance); everyone
    # else goes through public entries such as CollapseAccumulator.from_statistics
    writes = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for p in _sources()
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if _PRIVATE_WRITE.match(line)
    ]
    assert all(w.startswith("ufm/metrics/accumulator.py:") for w in writes), writes


def test_no_private_import_across_packages():
    bad = []
    for p in _sources():
        own = p.relative_to(ROOT).parts[0]
        for i, line in enumerate(p.read_text().splitlines(), 1):
            m = _FROM.match(line)
            if not m or m.group(1).split(".")[0] == own:
                continue
            mod, names = m.group(1), m.group(2)
            private_mod = any(part.startswith("_") for part in mod.split(".")[1:])
            private_name = any(
                n.strip().split(" ")[0].startswith("_") for n in names.strip("()").split(",")
            )
            if private_mod or private_name:
                bad.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, bad


def test_core_metric_lists_come_from_the_registry():
    pattern = re.compile(r"""\(\s*["']pfc1["']\s*,\s*["']pfc2["']\s*,\s*["']pfc3["']""")
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in _sources()
        if p.name != "registry.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, hits


def test_hypothesis_profile_is_loaded():
    """The suite's profiles are registered and loaded (they were registered and never used)."""
    from hypothesis import settings

    assert settings.default.deadline is None
    assert settings.default.derandomize
