"""Deferred imports: torch loads on first use, not when a light module is imported.

``import ufm``, ``pfc --help``, ``pfc report`` and reading a run's CSV never need torch (about
1.5 s and 650 MB). A module on such a path writes ``from ufm.lazy import torch`` instead of
``import torch``: the name is a stand-in whose first attribute access (``torch.float64``,
``torch.from_numpy``) imports the real module; no module-level statement of such a module may
touch ``torch.<attr>``. :func:`is_tensor` answers ``False`` without importing torch when it is not
loaded yet (nothing can be a tensor then).

Packages whose names are the documented API (``ufm``, ``ufm.metrics``, ``resnet_pfc``) resolve
their public names on first access with :func:`lazy_package` (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["torch", "is_tensor", "lazy_package"]


class _LazyModule:
    """Stand-in for a module, imported on the first attribute access."""

    def __init__(self, name: str) -> None:
        self.__dict__["_lazy_name"] = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__dict__["_lazy_name"]), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_lazy_name']!r}>"


#: ``torch``, imported on the first attribute access.
torch: Any = _LazyModule("torch")


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor; never imports torch (no tensor exists before it loads)."""
    mod = sys.modules.get("torch")
    return mod is not None and isinstance(x, mod.Tensor)


class _Package(types.ModuleType):
    # A public function may share its name with its module (``ufm.solve``): importing the module
    # makes the import system bind the package attribute to the module; bind the function instead.
    _shadowed: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            name in self._shadowed
            and isinstance(value, types.ModuleType)
            and value.__name__ == f"{self.__name__}.{name}"
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_package(
    package: str, names: Mapping[str, str], *, shadowed: tuple[str, ...] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """PEP 562 ``__getattr__`` and ``__dir__`` for a package whose names load on first access.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    names : mapping of str to str
        Public name -> the submodule (relative, e.g. ``".solve"``) that defines it; a submodule's
        own name maps to itself (``"errors": ".errors"``).
    shadowed : tuple of str
        Names of functions that share their name with their module (``solve`` in
        ``ufm/solve.py``): the package attribute stays the function.

    Returns
    -------
    (__getattr__, __dir__)
        To assign at the package's top level.
    """
    mod = sys.modules[package]
    if shadowed:
        mod.__class__ = type("_Package", (_Package,), {"_shadowed": frozenset(shadowed)})

    def __getattr__(name: str) -> Any:
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        sub = importlib.import_module(where, package)
        own = sub.__name__.rsplit(".", 1)[-1] == name and name not in shadowed
        value = sub if own else getattr(sub, name)
        setattr(mod, name, value)
        return getattr(mod, name)

    def __dir__() -> list[str]:
        return sorted(set(mod.__dict__) | set(names))

    return __getattr__, __dir__
