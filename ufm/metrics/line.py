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
)
from .accumulator import CollapseAccumulator
from .inputs import (
    DEFAULT_RANK_TOL,
    F64,
    chunks,
)


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
        ts = np.linspace(0.0, 1.0, 11) if ts is None else np.asarray(ts, dtype=float)
        if ts.ndim != 1 or ts.size == 0 or not np.all(np.isfinite(ts)):
            raise InputError(f"ts must be a non-empty 1-d sequence of finite floats, got {ts!r}")
        self.ts = ts
        # the line mixes two layers' statistics linearly, so both keep the features' own units
        self.A = CollapseAccumulator(K, rank_tol=rank_tol, auto_scale=False)
        self.B = CollapseAccumulator(K, rank_tol=rank_tol, auto_scale=False)
        self.cross: torch.Tensor | None = None
        self.rank_tol = rank_tol
        self.phase = 1
        self._lines: list[CollapseAccumulator] = []

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
            for t, acc in zip(self.ts, self._lines, strict=True):
                acc.update((1.0 - t) * At.to(F64) + t * Bt.to(F64), y)
            return self
        At64, yt = self.A._batch(At, y)
        Bt64, _ = self.B._batch(Bt, y)
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
            na = self.A.counts
            n = torch.clamp((na + nb).to(F64), min=1.0)
            dA, dB = ma - self.A.means, mb - self.B.means
            self.cross = self.cross + cb + (dA * dB).sum(1) * (na.to(F64) * nb.to(F64) / n)
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
        self.A._require_data()
        self._lines = [self._at(float(t)).end_first_pass() for t in self.ts]
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
            for a, b in zip(self._lines, other._lines, strict=True):
                a.merge(b)
            return self
        if other.cross is None:
            return self
        if self.cross is None:
            self.A.merge(other.A)
            self.B.merge(other.B)
            self.cross = other.cross.clone()
            return self
        na, nb = self.A.counts, other.A.counts
        n = torch.clamp((na + nb).to(F64), min=1.0)
        dA = other.A.means - self.A.means
        dB = other.B.means - self.B.means
        self.cross = self.cross + other.cross + (dA * dB).sum(1) * (na.to(F64) * nb.to(F64) / n)
        self.A.merge(other.A)
        self.B.merge(other.B)
        return self

    @thread_policy()
    def all_reduce(self, group: Any = None) -> LineAccumulator:
        """Merge across the processes of a ``torch.distributed`` group (in rank order)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise InputError("all_reduce() needs an initialised torch.distributed process group")
        if self.phase == 2:
            for acc in self._lines:
                acc.all_reduce(group)
            return self
        K, d = self.K, self.A.d
        flat = torch.cat(
            [
                self.A.counts.to(F64),
                self.A.means.flatten(),
                self.A.ss,
                self.B.means.flatten(),
                self.B.ss,
                self.cross,
            ]
        )
        parts = [torch.empty_like(flat) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, flat, group=group)
        merged = None
        for p in parts:
            shard = LineAccumulator(K, self.ts, rank_tol=self.rank_tol)
            o = 0
            counts = p[o : o + K].round().to(torch.int64)
            o += K
            accs = []
            for _ in range(2):
                means, ss = p[o : o + K * d].view(K, d), p[o + K * d : o + K * d + K]
                o += K * d + K
                accs.append(
                    CollapseAccumulator.from_statistics(
                        counts, means, ss, rank_tol=self.rank_tol, maxabs=0.0, device=self.A.device
                    )
                )
            shard.A, shard.B = accs
            shard.cross = p[o : o + K].clone()
            merged = shard if merged is None else merged.merge(shard)
        self.A, self.B, self.cross = merged.A, merged.B, merged.cross
        return self

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
        self.A._require_data()
        grid = self.ts if ts is None else np.asarray(ts, dtype=float)
        rows = [self._at(float(t)).compute() for t in grid]
        out = {"t": grid.copy()}
        for key in rows[0]:
            out[key] = np.array([r[key] for r in rows])
        if self.phase == 2 and grid.shape == self.ts.shape and np.array_equal(grid, self.ts):
            second = [acc.compute() for acc in self._lines]
            for key in SECOND_PASS:
                if key in second[0]:
                    out[key] = np.array([r[key] for r in second])
        return out
