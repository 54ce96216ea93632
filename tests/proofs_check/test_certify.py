from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proofs_check.certify import (
    certify_sign,
    count_roots,
    isolate_roots,
    poly_divmod,
    poly_mul,
    poly_trim,
    sturm_sequence,
)
from proofs_check.strategies import property_settings
from ufm.errors import InputError

# profiles registered in conftest.py; HYPOTHESIS_PROFILE=slow selects the long one
SETTINGS = property_settings()


def from_roots(roots, lead=1):
    p = poly_trim([lead])
    for r in roots:
        p = poly_mul(p, poly_trim([-Fraction(r), 1]))
    return p


def test_count_and_isolate_known_roots():
    p = from_roots([Fraction(1, 3), Fraction(1, 3), Fraction(1, 2), -1, 2])
    assert count_roots(p, 0, 1) == 2  # distinct roots, the double one counted once
    ivs = isolate_roots(p, 0, 1)
    assert len(ivs) == 2
    assert ivs[0].lo <= Fraction(1, 3) <= ivs[0].hi
    assert ivs[1].lo <= Fraction(1, 2) <= ivs[1].hi


def test_roots_at_endpoints_are_found_exactly():
    p = from_roots([0, 1, Fraction(1, 2)])
    ivs = isolate_roots(p, 0, 1)
    assert [(iv.lo, iv.hi) for iv in ivs][0] == (0, 0)
    assert [(iv.lo, iv.hi) for iv in ivs][-1] == (1, 1)
    assert len(ivs) == 3


def test_sign_pattern_with_double_root_keeps_sign():
    # -(t - 1/3)^2 (t + 1): negative on [0,1] except a double root at 1/3
    p = poly_mul(from_roots([Fraction(1, 3), Fraction(1, 3), -1]), poly_trim([-1]))
    cert = certify_sign(p, 0, 1)
    assert cert.everywhere(-1)
    assert cert.trailing_run(-1) == 0.0
    assert cert.trailing_run(+1) is None


def test_trailing_run_stops_at_sign_change():
    p = from_roots([Fraction(1, 4)])  # t - 1/4: negative then positive
    cert = certify_sign(p, 0, 1)
    assert cert.signs == (-1, 1)
    t0 = cert.trailing_run(+1)
    assert 0.25 <= t0 <= 0.25 + 2**-39
    assert cert.leading_sign() == -1


def test_zero_polynomial():
    cert = certify_sign([0, 0], 0, 1)
    assert cert.zero and not cert.everywhere(1) and cert.trailing_run(1) is None
    with pytest.raises(InputError):
        count_roots([0], 0, 1)
    with pytest.raises(InputError):
        isolate_roots([0.0], 0, 1)


@pytest.mark.parametrize(
    "call",
    [
        lambda: certify_sign([1, 1], 1, 0),
        lambda: count_roots([1, 1], 0, 0),
        lambda: certify_sign([float("nan"), 1]),
        lambda: certify_sign(["x"]),
        lambda: isolate_roots([1, 1], 0, 1, width=0),
        lambda: certify_sign([True]),
    ],
)
def test_bad_input(call):
    with pytest.raises(InputError):
        call()


def test_divmod_reconstructs():
    p, q = poly_trim([3, -2, 0, 5, 1]), poly_trim([1, 0, 2])
    quot, rem = poly_divmod(p, q)
    back = poly_trim(
        [
            a + b
            for a, b in zip(list(poly_mul(quot, q)) + [0] * 5, list(rem) + [0] * 9, strict=False)
        ]
    )
    assert back == p
    assert len(sturm_sequence(p)) >= 2


@SETTINGS
@given(
    st.lists(st.integers(-30, 30), min_size=2, max_size=7).filter(lambda c: c[-1] != 0),
)
def test_count_matches_numpy_roots(coefs):
    p = poly_trim(coefs)
    roots = np.polynomial.polynomial.polyroots(np.array(coefs, dtype=float))
    real = roots[np.abs(roots.imag) < 1e-7].real
    # distinct roots in [0, 1] according to numpy (clustered), away from the ends
    inside = np.unique(np.round(real[(real > 1e-6) & (real < 1 - 1e-6)], 5))
    n = count_roots(p, Fraction(1, 10**6), 1 - Fraction(1, 10**6))
    assert n == len(inside)


@SETTINGS
@given(st.lists(st.integers(-20, 20), min_size=1, max_size=6), st.integers(-20, 20))
def test_certificate_matches_dense_sampling(coefs, lead):
    coefs = coefs + [lead if lead else 1]
    cert = certify_sign(coefs, 0, 1)
    ts = np.linspace(0, 1, 2001)
    vals = np.polynomial.polynomial.polyval(ts, np.array(coefs, dtype=float))
    for start, end, sign in cert.pieces:
        inside = (ts > start + 1e-6) & (ts < end - 1e-6)
        v = vals[inside]
        v = v[np.abs(v) > 1e-9]
        assert np.all(np.sign(v) == sign)
