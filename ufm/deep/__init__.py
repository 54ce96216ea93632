"""The deep unconstrained feature model (deep UFM): ``L`` linear or ReLU layers on free features.

.. math::

    \\min_{W_1, \\dots, W_L, H}\\ \\frac1N \\sum_{i=1}^N \\Big[\\ell\\big(W_L\\,
    \\sigma(W_{L-1} \\cdots \\sigma(W_1 h_i)), y_i\\big) + \\frac{\\lambda_H}{2}\\|h_i\\|^2\\Big]
    + \\sum_{l=1}^L \\frac{\\lambda_l}{2}\\|W_l\\|_F^2

with ``sigma`` the identity (deep linear UFM: Tirer and Bruna 2022; Dang et al. 2023) or the
ReLU (Sukenik, Mondelli, Lampert 2023, 2024), no bias, and the per-sample averaging of MATH.md
section 5 (``L = 1`` is the bias-free :func:`ufm.solve`). One public solve
(:func:`solve_deep`), its frozen result (:class:`DeepSolveResult`), the objective
(:func:`deep_objective`) and the closed-form optimum of the bias-free MSE deep linear model
(:func:`deep_linear_optimum`), which is also the value of the deep-neural-collapse (DNC)
candidate of the ReLU model.
"""

from .model import ACTIVATIONS, LOSSES, DeepLinearOptimum, deep_linear_optimum, deep_objective
from .solve import INITS, DeepSolveResult, solve_deep

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "INITS",
    "DeepSolveResult",
    "DeepLinearOptimum",
    "solve_deep",
    "deep_objective",
    "deep_linear_optimum",
]
