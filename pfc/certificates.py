"""Certificates of the study's solutions on class-balanced subsamples, as JSON-ready records.

The MUFM certificate is an SDP whose size grows with the number of samples, so the study (and
``pfc solve --certify``) certifies a class-balanced subsample (:func:`balanced_idx`, the first
``m`` samples of every class) and reports it with :func:`cert_record`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import mufm
import ufm
from ufm.errors import InputError

__all__ = [
    "balanced_idx",
]


def balanced_idx(y: np.ndarray, m: int, K: int) -> np.ndarray:
    """The first ``m`` samples of every class (deterministic, class-balanced).

    Parameters
    ----------
    y : array of int, shape (N,)
        Labels ``0..K-1``.
    m : int
        Samples per class.
    K : int
        Number of classes.

    Returns
    -------
    array of int, shape (K * m,)
        Indices into ``y``, class by class.

    Raises
    ------
    InputError
        A class has fewer than ``m`` samples.
    """
    parts = []
    for k in range(K):
        idx = np.flatnonzero(y == k)
        if idx.size < m:
            raise InputError(
                f"class {k} has only {idx.size} samples; a balanced subsample of {m} per class "
                "is impossible (lower the per-class count)"
            )
        parts.append(idx[:m])
    return np.concatenate(parts)


def cert_record(name: str, cert: Any, **extra: Any) -> dict[str, Any]:
    """One certificate (:class:`ufm.Certificate`) as a flat record named ``name``, plus ``extra``."""
    p = cert.params
    return {
        "problem": name,
        "family": cert.family,
        "N": p.get("N"),
        "K": p.get("K"),
        "d": p.get("d"),
        "lam": p.get("lam"),
        "bound": cert.bound,
        "value": cert.value,
        "gap": cert.gap,
        "rel_gap": cert.rel_gap,
        "exact": bool(cert.exact),
        "tight": bool(cert.tight),
        "rank": int(cert.rank),
        "reconstruction_value": cert.reconstruction_value,
        "solver": cert.solver,
        "status": cert.status,
        "message": cert.message,
        **extra,
    }


def certify_mufm_subsample(
    name: str, X: np.ndarray, y: np.ndarray, m: int, K: int, lam: float, common: dict[str, Any]
) -> dict[str, Any]:
    """Solve the MUFM at ``lam`` on ``m`` samples per class of ``(X, y)`` and certify it (SDP).

    ``common`` holds the other :func:`mufm.solve` options (``lam_w``, ``tol``, ``seed``, ...).
    Returns :func:`cert_record` with the subsample size and the solver's status and objective.
    """
    idx = balanced_idx(y, m, K)
    r = mufm.solve(X[idx], y[idx], lam=lam, **common)
    cert = mufm.certify(r)
    return cert_record(
        name, cert, per_class=m, solver_status=r.status, solver_objective=r.objective
    )


def certify_ufm_result(name: str, res: Any) -> dict[str, Any]:
    """Certify a :func:`ufm.solve` result (``K x K`` reduction) as a :func:`cert_record`."""
    cert = ufm.certify(res)
    return cert_record(name, cert, solver_status=res.status, solver_objective=res.objective)
