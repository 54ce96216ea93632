"""``python -m proofs_check``: run the four theorem checks, print a table, write JSON."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ufm.cli import OneLineParser, add_version, check_output_file, guarded
from ufm.errors import InputError
from ufm.options import add_options, check_fields, documented, option, options_from_args
from ufm.validate import SEED_MAX

from .common import CheckResult, write_json_atomic

#: Upper bounds of ``--instances`` / ``--solver-instances`` (each instance of Theorems 3-4 is a
#: solve; beyond these a mistyped count runs for days instead of failing at once).
MAX_INSTANCES = 100_000
MAX_SOLVER_INSTANCES = 10_000


def theorems_arg(s: str) -> str:
    """The ``--theorems`` value: a comma-separated subset of 1..4, normalised (``"1,3"``).

    Raises
    ------
    argparse.ArgumentTypeError
        Anything else (argparse reports it as a usage error naming the option).
    """
    parts = [p.strip() for p in str(s).split(",") if p.strip()]
    if not parts or any(p not in ("1", "2", "3", "4") for p in parts):
        raise argparse.ArgumentTypeError(
            f"must list theorem numbers from 1..4, e.g. 1,3; got {s!r}"
        )
    return ",".join(parts)


@documented
@dataclass(frozen=True)
class CheckOptions:
    """Options of the theorem checks: ``python -m proofs_check`` and ``pfc check`` both read
    them from these fields (:mod:`ufm.options`), so their flags, bounds and help agree."""

    seed: int = option(int, "seed of the random instances", default=0, low=0, high=SEED_MAX)
    instances: int = option(
        int, "instances for Theorems 1 and 2", default=100, low=1, high=MAX_INSTANCES
    )
    solver_instances: int | None = option(
        int,
        "instances for the solver-based Theorems 3 and 4",
        default=None,
        low=0,
        high=MAX_SOLVER_INSTANCES,
        shown="max(1, instances // 10)",
    )
    theorems: str = option(theorems_arg, "comma-separated subset of 1,2,3,4", default="1,2,3,4")
    json: str | None = option(
        str, "write every result as JSON to PATH (atomically)", default=None, shown="none"
    )
    progress: bool = option("no", "hide the progress bars", default=True)


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m proofs_check",
        description=(
            "Check Theorems 1-4 of 'Progressive Feedforward Collapse of ResNet Training' on "
            "random instances: exact certificates for Theorems 1-2 (Sturm sequences), solver "
            "comparisons for Theorems 3-4. Exit status 1 when a claim that should hold is "
            "violated, 2 on bad arguments, 0 otherwise (instances outside a theorem's "
            "assumptions and the paper's empirical claims never fail the run)."
        ),
    )
    add_version(p)
    return add_options(p, CheckOptions)


def format_table(results: Sequence[CheckResult]) -> str:
    head = (
        f"{'theorem':<9} {'tried':>6} {'in-assum':>9} {'confirmed':>9} {'violated':>8} "
        f"{'inconcl':>7} {'worst margin':>13}  outside / counterexamples"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        wm = "-" if r.worst_margin is None else f"{r.worst_margin:.3g}"
        out = ", ".join(f"{k}: {v}" for k, v in r.outside.items()) or "-"
        ce = r.details.get("counterexample_counts", {})
        ce_s = ", ".join(f"{k}: {v}" for k, v in ce.items())
        lines.append(
            f"{r.name:<9} {r.n_tried:>6} {r.n_assumptions_met:>9} {r.n_confirmed:>9} "
            f"{r.n_violations:>8} {r.n_inconclusive:>7} {wm:>13}  {out}"
            + (f" | {ce_s}" if ce_s else "")
        )
    notes = [n for r in results for n in _notes(r)]
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)


def _fmt_rho(v: float | None, rho_max: float) -> str:
    return f">={rho_max:g}" if v is None or not math.isfinite(v) else f"{v:.3g}"


def _rho_line(label: str, dist: dict[str, Any]) -> str:
    if not dist.get("n"):
        return f"  {label}: no direction inside the assumptions"
    rm = float(dist.get("rho_max") or math.inf)
    q = dist.get("quantiles", {})
    qs = " ".join(
        f"{name} {_fmt_rho(q.get(key), rm)}"
        for name, key in (("q10", "0.1"), ("q25", "0.25"), ("median", "0.5"), ("q75", "0.75"))
    )
    return (
        f"  {label} (n={dist['n']}, {dist['n_censored']} with rho_c >= {rm:g}): "
        f"min {_fmt_rho(dist.get('min'), rm)} {qs} max {_fmt_rho(dist.get('max'), rm)}"
    )


def _notes(r: CheckResult) -> list[str]:
    """Lines below the table: what each theorem's numbers mean (distributions, not claims)."""
    d = r.details
    if r.name == "theorem1" and d.get("n_c_negative"):
        return [
            f"theorem1: c < 0 on {d['n_c_negative']} instances, "
            f"{d.get('n_c_negative_rising_first', 0)} rise first: a certified consequence of "
            "PFC1'(0) = -2ac/b^2 > 0 (not an empirical finding); the sign agrees with the "
            f"Sturm certificate on {d.get('n_c_negative_derivative_agrees', 0)}"
        ]
    if r.name == "theorem2" and "rho_crit" in d:
        out = [
            "theorem2: per-direction critical relative cost rho_c (monotone on [0, 1] iff "
            "rho <= rho_c along that direction; no uniform threshold):",
            _rho_line("all directions", d["rho_crit"]),
        ]
        for fam, dist in d.get("rho_crit_by_family", {}).items():
            out.append(_rho_line(f"{fam} starts", dist))
        return out
    if r.name == "theorem4" and "lam0_grid" in d:
        g = d["lam0_grid"]
        counts = d.get("lam0_counts", {})
        cs = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"
        return [
            f"theorem4: observed lam_0 on a log grid [{g['lo']:g}, {g['hi']:g}] "
            f"({g['n']} points): {cs}"
        ]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks; returns 0 (no claim violated), 1 (a claim violated), 2 (bad arguments,
    one line on stderr) or 130 (interrupted; the partial table is printed)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # a usage error (one line on stderr): the status, not an exit
        if exc.code in (0, None):
            raise
        return int(exc.code) if isinstance(exc.code, int) else 2
    opts = CheckOptions(**options_from_args(CheckOptions, args))
    return guarded("python -m proofs_check", lambda: run_checks(opts))


def run_checks(opts: CheckOptions, *, prog: str = "python -m proofs_check") -> int:
    """Run the checks of ``opts``, print the table (and write ``opts.json``); the exit status
    of :func:`main` (0, 1 when a claim that should hold is violated, 130 interrupted)."""
    from . import check_theorem1, check_theorem2, check_theorem3, check_theorem4

    check_fields(opts)  # seed and counts within their declared bounds
    try:
        theorems = theorems_arg(opts.theorems)
    except argparse.ArgumentTypeError as exc:
        raise InputError(f"theorems {exc}") from None
    wanted = sorted({int(t) for t in theorems.split(",")})
    ns = max(1, opts.instances // 10) if opts.solver_instances is None else opts.solver_instances
    # Zero solver instances would check nothing and still report success: refuse it.
    if ns < 1 and {3, 4} & set(wanted):
        raise InputError(f"--solver-instances must be >= 1 (Theorems 3-4), got {ns}")
    if opts.json is not None:
        check_output_file(opts.json, "--json")  # before the checks, not after them
    progress = opts.progress
    funcs = {
        1: (check_theorem1, opts.instances),
        2: (check_theorem2, opts.instances),
        3: (check_theorem3, ns),
        4: (check_theorem4, ns),
    }
    results = []
    t0 = time.perf_counter()
    interrupted = False
    try:
        for t in wanted:
            f, n = funcs[t]
            results.append(f(n, seed=opts.seed, progress=progress))
    except KeyboardInterrupt:
        interrupted = True
    elapsed = time.perf_counter() - t0
    print(format_table(results))
    for r in results:
        for ce in r.counterexamples:
            if ce["kind"] == "violation":
                print(f"VIOLATION {r.name}: {ce}")
    ok = all(r.ok for r in results)
    if interrupted:
        print(f"{prog}: interrupted; partial results above", file=sys.stderr)
        return 130 if ok else 1
    print(
        f"\n{'all claims that should hold held' if ok else 'VIOLATIONS FOUND'} "
        f"({elapsed:.1f} s, seed {opts.seed})"
    )
    if opts.json is not None:
        write_json_atomic(
            opts.json,
            {
                "seed": opts.seed,
                "instances": opts.instances,
                "solver_instances": ns,
                "elapsed_s": elapsed,
                "ok": ok,
                "results": [r.to_dict() for r in results],
            },
        )
    return 0 if ok else 1
