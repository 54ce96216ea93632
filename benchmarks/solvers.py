"""Benchmark of the MUFM/UFM solvers: lbfgs vs the paper's gd, scaling in N, numpy vs torch.

Run: ``.venv/bin/python benchmarks/solvers.py`` (about 2-3 minutes on one core). Prints
markdown tables; ratios compare methods measured in the same run. Single-threaded BLAS and torch
(set below, before numpy is imported) so that numbers do not depend on how busy other cores are.

Problem (Sec. IV-B-like): K = 10 class centres drawn uniformly on the unit sphere of R^64,
n = 100 samples per class with Gaussian noise of standard deviation 0.1 per coordinate; MSE
MUFM with lam = 0.1, lam_w = lam_b = 5e-4, lam_h = 0 (the package defaults).

Reference optimum: ``method="lbfgs"`` run to ``tol=1e-12``. "Time to 1e-6" is the wall time of
a run times the fraction of its iterations needed to get within 1e-6 relative of the reference
(the per-iteration cost is constant). Two speed-ups are printed: against that estimate for
lbfgs, and (conservative) against the whole lbfgs run to the default ``tol=1e-8``, which ends far
below 1e-6 relative. gd runs a fixed budget of iterations (``GD_BUDGET``).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import mufm  # noqa: E402
from ufm.errors import ConvergenceWarning  # noqa: E402

torch.set_num_threads(1)

LAM = 0.1
GD_BUDGET = {"normal": 20_000, "data": 40_000}


def sphere_data(K: int, n: int, d: int, sigma: float = 0.1, seed: int = 0) -> np.ndarray:
    """Balanced data of shape (K, n, d): centres uniform on the unit sphere plus noise."""
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((K, 1, d))
    C /= np.linalg.norm(C, axis=2, keepdims=True)
    return C + sigma * rng.standard_normal((K, n, d))


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def first_within(history: np.ndarray, ref: float, rel: float = 1e-6) -> int | None:
    ok = np.flatnonzero((history - ref) / abs(ref) <= rel)
    return int(ok[0]) if ok.size else None


def lbfgs_vs_gd() -> None:
    X = sphere_data(10, 100, 64)
    t_ref, ref = timed(lambda: mufm.solve(X, lam=LAM, tol=1e-12))
    f_star = ref.objective
    print(f"## lbfgs vs gd (K=10, n=100, d=64, MSE MUFM, lam={LAM})\n")
    print(
        f"reference: lbfgs to tol=1e-12: f* = {f_star:.15g}, status {ref.status}, "
        f"grad_norm {ref.grad_norm:.1e}, {ref.n_iter} iterations, {t_ref:.2f} s\n"
    )
    t_lb, lb = timed(lambda: mufm.solve(X, lam=LAM), repeat=3)
    rel_lb = (lb.objective - f_star) / f_star
    k_lb = first_within(lb.history["objective"], f_star)
    t_lb6 = t_lb * k_lb / max(lb.n_iter, 1)
    print(
        "| method | init | iterations run | within 1e-6 at iteration | time to 1e-6 (s) | "
        "final rel. error | lbfgs speed-up | lbfgs speed-up, whole run |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| lbfgs | data | {lb.n_iter} | {k_lb} | {t_lb6:.3f} (whole run: {t_lb:.3f}) | "
        f"{rel_lb:.1e} | 1 | 1 |"
    )
    for init, budget in GD_BUDGET.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t_gd, gd = timed(
                lambda init=init, budget=budget: mufm.solve(
                    X, lam=LAM, method="gd", init=init, max_iter=budget
                )
            )
        k = first_within(gd.history["objective"], f_star)
        rel = (gd.objective - f_star) / f_star
        if k is None:
            est = f"not reached in {t_gd:.1f}"
            ratio = f">= {t_gd / t_lb6:.0f}"
            ratio_c = f">= {t_gd / t_lb:.0f}"
        else:
            t_k = t_gd * k / max(gd.n_iter, 1)
            est = f"{t_k:.2f}"
            ratio = f"{t_k / t_lb6:.0f}"
            ratio_c = f"{t_k / t_lb:.0f}"
        print(
            f"| gd (step {gd.params['step']:.3g}) | {init} | {gd.n_iter} | {k} | {est} | "
            f"{rel:.1e} | {ratio} | {ratio_c} |"
        )
    print()


def scaling() -> None:
    print(f"## lbfgs scaling in N (K=10, d=64, MSE MUFM, lam={LAM}, tol=1e-8, numpy)\n")
    print("| N | iterations | time (s) | time / N (us) | time / (N iter) (us) | status |")
    print("|---|---|---|---|---|---|")
    for N in (1_000, 10_000, 100_000):
        X = sphere_data(10, N // 10, 64, seed=1)
        t, r = timed(lambda X=X: mufm.solve(X, lam=LAM), repeat=2 if N < 100_000 else 1)
        print(
            f"| {N} | {r.n_iter} | {t:.3f} | {1e6 * t / N:.2f} | "
            f"{1e6 * t / (N * max(r.n_iter, 1)):.4f} | {r.status} |"
        )
    print()


def numpy_vs_torch() -> None:
    print("## numpy vs torch (CPU, float64 and float32), lbfgs, MSE MUFM\n")
    print(
        "| N | numpy (s) | torch float64 (s) | torch/numpy | torch float32 (s) | "
        "|f64 - f_numpy| / f_numpy | |f32 - f_numpy| / f_numpy |"
    )
    print("|---|---|---|---|---|---|---|")
    for N in (1_000, 10_000):
        X = sphere_data(10, N // 10, 64, seed=2)
        Xt = torch.as_tensor(X)
        t_np, r_np = timed(lambda X=X: mufm.solve(X, lam=LAM), repeat=3)
        t_64, r_64 = timed(lambda Xt=Xt: mufm.solve(Xt, lam=LAM), repeat=3)
        t_32, r_32 = timed(lambda Xt=Xt: mufm.solve(Xt.float(), lam=LAM), repeat=3)
        f = r_np.objective
        print(
            f"| {N} | {t_np:.3f} | {t_64:.3f} | {t_64 / t_np:.2f} | {t_32:.3f} | "
            f"{abs(r_64.objective - f) / f:.1e} | {abs(r_32.objective - f) / f:.1e} |"
        )
    print()


def main() -> None:
    t0 = time.perf_counter()
    print(f"torch {torch.__version__}, numpy {np.__version__}, threads: 1\n")
    lbfgs_vs_gd()
    scaling()
    numpy_vs_torch()
    print(f"total benchmark time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
