"""Bad files and extreme option values on the ``pfc`` command line: one clear line, exit 2,
never a traceback, never advice to unpickle a file."""

from __future__ import annotations

import numpy as np
import pytest

from pfc.cli import main


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _npz_files(tmp_path):
    """Name -> (path, words the message must hold)."""
    rng = np.random.default_rng(0)
    good = tmp_path / "good.npz"
    np.savez(good, H=rng.standard_normal((20, 3)), y=np.arange(20) % 2)
    raw = good.read_bytes()
    comp = tmp_path / "comp.npz"
    np.savez_compressed(comp, H=rng.standard_normal((200, 30)), y=np.arange(200) % 2)
    craw = bytearray(comp.read_bytes())
    for i in range(200, 2000):
        craw[i] ^= 0x55
    files = {
        "csv": (b"a,b\n1,2\n", "not a NumPy .npz archive"),
        "pkl_bytes": (b"\x80\x04\x95\x10\x00\x00\x00", "not a NumPy .npz archive"),
        "empty": (b"", "the file is empty"),
        "truncated": (raw[: len(raw) // 2], "damaged or truncated"),
        "truncated_end": (raw[:-30], "damaged or truncated"),
        "crc": (raw[:100] + b"\0" * 40 + raw[140:], "damaged or truncated"),
        "deflate": (bytes(craw), "damaged or truncated"),
    }
    out = {}
    for name, (data, words) in files.items():
        p = tmp_path / f"{name}.npz"
        p.write_bytes(data)
        out[name] = (p, words)
    obj = tmp_path / "objects.npz"
    np.savez(obj, H=np.array([{1: 2}] * 4, dtype=object), y=np.arange(4) % 2)
    out["objects"] = (obj, "holds Python objects and cannot be read")
    return out


@pytest.mark.parametrize(
    "name", ["csv", "pkl_bytes", "empty", "truncated", "truncated_end", "crc", "deflate", "objects"]
)
@pytest.mark.parametrize("command", ["metrics", "solve"])
def test_bad_npz_is_one_clear_line_and_never_advises_pickle(capsys, tmp_path, name, command):
    path, words = _npz_files(tmp_path)[name]
    argv = [command, path] if command == "metrics" else [command, "--data", path]
    rc, _, err = run(capsys, *argv)
    assert rc == 2, err
    assert words in err and str(path) in err
    assert "pickle" not in err.lower() and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv,option",
    [
        (["train", "--out", "{tmp}/r", "--seed", "4294967296"], "--seed"),
        (["demo", "--out", "{tmp}/s", "--seed", "18446744073709551616"], "--seed"),
        (["depth", "--out", "{tmp}/d", "--seeds", "0", "4294967296"], "--seeds"),
        (["depth", "--out", "{tmp}/d", "--seed", "4294967296"], "--seed"),
        (["solve", "--seed", "4294967296"], "--seed"),
        (["check", "--seed", "99999999999999999999999"], "--seed"),
    ],
)
def test_seeds_beyond_2_32_are_refused_up_front(capsys, tmp_path, argv, option):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {option}" in err and "4294967295" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_largest_seed_is_accepted_by_the_library():
    from resnet_pfc.config import TrainConfig, resolve_config
    from ufm.errors import InputError
    from ufm.validate import SEED_MAX

    assert resolve_config(TrainConfig(seed=SEED_MAX)).seed == SEED_MAX
    with pytest.raises(InputError, match="seed must be <= 4294967295"):
        resolve_config(TrainConfig(seed=SEED_MAX + 1))


@pytest.mark.parametrize("label", [1e20, -1e300, 2.0**62])
def test_huge_float_labels_are_named_not_wrapped(capsys, tmp_path, label):
    f = tmp_path / "y.npz"
    np.savez(f, H=np.random.default_rng(0).standard_normal((6, 2)), y=np.array([0, label] * 3))
    rc, _, err = run(capsys, "metrics", f)
    assert rc == 2 and "far beyond any class count" in err
    assert "-9223372036854775808" not in err and "RuntimeWarning" not in err


@pytest.mark.parametrize(
    "argv,option",
    [
        (["check", "--instances", "100000000000"], "--instances"),
        (["check", "--solver-instances", "100000000000"], "--solver-instances"),
    ],
)
def test_check_counts_have_upper_bounds(capsys, argv, option):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {option}: must be a finite integer in [" in err
