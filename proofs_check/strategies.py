"""hypothesis strategies for theorem instances (needs the ``hypothesis`` dev dependency).

Every strategy draws small parameters (class count ``K``, dimension ``d``, samples per class,
ETF rotation, scale, transport cost) and a seed, and builds the instance with the numpy
generators of :mod:`proofs_check.instances`, so shrinking works on the parameters.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from .instances import (
    LineInstance,
    MeansInstance,
    MUFMInstance,
    dyadic_etf,
    float_etf,
    gaussian_data,
    near_etf_means_instance,
)

__all__ = [
    "property_settings",
    "class_counts",
    "dims",
    "seeds",
    "scales",
    "line_instances",
    "means_instances",
    "near_etf_means_instances",
    "mufm_instances",
]

seeds = st.integers(0, 2**31 - 1)
class_counts = st.integers(2, 6)
scales = st.floats(0.25, 4.0, allow_nan=False, allow_infinity=False)
transport_costs = st.floats(1e-3, 20.0, allow_nan=False, allow_infinity=False)


@st.composite
def dims(draw: st.DrawFn, K: int, *, allow_small: bool = False) -> int:
    """A feature dimension for ``K`` classes: ``>= K - 1`` (or anything when ``allow_small``)."""
    lo = 1 if allow_small else K - 1
    return draw(st.integers(max(lo, 1), K + 4))


@st.composite
def etf_end_points(draw: st.DrawFn, K: int, d: int) -> np.ndarray:
    """A simplex ETF as rows ``(K, d)``: exact dyadic (``d >= K``) or float, any rotation,
    scale and offset."""
    rng = np.random.default_rng(draw(seeds))
    if d >= K and draw(st.booleans()):
        return dyadic_etf(K, d, rng, scale_exp=draw(st.integers(-2, 2)), offset=draw(st.booleans()))
    E = float_etf(K, d, rng, scale=draw(scales))
    if draw(st.booleans()):
        E = E + rng.standard_normal(d)
    return E


@st.composite
def line_instances(draw: st.DrawFn, *, allow_degenerate: bool = False) -> LineInstance:
    """Theorem 1 instances: Gaussian data around random centres and an ETF end point,
    optionally rotated towards the data (``c > 0``) or not (any sign of ``c``)."""
    K = draw(class_counts)
    d = draw(dims(K, allow_small=allow_degenerate))
    n = draw(st.integers(1 if allow_degenerate else 2, 5))
    rng = np.random.default_rng(draw(seeds))
    X = gaussian_data(
        rng,
        K,
        n,
        d,
        sigma=draw(st.floats(0.0 if allow_degenerate else 0.05, 2.0)),
        spread=draw(scales),
    )
    if d >= K - 1:
        E = draw(etf_end_points(K, d))
        if draw(st.booleans()):
            means = X.mean(axis=1)
            from .instances import _procrustes

            E = _procrustes(means - means.mean(0), E - E.mean(0))
    else:
        E = rng.standard_normal((K, d))
    return LineInstance(X.reshape(K * n, d), np.repeat(np.arange(K), n), E)


@st.composite
def means_instances(draw: st.DrawFn, *, max_K: int = 6) -> MeansInstance:
    """Theorem 2 instances ``M_0 = M^* + rho ||M^*|| Delta/||Delta||`` with ``rho`` drawn from
    :data:`transport_costs`."""
    K = draw(st.integers(3, max_K))
    d = draw(dims(K))
    Ms = draw(etf_end_points(K, d))
    rho = draw(transport_costs)
    rng = np.random.default_rng(draw(seeds))
    delta = rng.standard_normal((K, d))
    delta -= delta.mean(axis=0)
    Mc = Ms - Ms.mean(axis=0)
    M0 = Ms + rho * np.linalg.norm(Mc) * delta / np.linalg.norm(delta)
    return MeansInstance(M0, Ms, {"rho": rho})


@st.composite
def near_etf_means_instances(draw: st.DrawFn, *, max_K: int = 6) -> MeansInstance:
    """Theorem 2 instances whose start is a slightly rotated exact ETF plus small noise
    (:func:`~proofs_check.instances.near_etf_means_instance`): rotation angle in
    ``[1e-3, 0.5]``, noise relative to ``||M*||`` in ``[0, 1e-2]``."""
    K = draw(st.integers(3, max_K))
    d = draw(st.integers(K, K + 2))
    angle = draw(st.floats(1e-3, 0.5))
    noise = draw(st.sampled_from([0.0, 1e-6, 1e-4, 1e-2]))
    rng = np.random.default_rng(draw(seeds))
    return near_etf_means_instance(rng, K=K, d=d, angle=angle, noise=noise)


@st.composite
def mufm_instances(draw: st.DrawFn, *, loss: str = "mse") -> MUFMInstance:
    """Small MUFM instances (Sec. IV-B setting) with drawn coefficients and depth."""
    K = draw(st.integers(2, 3))
    n = draw(st.integers(2, 3))
    d = draw(st.integers(max(2, K - 1), 4))
    rng = np.random.default_rng(draw(seeds))
    X = gaussian_data(rng, K, n, d, sigma=draw(st.floats(0.1, 1.0)))
    lam_b = draw(st.sampled_from([0.0, 1e-2]))
    return MUFMInstance(
        X=X,
        lam=draw(st.floats(0.1, 10.0)),
        lam_w=draw(st.floats(1e-3, 1e-1)),
        lam_b=lam_b,
        loss=loss,
        L=draw(st.integers(1, 4)),
    )


def property_settings() -> settings:
    """hypothesis settings of the property tests: 8 examples, or 100 with ``HYPOTHESIS_PROFILE=slow``.

    Instances take milliseconds to seconds to check, so there is no deadline, and the filters
    (``assume``) of the theorem tests may discard many draws.
    """
    slow = os.environ.get("HYPOTHESIS_PROFILE") == "slow"
    return settings(
        max_examples=100 if slow else 8,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
