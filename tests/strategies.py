"""hypothesis strategies shared by the test suite: class counts, seeds, log-uniform magnitudes.

The theorem instances have their own strategies in :mod:`proofs_check.strategies`; these are
the plain building blocks the ``@given`` lists of ``tests/`` draw from. Test files import them
by name (``tests/conftest.py`` puts this folder on ``sys.path``)::

    from strategies import class_counts, log_uniform, seeds

    @given(K=class_counts(5), lam=log_uniform(1e-4, 1e4), seed=seeds)
    def test_something(K, lam, seed):
        rng = np.random.default_rng(seed)
"""

from __future__ import annotations

import math

from hypothesis import strategies as st

from ufm.errors import InputError

__all__ = ["seeds", "class_counts", "log_uniform"]

#: Seeds for :func:`numpy.random.default_rng` (and the toolkit's ``seed=``): any 32-bit value.
seeds = st.integers(0, 2**32 - 1)


def class_counts(max_K: int) -> st.SearchStrategy[int]:
    """Class counts ``K`` in ``2..max_K`` (collapse needs two classes at least)."""
    return st.integers(2, max_K)


def log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Positive floats in ``[lo, hi]`` spread evenly over the decades (penalties, scales).

    The exponent is drawn uniformly, so ``log_uniform(1e-4, 1e4)`` draws ``[1e-4, 1e-3]`` as
    often as ``[1e3, 1e4]`` (a plain ``st.floats(1e-4, 1e4)`` almost never goes below ``1``);
    hypothesis shrinks the exponent, towards ``1`` when the range contains it.
    """
    if not 0 < lo <= hi:
        raise InputError(f"log_uniform needs 0 < lo <= hi, got lo={lo}, hi={hi}")
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda e: min(max(10.0**e, lo), hi))
