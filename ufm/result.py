"""The result type shared by :func:`ufm.solve` and :func:`mufm.solve`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .status import Status
from .validate import check_int

__all__ = ["SolveResult", "Deferred", "with_classes"]


class Deferred:
    """An array computed on first access of a :class:`SolveResult` field, then kept.

    ``mufm.solve`` with the MSE default (``method="suffstats"``) solves for ``(W, b)`` and
    computes every metric without ever writing the ``N x d`` features: the field ``H`` holds a
    :class:`Deferred` until it is read, and the first read forms it in one streaming pass over
    ``X``. Pass a zero-argument callable that returns the array.
    """

    __slots__ = ("fn", "lock")

    def __init__(self, fn: Callable[[], Any]):
        if not callable(fn):
            raise InputError(f"Deferred needs a zero-argument callable, got {type(fn).__name__}")
        self.fn = fn
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return "Deferred(not formed yet)"


class _DeferredField:
    """Data descriptor of a frozen dataclass field whose value may be :class:`Deferred`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = "_value_" + name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:  # the dataclass machinery asks for a default: there is none
            raise AttributeError(self.key)
        v = obj.__dict__[self.key]
        if isinstance(v, Deferred):
            with v.lock:  # two threads reading at once form it once
                v = obj.__dict__[self.key]
                if isinstance(v, Deferred):
                    v = v.fn()
                    obj.__dict__[self.key] = v
        return v

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.key] = value


@dataclass(frozen=True, repr=False, eq=False)
class SolveResult:
    """Solution of a UFM or MUFM problem (MATH.md section 5).

    Arrays are numpy arrays for the numpy backend and torch tensors (on the solver's device and
    dtype) for the torch backend. Samples come first.

    Attributes
    ----------
    W : array of shape (K, d)
        Classifier.
    b : array of shape (K,)
        Bias (zeros when ``bias=False``).
    H : array of shape (N, d)
        Last-layer features, one row per sample. With ``method="suffstats"`` on float64 numpy
        data (the MSE default) ``H`` is formed on first access (one streaming pass over ``X``,
        then kept; ``formed("H")`` tells whether it has been), so a solve whose caller needs
        only ``W``, ``b``, the objective and the metrics never writes the ``N x d`` array.
        Changing ``X`` in place before that first access is detected (the features would
        no longer belong to the solution) and raises :class:`~ufm.errors.InputError`.
    y : array of shape (N,)
        Integer labels ``0..K-1``.
    X : array of shape (N, d) or None
        The data anchoring the features (MUFM); ``None`` for the UFM.
    objective : float
        The objective ``f(W, b, H)`` at the solution.
    grad_norm : float
        Gradient norm in balanced coordinates,
        :math:`\\sqrt{\\|\\nabla_W f\\|_F^2 + \\|\\nabla_b f\\|^2 + N\\|\\nabla_H f\\|_F^2}`,
        the quantity compared with ``tol``.
    status : Status
        ``Status.CONVERGED``, ``MAX_ITER`` (budget spent), ``STALLED`` (no further progress
        possible in the working precision) or ``SADDLE`` (MSE first-order methods: the
        point is stationary but the reduced objective has negative curvature there). Members
        compare equal to their strings (``"converged"``, ...).
    converged : bool
        ``status == Status.CONVERGED``.
    n_iter : int
        Iterations of the method (the unit of ``max_iter``).
    history : dict of str to numpy.ndarray
        ``"objective"`` and ``"grad_norm"`` per iteration (per integration window for ``flow``);
        entry 0 is the starting point. For the MSE ``lbfgs`` path the objective is the reduced one
        (``W``, ``b`` optimal for each ``H``).
    metrics : dict of str to float
        :func:`ufm.metrics.collapse_metrics` of ``H`` (with ``W`` and ``b``); empty when they are
        undefined (e.g. the all-zero solution of an over-regularised UFM).
    method, backend : str
        Method and backend used.
    params : dict
        Every option used (coefficients, loss, bias, tol, max_iter, seed, dtype, device, ...).
    classes : numpy.ndarray of shape (K,) or None
        The caller's label of each class (:func:`ufm.solve`: any hashable labels are mapped to
        ``0..K-1`` like scikit-learn's ``LabelEncoder``, so ``classes[y]`` gives the original
        labels back); ``None`` where the front end takes labels ``0..K-1`` only.
    """

    W: Any
    b: Any
    H: Any = _DeferredField()  # type: ignore[assignment]
    y: Any
    X: Any
    objective: float
    grad_norm: float
    status: Status
    converged: bool
    n_iter: int
    history: dict[str, np.ndarray]
    metrics: dict[str, float]
    method: str
    backend: str
    params: dict[str, Any] = field(default_factory=dict)
    classes: Any = None

    def formed(self, name: str = "H") -> bool:
        """Whether the field ``name`` holds its array (``False``: formed on first access).

        Raises
        ------
        InputError
            ``name`` is not a field of the result.
        """
        if name not in self.__dataclass_fields__:
            raise InputError(
                f"formed() takes a field name of SolveResult ({', '.join(self.__dataclass_fields__)}),"
                f" got {name!r}"
            )
        return not isinstance(self.__dict__.get("_value_" + name), Deferred)

    def __getstate__(self) -> dict[str, Any]:
        # pickling and deep copies take the features themselves, never the callable
        _ = self.H
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def layers(self, L: int) -> list[Any]:
        """Features of an ``L``-layer MUFM solution on the straight line of Theorem 3.

        .. math::

            h_i^{l} = x_i + \\frac{l}{L}\\,(h_i - x_i), \\qquad l = 0, \\dots, L,

        the unique minimiser of the discretised transport cost for fixed end points (MATH.md
        sec. 5), so that ``mufm.multilayer_objective(result.layers(L), ...)`` equals
        ``result.objective`` for every ``L``.

        Parameters
        ----------
        L : int
            Number of layers, ``L >= 1``.

        Returns
        -------
        list of L + 1 arrays of shape (N, d)
            ``[X, H_1, ..., H_L = H]``.

        Raises
        ------
        InputError
            For a UFM result (no data ``X``) or ``L < 1``.
        """
        if self.X is None:
            raise InputError(
                "layers() needs the data X of an MUFM solution; this is a UFM result "
                "(lam = 0, no data). Use mufm.solve(X, ...) to get layers"
            )
        L = check_int(L, "L", low=1)
        D = self.H - self.X
        return [self.X + (l / L) * D for l in range(L)] + [self.H]

    @property
    def K(self) -> int:
        """Number of classes."""
        return int(self.W.shape[0])

    @property
    def N(self) -> int:
        """Number of samples."""
        return int(self.y.shape[0])

    @property
    def d(self) -> int:
        """Feature dimension."""
        return int(self.W.shape[1])

    def __repr__(self) -> str:
        model = "MUFM" if self.X is not None else "UFM"
        p = self.params
        coef = ", ".join(f"{k}={p[k]:g}" for k in ("lam", "lam_w", "lam_h", "lam_b") if k in p)
        m = ""
        if self.metrics:
            m = f", pfc1={self.metrics.get('pfc1', float('nan')):.3g}, "
            m += f"pfc2={self.metrics.get('pfc2', float('nan')):.3g}"
        return (
            f"SolveResult({model}, K={self.K}, N={self.N}, d={self.d}, {coef}, "
            f"loss={p.get('loss')!r}, method={self.method!r}, backend={self.backend!r}, "
            f"objective={self.objective:.12g}, grad_norm={self.grad_norm:.2e}, "
            f"status={self.status!r}, n_iter={self.n_iter}{m})"
        )


def with_classes(result: SolveResult, classes: Any) -> SolveResult:
    """A copy of ``result`` whose ``classes`` field is ``classes``, leaving deferred fields
    deferred.

    :func:`dataclasses.replace` reads every field, so it would form a :class:`Deferred` ``H``
    (an ``N x d`` pass) at once, before the caller could change ``X``, and lose the check that
    the data are unchanged when ``H`` is first read.

    Parameters
    ----------
    result : SolveResult
    classes : numpy.ndarray of shape (K,)
        The original label of each class.

    Returns
    -------
    SolveResult
        Shares its arrays (and any deferred field) with ``result``.

    Raises
    ------
    InputError
        ``result`` is not a :class:`SolveResult`.
    """
    if not isinstance(result, SolveResult):
        raise InputError(f"with_classes needs a SolveResult, got {type(result).__name__}")
    new = object.__new__(type(result))
    new.__dict__.update(result.__dict__)
    object.__setattr__(new, "classes", classes)
    return new
