"""Benchmark of the MSE MUFM solvers: sufficient statistics vs L-BFGS on H vs the paper's gd.

Run: ``.venv/bin/python benchmarks/solvers.py [--quick]`` (repository root). Prints markdown
tables. Every case is measured twice in the same process: at **default** settings (what a user
gets: BLAS and torch thread pools untouched) and **pinned** to one thread (threadpoolctl +
``torch.set_num_threads(1)``, scoped); ratios compare runs of the same process.

Cases (K = 10 class centres uniform on the unit sphere, Gaussian noise 0.1 per coordinate, MSE
MUFM, ``lam_w = lam_b = 5e-4``, ``lam_h = 0``):

1. ``n = 100`` per class, ``d = 64``, ``lam = 0.1``: ``method="suffstats"`` (default) vs
   ``"lbfgs-h"`` (the former default) vs ``"gd"`` (the paper's plain gradient descent, data
   start), time to 1e-6 relative of the reference optimum (``suffstats`` to ``tol=1e-12``).
   For gd, a run's time times the fraction of its iterations needed.
2. ``N = 10^6``, ``d = 64``: one ``X.T @ X`` vs the statistics pass + solve
   (``SufficientStatistics`` + ``solve_statistics``) vs the whole ``mufm.solve`` (statistics,
   solve, and every collapse metric of ``H`` in one more pass; ``H`` itself is formed on the
   first read of ``res.H``, timed separately). Interleaved, best of three each.
3. The demo's network sweep shape: ``N = 1,347``, ``d = 256``, 11 values of ``lam`` in
   ``logspace(-3, 2, 11)``: ``lbfgs-h`` per value vs one statistics pass reused by 11
   ``suffstats`` solves (``--quick``: lbfgs-h on 3 of the 11 values, ratio per solve); also
   the sweep as it ran before issue 10 (``lbfgs-h``, then the default, with no thread policy:
   ``ufm.threads("inherit")``, 3 of the 11 values).
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import mufm
import ufm
from ufm import SufficientStatistics, solve_statistics
from ufm.errors import ConvergenceWarning

LAM = 0.1


def sphere_data(K: int, n: int, d: int, sigma: float = 0.1, seed: int = 0) -> np.ndarray:
    """Balanced data of shape (K, n, d): centres uniform on the unit sphere plus noise."""
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((K, 1, d))
    C /= np.linalg.norm(C, axis=2, keepdims=True)
    return C + sigma * rng.standard_normal((K, n, d))


@contextlib.contextmanager
def pinned(on: bool):
    if not on:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(old)


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


def case_small(rows: list, gd_budget: int) -> None:
    X = sphere_data(10, 100, 64)
    f_star = mufm.solve(X, lam=LAM, tol=1e-12).objective
    for pin in (False, True):
        with pinned(pin):
            t_s, s = timed(lambda: mufm.solve(X, lam=LAM), repeat=3)
            t_l, lb = timed(lambda: mufm.solve(X, lam=LAM, method="lbfgs-h"), repeat=2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t_g, gd = timed(
                    lambda: mufm.solve(X, lam=LAM, method="gd", init="data", max_iter=gd_budget)
                )
        k = first_within(gd.history["objective"], f_star)
        t_g6 = t_g * k / gd.n_iter if k is not None else float("inf")
        k_l = first_within(lb.history["objective"], f_star)
        t_l6 = t_l * k_l / max(lb.n_iter, 1)
        setting = "pinned (1 thread)" if pin else "default"
        rel_s = abs(s.objective - f_star) / f_star
        rows.append(
            f"| K=10, n=100, d=64 | {setting} | suffstats whole run {t_s:.4f} s "
            f"(rel. err {rel_s:.0e}) | lbfgs-h to 1e-6: {t_l6:.3f} s | "
            f"gd to 1e-6: {'not reached' if k is None else f'{t_g6:.2f} s'} "
            f"(budget {gd.n_iter} it, {t_g:.1f} s) | lbfgs-h / suffstats {t_l6 / t_s:.0f}x; "
            f"gd / suffstats {'>=' if k is None else ''}{(t_g6 if k else t_g) / t_s:.0f}x |"
        )


def case_million(rows: list, N: int) -> None:
    K, d = 10, 64
    X = sphere_data(K, N // K, d, seed=1).reshape(-1, d)
    y = np.repeat(np.arange(K), N // K)

    def stats_solve():
        st = SufficientStatistics(K).update(X, y)
        return solve_statistics(st, lam=LAM)

    for pin in (False, True):
        with pinned(pin):
            t_g = t_ss = t_full = t_h = float("inf")
            # interleaved, best of three each: the load of a shared machine drifts
            for _ in range(3):
                t_g = min(t_g, timed(lambda: X.T @ X)[0])
                t, sol = timed(stats_solve)
                t_ss = min(t_ss, t)
                t, r = timed(lambda: mufm.solve(X, y, lam=LAM))
                t_full = min(t_full, t)
                t_h = min(t_h, timed(lambda r=r: r.H)[0])
        setting = "pinned (1 thread)" if pin else "default"
        rows.append(
            f"| N={N:,}, d=64 | {setting} | X.T @ X {t_g:.3f} s | statistics + solve "
            f"{t_ss:.3f} s ({sol.status}, {sol.n_iter} it) = {t_ss / t_g:.2f}x | mufm.solve "
            f"(W, b, objective, every metric) {t_full:.3f} s = {t_full / t_g:.2f}x; first read "
            f"of res.H (forms the N x d array) +{t_h:.3f} s = {(t_full + t_h) / t_g:.2f}x |"
        )


def case_sweep(rows: list, quick: bool) -> None:
    K, n, d = 10, 135, 256
    X = sphere_data(K, n, d, sigma=0.3, seed=3).reshape(-1, d)[:1347]
    y = np.repeat(np.arange(K), n)[:1347]
    lams = np.logspace(-3, 2, 11)
    old_lams = lams[[0, 5, 10]] if quick else lams
    for pin in (False, True):
        with pinned(pin):
            t = time.perf_counter()
            st = SufficientStatistics(K).update(X, y)
            sols = [solve_statistics(st, lam=float(lam)) for lam in lams]
            t_new = time.perf_counter() - t
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                olds = [mufm.solve(X, y, lam=float(lam), method="lbfgs-h") for lam in old_lams]
            t_old = time.perf_counter() - t
        per_old = t_old / len(old_lams)
        dev = max(
            abs(o.objective - s.objective) / o.objective
            for o, s in zip(olds, [sols[list(lams).index(v)] for v in old_lams], strict=True)
        )
        setting = "pinned (1 thread)" if pin else "default"
        if not pin:
            # the "today": lbfgs-h (then the default) without the thread policy, i.e.
            # BLAS and torch at their own default thread counts (3 of the 11 values)
            t = time.perf_counter()
            with ufm.threads("inherit"), warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                for lam in lams[[0, 5, 10]]:
                    mufm.solve(X, y, lam=float(lam), method="lbfgs-h")
            per_before = (time.perf_counter() - t) / 3
            rows.append(
                f"| sweep N=1,347, d=256, 11 lam | before issue 10 (lbfgs-h, no thread policy) "
                f"| lbfgs-h {per_before:.2f} s per value (3 run, est. 11 values "
                f"{11 * per_before:.1f} s) | one pass + 11 suffstats solves {t_new:.3f} s "
                f"(default) | {11 * per_before / t_new:.0f}x |"
            )
        rows.append(
            f"| sweep N=1,347, d=256, 11 lam | {setting} | lbfgs-h {per_old:.2f} s per value "
            f"({len(old_lams)} run, est. 11 values {11 * per_old:.1f} s) | one pass + 11 suffstats "
            f"solves {t_new:.3f} s | {11 * per_old / t_new:.0f}x (max rel. objective difference "
            f"{dev:.0e}) |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller gd budget, N, and sweep")
    ap.add_argument(
        "--N", type=int, default=None, help="samples of the large case (default 10^6; --quick 2e5)"
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, default torch threads "
        f"{torch.get_num_threads()}\n"
    )
    print("| case | setting | candidate | baseline(s) | ratio |")
    print("|---|---|---|---|---|")
    rows: list[str] = []
    case_small(rows, 20_000 if args.quick else 60_000)
    case_million(rows, args.N or (200_000 if args.quick else 1_000_000))
    case_sweep(rows, args.quick)
    for r in rows:
        print(r)
    print(f"\ntotal benchmark time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
