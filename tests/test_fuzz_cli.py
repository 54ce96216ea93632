"""Property-based fuzz suite of the command lines (issue 12).

hypothesis generates argument vectors -- valid and invalid values of every option, junk tokens,
data files of every wrong kind, run folders in every state -- for ``pfc metrics``, ``pfc check``,
``python -m proofs_check``, ``pfc train`` and ``python -m resnet_pfc train`` (tiny sizes), calls
each ``main(argv)`` in process and asserts the rule of the command lines:

* the exit status is 0 (success), 1 (a theorem claim violated; ``check`` only) or 2 (usage);
* no Python traceback reaches stderr, and no exception escapes ``main``;
* a usage error is exactly one line on stderr, naming the error;
* every call ends within a time bound.

The fast profile (default run) stays under about 30 s; the ``slow``-marked tests run the same
properties on many more examples. Examples are derandomised (seeded) so that CI is reproducible.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pfc.cli import main as pfc_main
from proofs_check.cli import main as proofs_main
from resnet_pfc.__main__ import main as resnet_main


def _profile(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def _fuzz(examples: int, strategy: st.SearchStrategy, check: Callable[[Any], None]) -> None:
    """Run ``check`` on ``examples`` examples drawn from ``strategy`` (settings of _profile)."""
    _profile(examples)(given(strategy)(check))()


FAST = {"metrics": 40, "check": 20, "proofs": 20, "train": 14}
SLOW = {"metrics": 400, "check": 150, "proofs": 150, "train": 120}
#: Each fuzz test runs under both: the fast profile by default, the slow one with ``-m slow``.
PROFILES = [pytest.param(FAST, id="fast"), pytest.param(SLOW, id="slow", marks=pytest.mark.slow)]
#: Seconds one call may take (the machine running the tests may be busy).
TIME_LIMIT_S = 60.0


_COUNTER = itertools.count()


@functools.cache
def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="pfc-fuzz-"))


def invoke(main, argv: list[str], allowed: tuple[int, ...]) -> tuple[int, str, str]:
    """Run ``main(argv)`` in process and check the rule of the command lines."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # warnings are not errors; stderr keeps the message
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
            rc = 0 if exc.code is None else exc.code
    elapsed = time.perf_counter() - t0
    event(f"exit status {rc}")
    torch.set_num_threads(threads)
    e = err.getvalue()
    assert elapsed < TIME_LIMIT_S, (argv, elapsed)
    assert rc in allowed, (argv, rc, e)
    assert "Traceback" not in e, (argv, e)
    if rc == 2:
        lines = [ln for ln in e.splitlines() if ln.strip()]
        assert len(lines) == 1 and "error" in lines[0], (argv, e)
    return rc, out.getvalue(), e


Spec = tuple[str, list[str], list[str]]  # flag, valid values, invalid values


def _opt(flag: str, valid: list[str], invalid: list[str]) -> Spec:
    return (flag, valid, invalid)


class Argv(list):
    """An argument vector that knows which options were given an invalid value (or none)."""

    bad: tuple[str, ...] = ()


@st.composite
def _argv_of(draw, specs: tuple[Spec | list[str], ...]) -> Argv:
    """Every option left out or given a valid value; then none (half of the examples), one or
    two options given an invalid value or no value at all; sometimes a junk token."""
    opts = [sp for sp in specs if isinstance(sp, tuple)]
    fixed = [tok for sp in specs if isinstance(sp, list) for tok in sp]
    chosen: dict[str, list[str]] = {}
    for flag, valid, _ in opts:
        if draw(st.booleans()):
            chosen[flag] = [flag, draw(st.sampled_from(valid))]
    n_bad = draw(st.sampled_from([0, 0, 1, 2]))
    bad = set()
    for _ in range(n_bad):
        flag, _, invalid = draw(st.sampled_from(opts))
        chosen[flag] = draw(
            st.one_of(st.sampled_from(invalid).map(lambda v, f=flag: [f, v]), st.just([flag]))
        )
        bad.add(flag)
    order = draw(st.permutations(sorted(chosen)))
    junk = draw(st.lists(st.sampled_from(["--bogus", "-x", "extra", "--help"]), max_size=1))
    if draw(st.integers(0, 9)) > 0:
        junk = []
    argv = Argv([tok for f in order for tok in chosen[f]] + fixed + junk)
    argv.bad = tuple(sorted(bad - {"--resume"}))  # a repeated switch is not a usage error
    return argv


def _argv(*specs: Spec | list[str]) -> st.SearchStrategy[list[str]]:
    return _argv_of(specs)


BAD_INTS = ["-1", "x", "1.5", "", "1e3", "nan"]
BAD_FLOATS = ["-1", "nan", "inf", "-inf", "x", "", "1e400"]


def _json_targets() -> list[str]:
    s = _scratch()
    (s / "a_file").write_text("x")
    (s / "a_dir").mkdir(exist_ok=True)
    return [str(s / "a_dir"), str(s / "a_file" / "r.json"), "/proc/pfc-fuzz/r.json", ""]


# ------------------------------------------------------------------------------------------
# pfc metrics


@st.composite
def npz_files(draw) -> str:
    """A path to a features/labels file: half of them well formed (any scale), the others
    wrong in one way (file kind, dtype, shape, labels)."""
    s = _scratch()
    path = s / f"m{next(_COUNTER)}.npz"  # a fresh name: examples never see each other's files
    good = draw(st.booleans())
    kind = "npz" if good else draw(st.sampled_from(["npz"] * 4 + ["npy", "junk", "missing", "dir"]))
    if kind == "missing":
        return str(path)
    if kind == "dir":
        path.mkdir(exist_ok=True)
        return str(path)
    if kind == "junk":
        path.write_bytes(draw(st.binary(max_size=64)))
        return str(path)
    k = draw(st.integers(2, 4) if good else st.integers(1, 4))
    n = draw(st.integers(k, 4 * k) if good else st.integers(0, 14))
    d = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 10.0 ** draw(st.sampled_from([0, 0, -150, 150, -300, 300, 8]))
    hkinds = ["float", "float32", "int"] + ([] if good else ["str", "complex", "nan"])
    hkind = draw(st.sampled_from(hkinds))
    H = rng.standard_normal((n, d)) * scale
    if hkind == "float32":
        with np.errstate(over="ignore"):  # beyond float32: inf features, refused by the CLI
            H = H.astype(np.float32)
    elif hkind == "int":
        H = np.clip(np.round(H), -(2.0**62), 2.0**62).astype(np.int64)
    elif hkind == "str":
        H = H.astype(str)
    elif hkind == "complex":
        H = H + 1j
    elif hkind == "nan" and n:
        H[0, 0] = np.nan
    lkinds = ["int", "float_int"]
    if not good:
        lkinds += ["negative", "big", "str", "float", "object", "bool", "2d", "short", "empty"]
    lkind = draw(st.sampled_from(lkinds))
    y = np.arange(n) % k
    labels = {
        "int": y,
        "negative": y - 1,
        "big": y + k,
        "str": y.astype(str),
        "float_int": y.astype(float),
        "float": y + 0.5,
        "object": np.array([object()] * n, dtype=object),
        "bool": y.astype(bool),
        "2d": np.stack([y, y], axis=1),
        "short": y[: max(0, n - 1)],
        "empty": np.array([], dtype=int),
    }[lkind]
    if kind == "npy":
        np.save(path.with_suffix(".npy"), H)
        return str(path.with_suffix(".npy"))
    np.savez(path, H=H, y=labels)
    return str(path)


def metrics_argv() -> st.SearchStrategy[list[str]]:
    name = st.sampled_from(["H", "y", "nope"])
    key = st.one_of(st.just([]), st.just([]), st.just([]), name)
    return st.tuples(npz_files(), key, key).map(
        lambda t: (
            ["metrics", t[0]]
            + (["--features", t[1]] if t[1] else [])
            + (["--labels", t[2]] if t[2] else [])
        )
    )


def _check_metrics(argv: list[str]) -> None:
    invoke(pfc_main, argv, (0, 2))


@pytest.mark.parametrize("profile", PROFILES)
def test_fuzz_pfc_metrics(profile):
    _fuzz(profile["metrics"], metrics_argv(), _check_metrics)


# ------------------------------------------------------------------------------------------
# pfc check and python -m proofs_check (tiny instance counts)


def check_options() -> st.SearchStrategy[list[str]]:
    good_json = str(_scratch() / "check.json")
    return _argv(
        _opt("--seed", ["0", "1", "7"], BAD_INTS),
        _opt("--instances", ["1", "2", "3"], ["0", *BAD_INTS]),
        _opt("--solver-instances", ["1"], ["0", *BAD_INTS]),
        _opt("--theorems", ["1", "2", "1,2", "3", "4", "1,4"], ["5", "0", "", "1,,x", "a"]),
        _opt("--json", [good_json], _json_targets()),
        ["--no-progress"],
    )


def _small_default(argv: list[str]) -> list[str]:
    # the default instance counts (100 and 10) are real work: keep the examples small
    if "--instances" not in argv:
        argv = [*argv, "--instances", "2"]
    if "--solver-instances" not in argv:
        argv = [*argv, "--solver-instances", "1"]
    return argv


def _must_refuse(argv: Argv) -> bool:
    """A usage error is certain: an option was given an invalid value or none (``--help``
    first wins; ``--instances 0`` is only invalid when Theorem 1 or 2 is checked)."""
    if "--help" in argv:
        return False
    bad = set(getattr(argv, "bad", ()))
    if bad == {"--instances"}:
        i = argv.index("--instances")
        value = argv[i + 1] if i + 1 < len(argv) else None
        if value == "0" and "--theorems" in argv:
            t = argv[argv.index("--theorems") + 1]
            return not set(t.split(",")) <= {"3", "4"}
    return bool(bad)


def _check_pfc_check(argv: Argv) -> None:
    rc, _, err = invoke(pfc_main, ["check", *_small_default(argv)], (0, 1, 2))
    if _must_refuse(argv):
        assert rc == 2, (argv, argv.bad, rc, err)


def _check_proofs_check(argv: Argv) -> None:
    rc, _, err = invoke(proofs_main, _small_default(argv), (0, 1, 2))
    if _must_refuse(argv):
        assert rc == 2, (argv, argv.bad, rc, err)


@pytest.mark.parametrize("profile", PROFILES)
def test_fuzz_pfc_check(profile):
    _fuzz(profile["check"], check_options(), _check_pfc_check)


@pytest.mark.parametrize("profile", PROFILES)
def test_fuzz_proofs_check(profile):
    _fuzz(profile["proofs"], check_options(), _check_proofs_check)


# ------------------------------------------------------------------------------------------
# pfc train and python -m resnet_pfc train (tiny runs), run folders in every state

TINY = [
    "--dataset", "digits", "--per-class", "3", "--width", "4", "--blocks", "1",
    "--batch-size", "10", "--epochs", "1", "--eval-every", "1", "--geodesic-points", "3",
    "--geodesic-pass2-points", "2", "--eval-batch-size", "64", "--threads", "1",
    "--no-progress", "--no-figures",
]  # fmt: skip


@functools.cache
def _template_run() -> Path:
    """One finished tiny run, copied into the examples that need an existing run folder."""
    out = _scratch() / "template-run"
    rc, _, err = invoke(resnet_main, ["train", *TINY, "--out", str(out)], (0,))
    assert rc == 0, err
    return out


def _out_folder(state: str, i: int) -> str:
    i = next(_COUNTER)
    out = _scratch() / f"run-{state}-{i}"
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    if state == "file":
        out.write_text("x")
    elif state in ("existing", "corrupt_last", "dir_last", "no_last"):
        shutil.copytree(_template_run(), out)
        last = out / "checkpoints" / "last.pt"
        if state == "corrupt_last":
            last.write_bytes(b"junk")
        elif state == "dir_last":
            last.unlink()
            last.mkdir()
        elif state == "no_last":
            last.unlink()
    elif state == "under_file":
        (_scratch() / f"f{i}").write_text("x")
        return str(_scratch() / f"f{i}" / "run")
    return str(out) + ("/" if state == "trailing_slash" else "")


def train_argv() -> st.SearchStrategy[list[str]]:
    no_gpu_cuda = [] if torch.cuda.is_available() else ["cuda"]
    return st.tuples(
        st.sampled_from(
            ["fresh", "fresh", "existing", "corrupt_last", "dir_last", "no_last", "file"]
            + ["under_file", "trailing_slash"]
        ),
        st.integers(0, 10**9),
        _argv(
            _opt("--epochs", ["1", "2"], ["0", *BAD_INTS]),
            _opt("--lr", ["0.05", "0.1"], ["0", "1e300", "1e39", *BAD_FLOATS]),
            _opt("--seed", ["0", "3"], BAD_INTS),
            _opt("--device", ["cpu"], ["tpu", "", "cuda:x", "gpu", *no_gpu_cuda]),
            _opt("--batch-size", ["7", "10"], ["0", *BAD_INTS]),
            _opt("--width", ["3", "4"], ["0", *BAD_INTS]),
            _opt("--blocks", ["1", "2"], ["0", *BAD_INTS]),
            _opt("--per-class", ["2", "3"], ["0", "10000", *BAD_INTS]),
            _opt("--dtype", ["float32", "float64"], ["float16", "int"]),
            _opt("--momentum", ["0", "0.5"], ["2", *BAD_FLOATS]),
            _opt("--weight-decay", ["0", "1e-3"], ["1e300", *BAD_FLOATS]),
            _opt("--lr-gamma", ["0.1", "0.5"], ["0", "1e200", *BAD_FLOATS]),
            _opt("--eval-every", ["1", "2"], ["0", *BAD_INTS]),
            _opt("--geodesic-points", ["3"], ["1", *BAD_INTS]),
            _opt("--position", ["index", "distance"], ["depth"]),
            _opt("--model", ["auto", "fc", "conv"], ["vit"]),
            _opt("--epsilon", ["0.01"], ["2", *BAD_FLOATS]),
            _opt("--dataset", ["digits"], ["imagenet", "mnist"]),
            ("--resume", ["__flag__"], ["__flag__"]),
        ),
        st.sampled_from(["pfc", "resnet_pfc"]),
    ).map(lambda t: (t[0], t[1], t[2], t[3]))


def opts_bad(opts: list[str], example) -> Argv:
    """``opts`` (the ``__flag__`` placeholders removed) with the invalid options of the example."""
    out = Argv(opts)
    out.bad = getattr(example[2], "bad", ())
    return out


def _check_train(example) -> None:
    state, i, opts, cli = example
    out = _out_folder(state, i)
    # the tiny defaults first: argparse keeps the last value of a repeated option
    opts = [tok for tok in opts if tok != "__flag__"]
    argv = ["train", *TINY, "--out", out, *opts]
    if "--dataset" in opts:  # the paper's data sets: an empty root, never a download
        argv += ["--data-root", str(_scratch() / "no-data")]
    rc, _, err = invoke(pfc_main if cli == "pfc" else resnet_main, argv, (0, 2))
    if state in ("file", "under_file", "dir_last") and "--help" not in argv:
        assert rc == 2, (argv, err)
    if _must_refuse(opts_bad(opts, example)):
        assert rc == 2, (argv, opts_bad(opts, example).bad, err)


@pytest.mark.parametrize("profile", PROFILES)
def test_fuzz_train(profile):
    _fuzz(profile["train"], train_argv(), _check_train)
