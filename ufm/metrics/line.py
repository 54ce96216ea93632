"""Metrics along the straight line between two layers, streamed (MATH.md section 7)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..registry import SECOND_PASS
from ..threads import thread_policy
from ..validate import (
    check_features,
    check_int,
    describe,
    is_real_numeric,
)
from .accumulator import CollapseAccumulator, check_phase, cross_merge
from .inputs import (
    DEFAULT_RANK_TOL,
    F64,
    chunks,
)

#: The state of :class:`LineAccumulator`, declared once: its state dict, the loading and checks
#: of a state dict and :meth:`~LineAccumulator.merge` read this table. Each entry: key and kind:
#: ``"meta"`` (constructor arguments and the pass, saved as they are), ``"pass1"`` (one layer's
#: pass-1 :class:`~ufm.metrics.CollapseAccumulator`, saved as its state dict, merged by its own
#: ``merge``), ``"cross"`` (the ``(K,)`` float64 cross terms ``c_k``, ``None`` before data,
#: Chan-merged by :func:`~ufm.metrics.accumulator.cross_merge`), ``"pass2"`` (after ``end_first_pass``: one accumulator
#: per grid point, saved as a list of state dicts, merged pairwise).
STATE: tuple[tuple[str, str], ...] = (
    ("K", "meta"),
    ("ts", "meta"),
    ("rank_tol", "meta"),
    ("phase", "meta"),
    ("A", "pass1"),
    ("B", "pass1"),
    ("cross", "cross"),
    ("lines", "pass2"),
)


def _load_cross(v: Any, K: int) -> torch.Tensor:
    """The cross terms of a state dict: ``K`` finite reals, as a float64 copy (a complex
    value would lose its imaginary part, a string or boolean would be read as numbers)."""
    if not is_real_numeric(v):
        raise InputError(
            f"state dict key 'cross' must be {K} finite real values, got {describe(v)}"
        )
    c = torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else np.asarray(v)).to(F64)
    if c.shape != (K,) or not bool(torch.isfinite(c).all()):
        raise InputError(
            f"state dict key 'cross' must be {K} finite values, got shape {tuple(c.shape)}"
        )
    return c.clone()


class LineAccumulator:
    r"""Metrics of the features :math:`(1-t) A + t B` for every ``t``, streamed from two layers.

    Class means are linear in ``t`` and the within-class scatter is a quadratic,

    .. math::

        s_k(t) = (1-t)^2 s^A_k + 2t(1-t) c_k + t^2 s^B_k,\quad
        c_k = \sum_{y_i=k} \langle a_i - \mu^A_k, b_i - \mu^B_k\rangle,

    so pass 1 keeps the statistics of ``A`` and ``B`` and the cross terms ``c_k`` (Chan-merged),
    ``O(K (d_A + d_B))`` memory, and PFC1, PFC2 and NC2 follow for any ``t``
    (MATH.md section 7). NCC accuracy, PFC3 and NC1 depend on every sample: an optional pass 2
    evaluates them on the grid ``ts`` given at construction.

    Parameters
    ----------
    K : int
        Number of classes.
    ts : sequence of float, optional
        Grid for pass 2 and the default grid of :meth:`compute`; default 11 points on [0, 1].
    rank_tol : float
        As in :func:`collapse_metrics`.
    """

    def __init__(
        self, K: int, ts: Sequence[float] | None = None, *, rank_tol: float = DEFAULT_RANK_TOL
    ):
        self.K = check_int(K, "K", low=2)
        if ts is None:
            ts = np.linspace(0.0, 1.0, 11)
        else:
            raw = ts
            try:
                ts = np.asarray(ts, dtype=float)
            except (TypeError, ValueError) as exc:
                raise InputError(
                    f"ts must be a non-empty 1-d sequence of finite floats, got {raw!r}"
                ) from exc
        if ts.ndim != 1 or ts.size == 0 or not np.all(np.isfinite(ts)):
            raise InputError(f"ts must be a non-empty 1-d sequence of finite floats, got {ts!r}")
        self.ts = ts
        # the line mixes two layers' statistics linearly, so both keep the features' own units
        self.A = CollapseAccumulator(K, rank_tol=rank_tol, auto_scale=False)
        self.B = CollapseAccumulator(K, rank_tol=rank_tol, auto_scale=False)
        self.cross: torch.Tensor | None = None
        self.rank_tol = rank_tol
        self.phase = 1
        self.lines: list[CollapseAccumulator] = []  # pass 2: one accumulator per t of ts

    @thread_policy("A")
    def update(self, A: Any, B: Any, y: Any) -> LineAccumulator:
        """Add a batch of the two layers on the same samples (``A (B, d)``, ``B (B, d)``)."""
        At = check_features(A, "A")
        Bt = check_features(B, "B")
        if At.shape != Bt.shape:
            raise InputError(
                f"A and B must have the same shape (one layer width along the line), got "
                f"{tuple(At.shape)} and {tuple(Bt.shape)}"
            )
        if self.phase == 2:
            for t, acc in zip(self.ts, self.lines, strict=True):
                acc.update((1.0 - t) * At.to(F64) + t * Bt.to(F64), y)
            return self
        At64, yt = self.A.check_batch(At, y)
        Bt64, _ = self.B.check_batch(Bt, y)
        if self.cross is None:
            self.cross = torch.zeros(self.K, dtype=F64, device=self.A.device)
        for sl in chunks(At64.shape[0], At64.shape[1], self.K):
            a, b, yc = At64[sl].to(F64), Bt64[sl].to(F64), yt[sl]
            nb = torch.bincount(yc, minlength=self.K)
            cnt = torch.clamp(nb.to(F64), min=1.0)[:, None]
            ma = torch.zeros_like(self.A.means).index_add_(0, yc, a) / cnt
            mb = torch.zeros_like(self.B.means).index_add_(0, yc, b) / cnt
            da, db = a - ma[yc], b - mb[yc]
            cb = torch.zeros_like(self.cross).index_add_(0, yc, (da * db).sum(1))
            dA, dB = ma - self.A.means, mb - self.B.means
            self.cross = cross_merge(self.cross, cb, self.A.counts, nb, dA, dB)
            self.A.merge_first_pass(
                nb, ma, torch.zeros_like(cb).index_add_(0, yc, (da * da).sum(1))
            )
            self.B.merge_first_pass(
                nb, mb, torch.zeros_like(cb).index_add_(0, yc, (db * db).sum(1))
            )
        return self

    def _at(self, t: float) -> CollapseAccumulator:
        """A phase-1 accumulator holding the exact statistics of (1-t) A + t B."""
        ss = (1.0 - t) ** 2 * self.A.ss + 2.0 * t * (1.0 - t) * self.cross + t**2 * self.B.ss
        return CollapseAccumulator.from_statistics(
            self.A.counts,
            (1.0 - t) * self.A.means + t * self.B.means,
            torch.clamp(ss, min=0.0),
            rank_tol=self.rank_tol,
            maxabs=0.0,
            device=self.A.device,
        )

    @thread_policy()
    def end_first_pass(self) -> LineAccumulator:
        """Freeze the statistics; later :meth:`update` calls feed pass 2 on the grid ``ts``."""
        if self.phase != 1:
            raise InputError("end_first_pass() was already called")
        self.A.require_data()
        self.lines = [self._at(float(t)).end_first_pass() for t in self.ts]
        self.phase = 2
        return self

    @thread_policy()
    def merge(self, other: LineAccumulator) -> LineAccumulator:
        """Combine another shard (same phase) into this one."""
        if not isinstance(other, LineAccumulator) or other.K != self.K:
            raise InputError("merge() needs a LineAccumulator with the same K")
        if self.phase != other.phase:
            raise InputError("cannot merge line accumulators in different passes")
        if self.phase == 2:
            for a, b in zip(self.lines, other.lines, strict=True):
                a.merge(b)
            return self
        if other.cross is None:
            return self
        # the cross terms first: their rule reads both sides' means before the layers merge
        if self.cross is None:
            self.cross = other.cross.clone()
        else:
            dA = other.A.means - self.A.means
            dB = other.B.means - self.B.means
            self.cross = cross_merge(self.cross, other.cross, self.A.counts, other.A.counts, dA, dB)
        for key, kind in STATE:
            if kind == "pass1":
                getattr(self, key).merge(getattr(other, key))
        return self

    @thread_policy()
    def all_reduce(self, group: Any = None) -> LineAccumulator:
        """Merge across the processes of a ``torch.distributed`` group (in rank order)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise InputError("all_reduce() needs an initialised torch.distributed process group")
        if self.phase == 2:
            for acc in self.lines:
                acc.all_reduce(group)
            return self
        # every rank's pass-1 state through its state dict, merged in rank order (the merge
        # rule of the cross terms lives in merge() only)
        parts: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(parts, self.state_dict(), group=group)
        merged = LineAccumulator.from_state_dict(parts[0], device=self.A.device)
        for sd in parts[1:]:
            merged.merge(LineAccumulator.from_state_dict(sd, device=self.A.device))
        self.A, self.B, self.cross = merged.A, merged.B, merged.cross
        return self

    #: The keys of :meth:`state_dict` (those of :data:`STATE`): the two layers' pass-1
    #: accumulators (``A``, ``B``), the cross terms, and after :meth:`end_first_pass` the
    #: pass-2 accumulators of the grid.
    STATE_KEYS = tuple(key for key, _ in STATE)

    def state_dict(self) -> dict[str, Any]:
        """A picklable snapshot (tensors on CPU; the accumulators as their state dicts)."""
        save = {
            "meta": lambda v: v.tolist() if isinstance(v, np.ndarray) else v,
            "pass1": lambda acc: acc.state_dict(),
            "cross": lambda c: None if c is None else c.detach().cpu().clone(),
            "pass2": lambda accs: [acc.state_dict() for acc in accs],
        }
        return {key: save[kind](getattr(self, key)) for key, kind in STATE}

    @classmethod
    def from_state_dict(cls, sd: Any, *, device: Any = None) -> LineAccumulator:
        """Rebuild from :meth:`state_dict` (optionally on another device).

        Raises
        ------
        InputError
            ``sd`` is not a state dict of this class, or its parts disagree (names the key).
        """
        if not isinstance(sd, dict):
            raise InputError(
                "from_state_dict() needs the dict returned by LineAccumulator.state_dict() with "
                f"keys {sorted(cls.STATE_KEYS)}, got {type(sd).__name__}"
            )
        missing = [key for key in cls.STATE_KEYS if key not in sd]
        if missing:
            raise InputError(
                f"state dict lacks key(s) {missing}; from_state_dict() needs the dict returned "
                f"by LineAccumulator.state_dict() with keys {sorted(cls.STATE_KEYS)}"
            )
        line = cls(sd["K"], sd["ts"], rank_tol=sd["rank_tol"])
        phase = check_phase(sd["phase"])
        for key, kind in STATE:
            if kind != "pass1":
                continue
            if not isinstance(sd[key], dict):
                raise InputError(
                    f"state dict key {key!r} must hold a CollapseAccumulator state dict, got "
                    f"{type(sd[key]).__name__}"
                )
            acc = CollapseAccumulator.from_state_dict(sd[key], device=device)
            if acc.K != line.K or acc.phase != 1:
                raise InputError(
                    f"state dict key {key!r} must hold a pass-1 accumulator of K={line.K}"
                )
            setattr(line, key, acc)
        if (line.A.counts is None) != (sd["cross"] is None) or (
            line.A.counts is not None
            and (line.B.counts is None or not torch.equal(line.A.counts, line.B.counts))
        ):
            raise InputError(
                "state dict keys 'A', 'B' and 'cross' disagree (the two layers must have seen "
                "the same samples); rebuild the line from the data"
            )
        if sd["cross"] is not None:
            line.cross = _load_cross(sd["cross"], line.K).to(line.A.device)
        lines = sd["lines"]
        want = line.ts.size if sd["phase"] == 2 else 0
        if not isinstance(lines, list | tuple) or len(lines) != want:
            raise InputError(
                f"state dict key 'lines' must hold {want} accumulator state dicts (one per grid "
                f"point in pass 2), got {type(lines).__name__}"
            )
        line.lines = [CollapseAccumulator.from_state_dict(x, device=device) for x in lines]
        line.phase = phase
        return line

    @thread_policy()
    def compute(self, ts: Sequence[float] | None = None) -> dict[str, np.ndarray]:
        """Metrics along the line.

        Parameters
        ----------
        ts : sequence of float, optional
            Where to evaluate; default the grid given at construction. Pass-2 metrics
            (``ncc_accuracy, pfc3, nc1``) are included only on that grid, after pass 2.

        Returns
        -------
        dict of str to ndarray
            ``t`` and, per ``t``, ``tr_sigma_w, tr_sigma_b, pfc1, pfc2, nc2_equinorm,
            nc2_equiangular`` (+ ``ncc_accuracy, pfc3, nc1``).
        """
        self.A.require_data()
        grid = self.ts if ts is None else np.asarray(ts, dtype=float)
        rows = [self._at(float(t)).compute() for t in grid]
        out = {"t": grid.copy()}
        for key in rows[0]:
            out[key] = np.array([r[key] for r in rows])
        if self.phase == 2 and grid.shape == self.ts.shape and np.array_equal(grid, self.ts):
            second = [acc.compute() for acc in self.lines]
            for key in SECOND_PASS:
                if key in second[0]:
                    out[key] = np.array([r[key] for r in second])
        return out
