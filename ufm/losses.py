"""The losses of the feature models and of the trainer, declared once.

``"mse"`` is :math:`\\tfrac12\\|W h + b - e_y\\|^2` per sample and ``"ce"`` the cross entropy of
the logits :math:`W h + b` (MATH.md section 5); both are averaged over the samples. Every
``loss=`` argument and ``--loss`` option of the toolkit reads :data:`LOSSES` and canonicalises
with :func:`check_loss`, so a loss is added or renamed here only.

>>> check_loss("mse")
'mse'
"""

from __future__ import annotations

from typing import Any

from .errors import InputError
from .validate import describe

__all__ = ["LOSSES", "LOSS_NAMES", "check_loss"]

#: The loss names, in the order choices are listed.
LOSSES: tuple[str, ...] = ("mse", "ce")

#: How reports name each loss.
LOSS_NAMES: dict[str, str] = {"mse": "squared error (MSE)", "ce": "cross entropy"}


def check_loss(loss: Any) -> str:
    """``loss`` itself, checked: one of :data:`LOSSES`, spelled exactly (lower case).

    Names are not case-folded anywhere (``"MSE"`` is refused with the spelling to use), so
    every entry point accepts exactly the same names.

    Raises
    ------
    InputError
        ``loss`` is not one of :data:`LOSSES`.
    """
    if isinstance(loss, str) and loss in LOSSES:
        return loss
    hint = ""
    if isinstance(loss, str) and loss.lower() in LOSSES:
        hint = f" (write {loss.lower()!r})"
    raise InputError(f"loss must be {' or '.join(map(repr, LOSSES))}, got {describe(loss)}{hint}")
