"""Shared pieces of the theorem checks: the result object and its bookkeeping, the instance
loop (seeded draws or given instances), single-threaded BLAS, JSON output, exact arithmetic.

Each ``check_theoremN`` is the same loop: draw the instances (:func:`draw_instances`), run
``analyze_*`` on each (a record with a :class:`ufm.Status` ``"status"``), count the record
(:meth:`Tally.record`) and add the theorem's own aggregates to ``tally.details``.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

from ufm.errors import InputError
from ufm.io import atomic_write_text, jsonable
from ufm.status import Status
from ufm.validate import check_seed

from .instances import DEGENERATE_KINDS

__all__ = [
    "CheckResult",
    "COUNTEREXAMPLE_KINDS",
    "Tally",
    "draw_instances",
]

T = TypeVar("T")

#: Maximum number of counterexamples kept per kind in a result (the counts are complete).
MAX_EXAMPLES_PER_KIND = 5

#: What each kind of counterexample means (reports print this legend beside the counts).
#: Only ``violation`` is a failure of a claim; the others are expected outcomes that show
#: where a theorem's assumption or scope ends.
COUNTEREXAMPLE_KINDS: dict[str, str] = {
    "violation": "a claim failed inside its assumptions (a real failure)",
    "inconclusive": "the numerical check could not decide within its tolerance",
    "assumption_needed": "Theorem 1 with c < 0 (outside its assumption): PFC1 rises before "
    "it falls, so the assumption c > 0 is needed (expected, certified)",
    "global_monotonicity_fails": "Theorem 2: PFC2 is not monotone on all of [0, 1] for a "
    "large transport cost; the theorem claims monotonicity near t = 1 only (expected)",
    "empirical_failure": "Theorem 4: a property beyond the theorem's claim (monotone in lam "
    "beyond lam_0, or along the flow) failed; not a claim of the theorem",
}


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
        # every check makes its Tally first: one place refuses a bad seed clearly
        seed = check_seed(seed, allow_none=True)
        self.name, self.claim, self.seed = name, claim, seed
        self.n_tried = self.n_met = self.n_confirmed = self.n_violations = self.n_inconclusive = 0
        self.worst: float | None = None
        self.outside: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []
        self.details: dict[str, Any] = {"margin": margin_meaning}

    def over(self, items: Sequence[T], progress: bool = False) -> Iterator[T]:
        """Iterate over the instances, counting each as tried (tqdm bar when ``progress``)."""
        desc = self.name.replace("theorem", "theorem ")
        for item in tqdm(items, desc=desc, disable=None if progress else True, leave=False):
            self.n_tried += 1
            yield item

    def record(self, rec: dict[str, Any], **small: Any) -> Status:
        """Count one instance's record by its ``"status"`` and return that status.

        ``outside`` is counted under its ``"reason"``; every other status counts as inside the
        assumptions; a violation is kept as a ``"violation"`` example with its ``"problems"``,
        an inconclusive record as an ``"inconclusive"`` example with its ``"reason"``. ``small``
        are the instance's identifying numbers, stored with each example. Margins and the
        theorem's own aggregates stay with the caller.
        """
        status = Status(rec["status"])
        if status is Status.OUTSIDE:
            self.outside[rec["reason"]] += 1
            return status
        self.n_met += 1
        if status is Status.VIOLATION:
            self.n_violations += 1
            self.example("violation", **small, problems=rec.get("problems"))
        elif status is Status.INCONCLUSIVE:
            self.n_inconclusive += 1
            self.example("inconclusive", **small, reason=rec.get("reason"))
        elif status is Status.CONFIRMED:
            self.n_confirmed += 1
        else:
            raise InputError(f"a check record has status {status!r}, not a check status")
        return status

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
    seed = check_seed(seed, allow_none=True)
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([seed, theorem, index])


def draw_instances(
    instances: int | Iterable[T],
    *,
    seed: int | None,
    theorem: int,
    rate: float,
    draw: Callable[[np.random.Generator, str | None], T],
    kind: type,
) -> list[T]:
    """The instances of one check: ``instances`` random ones, or the given ones (type-checked).

    Instance ``i`` is drawn from :func:`instance_rng` ``(seed, theorem, i)``: with probability
    ``rate`` it is made degenerate in one of the theorem's
    :data:`~proofs_check.instances.DEGENERATE_KINDS` (uniformly), then ``draw(rng, degenerate)``
    builds it (``degenerate`` is ``None`` for a regular instance).

    Raises
    ------
    InputError
        A negative count, or a given instance that is not a ``kind``.
    """
    if isinstance(instances, int | np.integer) and not isinstance(instances, bool):
        if instances < 0:
            raise InputError(f"instances must be >= 0, got {instances}")
        out = []
        kinds = DEGENERATE_KINDS[theorem]
        for i in range(int(instances)):
            rng = instance_rng(seed, theorem, i)
            deg = kinds[int(rng.integers(len(kinds)))] if rng.random() < rate else None
            out.append(draw(rng, deg))
        return out
    if isinstance(instances, bool | float | str | bytes | np.floating) or not hasattr(
        instances, "__iter__"
    ):
        raise InputError(
            f"instances must be a count (an int >= 0) or an iterable of {kind.__name__}, "
            f"got {instances!r}"
        )
    out = list(instances)
    for j, inst in enumerate(out):
        if not isinstance(inst, kind):
            raise InputError(
                f"instances[{j}] must be a {kind.__name__} (or pass a count), "
                f"got {type(inst).__name__}"
            )
    return out


def fraction_array(a: np.ndarray) -> list:
    """Nested lists of exact :class:`~fractions.Fraction` s of a float64 array (exact)."""
    return [fraction_array(r) for r in a] if a.ndim > 1 else [Fraction(float(v)) for v in a]


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON to ``path`` atomically (temp file in the same directory, then ``os.replace``)."""
    atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")
