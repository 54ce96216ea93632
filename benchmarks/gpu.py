"""CUDA timings: the toolkit's GPU paths against a matrix product on the same device, in one run.

Run on a machine with a CUDA device (repository root): ``python benchmarks/gpu.py``
(``--smoke``: tiny sizes on the CPU, to check the script without a GPU). Prints a
markdown table; every ratio compares two timings of the same process on the same device (CUDA
timings are synchronised; best of three after a warm-up).

Cases:

1. ``ufm.collapse_metrics`` of float32 features ``N = 10,000``, ``d = 4,096`` (``K = 10``) on
   the GPU, against one ``(N, d) x (d, K)`` product of the same features on the GPU, and
   against the same metrics of the same features on the CPU of that machine.
2. ``mufm.solve`` (MSE, default ``suffstats``) of float64 CUDA tensors ``N = 10^6``, ``d = 64``,
   against one ``X.T @ X`` on the GPU, and against one copy of ``X`` to the CPU (the statistics
   are taken on the GPU; only the ``K x d`` and ``d x d`` moments cross).
3. ``ufm.solve`` of the cross-entropy UFM (``lbfgs``, ``K = 10``, ``n = 500`` per class,
   ``d = 512``) on the GPU against the CPU.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import mufm
import ufm


def timed(fn, repeat: int = 3, cuda: bool = True) -> tuple[float, object]:
    cuda = cuda and torch.cuda.is_available()
    out = fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(smoke: bool = False) -> None:
    """``smoke=True``: tiny sizes on the CPU (checks the script itself without a GPU)."""
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device")
    dev = torch.device("cpu" if smoke else "cuda")
    s = 100 if smoke else 1
    name = "CPU (smoke test)" if smoke else torch.cuda.get_device_name(0)
    print(
        f"{name}; torch {torch.__version__}, numpy {np.__version__}, "
        f"CPU threads {torch.get_num_threads()}\n"
    )
    print("| case | candidate | baseline | ratio |")
    print("|---|---|---|---|")
    g = torch.Generator(device=dev).manual_seed(0)

    # 1. metrics, float32 features on the GPU
    N, d, K = 10_000 // s, 4_096 // s, 10
    y = torch.arange(N, device=dev) % K
    C = torch.randn(K, d, device=dev, generator=g)
    H = (C[y] + 0.5 * torch.randn(N, d, device=dev, generator=g)).float()
    Wk = torch.randn(K, d, device=dev, generator=g).float()
    t_m, m = timed(lambda: ufm.collapse_metrics(H, y))
    t_g, _ = timed(lambda: H @ Wk.T)
    Hc, yc = H.cpu(), y.cpu()
    t_c, m_c = timed(lambda: ufm.collapse_metrics(Hc, yc), cuda=False)
    dev_rel = max(abs(m[k] - m_c[k]) / max(abs(m_c[k]), 1e-300) for k in m_c)
    print(
        f"| collapse_metrics N={N:,} d={d:,} float32 | GPU {t_m * 1e3:.1f} ms | GEMM (N,d)x(d,K) "
        f"on GPU {t_g * 1e3:.2f} ms; same metrics on CPU {t_c * 1e3:.0f} ms | {t_m / t_g:.1f}x "
        f"the GEMM; CPU / GPU {t_c / t_m:.1f}x (max rel. difference GPU vs CPU {dev_rel:.1e}) |"
    )

    # 2. mufm.solve of CUDA float64 data, N = 10^6
    N, d = 1_000_000 // s, 64
    y = torch.arange(N, device=dev) % K
    X = torch.randn(K, d, device=dev, generator=g, dtype=torch.float64)[y] + 0.3 * torch.randn(
        N, d, device=dev, generator=g, dtype=torch.float64
    )
    t_x, _ = timed(lambda: X.T @ X)
    t_cp, _ = timed(lambda: X.cpu())
    t_s, r = timed(lambda: mufm.solve(X, y, lam=0.1), repeat=2)
    print(
        f"| mufm.solve N={N:,} d={d} float64 CUDA tensors | {t_s:.3f} s ({r.status}, "
        f"H {tuple(r.H.shape)} on {r.H.device}) | X.T @ X on GPU {t_x * 1e3:.2f} ms; one copy of "
        f"X to the CPU {t_cp * 1e3:.0f} ms | {t_s / t_x:.0f}x the GPU product; the copy alone "
        f"{t_cp / t_s:.2f}x the solve |"
    )

    # 3. cross-entropy UFM with lbfgs
    n, d = 500 // s, max(512 // s, 16)
    yk = torch.arange(K).repeat_interleave(n)
    kw = {"loss": "ce", "lam_w": 5e-4, "lam_h": 5e-4, "tol": 1e-6}
    t_gpu, rg = timed(lambda: ufm.solve(yk.to(dev), d=d, device=dev.type, **kw), repeat=1)
    t_cpu, rc = timed(lambda: ufm.solve(yk, d=d, **kw), repeat=1, cuda=False)
    print(
        f"| ufm.solve CE K={K} n={n} d={d} lbfgs | GPU {t_gpu:.2f} s ({rg.status}, objective "
        f"{rg.objective:.10g}) | CPU {t_cpu:.2f} s ({rc.status}, objective {rc.objective:.10g}) "
        f"| CPU / GPU {t_cpu / t_gpu:.1f}x |"
    )


if __name__ == "__main__":
    import sys

    main(smoke="--smoke" in sys.argv[1:])
