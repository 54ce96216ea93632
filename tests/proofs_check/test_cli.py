import json

import pytest

from proofs_check import CheckResult
from proofs_check.cli import main


def test_cli_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "sub" / "r.json"
    rc = main(
        [
            "--seed",
            "1",
            "--instances",
            "12",
            "--solver-instances",
            "1",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["ok"] and [r["name"] for r in data["results"]] == [
        "theorem1",
        "theorem2",
        "theorem3",
        "theorem4",
    ]
    assert data["results"][0]["n_tried"] == 12
    printed = capsys.readouterr().out
    assert "theorem1" in printed
    # the atomic write leaves nothing else behind (hidden temp files included)
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]
    # the notes report distributions and the lam_0 grid, not a single threshold
    assert "per-direction critical relative cost" in printed and "observed lam_0" in printed
    t2 = data["results"][1]["details"]
    assert t2["rho_crit"]["n"] == data["results"][1]["n_confirmed"]
    assert "smallest_rho_not_monotone" not in t2
    t4 = data["results"][3]["details"]
    assert t4["lam0_grid"]["lo"] <= 1e-5 and t4["lam0_grid"]["hi"] >= 1e4


def test_cli_subset_and_bad_arguments(capsys):
    assert main(["--theorems", "1", "--instances", "3", "--no-progress"]) == 0
    assert main(["--theorems", "7", "--no-progress"]) == 2
    assert main(["--theorems", "x", "--no-progress"]) == 2
    assert main(["--instances", "-3", "--no-progress"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0


def test_cli_exit_code_on_violation(monkeypatch):
    import proofs_check

    bad = CheckResult("theorem1", "claim", 1, 1, 0, 1, 0, -1.0, ({"kind": "violation"},), {})
    monkeypatch.setattr(proofs_check, "check_theorem1", lambda *a, **k: bad)
    assert main(["--theorems", "1", "--no-progress"]) == 1


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"theorems": "7"}, "theorems must list"),
        ({"seed": -1}, "seed"),
        ({"instances": 0}, "instances"),
    ],
)
def test_run_checks_refuses_options_built_in_python(kw, match):
    # the same declaration checks CheckOptions built in Python as on the command line
    from proofs_check.cli import CheckOptions, run_checks
    from ufm.errors import InputError

    with pytest.raises(InputError, match=match):
        run_checks(CheckOptions(**kw, progress=False))
