r"""Optimal transport between the feature distributions of a network's layers (POT).

The premise of progressive feedforward collapse is that a ResNet moves its features along a
Wasserstein geodesic from the data to the collapsed configuration (Theorem 3: the MUFM's layers
are the constant-speed geodesic of the kinetic transport cost). :func:`ot_profile` checks this on
the features of a trained network, every layer fed the same samples:

* the squared 2-Wasserstein cost between consecutive layers and between the first and last;
* how far each optimal plan is from the *identity coupling* (sample ``i`` of one layer to sample
  ``i`` of the next, the map the network itself applies): its diagonal mass and its cost against
  the identity coupling's cost;
* the profile against a geodesic's equal steps: along a constant-speed geodesic
  :math:`W_2(\mu_0, \mu_l) = \tfrac{l}{L} W_2(\mu_0, \mu_L)`, so consecutive steps are equal and
  add up to :math:`W_2(\mu_0, \mu_L)`.

For empirical measures with uniform weights :math:`1/N` on the rows of :math:`A` and :math:`B`
(``N`` samples each),

.. math::

    W_2^2(\mu_A, \mu_B) = \min_{P \in U} \sum_{i,j} P_{ij}\,\|a_i - b_j\|^2,\quad
    U = \{P \ge 0 : P 1 = \tfrac1N 1,\ P^\top 1 = \tfrac1N 1\},

solved exactly by the network simplex (``ot.emd``). The identity coupling :math:`P = I/N` costs
:math:`\tfrac1N \sum_i \|a_i - b_i\|^2 \ge W_2^2`; equality means the network's own map is an
optimal transport map. The network simplex costs about :math:`O(N^3)`: beyond ``max_samples``
rows (default 2,000, a few seconds per pair) a seeded subset of samples, the same in every
layer, is used.

References
----------
Wang, Gai, Zhang, "Progressive Feedforward Collapse of ResNet Training" (Theorem 3).
Flamary et al., "POT: Python Optimal Transport", JMLR 2021. Peyre and Cuturi, "Computational
Optimal Transport", 2019.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConvergenceWarning, InputError
from .validate import check_int, describe

__all__ = [
    "OTProfile",
    "ot_profile",
    "ot_claims",
    "OT_TOLERANCES",
]

#: Rows beyond which :func:`ot_profile` transports a seeded subset (the same in every layer).
DEFAULT_OT_SAMPLES = 2000

#: Default tolerances of :func:`ot_claims`: ``mass`` (an optimal plan counts as the identity
#: coupling when its diagonal mass is at least ``1 - mass``), ``spread`` (steps count as equal
#: when the largest relative deviation from the mean step is at most this) and ``path`` (the
#: layers lie on a geodesic when the summed steps exceed ``W2(first, last)`` by at most this
#: fraction).
OT_TOLERANCES = {"mass": 0.01, "spread": 0.25, "path": 0.1}


@dataclass(frozen=True)
class OTProfile:
    """Optimal-transport profile of a network's layers (see :func:`ot_profile`).

    Attributes
    ----------
    layers : tuple of str
        Layer names, first to last (``"0"``, ``"1"``, ... for a sequence).
    n_samples : int
        Samples transported (after subsampling).
    indices : ndarray of int or None
        The rows used when the layers were subsampled, else ``None``.
    step_w2sq : ndarray of shape (L,)
        :math:`W_2^2(\\mu_{l-1}, \\mu_l)`, ``l = 1..L``.
    step_identity_cost : ndarray of shape (L,)
        Cost of the identity coupling between consecutive layers, :math:`\tfrac1N\\sum_i
        \\|h^{l}_i - h^{l-1}_i\\|^2` (``>= step_w2sq``).
    step_diagonal_mass : ndarray of shape (L,)
        Mass of each optimal plan on the identity coupling's pairs, ``sum_i P_ii`` (1 when
        the plan is the identity).
    from_first_w2sq : ndarray of shape (L + 1,) or None
        :math:`W_2^2(\\mu_0, \\mu_l)`, ``l = 0..L`` (``from_first=True``), else ``None``.
    total_w2sq : float
        :math:`W_2^2(\\mu_0, \\mu_L)`, first to last layer.
    total_identity_cost : float
        The identity coupling's cost from the first to the last layer.
    total_diagonal_mass : float
        Diagonal mass of the first-to-last optimal plan.
    converged : bool
        Every network-simplex solve reached optimality (else a ``ConvergenceWarning`` was given).
    params : dict
        ``max_samples``, ``seed``, ``num_iter_max``, the layer dimensions.
    """

    layers: tuple[str, ...]
    n_samples: int
    indices: np.ndarray | None
    step_w2sq: np.ndarray
    step_identity_cost: np.ndarray
    step_diagonal_mass: np.ndarray
    from_first_w2sq: np.ndarray | None
    total_w2sq: float
    total_identity_cost: float
    total_diagonal_mass: float
    converged: bool
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def step_w2(self) -> np.ndarray:
        """:math:`W_2(\\mu_{l-1}, \\mu_l)`, ``l = 1..L``."""
        return np.sqrt(self.step_w2sq)

    @property
    def total_w2(self) -> float:
        """:math:`W_2(\\mu_0, \\mu_L)`."""
        return math.sqrt(self.total_w2sq)

    @property
    def path_ratio(self) -> float:
        r""":math:`\sum_l W_2(\mu_{l-1}, \mu_l) / W_2(\mu_0, \mu_L)`: 1 on a geodesic with
        steps along it, above 1 otherwise (triangle inequality); ``nan`` when first = last."""
        return float(self.step_w2.sum() / self.total_w2) if self.total_w2 > 0 else math.nan

    @property
    def step_spread(self) -> float:
        """Largest relative deviation of a step from the mean step, ``max_l |w_l - w̄| / w̄``
        with ``w_l = W2(mu_{l-1}, mu_l)``: 0 for a constant-speed path (Theorem 3)."""
        w = self.step_w2
        m = float(w.mean())
        return float(np.abs(w - m).max() / m) if m > 0 else math.nan

    @property
    def geodesic_deviation(self) -> float | None:
        r"""``max_l |W2(mu_0, mu_l) - (l/L) W2(mu_0, mu_L)| / W2(mu_0, mu_L)`` (0 along a
        constant-speed geodesic); ``None`` without ``from_first``."""
        if self.from_first_w2sq is None or not self.total_w2 > 0:
            return None
        L = len(self.step_w2sq)
        line = np.arange(L + 1) / L * self.total_w2
        return float(np.abs(np.sqrt(self.from_first_w2sq) - line).max() / self.total_w2)

    @property
    def plan_gap(self) -> float:
        """First to last: (identity coupling's cost - W2^2) / W2^2 (0 when the network's own map
        is optimal; ``nan`` when first = last)."""
        t = self.total_w2sq
        return float((self.total_identity_cost - t) / t) if t > 0 else math.nan

    def summary(self) -> dict[str, Any]:
        """The headline numbers as plain Python values (for JSON and reports)."""
        return {
            "n_samples": self.n_samples,
            "n_layers": len(self.layers),
            "total_w2sq": self.total_w2sq,
            "total_identity_cost": self.total_identity_cost,
            "total_diagonal_mass": self.total_diagonal_mass,
            "plan_gap": self.plan_gap,
            "path_ratio": self.path_ratio,
            "step_spread": self.step_spread,
            "geodesic_deviation": self.geodesic_deviation,
            "min_step_diagonal_mass": float(self.step_diagonal_mass.min()),
            "converged": self.converged,
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer (for a CSV): W2^2 from the previous layer and from the first, the
        geodesic's prediction, the identity coupling's cost and the diagonal mass."""
        L = len(self.step_w2sq)
        out = []
        for l, name in enumerate(self.layers):
            row: dict[str, Any] = {"layer": name, "index": l}
            row["step_w2sq"] = float(self.step_w2sq[l - 1]) if l else 0.0
            row["step_identity_cost"] = float(self.step_identity_cost[l - 1]) if l else 0.0
            row["step_diagonal_mass"] = float(self.step_diagonal_mass[l - 1]) if l else 1.0
            ff = self.from_first_w2sq
            row["from_first_w2sq"] = float(ff[l]) if ff is not None else math.nan
            row["geodesic_w2sq"] = (l / L) ** 2 * self.total_w2sq
            out.append(row)
        return out


def _layers(features_by_layer: Any) -> tuple[list[str], list[np.ndarray]]:
    if isinstance(features_by_layer, Mapping):
        names = [str(k) for k in features_by_layer]
        arrays = list(features_by_layer.values())
    elif isinstance(features_by_layer, Sequence) and not isinstance(features_by_layer, str):
        names = [str(i) for i in range(len(features_by_layer))]
        arrays = list(features_by_layer)
    else:
        raise InputError(
            "features_by_layer must be a sequence or a mapping (layer name -> array) of "
            f"arrays of shape (N, d), got {describe(features_by_layer)}"
        )
    if len(arrays) < 2:
        raise InputError(f"features_by_layer needs at least 2 layers, got {len(arrays)}")
    out = []
    for name, A in zip(names, arrays, strict=True):
        if hasattr(A, "detach"):  # a torch tensor: to numpy without importing torch here
            A = A.detach().cpu().numpy()
        if np.iscomplexobj(A):
            raise InputError(
                f"layer {name!r} holds complex values ({describe(A)}); pass real features"
            )
        try:
            A = np.asarray(A, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"layer {name!r} must be a real array of shape (N, d), got {describe(A)} ({exc})"
            ) from exc
        if A.ndim != 2 or A.shape[0] < 1 or A.shape[1] < 1:
            raise InputError(f"layer {name!r} must have shape (N, d) with N, d >= 1, got {A.shape}")
        if not np.isfinite(A).all():
            raise InputError(
                f"layer {name!r} holds {int((~np.isfinite(A)).sum())} non-finite values; "
                "remove or repair those samples in every layer"
            )
        out.append(A)
    N, d = out[0].shape
    for name, A in zip(names, out, strict=True):
        if A.shape[0] != N:
            raise InputError(
                f"every layer must hold the same N samples (row i is sample i in every layer); "
                f"layer {names[0]!r} has {N} rows, layer {name!r} has {A.shape[0]}"
            )
        if A.shape[1] != d:
            raise InputError(
                f"W2 between layers needs one feature dimension: layer {names[0]!r} has d={d}, "
                f"layer {name!r} has d={A.shape[1]}; pass the layers of one width (e.g. the "
                "blocks' outputs, leaving out an input of another size)"
            )
    return names, out


def _transport(
    ot: Any, A: np.ndarray, B: np.ndarray, num_iter_max: int
) -> tuple[float, float, float, bool]:
    """(W2^2, identity coupling's cost, diagonal mass, converged) of uniform measures on rows."""
    N = A.shape[0]
    # squared distances, computed in a scale-free way: divide by the largest entry first
    m = max(float(np.abs(A).max()), float(np.abs(B).max()), 0.0)
    if m == 0.0:
        return 0.0, 0.0, 1.0, True
    As, Bs = A / m, B / m
    M = ot.dist(As, Bs, metric="sqeuclidean")
    np.maximum(M, 0.0, out=M)
    w = np.full(N, 1.0 / N)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT's own warning; reported below as a status
        P, log = ot.emd(w, w, M, numItermax=num_iter_max, log=True)
    ok = int(log.get("result_code", 1)) == 1
    w2sq = float(np.sum(P * M)) * m * m
    ident = float(np.mean(np.sum((Bs - As) ** 2, axis=1))) * m * m
    return max(w2sq, 0.0), ident, float(np.trace(P)), ok


def ot_profile(
    features_by_layer: Sequence[Any] | Mapping[str, Any],
    *,
    max_samples: int | None = DEFAULT_OT_SAMPLES,
    seed: int = 0,
    from_first: bool = True,
    num_iter_max: int = 1_000_000,
) -> OTProfile:
    r"""Optimal-transport profile of a network's layers: costs, plans and the geodesic check.

    .. math::

        s_l = W_2^2(\mu_{l-1}, \mu_l),\qquad
        W_2(\mu_0, \mu_l) \overset{?}{=} \tfrac{l}{L}\, W_2(\mu_0, \mu_L)\quad
        \text{(Theorem 3's constant-speed geodesic)}

    with :math:`\mu_l` the empirical measure (uniform weights) of layer ``l``'s features.

    Parameters
    ----------
    features_by_layer : sequence or mapping of array of shape (N, d)
        Features of every layer, first to last (a mapping keeps its order and names), the same
        ``N`` samples in every layer (row ``i`` is sample ``i``) and one dimension ``d``. numpy
        arrays or torch tensors.
    max_samples : int or None, default 2000
        Transport at most this many samples: beyond it, a subset drawn with ``seed`` (the same
        rows in every layer). ``None``: all (the exact solver's time grows like ``N^3``).
    seed : int, default 0
        Seed of the subset.
    from_first : bool, default True
        Also compute :math:`W_2^2(\mu_0, \mu_l)` for every ``l`` (one more solve per layer), for
        the comparison with the geodesic's :math:`(l/L)\,W_2(\mu_0, \mu_L)`.
    num_iter_max : int, default 1e6
        Iteration limit of each network-simplex solve.

    Returns
    -------
    OTProfile
        Per step and first-to-last: W2^2, identity coupling's cost, diagonal mass; summary
        properties ``path_ratio``, ``step_spread``, ``geodesic_deviation``, ``plan_gap``.

    Raises
    ------
    InputError
        Fewer than 2 layers, a layer not of shape (N, d), non-finite values, layers with
        different ``N`` or ``d``, bad ``max_samples``/``seed``/``num_iter_max``, POT missing.

    Warns
    -----
    ConvergenceWarning
        A solve stopped at ``num_iter_max`` before optimality (``converged=False``).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((50, 3))
    >>> prof = ot_profile([X, X + 1.0, X + 2.0])
    >>> round(prof.total_w2sq, 6), round(prof.total_diagonal_mass, 6), round(prof.step_spread, 6)
    (12.0, 1.0, 0.0)
    """
    try:
        import ot  # POT: imported here, so that `import ufm` stays light
    except ImportError as exc:
        raise InputError(
            "ot_profile needs POT (the Python Optimal Transport library): pip install pot"
        ) from exc
    names, arrays = _layers(features_by_layer)
    if max_samples is not None:
        max_samples = check_int(max_samples, "max_samples", low=2)
    seed = check_int(seed, "seed", low=0)
    num_iter_max = check_int(num_iter_max, "num_iter_max", low=1)
    N = arrays[0].shape[0]
    idx = None
    if max_samples is not None and N > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(N, size=max_samples, replace=False))
        arrays = [A[idx] for A in arrays]
    L = len(arrays) - 1
    steps = [_transport(ot, arrays[l - 1], arrays[l], num_iter_max) for l in range(1, L + 1)]
    total = _transport(ot, arrays[0], arrays[-1], num_iter_max)
    ff = None
    oks = [s[3] for s in steps] + [total[3]]
    if from_first:
        vals = [0.0]
        for l in range(1, L + 1):
            if l == 1:
                vals.append(steps[0][0])
            elif l == L:
                vals.append(total[0])
            else:
                r = _transport(ot, arrays[0], arrays[l], num_iter_max)
                oks.append(r[3])
                vals.append(r[0])
        ff = np.array(vals)
    converged = all(oks)
    if not converged:
        warnings.warn(
            f"a network-simplex solve stopped at num_iter_max={num_iter_max} before optimality; "
            "raise num_iter_max or lower max_samples",
            ConvergenceWarning,
            stacklevel=2,
        )
    return OTProfile(
        layers=tuple(names),
        n_samples=int(arrays[0].shape[0]),
        indices=idx,
        step_w2sq=np.array([s[0] for s in steps]),
        step_identity_cost=np.array([s[1] for s in steps]),
        step_diagonal_mass=np.array([s[2] for s in steps]),
        from_first_w2sq=ff,
        total_w2sq=total[0],
        total_identity_cost=total[1],
        total_diagonal_mass=total[2],
        converged=converged,
        params={
            "max_samples": max_samples,
            "seed": seed,
            "num_iter_max": num_iter_max,
            "N": N,
            "d": int(arrays[0].shape[1]),
        },
    )


def ot_claims(
    profile: OTProfile,
    *,
    mass: float = OT_TOLERANCES["mass"],
    spread: float = OT_TOLERANCES["spread"],
    path: float = OT_TOLERANCES["path"],
) -> list[dict[str, Any]]:
    r"""Verdicts on the three transport claims behind Theorem 3, each of which can fail.

    1. ``identity_optimal``: the network's own map is an optimal transport map between
       consecutive layers (the smallest diagonal mass of the step plans is at least
       ``1 - mass``); fails when the layers' samples cross, e.g. a block that permutes them.
    2. ``equal_steps``: constant speed, :math:`\max_l |w_l - ar w| / ar w \le`
       ``spread`` with :math:`w_l = W_2(\mu_{l-1}, \mu_l)`; fails when some blocks move the
       features much more than others.
    3. ``geodesic``: the layers lie on a geodesic,
       :math:`\sum_l w_l \le (1 + 	ext{path})\, W_2(\mu_0, \mu_L)` (triangle inequality: the
       ratio is at least 1); fails for a detour, e.g. features that spread out and come back.

    Parameters
    ----------
    profile : OTProfile
        From :func:`ot_profile`.
    mass, spread, path : float
        Tolerances (:data:`OT_TOLERANCES`), each in ``(0, inf)``.

    Returns
    -------
    list of dict
        One per claim: ``name``, ``claim`` (one line), ``measured``, ``threshold``, ``held``
        (``None`` when undefined, e.g. first and last layer equal).

    Raises
    ------
    InputError
        ``profile`` is not an :class:`OTProfile` or a tolerance is not positive and finite.
    """
    if not isinstance(profile, OTProfile):
        raise InputError(f"profile must be an OTProfile (from ot_profile), got {describe(profile)}")
    tol = {}
    for name, v in (("mass", mass), ("spread", spread), ("path", path)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not (0 < v < math.inf):
            raise InputError(f"{name} must be a positive finite tolerance, got {describe(v)}")
        tol[name] = float(v)
    m = float(profile.step_diagonal_mass.min())
    sp = profile.step_spread
    pr = profile.path_ratio

    def held(ok: bool, value: float) -> bool | None:
        return None if not math.isfinite(value) else bool(ok)

    return [
        {
            "name": "identity_optimal",
            "claim": "the network's own map between consecutive layers is an optimal transport map",
            "measured": m,
            "threshold": 1.0 - tol["mass"],
            "held": held(m >= 1.0 - tol["mass"], m),
        },
        {
            "name": "equal_steps",
            "claim": "consecutive layers are equal W2 steps apart (constant speed)",
            "measured": sp,
            "threshold": tol["spread"],
            "held": held(sp <= tol["spread"], sp),
        },
        {
            "name": "geodesic",
            "claim": "the summed W2 steps equal W2(first, last) (the layers lie on a geodesic)",
            "measured": pr,
            "threshold": 1.0 + tol["path"],
            "held": held(pr <= 1.0 + tol["path"], pr),
        },
    ]
