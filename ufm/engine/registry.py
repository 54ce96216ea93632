"""The registry of solver methods: every ``method=`` of :func:`ufm.solve` and :func:`mufm.solve`.

Each method is one :class:`Method` object that declares, once, everything the engine asks about
it: its name, the losses it supports, its default iteration budget (:meth:`Method.default_max_iter`),
its own options (``step`` for ``gd``) with their validators, how it starts and whether it rescales
the problem exactly, and the function that runs it (:meth:`Method.run`). The solve pipeline, the
option checks, the error messages and the CLI's ``--method`` choices all query this registry
(:func:`get_method`, :func:`method_names`, :func:`default_method`); nothing compares a method
name as a string elsewhere.

Adding a method is one function ``run(problem, start, *, max_iter, tol, seed, init, progress,
**options) -> Raw`` (see :mod:`ufm.engine.methods` for the four built-in ones) and one call,

>>> from ufm.engine.registry import Method, register, unregister
>>> def run_nothing(problem, start, **kw):  # doctest: +SKIP
...     ...
>>> register(Method("nothing", "does nothing", runner=run_nothing))  # doctest: +SKIP

after which ``ufm.solve(y, d, method="nothing")`` runs it (:func:`unregister` removes it).
The built-in methods name their runner as ``"module:function"``, imported on first use, so that
reading the registry (``pfc --help``) loads neither torch nor scipy.

This module imports only the error and loss declarations: it sits at the bottom of the engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import InputError
from ..losses import LOSSES, check_loss
from ..validate import check_scalar, describe

__all__ = [
    "Method",
    "register",
    "unregister",
    "get_method",
    "method_names",
    "methods",
    "default_method",
    "manifold_method",
    "positive",
]


def positive(value: Any, name: str) -> float:
    """Validator of a positive finite option (``step`` of ``gd``)."""
    return check_scalar(value, name, low=0.0, low_inclusive=False)


@dataclass(frozen=True, eq=False)
class Method:
    """One solver method, declared once.

    Parameters
    ----------
    name : str
        The ``method=`` string.
    summary : str
        One line for error messages and listings.
    runner : callable or str
        ``runner(problem, start, *, max_iter, tol, seed, init, progress, **options) -> Raw``
        (:class:`ufm.engine.methods.Raw`), or ``"module:function"`` naming it (imported on the
        first run). ``problem`` is a :class:`ufm.engine.core.Problem`, ``start`` the triple
        ``(W0, b0, H0)`` on its backend, ``progress`` an object with ``update(n, f, grad_norm)``.
    losses : tuple of str
        The losses it solves (default: all of :data:`ufm.losses.LOSSES`).
    max_iter : int or mapping of loss to int
        Default iteration budget (per loss when a mapping), see :meth:`default_max_iter`.
    options : mapping of str to callable
        Its own options, each with a validator ``check(value, name) -> value``; ``None`` means
        unset. Any other method refuses the option.
    default_for : tuple of str
        The losses for which ``method=None`` picks it (at most one method per loss).
    data_start : bool
        With data (MUFM), start by default at ``H = X, W = 0, b = 0`` (else seeded normal).
    rescales : bool
        It solves an exactly rescaled problem itself, so the scale guard of the methods that
        work in unscaled coordinates (coefficients or data beyond 1e50) does not apply.
    first_order : bool
        A start that is already stationary is perturbed and restarted once, and an MSE result
        passes the second-order check of the reduced objective (a saddle is reported).
    escapes_saddles : bool
        It checks curvature and escapes saddles itself (named in the hint of a ``saddle``
        status).
    max_iter_hint : str
        Added to the advice of a ``max_iter`` status.
    manifold : bool
        It also runs on the LayerNorm UFM's product of spheres (``features="layernorm"``),
        through the tangent-projection and retraction hooks of the problem.
    """

    name: str
    summary: str
    runner: Callable[..., Any] | str
    losses: tuple[str, ...] = LOSSES
    max_iter: int | Mapping[str, int] = 10_000
    options: Mapping[str, Callable[[Any, str], Any]] = field(default_factory=dict)
    default_for: tuple[str, ...] = ()
    data_start: bool = True
    rescales: bool = False
    first_order: bool = True
    escapes_saddles: bool = False
    max_iter_hint: str = ""
    manifold: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError(
                f"a method's name must be a non-empty string, got {describe(self.name)}"
            )
        losses = tuple(check_loss(loss) for loss in self.losses)
        if not losses:
            raise InputError(f"method {self.name!r} must support at least one loss of {LOSSES}")
        object.__setattr__(self, "losses", losses)
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        for loss in self.default_for:
            if loss not in losses:
                raise InputError(
                    f"method {self.name!r} is the default for loss={loss!r}, which it does not support"
                )
        if not (callable(self.runner) or (isinstance(self.runner, str) and ":" in self.runner)):
            raise InputError(
                f"method {self.name!r}: runner must be a callable or 'module:function', got "
                f"{describe(self.runner)}"
            )

    def default_max_iter(self, loss: str) -> int:
        """The iteration budget of ``max_iter=None`` for ``loss``."""
        if isinstance(self.max_iter, Mapping):
            return int(self.max_iter[loss])
        return int(self.max_iter)

    def check_loss(self, loss: str) -> None:
        """Refuse a loss the method does not solve, naming the methods that do."""
        if loss not in self.losses:
            others = [m.name for m in methods() if loss in m.losses]
            raise InputError(
                f"method={self.name!r} ({self.summary}) supports loss in {self.losses}, got "
                f"loss={loss!r}; use one of {tuple(others)} (or method=None) for loss={loss!r}"
            )

    def check_options(self, **given: Any) -> dict[str, Any]:
        """The options passed (``None``: unset), validated; an option of another method is refused."""
        out = {}
        for key, value in given.items():
            if value is None:
                continue
            if key not in self.options:
                owners = [m.name for m in methods() if key in m.options]
                which = " or ".join(f"method={o!r}" for o in owners) or "no registered method"
                own = f"options {tuple(self.options)}" if self.options else "no options of its own"
                raise InputError(
                    f"{key} applies to {which} only, got method={self.name!r} ({self.summary}), "
                    f"which has {own}; leave {key} unset" + (f" or use {which}" if owners else "")
                )
            out[key] = self.options[key](value, key)
        return out

    def run(self, problem: Any, start: tuple[Any, Any, Any], **kw: Any) -> Any:
        """Run the method from ``start = (W0, b0, H0)``; returns a :class:`~ufm.engine.methods.Raw`."""
        fn = self.runner
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        return fn(problem, start, **kw)


_REGISTRY: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (``replace=True`` to redefine a name); returns it."""
    if not isinstance(method, Method):
        raise InputError(f"register expects a Method, got {describe(method)}")
    if method.name in _REGISTRY and not replace:
        raise InputError(
            f"a method named {method.name!r} is already registered; pass replace=True to redefine it"
        )
    for loss in method.default_for:
        for other in _REGISTRY.values():
            if other.name != method.name and loss in other.default_for:
                raise InputError(
                    f"method {other.name!r} is already the default for loss={loss!r}; "
                    f"{method.name!r} cannot be a second default"
                )
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> Method:
    """Remove the method ``name`` from the registry; returns it."""
    try:
        return _REGISTRY.pop(name)
    except (KeyError, TypeError):
        raise InputError(f"no method named {describe(name)} is registered") from None


def methods() -> tuple[Method, ...]:
    """The registered methods, in registration order."""
    return tuple(_REGISTRY.values())


def method_names() -> tuple[str, ...]:
    """The registered method names, in registration order (the ``method=`` choices)."""
    return tuple(_REGISTRY)


def get_method(method: str | Method | None, loss: str | None = None) -> Method:
    """The registered :class:`Method` of ``method`` (``None``: the default for ``loss``)."""
    if method is None:
        return default_method(loss)
    if isinstance(method, Method):
        return method
    if isinstance(method, str) and method in _REGISTRY:
        return _REGISTRY[method]
    raise InputError(f"method must be one of {method_names()} or None, got {describe(method)}")


def default_method(loss: str | None) -> Method:
    """The method that ``method=None`` picks for ``loss`` (an unknown loss is refused first, with
    the spelling to use)."""
    loss = check_loss(loss)
    for m in _REGISTRY.values():
        if loss in m.default_for:
            return m
    raise InputError(f"no method is registered as the default for loss={describe(loss)}")


# ------------------------------------------------------------------------- the built-in methods
register(
    Method(
        "suffstats",
        "MSE: features eliminated in closed form, trust-region Newton on (W, b) from the "
        "sufficient statistics, with a second-order check",
        "ufm.engine.methods:run_suffstats",
        losses=("mse",),
        max_iter=1_000,
        default_for=("mse",),
        rescales=True,
        first_order=False,
        escapes_saddles=True,
    )
)
register(
    Method(
        "lbfgs",
        "L-BFGS: MSE on H with (W, b) eliminated, cross entropy jointly on (W, b, H)",
        "ufm.engine.methods:run_lbfgs",
        max_iter=10_000,
        default_for=("ce",),
        manifold=True,
    )
)
register(
    Method(
        "lbfgs-h",
        "MSE: L-BFGS on H with (W, b) eliminated in closed form",
        "ufm.engine.methods:run_lbfgs",
        losses=("mse",),
        max_iter=10_000,
    )
)
register(
    Method(
        "gd",
        "plain fixed-step gradient descent on (W, b, H) (the paper's)",
        "ufm.engine.methods:run_gd",
        # plain gradient descent on cross entropy needs up to ~5e5 iterations on the reference
        # catalogue (its rate is linear with a poor condition number)
        max_iter={"mse": 100_000, "ce": 1_000_000},
        options={"step": positive},
        data_start=False,
        max_iter_hint=" (plain gradient descent converges at a linear rate set by the condition "
        "number; on cross entropy it can need 1e5-1e6 iterations)",
    )
)


def manifold_method(method: str | Method | None) -> Method:
    """The registered method for ``features="layernorm"`` (``None``: the first that can run on the
    sphere); a method without manifold hooks is refused, naming those that have them."""
    able = [m for m in methods() if m.manifold]
    if method is None and able:
        return able[0]
    m = get_method(method) if method is not None else None
    if m is None or not m.manifold:
        raise InputError(
            f"method must be one of {tuple(x.name for x in able)} (L-BFGS with the sphere's tangent "
            f"projection and retraction) or None with features='layernorm', got {describe(method)}"
        )
    return m
