"""The (M)UFM objective of MATH.md section 5, evaluated on given variables.

The function lives in the engine (:func:`ufm.engine.objective.objective`), which the convex
certificates use to check their points; this module is its public face, ``ufm.objective``.
"""

from __future__ import annotations

from .engine.objective import objective

__all__ = ["objective"]
