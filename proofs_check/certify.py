"""Exact sign certificates for univariate polynomials on an interval.

The theorem checks reduce monotonicity along a line to the sign of a polynomial on ``[0, 1]``
(the numerator of a derivative). This module decides that sign *exactly*: coefficients are
converted to :class:`fractions.Fraction` (every float is a dyadic rational, so the conversion is
exact), the real roots in the interval are counted with a Sturm sequence and isolated by exact
bisection, and the sign between consecutive roots is evaluated exactly at a rational point. No
grid sampling and no floating-point root finder is involved, so the result is a proof about the
polynomial whose coefficients were passed in.

Polynomials are coefficient sequences in increasing degree (``c[0] + c[1] t + ...``), the
convention of :mod:`numpy.polynomial`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from numbers import Rational

import numpy as np

from ufm.errors import InputError

__all__ = [
    "Poly",
    "poly_trim",
    "poly_mul",
    "poly_divmod",
    "sturm_sequence",
    "count_roots",
    "isolate_roots",
    "RootInterval",
    "SignCertificate",
    "certify_sign",
]

Poly = tuple[Fraction, ...]


def to_fraction(x: object) -> Fraction:
    """Convert a finite float, int or rational to an exact :class:`~fractions.Fraction`.

    Raises
    ------
    InputError
        If ``x`` is not finite or not a real number.
    """
    if isinstance(x, Fraction):
        return x
    if isinstance(x, bool):
        raise InputError(f"polynomial coefficient must be a real number, got {x!r}")
    if isinstance(x, int | Rational):
        return Fraction(x)
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputError(f"polynomial coefficient must be a real number, got {x!r}") from exc
    if not np.isfinite(v):
        raise InputError(f"polynomial coefficient must be finite, got {v}")
    return Fraction(v)


def poly_trim(p: Sequence[object]) -> Poly:
    """Exact coefficients with trailing (highest-degree) zeros removed; ``()`` is the zero poly.

    Raises
    ------
    InputError
        ``p`` is not a 1-d sequence of real coefficients (``None``, a scalar, a 2-d array).
    """
    if isinstance(p, str | bytes) or not hasattr(p, "__iter__"):
        raise InputError(
            f"p must be a sequence of polynomial coefficients (constant term first), got {p!r}"
        )
    if isinstance(p, np.ndarray) and p.ndim != 1:
        raise InputError(f"p must be a 1-d sequence of coefficients, got shape {p.shape}")
    q = [to_fraction(c) for c in p]
    while q and q[-1] == 0:
        q.pop()
    return tuple(q)


def poly_add(p: Poly, q: Poly) -> Poly:
    n = max(len(p), len(q))
    return poly_trim([(p[i] if i < len(p) else 0) + (q[i] if i < len(q) else 0) for i in range(n)])


def poly_scale(p: Poly, s: object) -> Poly:
    f = to_fraction(s)
    return poly_trim([c * f for c in p])


def poly_sub(p: Poly, q: Poly) -> Poly:
    return poly_add(p, poly_scale(q, -1))


def poly_mul(p: Poly, q: Poly) -> Poly:
    if not p or not q:
        return ()
    out = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        if a == 0:
            continue
        for j, b in enumerate(q):
            out[i + j] += a * b
    return poly_trim(out)


def poly_deriv(p: Poly) -> Poly:
    return poly_trim([i * p[i] for i in range(1, len(p))])


def poly_eval(p: Poly, t: Fraction) -> Fraction:
    """Exact Horner evaluation."""
    acc = Fraction(0)
    for c in reversed(p):
        acc = acc * t + c
    return acc


def poly_divmod(p: Poly, q: Poly) -> tuple[Poly, Poly]:
    """Exact polynomial long division ``p = quot * q + rem`` with ``deg rem < deg q``."""
    if not q:
        raise ZeroDivisionError("polynomial division by the zero polynomial")
    rem = list(p)
    dq = len(q) - 1
    lead = q[-1]
    quot = [Fraction(0)] * max(len(p) - dq, 1)
    while len(rem) - 1 >= dq and rem:
        shift = len(rem) - 1 - dq
        coef = rem[-1] / lead
        quot[shift] = coef
        for j, c in enumerate(q):
            rem[shift + j] -= coef * c
        rem.pop()  # the leading term cancels exactly
        while rem and rem[-1] == 0:
            rem.pop()
    return poly_trim(quot), tuple(rem)


def sturm_sequence(p: Poly) -> list[Poly]:
    """The Sturm sequence ``p, p', -rem(p, p'), ...`` of a non-constant polynomial (exact).

    Each element is normalised to a positive multiple (only signs matter), which keeps the
    rational coefficients from growing needlessly.
    """
    p = poly_trim(p)
    if len(p) < 2:
        return [p]
    seq = [p, poly_deriv(p)]
    while True:
        _, r = poly_divmod(seq[-2], seq[-1])
        if not r:
            break
        r = poly_scale(r, -1)
        # positive rescaling by the magnitude of the leading coefficient
        r = poly_scale(r, 1 / abs(r[-1]))
        seq.append(r)
    return seq


def _sign(x: Fraction | int) -> int:
    return (x > 0) - (x < 0)


def _integer_form(p: Poly) -> tuple[int, ...]:
    """``p`` times the positive lcm of its denominators: integer coefficients, same signs."""
    den = 1
    for c in p:
        den = den * c.denominator // math.gcd(den, c.denominator)
    return tuple(int(c * den) for c in p)


def _sign_at(ip: tuple[int, ...], t: Fraction) -> int:
    """Exact sign of an integer polynomial at a rational ``t = u / v`` (``v > 0``), computed as
    the sign of the homogenised ``v^deg p(u/v)`` in integer arithmetic."""
    return _sign(_homogeneous(ip, t.numerator, t.denominator))


def _homogeneous(ip: tuple[int, ...], u: int, v: int) -> int:
    acc = 0
    vp = 1
    for c in reversed(ip):
        acc = acc * u + c * vp
        vp *= v
    return acc


def _variations(seq: list[tuple[int, ...]], t: Fraction) -> int:
    signs = [s for s in (_sign_at(q, t) for q in seq) if s != 0]
    return sum(1 for a, b in zip(signs, signs[1:], strict=False) if a != b)


def _int_sturm(p: Poly) -> list[tuple[int, ...]]:
    return [_integer_form(q) for q in sturm_sequence(p)]


def count_roots(p: Sequence[object], lo: object, hi: object) -> int:
    """Number of distinct real roots of ``p`` in the half-open interval ``(lo, hi]`` (exact).

    Sturm's theorem: with ``V(x)`` the number of sign changes of the Sturm sequence at ``x``,
    the count is ``V(lo) - V(hi)``; it holds for ``(lo, hi]`` even when ``lo`` or ``hi`` is a
    root (the sequence ends in ``gcd(p, p')``, which is divided out implicitly).

    Raises
    ------
    InputError
        If ``p`` is the zero polynomial (infinitely many roots) or ``lo >= hi``.
    """
    q = poly_trim(p)
    a, b = to_fraction(lo), to_fraction(hi)
    if not q:
        raise InputError("the zero polynomial has infinitely many roots; pass a nonzero one")
    if a >= b:
        raise InputError(f"need lo < hi, got lo={a}, hi={b}")
    if len(q) == 1:
        return 0
    seq = _int_sturm(q)
    return _variations(seq, a) - _variations(seq, b)


@dataclass(frozen=True)
class RootInterval:
    """A real root isolated in ``[lo, hi]`` (exact rationals); ``lo == hi`` when found exactly."""

    lo: Fraction
    hi: Fraction

    @property
    def exact(self) -> bool:
        return self.lo == self.hi

    @property
    def mid(self) -> float:
        return float((self.lo + self.hi) / 2)


def isolate_roots(
    p: Sequence[object], lo: object = 0, hi: object = 1, *, width: object = Fraction(1, 2**40)
) -> list[RootInterval]:
    """Isolate every distinct real root of ``p`` in the closed interval ``[lo, hi]`` (exact).

    Returns disjoint intervals in increasing order, each containing exactly one root, each of
    width at most ``width`` (roots hit exactly by a bisection point are returned as degenerate
    intervals). Roots at ``lo`` and ``hi`` are detected by exact evaluation.

    Raises
    ------
    InputError
        If ``p`` is the zero polynomial or ``lo >= hi``.
    """
    q = poly_trim(p)
    a, b = to_fraction(lo), to_fraction(hi)
    w = to_fraction(width)
    if not q:
        raise InputError("the zero polynomial has infinitely many roots; pass a nonzero one")
    if a >= b:
        raise InputError(f"need lo < hi, got lo={a}, hi={b}")
    if w <= 0:
        raise InputError(f"width must be > 0, got {w}")
    if len(q) == 1:
        return []
    seq = _int_sturm(q)
    iq = seq[0]

    def n_open(x: Fraction, z: Fraction) -> int:
        # roots in the open interval (x, z): (x, z] minus a possible root at z
        return _variations(seq, x) - _variations(seq, z) - (_sign_at(iq, z) == 0)

    out: list[RootInterval] = []
    if poly_eval(q, a) == 0:
        out.append(RootInterval(a, a))
    stack = [(a, b)]
    found: list[RootInterval] = []
    while stack:
        x, z = stack.pop()
        k = n_open(x, z)
        if k == 0:
            continue
        if k == 1 and z - x <= w:
            found.append(RootInterval(x, z))
            continue
        m = (x + z) / 2
        if _sign_at(iq, m) == 0:
            found.append(RootInterval(m, m))
        stack.append((x, m))
        stack.append((m, z))
    out.extend(sorted(found, key=lambda r: r.lo))
    if poly_eval(q, b) == 0:
        out.append(RootInterval(b, b))
    return out


@dataclass(frozen=True)
class SignCertificate:
    """The exact sign pattern of a polynomial on ``[lo, hi]``.

    Attributes
    ----------
    lo, hi : float
        The interval.
    roots : tuple of (float, float)
        Isolating intervals of the distinct real roots in ``[lo, hi]``, increasing (a root hit
        exactly has ``lo == hi``). Rounded to float for reporting; the decisions were exact.
    pieces : tuple of (float, float, int)
        ``(start, end, sign)`` for each maximal open sub-interval between consecutive roots (and
        the ends of the interval): the polynomial has the exact sign ``sign`` on it. ``start`` is
        the upper end of the isolating interval of the root on its left (or ``lo``) and ``end``
        the lower end of the one on its right (or ``hi``), so ``[start, end]`` is guaranteed.
    zero : bool
        True when the polynomial is identically zero (no pieces).
    """

    lo: float
    hi: float
    roots: tuple[tuple[float, float], ...]
    pieces: tuple[tuple[float, float, int], ...]
    zero: bool = False

    @property
    def signs(self) -> tuple[int, ...]:
        return tuple(s for _, _, s in self.pieces)

    def everywhere(self, sign: int) -> bool:
        """True when the polynomial has sign ``sign`` on ``[lo, hi]`` except at isolated roots."""
        return not self.zero and bool(self.pieces) and all(s == sign for s in self.signs)

    def trailing_run(self, sign: int) -> float | None:
        """Left end ``t0`` of the longest interval ``(t0, hi)`` on which the sign is ``sign``
        except at isolated roots.

        ``t0`` is conservative (the upper end of the isolating interval of the root that ends
        the run) and equals ``lo`` when the sign holds on the whole interval; ``None`` when the
        polynomial does not have that sign just left of ``hi``.
        """
        if self.zero or not self.pieces or self.pieces[-1][2] != sign:
            return None
        j = len(self.pieces) - 1
        while j > 0 and self.pieces[j - 1][2] == sign:
            j -= 1
        return self.lo if j == 0 else self.pieces[j][0]

    def leading_sign(self) -> int:
        """The sign just right of ``lo`` (0 for the zero polynomial)."""
        return 0 if self.zero or not self.pieces else self.pieces[0][2]


def _probe(q: Poly, left: Fraction, right: Fraction, right_iv: list[Fraction]) -> Fraction:
    """A rational point strictly between two consecutive roots where ``q`` is nonzero.

    ``left`` is the upper end of the left root's isolating interval, ``right`` the lower end of
    the right one's; ``right_iv`` is that interval (mutable, refined in place if needed).
    """
    if left < right:
        return (left + right) / 2  # no root strictly between consecutive isolating intervals
    t = left
    seq: list[tuple[int, ...]] | None = None
    while poly_eval(q, t) == 0:
        # t is the left root itself and touches the right isolating interval: bisect the
        # right interval until a non-root point separates the two roots
        lo_r, hi_r = right_iv
        m = (lo_r + hi_r) / 2
        if poly_eval(q, m) == 0:
            right_iv[0] = right_iv[1] = m
            return (lo_r + m) / 2
        if seq is None:
            seq = _int_sturm(q)
        if _variations(seq, lo_r) - _variations(seq, m) == 0:
            right_iv[0] = m
            return m
        right_iv[1] = m
    return t


def certify_sign(
    p: Sequence[object], lo: object = 0, hi: object = 1, *, width: object = Fraction(1, 2**40)
) -> SignCertificate:
    """Exact sign pattern of the polynomial ``p`` on ``[lo, hi]``.

    .. math::

        [lo, hi] = \\bigcup_j [\\tau_j, \\tau_{j+1}], \\qquad
        \\operatorname{sign} p(t) = s_j \\ \\text{for } t \\in (\\tau_j, \\tau_{j+1}),

    where the ``tau_j`` are ``lo``, the distinct real roots of ``p`` in the interval and ``hi``.
    The roots are found with a Sturm sequence and exact bisection, and each ``s_j`` is the exact
    sign of ``p`` at a rational point strictly between consecutive roots. The result is a proof
    about the polynomial with exactly these (float-represented) coefficients.

    Parameters
    ----------
    p : sequence of float, int or Fraction
        Coefficients in increasing degree.
    lo, hi : float or Fraction
        The interval, ``lo < hi``.
    width : Fraction
        Maximal width of a root's isolating interval.

    Returns
    -------
    SignCertificate

    Raises
    ------
    InputError
        On non-finite coefficients or ``lo >= hi``.
    """
    q = poly_trim(p)
    a, b = to_fraction(lo), to_fraction(hi)
    if a >= b:
        raise InputError(f"need lo < hi, got lo={a}, hi={b}")
    if not q:
        return SignCertificate(float(a), float(b), (), (), zero=True)
    roots = [[iv.lo, iv.hi] for iv in isolate_roots(q, a, b, width=width)]
    # boundaries: a virtual exact point at a and at b unless they are roots already
    bounds = roots[:]
    if not bounds or bounds[0] != [a, a]:
        bounds.insert(0, [a, a])
    if bounds[-1] != [b, b]:
        bounds.append([b, b])
    iq = _integer_form(q)
    pieces: list[tuple[float, float, int]] = []
    for left, right in zip(bounds, bounds[1:], strict=False):
        t = _probe(q, left[1], right[0], right)
        pieces.append((float(left[1]), float(right[0]), _sign_at(iq, t)))
    return SignCertificate(
        float(a), float(b), tuple((float(x), float(z)) for x, z in roots), tuple(pieces)
    )
