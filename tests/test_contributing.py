"""CONTRIBUTING.md's table of the five common changes is true: each registry is defined in the
file the table names, the other file holds what it names, and the test that shows the change
exists (and runs in the suite)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_ROW = re.compile(
    r"^\| (a [^|]+|an [^|]+) \| `([^`]+)` \(([^)]*)\)[^|]*\| `([^`]+)` \(([^|]*)\) \| `([^`]+)` \|$"
)
# what each declaration must define in its file: the registry or mechanism the row names
_DEFINES = {
    "a collapse metric": [r"^_SPECS = \(", r"^class MetricSpec\b", r"formula: "],
    "a solver method": [r"^def register\(", r"^class Method\b"],
    "a data set": [r"^_SPECS = \(", r"^class DatasetSpec\b", r"^def canonical_name\("],
    "a model family": [r"^_SPECS = \(", r"^class FamilySpec\b"],
    "an option": [r"= option\("],
}
_OTHER = {
    "a collapse metric": r"^class ClassStats\b",
    "a solver method": r"^def run_",
    "a data set": r"^def read_",
    "a model family": r"^DEPTH_BUILDERS",
    "an option": None,
}


def _rows():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    rows = [m.groups() for line in text.splitlines() if (m := _ROW.match(line))]
    assert [r[0] for r in rows] == list(_DEFINES), rows
    return rows


@pytest.mark.parametrize("row", _rows(), ids=lambda r: r[0])
def test_each_change_is_declared_where_the_table_says(row):
    change, decl, _, other, _, shown = row
    src = (ROOT / decl).read_text()
    for pat in _DEFINES[change]:
        assert re.search(pat, src, re.M), (change, decl, pat)
    if _OTHER[change] is not None:
        assert re.search(_OTHER[change], (ROOT / other).read_text(), re.M), (change, other)
    path, _, test = shown.partition("::")
    assert re.search(rf"^def {test}\(", (ROOT / path).read_text(), re.M), shown


def test_registries_are_defined_once():
    # no second table of the same decisions outside the registry modules
    defs = {}
    for p in sorted(ROOT.glob("*/**/*.py")):
        if p.parts[len(ROOT.parts)] not in ("ufm", "mufm", "proofs_check", "resnet_pfc", "pfc"):
            continue
        for name in ("METRICS", "DATASET_SPECS", "FAMILIES", "DEPTH_FAMILIES", "LOSSES"):
            if re.search(rf"^{name}\b[^=\n]*=", p.read_text(), re.M):
                defs.setdefault(name, []).append(str(p.relative_to(ROOT)))
    assert defs == {
        "METRICS": ["ufm/registry.py"],
        "DATASET_SPECS": ["resnet_pfc/datasets.py"],
        "FAMILIES": ["resnet_pfc/families.py"],
        "DEPTH_FAMILIES": ["resnet_pfc/families.py"],
        "LOSSES": ["ufm/losses.py"],
    }, defs
