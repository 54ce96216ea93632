"""CDNV, the class-mean Gram eigenvalue ratio and the law of data separation's rate fit,
against direct numpy references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ufm
from ufm.errors import InputError


def _cdnv_ref(H, y):
    K = int(y.max()) + 1
    mu = np.stack([H[y == k].mean(0) for k in range(K)])
    var = np.array([np.mean(np.sum((H[y == k] - mu[k]) ** 2, 1)) for k in range(K)])
    vals = [
        (var[a] + var[b]) / (2 * np.sum((mu[a] - mu[b]) ** 2))
        for a, b in itertools.combinations(range(K), 2)
    ]
    return float(np.mean(vals))


def _eig_ratio_ref(H, y):
    K = int(y.max()) + 1
    n = np.bincount(y, minlength=K)
    mu = np.stack([H[y == k].mean(0) for k in range(K)])
    C = mu - (n / n.sum()) @ mu
    g = np.linalg.eigvalsh(C @ C.T)
    g = g[g > 1e-10 * g.max()]
    return float(g.max() / g.min())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cdnv_and_eig_ratio_match_numpy(seed):
    rng = np.random.default_rng(seed)
    K, d = 5, 7
    y = rng.permutation(np.concatenate([np.arange(K), rng.integers(0, K, 80)]))
    H = rng.standard_normal((len(y), d)) * 0.5 + rng.standard_normal((K, d))[y] * [
        1,
        2,
        3,
        1,
        1,
        1,
        1,
    ]
    np.testing.assert_allclose(ufm.cdnv(H, y), _cdnv_ref(H, y), rtol=1e-10)
    np.testing.assert_allclose(ufm.gram_eig_ratio(H, y), _eig_ratio_ref(H, y), rtol=1e-8)
    m = ufm.collapse_metrics(H, y)
    np.testing.assert_allclose(m["cdnv"], _cdnv_ref(H, y), rtol=1e-10)
    # streaming, in batches, both passes: same values
    acc = ufm.CollapseAccumulator(K)
    for i in range(0, len(y), 16):
        acc.update(H[i : i + 16], y[i : i + 16])
    first = acc.compute()
    np.testing.assert_allclose(first["cdnv"], _cdnv_ref(H, y), rtol=1e-10)
    acc.end_first_pass()
    for i in range(0, len(y), 16):
        acc.update(H[i : i + 16], y[i : i + 16])
    out = acc.compute()
    np.testing.assert_allclose(out["cdnv"], _cdnv_ref(H, y), rtol=1e-10)
    np.testing.assert_allclose(out["gram_eig_ratio"], _eig_ratio_ref(H, y), rtol=1e-8)


def test_scale_free_and_etf_values():
    rng = np.random.default_rng(3)
    K = 4
    M = ufm.simplex_etf(K, 6)  # (K, d) rows of a simplex ETF
    y = np.repeat(np.arange(K), 25)
    H = np.asarray(M)[y] + 0.01 * rng.standard_normal((len(y), 6))
    assert ufm.gram_eig_ratio(np.asarray(M)[y], y) == pytest.approx(1.0, rel=1e-9)
    assert ufm.cdnv(H, y) < 1e-3
    np.testing.assert_allclose(ufm.cdnv(1e6 * H, y), ufm.cdnv(H, y), rtol=1e-9)


def test_separation_rate_on_geometric_sequence():
    D = 3.0 * 0.7 ** np.arange(8)
    fit = ufm.separation_rate(D)
    assert fit.rate == pytest.approx(0.7, rel=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(fit.ratios, 0.7, rtol=1e-12)
    np.testing.assert_allclose(np.exp(fit.intercept), 3.0, rtol=1e-12)
    # uneven layer indices: the ratio is per unit of index
    fit2 = ufm.separation_rate(D[[0, 2, 5]], layers=[0, 2, 5])
    assert fit2.rate == pytest.approx(0.7, rel=1e-12)
    np.testing.assert_allclose(fit2.ratios, 0.7, rtol=1e-12)
    # noisy: R^2 below 1, rate close
    rng = np.random.default_rng(0)
    noisy = D * np.exp(0.05 * rng.standard_normal(D.size))
    f3 = ufm.separation_rate(noisy)
    assert 0.9 < f3.r2 < 1.0 and abs(f3.rate - 0.7) < 0.05


@pytest.mark.parametrize(
    "args, match",
    [
        (([1.0],), "at least 2"),
        (([1.0, 0.0],), "finite and > 0"),
        (([1.0, np.nan],), "finite and > 0"),
        (([1.0, 0.5], [0, 0]), "strictly increasing"),
        (([1.0, 0.5], [0, 1, 2]), "length"),
    ],
)
def test_separation_rate_bad_input(args, match):
    with pytest.raises(InputError, match=match):
        ufm.separation_rate(*args)
