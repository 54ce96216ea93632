"""Test-suite setup shared by every test directory.

pytest runs with ``--import-mode=importlib``, which puts no test folder on ``sys.path``; the
shared helper modules of ``tests/`` (``reference_problems``) are made importable here, so that
test files write ``import reference_problems as REF`` and all share one module (one cache).
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
