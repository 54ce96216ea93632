"""Test-suite setup shared by every test directory.

hypothesis profiles are registered and loaded here, once for the whole suite:
``HYPOTHESIS_PROFILE=fast`` (the default: no per-example deadline, since the machine running
the tests may be busy and a deadline then fails at random; examples derandomised) or
``HYPOTHESIS_PROFILE=slow`` (ten times as many examples for the tests that do not set their
own count). Tests that pass ``max_examples`` themselves keep it.

pytest runs with ``--import-mode=importlib``, which puts no test folder on ``sys.path``; the
shared helper modules of ``tests/`` (``reference_problems``) are made importable here, so that
test files write ``import reference_problems as REF`` and all share one module (one cache).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

settings.register_profile(
    "fast",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile("slow", settings.get_profile("fast"), max_examples=1000)
#: The profile in force (``HYPOTHESIS_PROFILE``, default ``fast``).
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fast")
if PROFILE not in ("fast", "slow", "proofs_check-fast"):
    raise SystemExit(
        f"HYPOTHESIS_PROFILE={PROFILE!r} is not a profile of this suite; use 'fast' or 'slow'"
    )
if PROFILE != "proofs_check-fast":  # registered by tests/proofs_check/conftest.py
    settings.load_profile(PROFILE)
