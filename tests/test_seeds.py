"""Seeds, the same rule everywhere in ufm, mufm and proofs_check: any integer >= 0 (2**32 and
beyond included, as numpy's SeedSequence takes them), ``None`` only where documented; every
other value a clear InputError naming ``seed`` (they were raw ValueError/TypeError, or
silently truncated)."""

from __future__ import annotations

import numpy as np
import pytest

import mufm
import proofs_check as pc
import ufm
from ufm import SufficientStatistics, solve_statistics
from ufm.errors import InputError
from ufm.validate import check_seed

X = np.random.default_rng(0).standard_normal((3, 4, 6))
Y = np.arange(12) % 3


def _stats():
    st = SufficientStatistics(3)
    st.update(X.reshape(12, 6), np.repeat(np.arange(3), 4))
    return st


ENTRY = {
    "simplex_etf": lambda s: ufm.simplex_etf(3, 5, seed=s),
    "ufm.solve": lambda s: ufm.solve(Y, d=4, seed=s, max_iter=3),
    "solve_statistics": lambda s: solve_statistics(_stats(), seed=s, max_iter=2),
    "mufm.solve": lambda s: mufm.solve(X, seed=s, max_iter=2),
    "gradient_flow": lambda s: mufm.gradient_flow(X, seed=s, n_eval=2, t_max=0.1),
    "make_data": lambda s: mufm.make_data(3, 2, 4, seed=s),
    "check_theorem1": lambda s: pc.check_theorem1(1, seed=s),
    "check_theorem2": lambda s: pc.check_theorem2(1, seed=s),
    "check_theorem3": lambda s: pc.check_theorem3(0, seed=s),
    "check_theorem4": lambda s: pc.check_theorem4(0, seed=s),
}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", sorted(ENTRY))
@pytest.mark.parametrize("bad", [-1, -(2**70), 1.5, 2.0, "3", True, np.bool_(False), [1], object()])
def test_bad_seeds_are_refused_clearly(name, bad):
    with pytest.raises(InputError, match="seed must be"):
        ENTRY[name](bad)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", sorted(ENTRY))
@pytest.mark.parametrize("good", [2**32, 2**64 + 1, np.uint64(2**63)])
def test_large_seeds_are_accepted(name, good):
    ENTRY[name](good)


def test_check_seed():
    assert check_seed(2**100) == 2**100
    assert check_seed(np.int32(5)) == 5
    assert check_seed(None, allow_none=True) is None
    with pytest.raises(InputError, match="non-negative integer, got None"):
        check_seed(None)
    with pytest.raises(InputError, match="rng must be >= 0, got -2"):
        check_seed(-2, "rng")


def test_same_large_seed_same_draw():
    a = mufm.make_data(3, 2, 4, seed=2**40)[0]
    np.testing.assert_array_equal(a, mufm.make_data(3, 2, 4, seed=2**40)[0])
    assert not np.array_equal(a, mufm.make_data(3, 2, 4, seed=2**40 + 1)[0])
