"""Peak memory of measuring wide (conv-sized) features: streaming accumulators vs storing them.

For each feature dimension ``d`` (default 16,384 = 64 channels x 16 x 16 and 65,536 = 64 x 32 x
32) the same ``N`` synthetic features (``K`` Gaussian classes, generated batch by batch from a
seeded generator, so both routes see identical numbers) are measured two ways, each in its own
child process so that the peaks do not mix:

* ``stream``: :class:`ufm.metrics.CollapseAccumulator`, two passes over the batches, nothing
  stored (what ``resnet_pfc`` does through forward hooks);
* ``store``: the batches are copied into one ``(N, d)`` float32 tensor (as a hook that keeps
  the features would), then :func:`ufm.metrics.collapse_metrics` runs on it.

The memory figure is the child's peak resident set size during the work minus its resident set
size just before (``VmHWM`` after resetting it through ``/proc/self/clear_refs``; falls back to
``ru_maxrss``), with ``MALLOC_MMAP_THRESHOLD_=1 MiB`` so that freed large blocks go back to the
system and the figure is live memory rather than allocator retention. It includes the feature batch being produced (``B x d`` float32), so the
stream route's floor is a few batches, not ``O(K d)`` alone. The script also checks that both
routes give the same metrics and, in the ``store`` child after its peak was read, compares PFC1
and the NCC accuracy with a direct float64 computation class by class.

Run (about 1 minute on 2 cores; 1.5 GiB peak)::

    .venv/bin/python benchmarks/feature_memory.py
    .venv/bin/python benchmarks/feature_memory.py --dims 16384 65536 --n 4096 --k 10 --batch 256
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from ufm.metrics import CollapseAccumulator, collapse_metrics

KEYS = ("pfc1", "pfc2", "pfc3", "ncc_accuracy", "nc1", "nc2_equinorm", "nc2_equiangular")


def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_kib(reset_ok: bool) -> int:
    if reset_ok:
        hwm = _rss_kib("VmHWM")
        if hwm is not None:
            return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def batches(n: int, d: int, k: int, batch: int, seed: int):
    """Yield the same (H, y) batches on every call: class means + isotropic noise, float32."""
    g = torch.Generator().manual_seed(seed)
    means = 0.05 * torch.randn(k, d, generator=g)
    y_all = torch.arange(n) % k
    y_all = y_all[torch.randperm(n, generator=g)]
    for i, start in enumerate(range(0, n, batch)):
        gb = torch.Generator().manual_seed(seed * 1_000_003 + i + 1)
        y = y_all[start : start + batch]
        h = torch.randn(y.numel(), d, generator=gb).add_(means[y])
        yield h, y


def child(route: str, n: int, d: int, k: int, batch: int, seed: int) -> dict:
    # warm up code paths and allocator on a tiny problem so that the baseline holds them
    warm = CollapseAccumulator(k)
    for h, y in batches(4 * k, 4 * k, k, 2 * k, seed):
        warm.update(h, y)
    warm.end_first_pass()
    collapse_metrics(torch.randn(4 * k, 4 * k), torch.arange(4 * k) % k)

    base = _rss_kib("VmRSS") or 0
    reset_ok = _reset_peak()
    t0 = time.perf_counter()
    if route == "stream":
        acc = CollapseAccumulator(k)
        for h, y in batches(n, d, k, batch, seed):
            acc.update(h, y)
        acc.end_first_pass()
        for h, y in batches(n, d, k, batch, seed):
            acc.update(h, y)
        m = acc.compute()
    else:
        H = torch.empty(n, d, dtype=torch.float32)
        Y = torch.empty(n, dtype=torch.int64)
        for i, (h, y) in enumerate(batches(n, d, k, batch, seed)):
            H[i * batch : i * batch + h.shape[0]] = h
            Y[i * batch : i * batch + h.shape[0]] = y
        m = collapse_metrics(H, Y, K=k)
    seconds = time.perf_counter() - t0
    peak = _peak_kib(reset_ok)
    out = {
        "route": route,
        "d": d,
        "n": n,
        "peak_extra_mib": max(0, peak - base) / 1024,
        "seconds": seconds,
        "metrics": {key: m[key] for key in KEYS},
        "peak_source": "VmHWM" if reset_ok else "ru_maxrss",
    }
    if route == "store":  # independent check, after the peak has been read
        out["direct"] = _direct(H, Y, k)
    return out


def _direct(H: torch.Tensor, Y: torch.Tensor, k: int) -> dict:
    """PFC1 and NCC accuracy straight from MATH.md section 3, one class at a time in float64."""
    n = H.shape[0]
    mus, ss_w, counts = [], 0.0, []
    for c in range(k):
        Hc = H[Y == c].double()
        mu = Hc.mean(0)
        ss_w += float(((Hc - mu) ** 2).sum())
        mus.append(mu)
        counts.append(Hc.shape[0])
    M = torch.stack(mus)
    mu_g = (M * torch.tensor(counts, dtype=torch.float64)[:, None]).sum(0) / n
    tr_sw = ss_w / n
    tr_sb = float(((M - mu_g) ** 2).sum()) / k
    correct = 0
    for start in range(0, n, 256):
        h = H[start : start + 256].double()
        dist = torch.cdist(h, M)
        correct += int((dist.argmin(1) == Y[start : start + 256]).sum())
    return {"pfc1": tr_sw / tr_sb, "ncc_accuracy": correct / n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[16384, 65536])
    p.add_argument("--n", type=int, default=4096, help="samples (default 4096: 1 GiB at d=65536)")
    p.add_argument("--k", type=int, default=10, help="classes")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", choices=["stream", "store"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        d = a.dims[0]
        print(json.dumps(child(a.child, a.n, d, a.k, a.batch, a.seed)))
        return 0

    rows = []
    for d in a.dims:
        res = {}
        for route in ("stream", "store"):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", route, "--dims", str(d)]
            cmd += ["--n", str(a.n), "--k", str(a.k), "--batch", str(a.batch)]
            cmd += ["--seed", str(a.seed)]
            # Large blocks are mmapped and returned at once, so the peak is live memory and
            # not whatever glibc's per-thread arenas happen to retain (which varied 2x).
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            res[route] = json.loads(proc.stdout.strip().splitlines()[-1])
        s, t = res["stream"], res["store"]
        diff = max(
            abs(s["metrics"][key] - t["metrics"][key]) / max(abs(t["metrics"][key]), 1e-12)
            for key in KEYS
        )
        ref = t["direct"]
        ref_diff = max(abs(t["metrics"][key] - ref[key]) / max(abs(ref[key]), 1e-12) for key in ref)
        rows.append((d, s, t, diff, ref_diff))

    stored_gib = a.n * max(a.dims) * 4 / 2**30
    print(
        f"N={a.n}, K={a.k}, batch={a.batch}; stored features at d={max(a.dims)}: "
        f"{stored_gib:.2f} GiB float32; peak via {rows[0][1]['peak_source']}"
    )
    head = (
        f"{'d':>7} {'stream MiB':>11} {'store MiB':>10} {'store/stream':>13} "
        f"{'time store/stream':>18} {'max rel diff':>13} {'vs direct':>10}  pfc1 / ncc_acc"
    )
    print(head)
    print("-" * len(head))
    for d, s, t, diff, ref_diff in rows:
        print(
            f"{d:>7} {s['peak_extra_mib']:>11.1f} {t['peak_extra_mib']:>10.1f} "
            f"{t['peak_extra_mib'] / max(s['peak_extra_mib'], 1e-9):>13.1f} "
            f"{t['seconds'] / s['seconds']:>18.2f} {diff:>13.1e} {ref_diff:>10.1e}  "
            f"{s['metrics']['pfc1']:.4f} / {s['metrics']['ncc_accuracy']:.4f}"
        )
    ok = all(diff < 1e-9 and ref_diff < 1e-9 for *_, diff, ref_diff in rows)
    print("metrics agree between routes and with the direct formulas:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
