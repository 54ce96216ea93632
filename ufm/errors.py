"""The toolkit's exceptions and warnings, in one place.

Every error raised on bad input names the argument, the offending value and what to do next.
All classes derive from :class:`PFCError` so that callers can catch everything the toolkit
raises deliberately with one ``except`` clause; input errors also derive from ``ValueError`` so
that generic code that expects ``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "PFCError",
    "InputError",
    "DegenerateInputError",
    "BackendError",
    "SolverError",
    "CheckpointError",
    "DivergenceError",
    "PFCWarning",
    "ConvergenceWarning",
    "RankWarning",
]


class PFCError(Exception):
    """Base class of every exception the toolkit raises on purpose."""


class InputError(PFCError, ValueError):
    """An argument has the wrong shape, type, range or value."""


class DegenerateInputError(InputError):
    """The input is well formed but the quantity asked for is undefined on it.

    Examples: all class means coincide (``tr Sigma_B = 0``), a class without samples,
    fewer than two classes.
    """


class BackendError(PFCError, RuntimeError):
    """The requested backend or device is not available (e.g. CUDA without a GPU)."""


class SolverError(PFCError, RuntimeError):
    """A numerical solver failed outright (not merely slow convergence, which is a status)."""


class CheckpointError(PFCError, RuntimeError):
    """A checkpoint or run directory cannot be read, written or resumed."""


class DivergenceError(PFCError, RuntimeError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""


class PFCWarning(UserWarning):
    """Base class of the toolkit's warnings."""


class ConvergenceWarning(PFCWarning):
    """An iterative method stopped before meeting its tolerance (see ``result.status``)."""


class ScaleWarning(PFCWarning):
    """A coefficient's effect depends on the data's scale, and at this scale it is far from its
    effect on unit-scale data (e.g. ``mufm.solve``'s ``lam`` on raw pixel values)."""


class RankWarning(PFCWarning):
    """A matrix the metric inverts is rank deficient; the pseudo-inverse on its range is used."""
