"""The documentation site builds, and every API page imports its modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_site_builds(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    res = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", "1", str(DOCS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    problems = [
        line
        for line in res.stderr.splitlines()
        if "failed to import" in line or "ERROR" in line or "not found" in line
    ]
    assert not problems, "\n".join(problems[:20])
    for page in ("index.html", "api.html", "tutorials.html", "benchmarks.html", "reproduce.html"):
        assert (tmp_path / page).exists(), page
    api = (tmp_path / "api.html").read_text()
    for name in ("collapse_metrics", "CollapseAccumulator", "certify", "check_theorem1"):
        assert name in api, name
