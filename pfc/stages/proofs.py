"""Stage 4, ``proofs/``: the theorem checks (:func:`proofs_check.run_all`), table and JSON."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from proofs_check import run_all
from proofs_check.cli import format_table
from ufm.io import atomic_write_text, write_json

from ..config import StudyConfig

__all__ = ["run"]


def run(cfg: StudyConfig, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Check Theorems 1-4 into ``out/proofs``; return the stage document."""
    say(f"checking Theorems 1-4 (proofs_check, {cfg.instances} instances)")
    results = run_all(seed=cfg.seed, instances=cfg.instances, progress=cfg.progress)
    table = format_table(results)
    dp = out / "proofs"
    atomic_write_text(dp / "table.txt", table + "\n")
    doc = {
        "seed": cfg.seed,
        "instances": cfg.instances,
        "ok": all(r.ok for r in results),
        "results": [r.to_dict() for r in results],
    }
    write_json(dp / "proofs_check.json", doc)
    return {"stage": "proofs", "table": table, **doc}
