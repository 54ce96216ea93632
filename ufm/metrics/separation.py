r"""The law of data separation: a geometric per-layer decay of the separation fuzziness.

He and Su (PNAS 2023, "A law of data separation in deep learning") observe that the separation
fuzziness of layer ``l``,

.. math:: D_l = \operatorname{tr}(\Sigma_W^{(l)} \Sigma_B^{(l)+}),

(``K`` times Papyan's NC1, :func:`ufm.nc1`) decays geometrically across the layers of a trained
network, :math:`D_l \approx \rho^{\,l} D_0`, i.e. :math:`\log D_l` is linear in the layer index.
:func:`separation_rate` fits that line and reports the fitted ratio :math:`\rho` per layer and
the fit's :math:`R^2`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = ["SeparationFit", "separation_rate"]


@dataclass(frozen=True)
class SeparationFit:
    """What :func:`separation_rate` returns.

    Attributes
    ----------
    rate : float
        The fitted per-layer ratio :math:`\\rho = e^{s}` (below 1: the fuzziness falls).
    slope, intercept : float
        The least-squares line :math:`\\log D_l = a + s\\,l`.
    r2 : float
        Coefficient of determination of that line on :math:`\\log D_l` (1 for an exactly
        geometric sequence; NaN when every :math:`\\log D_l` is equal).
    ratios : ndarray of shape (L - 1,)
        The observed ratios :math:`D_{l+1}/D_l` of consecutive layers (per unit of layer index
        when the indices are not consecutive: :math:`(D_{l'}/D_l)^{1/(l'-l)}`).
    layers : ndarray of shape (L,)
        The layer indices used.
    """

    rate: float
    slope: float
    intercept: float
    r2: float
    ratios: np.ndarray
    layers: np.ndarray


def separation_rate(
    fuzziness: Sequence[float], layers: Sequence[float] | None = None
) -> SeparationFit:
    r"""Fit the law of data separation: :math:`\log D_l = a + l \log\rho` by least squares.

    Parameters
    ----------
    fuzziness : sequence of float, length L >= 2
        The separation fuzziness :math:`D_l` (or any constant multiple, e.g. NC1) of each
        layer, all finite and ``> 0``.
    layers : sequence of float, optional
        The layer indices, strictly increasing (default ``0, 1, ..., L-1``).

    Returns
    -------
    SeparationFit

    Raises
    ------
    InputError
        Fewer than two layers, a non-finite or non-positive value, lengths that differ, or
        indices that do not increase.

    References
    ----------
    He, Su, "A law of data separation in deep learning", PNAS 120 (36), 2023.
    """
    D = np.asarray(fuzziness, dtype=np.float64)
    if D.ndim != 1 or D.size < 2:
        raise InputError(
            f"fuzziness must be a 1-d sequence of at least 2 values, got shape {D.shape}"
        )
    if not np.all(np.isfinite(D)) or np.any(D <= 0):
        raise InputError(
            f"fuzziness must be finite and > 0 (its logarithm is fitted), got {D.tolist()}; "
            "drop the layers where it is undefined or 0"
        )
    x = np.arange(D.size, dtype=np.float64) if layers is None else np.asarray(layers, float)
    if x.shape != D.shape:
        raise InputError(f"layers must have the length of fuzziness {D.size}, got {x.shape}")
    if not np.all(np.isfinite(x)) or np.any(np.diff(x) <= 0):
        raise InputError(f"layers must be finite and strictly increasing, got {x.tolist()}")
    z = np.log(D)
    s, a = np.polyfit(x, z, 1)
    resid = z - (a + s * x)
    tot = float(np.sum((z - z.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / tot if tot > 0 else math.nan
    ratios = np.exp(np.diff(z) / np.diff(x))
    return SeparationFit(
        rate=float(np.exp(s)),
        slope=float(s),
        intercept=float(a),
        r2=r2,
        ratios=ratios,
        layers=x,
    )
