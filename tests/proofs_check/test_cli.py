import json

import pytest

from proofs_check import CheckResult
from proofs_check._cli import main


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
    assert "theorem1" in capsys.readouterr().out
    assert not list(out.parent.glob(".tmp-*"))


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
