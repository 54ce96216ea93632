"""Shared pieces of the theorem checks: the result object, seeding, exact arithmetic helpers."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from ufm.io import atomic_write_text, jsonable

__all__ = ["CheckResult", "Tally", "instance_rng", "fraction_array", "write_json_atomic"]

#: Maximum number of counterexamples kept per kind in a result (the counts are complete).
MAX_EXAMPLES_PER_KIND = 5


@dataclass(frozen=True)
class CheckResult:
    """Outcome of checking one theorem on a set of instances.

    Attributes
    ----------
    name : str
        ``"theorem1"`` ... ``"theorem4"``.
    claim : str
        The statement checked, in words.
    n_tried : int
        Instances examined.
    n_assumptions_met : int
        Instances inside the theorem's assumptions (the rest are counted in ``outside``).
    n_confirmed : int
        Instances inside the assumptions on which every claim was confirmed.
    n_violations : int
        Instances inside the assumptions on which a claim that should hold failed.
    n_inconclusive : int
        Instances inside the assumptions where the check could not decide (e.g. a solver did
        not converge); neither confirmations nor violations.
    worst_margin : float or None
        The smallest margin by which the claim held (negative: by which it failed) over the
        instances inside the assumptions; its meaning is given in ``details["margin"]``.
    counterexamples : tuple of dict
        Small JSON-friendly records, each with a ``"kind"``: ``"violation"`` (a claim that
        should hold failed), ``"assumption_needed"`` (outside the assumptions the conclusion
        fails, showing the assumption matters), ``"empirical_failure"`` (a claim the paper
        makes only empirically fails). At most a few per kind; the counts are in ``details``.
    outside : dict of str to int
        Why instances were outside the assumptions (degenerate input and unmet hypotheses),
        with counts.
    details : dict
        Theorem-specific aggregates (see each ``check_theoremN``).
    seed : int or None
        The seed the instances were drawn with.
    """

    name: str
    claim: str
    n_tried: int
    n_assumptions_met: int
    n_confirmed: int
    n_violations: int
    n_inconclusive: int
    worst_margin: float | None
    counterexamples: tuple[dict[str, Any], ...]
    outside: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None

    @property
    def ok(self) -> bool:
        """True when no claim that should hold was violated."""
        return self.n_violations == 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dictionary (NaN and inf become ``None``)."""
        d = asdict(self)
        d["counterexamples"] = list(d["counterexamples"])
        d["ok"] = self.ok
        return jsonable(d)


class Tally:
    """Mutable bookkeeping while a check runs; ``result()`` freezes it."""

    def __init__(self, name: str, claim: str, margin_meaning: str, seed: int | None) -> None:
        self.name, self.claim, self.seed = name, claim, seed
        self.n_tried = self.n_met = self.n_confirmed = self.n_violations = self.n_inconclusive = 0
        self.worst: float | None = None
        self.outside: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []
        self.details: dict[str, Any] = {"margin": margin_meaning}

    def margin(self, m: float | None) -> None:
        if m is not None and math.isfinite(m):
            self.worst = m if self.worst is None else min(self.worst, m)

    def example(self, kind: str, **info: Any) -> None:
        self.kinds[kind] += 1
        if self.kinds[kind] <= MAX_EXAMPLES_PER_KIND:
            self.examples.append({"kind": kind, **jsonable(info)})

    def result(self) -> CheckResult:
        details = dict(self.details)
        details["counterexample_counts"] = dict(self.kinds)
        return CheckResult(
            name=self.name,
            claim=self.claim,
            n_tried=self.n_tried,
            n_assumptions_met=self.n_met,
            n_confirmed=self.n_confirmed,
            n_violations=self.n_violations,
            n_inconclusive=self.n_inconclusive,
            worst_margin=self.worst,
            counterexamples=tuple(self.examples),
            outside=dict(self.outside),
            details=jsonable(details),
            seed=self.seed,
        )


def instance_rng(seed: int | None, theorem: int, index: int) -> np.random.Generator:
    """Independent generator of instance ``index`` of theorem ``theorem`` (reproducible)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([int(seed), theorem, index])


def fraction_array(a: np.ndarray) -> list:
    """Nested lists of exact :class:`~fractions.Fraction` s of a float64 array (exact)."""
    return [fraction_array(r) for r in a] if a.ndim > 1 else [Fraction(float(v)) for v in a]


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON to ``path`` atomically (temp file in the same directory, then ``os.replace``)."""
    atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")
