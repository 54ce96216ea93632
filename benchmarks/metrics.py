"""Collapse metrics: ufm.metrics against the common notebook approach, in one run.

The common approach forms the ``d x d`` covariances Sigma_W and Sigma_B and calls ``pinv`` with
default cut-offs. ``ufm.metrics.collapse_metrics`` never forms a ``d x d`` matrix. Each case runs in
its own subprocess so that peak memory (max RSS above the data's own footprint) is measured
cleanly. The table also shows the time of one ``(N, d) x (d, K)`` matrix product over the same
features (the cost of reading them once) and the ratios.

Threads: ``--threads default`` (the default) measures what a user gets: nothing pinned, the
toolkit's thread policy (``ufm.threads``) chooses, and the matrix-product baseline runs with
torch's default threads. ``--threads N`` pins N threads for both (``ufm.set_threads(N)`` and
``torch.set_num_threads(N)``). ``--compare-threads`` runs default, 1 and all cores side by side
(metrics and baseline only, no common approach) and prints each ratio against the baseline of the
same setting and against the default baseline.

Usage::

    .venv/bin/python benchmarks/metrics.py                  # N=10,000, K=10, d in 256, 1024, 4096 + 65,536
    .venv/bin/python benchmarks/metrics.py --quick          # smaller sizes, for a smoke test
    .venv/bin/python benchmarks/metrics.py --compare-threads --dtype float32
    .venv/bin/python benchmarks/metrics.py --compare-kernels --dtype float32  # numba vs torch code
    .venv/bin/python benchmarks/metrics.py --in-process --dtype float32     # one process, best of 7

``--compare-kernels`` runs the metrics with :mod:`ufm.metrics.kernels` (the default for large
CPU inputs) and with the torch code (``UFM_KERNELS=0``) beside the matrix-product baseline.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def pin(threads: str) -> None:
    """Apply a thread setting in a child: 'default' touches nothing."""
    if threads == "default":
        return
    import torch
    from threadpoolctl import threadpool_limits

    import ufm

    n = int(threads)
    torch.set_num_threads(n)
    threadpool_limits(n)
    ufm.set_threads(n)


def make(N: int, K: int, d: int, dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), N // K)
    centres = 3.0 * rng.standard_normal((K, d))
    H = (centres[y] + rng.standard_normal((N, d))).astype(dtype)
    return H, y


def common_approach(H: np.ndarray, y: np.ndarray) -> dict:
    """What notebooks do: d x d covariances, default pinv."""
    H = H.astype(np.float64)
    K = int(y.max()) + 1
    mu = np.stack([H[y == k].mean(0) for k in range(K)])
    mu_g = H.mean(0)
    dev = H - mu[y]
    sw = dev.T @ dev / len(H)
    M = mu - mu_g
    sb = M.T @ M / K
    nc1 = np.trace(sw @ np.linalg.pinv(sb)) / K
    pfc1 = np.trace(sw) / np.trace(sb)
    return {"nc1": float(nc1), "pfc1": float(pfc1)}


def child(args: argparse.Namespace) -> None:
    H, y = make(args.N, args.K, args.d, args.dtype)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.method == "ufm":
        import torch

        from ufm.metrics import collapse_metrics

        pin(args.threads)
        step = max(1, len(H) // 256)
        collapse_metrics(H[::step], y[::step])  # warm up torch on a small subsample
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        times = []
        for _ in range(3):  # best of 3, like the baseline
            t0 = time.perf_counter()
            m = collapse_metrics(H, y)
            times.append(time.perf_counter() - t0)
        dt = min(times)
        out = {"nc1": m["nc1"], "pfc1": m["pfc1"]}
    elif args.method == "matmul":
        import torch

        pin(args.threads)
        Ht = torch.from_numpy(H)
        B = torch.randn(args.K, args.d, dtype=Ht.dtype)
        Ht @ B.T
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            Ht @ B.T
            times.append(time.perf_counter() - t0)
        dt = min(times)
        out = {}
    else:
        pin(args.threads)
        t0 = time.perf_counter()
        out = common_approach(H, y)
        dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss
    print(json.dumps({"time": dt, "peak_mb": peak / 1024, **out}))


def run_case(
    method: str, N: int, K: int, d: int, dtype: str, threads: str, env: dict | None = None
) -> dict:
    import os

    cmd = [
        sys.executable,
        __file__,
        "--child",
        method,
        "--N",
        str(N),
        "--K",
        str(K),
        "--d",
        str(d),
        "--dtype",
        dtype,
        "--threads",
        threads,
    ]
    res = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else os.environ | env,
    )
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--child", choices=["ufm", "common", "matmul"])
    ap.add_argument("--N", type=int, default=10_000)
    ap.add_argument("--K", type=int, default=10)
    ap.add_argument("--d", type=int, default=0)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", default="default", help="'default' (nothing pinned) or a count")
    ap.add_argument("--compare-threads", action="store_true")
    ap.add_argument("--compare-kernels", action="store_true")
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="d = 4,096 only: kernels, torch code and H @ W interleaved in one process, best of 7",
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-big", action="store_true", help="skip d = 65,536")
    args = ap.parse_args()
    if args.child:
        args.method = args.child
        child(args)
        return

    dims = [128, 512] if args.quick else [256, 1024, 4096]
    big = [] if (args.quick or args.no_big) else [65_536]
    N, K = (2000 if args.quick else args.N), args.K
    if args.compare_threads:
        compare_threads(dims, N, K, args.dtype)
        return
    if args.in_process:
        in_process(args.N, K, 4096, args.dtype, args.threads)
        return
    if args.compare_kernels:
        compare_kernels(dims, N, K, args.dtype, args.threads)
        return
    print(f"N={N}, K={K}, features {args.dtype}, threads: {args.threads}")
    hdr = (
        f"{'d':>7} {'common s':>9} {'ufm s':>8} {'matmul s':>9} {'speed-up':>9} "
        f"{'ufm/matmul':>10} {'common MB':>10} {'ufm MB':>7} {'rel. diff NC1':>14} "
        f"{'rel. diff PFC1':>14}"
    )
    print(hdr, flush=True)
    print("-" * len(hdr))
    for d in dims + big:
        u = run_case("ufm", N, K, d, args.dtype, args.threads)
        mm = run_case("matmul", N, K, d, args.dtype, args.threads)
        if d in big:
            need = 2 * d * d * 8 / 2**30
            c = {"error": f"needs >= {need:.0f} GiB for two d x d float64 matrices"}
        else:
            c = run_case("common", N, K, d, args.dtype, args.threads)
        if "error" in u:
            print(f"{d:>7} ufm failed: {u['error']}")
            continue
        if "error" in c:
            print(
                f"{d:>7} {'n/a':>9} {u['time']:8.3f} {mm['time']:9.4f} {'-':>9} "
                f"{u['time'] / mm['time']:10.1f} {'n/a':>10} {u['peak_mb']:7.0f}   common: {c['error']}"
            )
            continue
        dn = abs(c["nc1"] - u["nc1"]) / abs(u["nc1"])
        dp = abs(c["pfc1"] - u["pfc1"]) / abs(u["pfc1"])
        print(
            f"{d:>7} {c['time']:9.3f} {u['time']:8.3f} {mm['time']:9.4f} "
            f"{c['time'] / u['time']:8.1f}x {u['time'] / mm['time']:10.1f} "
            f"{c['peak_mb']:10.0f} {u['peak_mb']:7.0f} {dn:14.2e} {dp:14.2e}"
        )


def compare_threads(dims: list[int], N: int, K: int, dtype: str) -> None:
    """Metrics and the matrix-product baseline at default, 1 and all cores, one table."""
    import os

    cores = str(len(os.sched_getaffinity(0)))
    settings = ["default", "1", cores]
    print(f"N={N}, K={K}, features {dtype}; load average before: {os.getloadavg()}")
    hdr = f"{'d':>6} " + " ".join(
        f"{'ufm ' + s:>12} {'mm ' + s:>11} {'ratio':>6}" for s in settings
    )
    print(hdr + f" {'ufm default / mm default':>25}")
    print("-" * (len(hdr) + 26))
    for d in dims:
        row, res = f"{d:>6} ", {}
        for s in settings:
            u = run_case("ufm", N, K, d, dtype, s)
            mm = run_case("matmul", N, K, d, dtype, s)
            res[s] = (u.get("time", float("nan")), mm.get("time", float("nan")))
            row += f"{res[s][0]:12.4f} {res[s][1]:11.4f} {res[s][0] / res[s][1]:6.1f} "
        print(row + f"{res['default'][0] / res['default'][1]:25.1f}", flush=True)
    print(f"load average after: {os.getloadavg()}")


def compare_kernels(dims: list[int], N: int, K: int, dtype: str, threads: str) -> None:
    """Metrics with the numba kernels (default) and with the torch code (``UFM_KERNELS=0``)."""
    import os

    print(f"N={N}, K={K}, features {dtype}, threads: {threads}; load average: {os.getloadavg()}")
    cols = ("d", "kernels s", "torch s", "matmul s", "kernels/mm", "torch/mm", "torch/kern", "dNC1")
    print(" ".join(f"{c:>10}" for c in cols))
    for d in dims:
        runs = [
            run_case("ufm", N, K, d, dtype, threads),
            run_case("ufm", N, K, d, dtype, threads, env={"UFM_KERNELS": "0"}),
            run_case("matmul", N, K, d, dtype, threads),
        ]
        if any("error" in r for r in runs):
            print(f"{d:>10} failed: {[r.get('error') for r in runs]}")
            continue
        u, t, mm = (r["time"] for r in runs)
        dn = abs(runs[0]["nc1"] - runs[1]["nc1"]) / abs(runs[1]["nc1"])
        print(" ".join(f"{v:>10.4g}" for v in (d, u, t, mm, u / mm, t / mm, t / u, dn)), flush=True)
    print(f"load average after: {os.getloadavg()}")


def in_process(N: int, K: int, d: int, dtype: str, threads: str) -> None:
    """Kernels, torch code and one product ``H @ W`` (``W (d, K)`` contiguous), interleaved."""
    import torch

    from ufm.metrics import collapse_metrics, kernels

    pin(threads)
    H, y = make(N, K, d, dtype)
    W = torch.from_numpy(np.random.default_rng(1).standard_normal((d, K)).astype(dtype))
    Ht = torch.from_numpy(H)

    def torch_code() -> dict:
        kernels.set_enabled(False)
        try:
            return collapse_metrics(H, y)
        finally:
            kernels.set_enabled(None)

    runs = {
        "matmul": lambda: Ht @ W,
        "kernels": lambda: collapse_metrics(H, y),
        "torch": torch_code,
    }
    a, b = runs["kernels"](), runs["torch"]()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(7):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    print(
        f"N={N} d={d} {dtype} threads {threads} (torch {torch.get_num_threads()}): "
        f"matmul {best['matmul']:.4f} s | kernels {best['kernels']:.4f} s = "
        f"{best['kernels'] / best['matmul']:.2f}x | torch code {best['torch']:.4f} s = "
        f"{best['torch'] / best['matmul']:.2f}x | rel. diff NC1 "
        f"{abs(a['nc1'] - b['nc1']) / abs(b['nc1']):.1e}"
    )


if __name__ == "__main__":
    main()
