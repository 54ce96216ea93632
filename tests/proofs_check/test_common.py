"""The shared instance loop and bookkeeping of the theorem checks (proofs_check.common)."""

import json

import numpy as np
import pytest

from proofs_check import check_theorem1
from proofs_check.common import Tally, draw_instances
from proofs_check.instances import DEGENERATE_KINDS, LineInstance, random_line_instance
from ufm import Status
from ufm.errors import InputError


def test_record_counts_every_status_and_keeps_examples():
    t = Tally("theorem9", "claim", "margin", seed=0)
    recs = [
        {"status": "outside", "reason": "r1"},
        {"status": Status.OUTSIDE, "reason": "r1"},
        {"status": Status.CONFIRMED},
        {"status": "violation", "problems": ["p"]},
        {"status": Status.INCONCLUSIVE, "reason": "solver stalled"},
    ]
    got = [t.record(r, K=3) for r in t.over(recs)]
    assert got == [Status.OUTSIDE, Status.OUTSIDE, "confirmed", "violation", "inconclusive"]
    r = t.result()
    assert (r.n_tried, r.n_assumptions_met, r.n_confirmed) == (5, 3, 1)
    assert (r.n_violations, r.n_inconclusive, r.outside) == (1, 1, {"r1": 2})
    assert r.counterexamples == (
        {"kind": "violation", "K": 3, "problems": ["p"]},
        {"kind": "inconclusive", "K": 3, "reason": "solver stalled"},
    )
    assert not r.ok
    assert json.loads(json.dumps(r.to_dict()))["counterexamples"][0]["kind"] == "violation"
    with pytest.raises(ValueError):
        t.record({"status": "fine"})  # not a status at all
    with pytest.raises(InputError):
        t.record({"status": Status.CONVERGED})  # a solver status, not a check status


def test_draw_instances_is_seeded_and_checks_given_instances():
    def draw(rate, seed=5):
        return draw_instances(
            6,
            seed=seed,
            theorem=1,
            rate=rate,
            draw=lambda rng, deg: random_line_instance(rng, degenerate=deg),
            kind=LineInstance,
        )

    a, b, c = draw(0.5), draw(0.5), draw(0.5, seed=6)
    assert all(np.array_equal(x.X, y.X) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.X, y.X) for x, y in zip(a, c, strict=True))
    assert {i.tag.get("degenerate") for i in draw(1.0)} <= set(DEGENERATE_KINDS[1])
    assert all(i.tag.get("degenerate") is None for i in draw(0.0))
    kw = dict(seed=0, theorem=1, rate=0.0, draw=None, kind=LineInstance)
    assert draw_instances(a[:2], **kw) == a[:2]
    with pytest.raises(InputError, match="instances\\[1\\] must be a LineInstance"):
        draw_instances([a[0], "not an instance"], **kw)
    with pytest.raises(InputError, match=">= 0"):
        draw_instances(-1, **kw)


def test_check_records_are_status_members():
    r = check_theorem1(4, seed=2, crosscheck=False)
    assert r.n_tried == 4 and r.n_confirmed + sum(r.outside.values()) + r.n_violations == 4
