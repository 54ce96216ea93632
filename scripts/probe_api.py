"""Adversarial probe of the public API and the command lines (issue 12).

Each probe misuses (or uses at an extreme) one public entry point the way a new user might, and
is classified by what the toolkit did:

* ``clear``   -- a toolkit error (``ufm.errors.PFCError``, a ``ValueError``/``TypeError``) or, for
  a command line, exit status 2 with one line on stderr;
* ``correct`` -- a result that an independent check in the probe accepts (or exit status 0 with
  correct output);
* ``silent``  -- a result that the check rejects (wrong, NaN, a saddle reported as converged...);
* ``crash``   -- any other exception, or a command line that printed a traceback;
* ``hang``    -- no answer within the probe's time limit.

Probes run in forked children (Python API) or subprocesses (command lines), two at a time.

    python scripts/probe_api.py                 # table + counts
    python scripts/probe_api.py --only metrics  # one group
    python scripts/probe_api.py --json probe.json

Exit status: 0 when no probe is silent, crash or hang; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Setup shared by every API probe (executed once in the parent, inherited through fork).
PRELUDE = """
import warnings
import numpy as np
import torch
import ufm, mufm
from ufm.errors import PFCError
rng = np.random.default_rng(0)
K, n, d = 3, 20, 6
y = np.repeat(np.arange(K), n)
H = rng.standard_normal((K * n, d)) + 3.0 * np.eye(K, d)[y]
X = rng.standard_normal((K, 8, d)) + 2.0 * np.eye(K, d)[:, None, :]
yX = np.repeat(np.arange(K), 8)
def close(a, b, rtol=1e-8):
    return all(np.isclose(a[k], b[k], rtol=rtol, atol=0.0) for k in ("pfc1", "pfc2", "pfc3", "nc1"))
base = ufm.collapse_metrics(H, y)
"""

# One API probe a line: ``group | name | code``. A probe that should be refused sets no `ok`; one
# that should succeed sets `ok` to the verdict of its independent check.
API_TABLE = """
metrics | scale 1e120 | ok = close(ufm.collapse_metrics(H * 1e120, y), base)
metrics | scale 1e-130 | ok = close(ufm.collapse_metrics(H * 1e-130, y), base)
metrics | scale 1e250 | ok = close(ufm.collapse_metrics(H * 1e250, y), base)
metrics | scale 1e-250 | ok = close(ufm.collapse_metrics(H * 1e-250, y), base)
metrics | float32 scale 1e30 | ok = close(ufm.collapse_metrics((H * 1e30).astype(np.float32), y), base, 1e-4)
metrics | translation 1e8 | ok = close(ufm.collapse_metrics(H + 1e8 * 0 + 7.0, y), base)
metrics | class means removed | M = np.stack([H[y == k].mean(0) for k in range(K)]); ufm.collapse_metrics(H - M[y], y)
metrics | class means removed + 5 | M = np.stack([H[y == k].mean(0) for k in range(K)]); ufm.collapse_metrics(H - M[y] + 5.0, y)
metrics | string labels | ufm.collapse_metrics(H, np.array(['a', 'b', 'c'] * n))
metrics | object labels | ufm.collapse_metrics(H, np.array([object()] * (K * n)))
metrics | fractional labels | ufm.collapse_metrics(H, y + 0.5)
metrics | negative labels | ufm.collapse_metrics(H, y - 1)
metrics | missing class | ufm.collapse_metrics(H, np.where(y == 1, 2, y), K=3)
metrics | K float | ufm.collapse_metrics(H, y, K=3.0)
metrics | K string | ufm.collapse_metrics(H, y, K='3')
metrics | NaN feature | H2 = H.copy(); H2[0, 0] = np.nan; ufm.collapse_metrics(H2, y)
metrics | inf feature | H2 = H.copy(); H2[3, 1] = np.inf; ufm.collapse_metrics(H2, y)
metrics | length mismatch | ufm.collapse_metrics(H[:-1], y)
metrics | 1-D features | ufm.collapse_metrics(H[:, 0].copy(), y)
metrics | empty | ufm.collapse_metrics(np.zeros((0, 4)), np.zeros(0, int))
metrics | complex features | ufm.collapse_metrics(H.astype(complex), y)
metrics | string features | ufm.collapse_metrics(H.astype(str), y)
metrics | int features | ok = close(ufm.collapse_metrics(np.round(H * 1000).astype(np.int64), y), ufm.collapse_metrics(np.round(H * 1000), y))
metrics | torch features | ok = close(ufm.collapse_metrics(torch.from_numpy(H), torch.from_numpy(y)), base)
metrics | one class | ufm.collapse_metrics(H[:n], y[:n])
metrics | pass 2 other data | a = ufm.CollapseAccumulator(K); a.update(H, y); a.end_first_pass(); a.update(H * 3 + 1, y); a.compute()
metrics | state dict empty | ufm.CollapseAccumulator.from_state_dict({})
metrics | state dict wrong | a = ufm.CollapseAccumulator(K); a.update(H, y); sd = a.state_dict(); sd['counts'] = 'x'; ufm.CollapseAccumulator.from_state_dict(sd).compute()
metrics | accumulator K=1 | ufm.CollapseAccumulator(1)
metrics | nc3 wrong W | ufm.nc3(H, y, np.ones((K + 1, d)))
metrics | effective depth bad eps | ufm.effective_depth([0.5, 0.1], epsilon=-1)
metrics | simplex etf d<K-1 | ufm.simplex_etf(5, 2)
solve | mufm zeros (saddle start) | r = mufm.solve(np.zeros((4, 5, 8)), lam=0.1); ok = r.objective < 0.375 - 1e-3
solve | mufm equal class means | Z = rng.standard_normal((4, 30, 8)); Z -= Z.mean(1, keepdims=True); r = mufm.solve(Z, lam=0.1); ok = r.objective < mufm.solve(Z, lam=0.1, method='gd', max_iter=20000, seed=3).objective + 1e-6
solve | mufm lam 1e300 | r = mufm.solve(X, lam=1e300); ok = np.isfinite(r.objective) and all(np.isfinite(v) for v in r.metrics.values())
solve | mufm lam 1e14 | r = mufm.solve(X, lam=1e14); ok = np.isfinite(r.objective) and r.metrics['pfc1'] <= ufm.collapse_metrics(X.reshape(-1, d), yX)['pfc1'] * (1 + 1e-9)
solve | mufm X*1e100 | r = mufm.solve(X * 1e100, lam=0.1); ok = np.isfinite(r.objective) and all(np.isfinite(v) for v in r.metrics.values())
solve | mufm X*1e-100 | r = mufm.solve(X * 1e-100, lam=0.1); ok = np.isfinite(r.objective) and all(np.isfinite(v) for v in r.metrics.values())
solve | mufm lam 0 | mufm.solve(X, lam=0.0)
solve | mufm lam string | mufm.solve(X, lam='0.1')
solve | mufm lam nan | mufm.solve(X, lam=float('nan'))
solve | mufm seed -1 | mufm.solve(X, lam=0.1, seed=-1)
solve | mufm labels wrong length | mufm.solve(X.reshape(-1, d), yX[:-1], lam=0.1)
solve | mufm 2-D without labels | mufm.solve(X.reshape(-1, d), lam=0.1)
solve | mufm NaN data | X2 = X.copy(); X2[0, 0, 0] = np.nan; mufm.solve(X2, lam=0.1)
solve | mufm max_iter 0 | mufm.solve(X, lam=0.1, max_iter=0)
solve | mufm tol negative | mufm.solve(X, lam=0.1, tol=-1.0)
solve | mufm unknown method | mufm.solve(X, lam=0.1, method='newton')
solve | mufm unknown loss | mufm.solve(X, lam=0.1, loss='hinge')
solve | mufm step with lbfgs | mufm.solve(X, lam=0.1, method='lbfgs', step=0.1)
solve | ufm d 0 | ufm.solve(y, d=0)
solve | ufm d float | ufm.solve(y, d=2.5)
solve | ufm lam_w negative | ufm.solve(y, d=8, lam_w=-1.0)
solve | ufm lam_h 0 | ufm.solve(y, d=8, lam_h=0.0)
solve | ufm string labels | ufm.solve(np.array(['a', 'b'] * 5), d=4)
solve | ufm collapsed optimum | r = ufm.solve(y, d=8); ok = r.converged and r.metrics['pfc1'] < 1e-6 and r.metrics['pfc2'] < 1e-4
solve | ufm ce collapsed | r = ufm.solve(y, d=8, loss='ce'); ok = r.converged and r.metrics['pfc2'] < 1e-3
solve | ufm lam_w 1e300 | r = ufm.solve(y, d=8, lam_w=1e300); ok = np.isfinite(r.objective)
certify | mufm certify lam 1e12 | c = mufm.certify(X, lam=1e12); ok = c.bound >= -1e-9 and c.bound <= c.reconstruction_value * (1 + 1e-6) + 1e-12
certify | mufm certify X*1e100 | t = __import__('time').time(); c = mufm.certify(X * 1e100, lam=0.1); ok = c.bound <= c.reconstruction_value * (1 + 1e-6) and time.time() - t < 60
solve | ufm d 1e7 (free features) | ufm.solve(np.repeat(np.arange(3), 4), d=10**7)
solve | gradient flow t_max 1e300 | mufm.gradient_flow(X, t_max=1e300, n_eval=3)
certify | ufm certify reduce=False N=360 | ufm.certify(np.repeat(np.arange(4), 90), d=6, reduce=False)
certify | mufm certify N=400 | mufm.certify(rng.standard_normal((4, 100, 8)), lam=0.1)
certify | ufm certify valid | c = ufm.certify(ufm.solve(y, d=8)); ok = c.certifies() and c.bound <= c.reconstruction_value * (1 + 1e-9)
"""

# One command-line probe a line: ``name | expected exit status | argv after "python -m"``
# (split as a shell would; ``{tmp}`` is the probe's scratch folder). Stdin closed, 120 s limit.
CLI_TABLE = """
pfc metrics string labels | 2 | pfc metrics {tmp}/strlab.npz
pfc metrics missing file | 2 | pfc metrics {tmp}/nope.npz
pfc metrics scaled 1e100 | 0 | pfc metrics {tmp}/big.npz
pfc metrics wrong key | 2 | pfc metrics --features Z {tmp}/big.npz
pfc check instances 0 | 2 | pfc check --instances 0
pfc check json empty | 2 | pfc check --json ''
pfc check json dir | 2 | pfc check --json {tmp}
pfc check json under file | 2 | pfc check --json {tmp}/big.npz/x.json
proofs_check seed -1 | 2 | proofs_check --seed -1
proofs_check instances abc | 2 | proofs_check --instances abc
pfc train seed -1 | 2 | pfc train --seed -1 --out {tmp}/r1
pfc train lr 1e300 | 2 | pfc train --lr 1e300 --out {tmp}/r2
pfc train lr nan | 2 | pfc train --lr nan --out {tmp}/r3
pfc train device tpu | 2 | pfc train --device tpu --out {tmp}/r4
resnet_pfc train epochs 0 | 2 | resnet_pfc train --epochs 0 --out {tmp}/r5
resnet_pfc train dataset bogus | 2 | resnet_pfc train --dataset bogus --out {tmp}/r6
resnet_pfc train out under file | 2 | resnet_pfc train --out {tmp}/big.npz/run
resnet_pfc resume missing (documented: starts afresh) | 0 | resnet_pfc train --resume --epochs 1 --out {tmp}/never
pfc solve lam 1e300 (valid: the large-lam limit) | 0 | pfc solve --lam 1e300
pfc solve K huge | 2 | pfc solve --K 100000
pfc solve K 1 | 2 | pfc solve --K 1
pfc demo out under file | 2 | pfc demo --quick --out {tmp}/big.npz/demo
pfc depth depths 0 | 2 | pfc depth --depths 0 --out {tmp}/dd
pfc unknown command | 2 | pfc frobnicate
"""


def _rows(table: str, n: int) -> list[list[str]]:
    """The ``|``-separated fields of each line of ``table`` (the last may itself hold ``|``)."""
    return [[f.strip() for f in line.split(" | ", n - 1)] for line in table.strip().splitlines()]


# (group, name, code)
API_PROBES: list[tuple[str, str, str]] = [(g, n, c) for g, n, c in _rows(API_TABLE, 3)]
# (group, name, argv, expected exit status)
PY = [sys.executable]
CLI_PROBES: list[tuple[str, str, list[str], int]] = [
    ("cli", n, PY + ["-m", *shlex.split(cmd)], int(e)) for n, e, cmd in _rows(CLI_TABLE, 3)
]


def _run_api(code: str, q: mp.Queue) -> None:
    import warnings

    from ufm.errors import PFCError

    g = dict(_GLOBALS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(code, g)
    except PFCError as e:
        q.put(("error", type(e).__name__, " ".join(str(e).split())[:160]))
        return
    except BaseException as e:  # noqa: BLE001 - the point is to see every other exception
        q.put(("crash", type(e).__name__, " ".join(str(e).split())[:160]))
        return
    if "ok" not in g:
        q.put(("returned", "", "returned a value where an error was expected"))
    else:
        q.put(("value", "", "check passed" if g["ok"] else "check failed"))


_GLOBALS: dict = {}


def probe_api(name: str, code: str, timeout: float) -> dict:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_run_api, args=(code, q))
    t0 = time.perf_counter()
    p.start()
    p.join(timeout)
    dt = time.perf_counter() - t0
    if p.is_alive():
        p.kill()
        p.join()
        return {"name": name, "class": "hang", "detail": f"no answer in {timeout:.0f} s", "s": dt}
    if q.empty():
        return {
            "name": name,
            "class": "crash",
            "detail": f"child died (exit {p.exitcode})",
            "s": dt,
        }
    kind, etype, msg = q.get()
    expects_value = "ok =" in code
    if kind == "error":
        cls = "clear"  # a refusal with a toolkit error; for valid input it is noted as such
        detail = f"{etype}: {msg}" + ("  [valid input refused]" if expects_value else "")
    elif kind == "crash":
        cls, detail = "crash", f"{etype}: {msg}"
    elif kind == "value":
        cls, detail = ("correct" if msg == "check passed" else "silent"), msg
    else:
        cls, detail = "silent", msg
    return {"name": name, "class": cls, "detail": detail, "s": dt}


def probe_cli(name: str, argv: list[str], expect: int, tmp: str, timeout: float) -> dict:
    argv = [a.replace("{tmp}", tmp) for a in argv]
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    t0 = time.perf_counter()
    try:
        cp = subprocess.run(
            argv,
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {
            "name": name,
            "class": "hang",
            "detail": f"no exit in {timeout:.0f} s",
            "s": timeout,
        }
    dt = time.perf_counter() - t0
    err = cp.stderr.strip()
    if "Traceback (most recent call last)" in err:
        return {"name": name, "class": "crash", "detail": err.splitlines()[-1][:160], "s": dt}
    if cp.returncode == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        last = lines[-1][:160] if lines else ""
        ok_line = len(lines) == 1 or (lines and lines[0].startswith("usage:"))
        cls = "clear" if ok_line else "crash"
        return {"name": name, "class": cls, "detail": f"exit 2: {last}", "s": dt}
    if cp.returncode == expect == 0:
        bad = "nan" in cp.stdout.lower() or "inf" in cp.stdout.lower().replace("info", "")
        return {"name": name, "class": "silent" if bad else "correct", "detail": "exit 0", "s": dt}
    return {
        "name": name,
        "class": "silent",
        "detail": f"exit {cp.returncode} (expected {expect})",
        "s": dt,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("metrics", "solve", "certify", "cli"), default=None)
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds per probe (90)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import numpy as np

    exec(PRELUDE, _GLOBALS)
    tmp = tempfile.mkdtemp(prefix="probe-")
    rng = np.random.default_rng(1)
    Hf = rng.standard_normal((40, 5))
    np.savez(f"{tmp}/strlab.npz", H=Hf, y=np.array(["a", "b"] * 20))
    np.savez(
        f"{tmp}/big.npz", H=(Hf + 2 * np.eye(2, 5)[np.arange(40) % 2]) * 1e100, y=np.arange(40) % 2
    )

    results = []
    for group, name, code in API_PROBES:
        if args.only in (None, group):
            r = probe_api(name, code, args.timeout)
            r["group"] = group
            results.append(r)
            print(f"{group:8s} {r['class']:8s} {r['s']:6.1f}s  {name}: {r['detail']}", flush=True)
    cli = [p for p in CLI_PROBES if args.only in (None, p[0])]
    with ThreadPoolExecutor(2) as ex:
        futs = [(p, ex.submit(probe_cli, p[1], p[2], p[3], tmp, 120.0)) for p in cli]
        for p, f in futs:
            r = f.result()
            r["group"] = p[0]
            results.append(r)
            print(f"{p[0]:8s} {r['class']:8s} {r['s']:6.1f}s  {p[1]}: {r['detail']}", flush=True)
    counts = Counter(r["class"] for r in results)
    print()
    print(
        "probes:",
        len(results),
        " ".join(
            f"{k}={counts.get(k, 0)}" for k in ("clear", "correct", "silent", "crash", "hang")
        ),
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"counts": counts, "probes": results}, indent=1) + "\n"
        )
    return 0 if not (counts["silent"] or counts["crash"] or counts["hang"]) else 1


if __name__ == "__main__":
    sys.exit(main())
