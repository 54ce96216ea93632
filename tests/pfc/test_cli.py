"""Tests of the ``pfc`` command line and of the main job (``pfc demo``)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest

from pfc import runner
from pfc.cli import COMMANDS, build_parser, main
from pfc.config import StudyConfig, resolve_study_config
from resnet_pfc.analysis import tpt_check
from ufm.errors import InputError

SUBCOMMANDS = ["demo", "train", "figures", "solve", "check", "report", "metrics"]


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------------------
# help and bad options
# ------------------------------------------------------------------------------------------


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(capsys, name):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pfc {name}")


def test_console_script_is_declared():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'pfc = "pfc.cli:main"' in text


@pytest.mark.parametrize(
    ("argv", "option", "value"),
    [
        (["demo", "--epochs", "0"], "--epochs", "0"),
        (["demo", "--seed", "-1"], "--seed", "-1"),
        (["demo", "--threads", "two"], "--threads", "two"),
        (["demo", "--lams", "1", "-0.5"], "--lams", "-0.5"),
        (["train", "--out", "x", "--dataset", "imagenet"], "--dataset", "imagenet"),
        (["train", "--out", "x", "--lr", "nan"], "--lr", "nan"),
        (["train", "--out", "x", "--batch-size", "0"], "--batch-size", "0"),
        (["solve", "--lam", "abc"], "--lam", "abc"),
        (["solve", "--K", "1"], "--K", "1"),
        (["solve", "--loss", "hinge"], "--loss", "hinge"),
        (["check", "--instances", "-3"], "--instances", "-3"),
    ],
)
def test_bad_options_exit_2_naming_option_and_value(capsys, argv, option, value):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err
    assert value in err


def test_missing_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_missing_dataset_names_data_root_and_download(capsys, tmp_path):
    rc, _, err = run(
        capsys,
        "train",
        "--dataset",
        "mnist",
        "--out",
        str(tmp_path / "run"),
        "--data-root",
        str(tmp_path / "nothing-here"),
        "--no-progress",
    )
    assert rc == 2
    assert "--data-root" in err and "--download" in err
    assert "nothing-here" in err
    assert not (tmp_path / "run" / "metrics.csv").exists()


# ------------------------------------------------------------------------------------------
# solve, metrics, check
# ------------------------------------------------------------------------------------------


def test_solve_mufm_sec4b_with_certificate_and_json(capsys, tmp_path):
    j = tmp_path / "s.json"
    rc, out, _ = run(
        capsys, "solve", "--K", "3", "--n", "2", "--d", "10", "--lam", "1",
        "--certify", "--json", str(j),
    )  # fmt: skip
    assert rc == 0
    assert "objective" in out and "converged" in out and "pfc1" in out
    doc = json.loads(j.read_text())
    # N = 6, d = 10 >= rank(X) + K = 9: the relaxation is exact by theory
    assert doc["certificate"]["exact"] is True
    assert abs(doc["certificate"]["rel_gap"]) < 1e-6
    assert doc["status"] == "converged"


def test_solve_ufm_on_npz_matches_the_library(capsys, tmp_path):
    import ufm

    y = np.repeat(np.arange(3), 4)
    H = np.random.default_rng(0).standard_normal((12, 5))
    f = tmp_path / "f.npz"
    np.savez(f, H=H, y=y)
    rc, out, _ = run(capsys, "solve", "--model", "ufm", "--data", str(f), "--certify")
    assert rc == 0
    ref = ufm.solve(y, d=5)
    m = re.search(r"objective\s+(\S+)", out)
    assert m is not None
    np.testing.assert_allclose(float(m.group(1)), ref.objective, rtol=1e-10)
    assert "exact            True" in out


def test_solve_npz_errors_name_the_option(capsys, tmp_path):
    f = tmp_path / "f.npz"
    np.savez(f, X=np.zeros((4, 2)), y=np.arange(4) % 2)
    rc, _, err = run(capsys, "solve", "--data", str(f))
    assert rc == 2 and "--features" in err and "'H'" in err
    rc, _, err = run(capsys, "solve", "--data", str(tmp_path / "missing.npz"))
    assert rc == 2 and "--data" in err


def test_metrics_command(capsys, tmp_path):
    from ufm.metrics import collapse_metrics

    rng = np.random.default_rng(1)
    H = rng.standard_normal((30, 4))
    y = np.arange(30) % 3
    f = tmp_path / "h.npz"
    np.savez(f, H=H, y=y)
    rc, out, _ = run(capsys, "metrics", str(f))
    assert rc == 0
    pfc1 = float(re.search(r"pfc1\s+(\S+)", out).group(1))
    np.testing.assert_allclose(pfc1, collapse_metrics(H, y)["pfc1"], rtol=1e-5)
    rc, _, err = run(capsys, "metrics", str(f), "--labels", "labels")
    assert rc == 2 and "--labels" in err


def test_check_writes_json(capsys, tmp_path):
    j = tmp_path / "c.json"
    rc, out, _ = run(
        capsys, "check", "--instances", "3", "--theorems", "1,2", "--json", str(j),
        "--no-progress",
    )  # fmt: skip
    assert rc == 0
    assert "theorem1" in out and "theorem2" in out
    doc = json.loads(j.read_text())
    assert doc["ok"] is True and [r["name"] for r in doc["results"]] == ["theorem1", "theorem2"]


# ------------------------------------------------------------------------------------------
# study helpers
# ------------------------------------------------------------------------------------------


def _rows(accs, losses):
    return [
        {"split": "train", "layer_index": 0, "epoch": e, "accuracy": a, "train_loss": l}
        for e, (a, l) in enumerate(zip(accs, losses, strict=True))
    ]


def test_tpt_check_detects_terminal_phase():
    t = tpt_check(_rows([0.5, 0.9, 1.0, 1.0, 1.0], [None, 0.5, 0.1, 0.05, 0.04]))
    assert t["reached_100"] and t["tpt_epoch"] == 2 and t["loss_falling"] and t["in_tpt"]
    np.testing.assert_allclose(t["loss_ratio"], 0.4)
    assert t["loss_falling_last"] is True


def test_tpt_check_rejects_lost_accuracy_and_rising_loss():
    t = tpt_check(_rows([0.5, 1.0, 0.99, 1.0], [1.0, 0.2, 0.1, 0.3]))
    assert t["tpt_epoch"] == 3  # 100% only from epoch 3 on
    assert t["loss_falling"] is None  # the TPT starts at the last epoch: no trend
    assert not t["in_tpt"]
    t = tpt_check(_rows([0.5, 1.0, 1.0], [1.0, 0.2, 0.3]))
    assert t["loss_falling"] is False and not t["in_tpt"]
    t = tpt_check(_rows([0.5, 0.9], [1.0, 0.5]))
    assert not t["reached_100"] and t["tpt_epoch"] is None and not t["in_tpt"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("certify_per_class", 7),
        ("lams", (1.0,)),
        ("lams", (1.0, -1.0)),
        ("fc.epochs", 0),
        ("deep.epochs", 0),
        ("threads", 0),
        ("features_per_class", 1),
    ],
)
def test_study_config_errors_name_the_option(name, value):
    head, _, tail = name.partition(".")
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        resolve_study_config(StudyConfig(**{head: {tail: value} if tail else value}))


def test_study_defaults_sweep_at_least_four_decades():
    for quick in (False, True):
        cfg = resolve_study_config(StudyConfig(quick=quick))
        assert np.log10(cfg.lams[-1] / cfg.lams[0]) >= 4 - 1e-12


# ------------------------------------------------------------------------------------------
# the main job, quick version
# ------------------------------------------------------------------------------------------

COMPARED = [
    "results.json",
    "train/metrics.csv",
    "train/geodesic.csv",
    "sec4b/fig4_metrics.csv",
    "sec4b/fig5_sweep.csv",
    "sec4b/certificates.json",
    "network/sweep.csv",
    "network/comparison.csv",
    "network/layers.csv",
    "network/certificates.json",
    "proofs/proofs_check.json",
]


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "study"
    rc = main(["demo", "--quick", "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def test_quick_demo_writes_a_self_contained_report(quick_study, capsys):
    html = (quick_study / "report.html").read_text()
    imgs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(imgs) >= 6  # Figs. 2, 3, 4, 5, network sweep and layers
    assert all(s.startswith("data:image/png;base64,") for s in imgs)
    assert not re.search(r'(src|href)="(https?:|/|\./)', html)  # no external asset
    for section in [
        "Terminal phase of training",
        "Fig. 2",
        "Fig. 3",
        "Fig. 4",
        "Fig. 5",
        "Per-layer table",
        "Do PFC1-3 decrease across depth?",
        "Effective depth",
        "against the MUFM and UFM predictions",
        "Certificates",
        "Theorem checks",
        "theorem4",
        "Optimal transport between layers (Theorem 3)",
    ]:
        assert section in html, section
    for rel in COMPARED + ["config.json", "timings.json", "train/figures/fig2_train.png"]:
        assert (quick_study / rel).is_file(), rel


def test_quick_demo_optimal_transport_check(quick_study):
    # the ot stage's verdicts in results.json equal ufm.ot_claims of a profile computed here
    # from the same run's features, and the report states each verdict
    import ufm
    from pfc.features import load_run_features
    from pfc.stages.ot import OT_SAMPLES

    res = json.loads((quick_study / "results.json").read_text())
    html = (quick_study / "report.html").read_text()
    nets = {n["name"]: n for n in res["networks"]}
    assert set(nets) == {"fc", "deep"}
    feats, _, _ = load_run_features(quick_study / "deep")
    d = list(feats.values())[-1].shape[1]
    prof = ufm.ot_profile(
        {k: v for k, v in feats.items() if v.shape[1] == d}, max_samples=OT_SAMPLES, seed=0
    )
    got = nets["deep"]["ot"]
    np.testing.assert_allclose(got["summary"]["total_w2sq"], prof.total_w2sq, rtol=1e-9)
    assert [c["held"] for c in got["claims"]] == [c["held"] for c in ufm.ot_claims(prof)]
    for c in got["claims"]:
        assert c["held"] in (True, False)
        assert ("did not hold" if not c["held"] else "held (measured") in html
    assert (quick_study / "ot" / "steps.png").is_file()
    assert (quick_study / "ot" / "profile.csv").is_file()


def test_quick_demo_numbers(quick_study):
    res = json.loads((quick_study / "results.json").read_text())
    cfg = json.loads((quick_study / "config.json").read_text())
    assert cfg["study"]["quick"] is True and "torch" in cfg["versions"]
    assert res["theorems_ok"] is True
    assert set(res["monotone_across_depth"]) == {"pfc1", "pfc2", "pfc3", "nc1"}
    # network stage: this project's extension; H* - X in rowspace(W) (lam_h = 0), measured
    assert res["network_structural_limit"]["mufm_off_rowspace"] < 1e-4
    assert "extension, not the paper" in (quick_study / "report.html").read_text()
    cmp_rows = {r["model"].split()[0]: r for r in res["network_vs_models"]}
    # the UFM optimum is a simplex ETF: collapsed
    assert cmp_rows["UFM"]["pfc1"] < 1e-6 and cmp_rows["UFM"]["pfc2"] < 1e-3
    certs = res["sec4b_certificates"] + res["network_certificates"]
    assert all(c["exact"] for c in certs)  # quick sizes are exact by theory
    assert all(abs(c["gap"]) < 1e-6 * max(1.0, abs(c["bound"])) for c in certs)
    # the network's last layer, read back from metrics.csv, is what results.json reports
    from resnet_pfc.runs import read_csv

    rows = read_csv(quick_study / "train" / "metrics.csv")
    last_epoch = max(r["epoch"] for r in rows)
    last = max((r for r in rows if r["epoch"] == last_epoch), key=lambda r: r["layer_index"])
    np.testing.assert_allclose(res["last_layer"]["pfc1"], last["pfc1"], rtol=1e-12)
    # per-layer values and strict-decrease flags, recomputed from metrics.csv
    final = sorted(
        (r for r in rows if r["epoch"] == last_epoch and r["split"] == "train"),
        key=lambda r: r["layer_index"],
    )
    for k in ("pfc1", "pfc2", "pfc3", "nc1"):
        vals = [r[k] for r in final]
        np.testing.assert_allclose(res["per_layer"][k], vals, rtol=1e-12)
        assert res["strictly_decreasing"][k] == all(b < a for a, b in zip(vals, vals[1:]))
    assert set(res["collapse_goals"]) == {"pfc1", "pfc2", "nc1"}


def test_rerun_without_resume_is_refused(quick_study, capsys):
    rc, _, err = run(capsys, "demo", "--quick", "--out", str(quick_study), "--no-progress")
    assert rc == 2 and "--resume" in err and "--force" in err


def test_interrupted_then_resumed_study_reproduces_the_numbers(
    quick_study, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "again"
    real = runner.STAGE_RUNS["network"]

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setitem(runner.STAGE_RUNS, "network", interrupt)
    rc, _, err = run(capsys, "demo", "--quick", "--out", str(out), "--no-progress")
    assert rc == 130 and "--resume" in err
    assert (out / "train" / "stage.json").is_file() and (out / "sec4b" / "stage.json").is_file()
    assert not (out / "network" / "stage.json").exists()
    kept = (out / "train" / "stage.json").stat().st_mtime_ns

    monkeypatch.setitem(runner.STAGE_RUNS, "network", real)
    rc, out_txt, _ = run(capsys, "demo", "--quick", "--out", str(out), "--resume", "--no-progress")
    assert rc == 0 and "report.html" in out_txt
    assert (out / "train" / "stage.json").stat().st_mtime_ns == kept  # skipped, not redone
    for rel in COMPARED:
        assert (out / rel).read_bytes() == (quick_study / rel).read_bytes(), rel


def test_resume_with_other_options_is_refused(quick_study, capsys):
    rc, _, err = run(
        capsys, "demo", "--quick", "--out", str(quick_study), "--resume", "--seed", "3",
        "--no-progress",
    )  # fmt: skip
    assert rc == 2 and "seed" in err


def test_resume_refuses_a_changed_network_option_and_an_older_layout(quick_study, tmp_path, capsys):
    import shutil

    study = tmp_path / "study"
    shutil.copytree(quick_study, study)
    # a network's training option is compared through its nested record
    rc, _, err = run(capsys, "demo", "--quick", "--out", str(study), "--resume", "--epochs",
                     "41", "--no-progress")  # fmt: skip
    assert rc == 2 and "fc:" in err and "'epochs': 40" in err
    # a config.json with options this version lacks (the flat layout before nesting)
    cfg_path = study / "config.json"
    doc = json.loads(cfg_path.read_text())
    doc["study"]["deep_lr"] = 0.05
    cfg_path.write_text(json.dumps(doc))
    rc, _, err = run(capsys, "demo", "--quick", "--out", str(study), "--resume", "--no-progress")
    assert rc == 2 and "deep_lr" in err and "another version" in err


def test_report_and_figures_of_a_run_directory(quick_study, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(quick_study / "train", run_dir)
    (run_dir / "stage.json").unlink()
    rc, out, _ = run(capsys, "report", str(run_dir))
    assert rc == 0
    html = (run_dir / "report.html").read_text()
    assert "Fig. 2" in html and "data:image/png;base64," in html
    assert "Terminal phase of training" in html
    # a plain training run's report does not talk about the demo
    assert "demo's budget" not in html and "demo_recipe" not in html
    assert "heat maps" in html
    rc, out, _ = run(capsys, "figures", str(quick_study))
    assert rc == 0 and "fig2_train.png" in out
    rc, _, err = run(capsys, "report", str(tmp_path / "nowhere"))
    assert rc == 2 and "study directory" in err


def test_quick_demo_networks_entry(quick_study):
    """results.json["networks"]: one entry per trained network, recomputed from metrics.csv."""
    from resnet_pfc.runs import read_csv

    res = json.loads((quick_study / "results.json").read_text())
    nets = res["networks"]
    assert [n["name"] for n in nets] == ["fc", "deep"]
    assert [n["model"] for n in nets] == ["fc", "ln_resnet1"]
    for n, folder in zip(nets, ("train", "deep"), strict=True):
        assert n["split"] == "train" and n["dataset"] == "digits"
        rows = read_csv(quick_study / folder / "metrics.csv")
        final = max(r["epoch"] for r in rows)
        tr = sorted((r for r in rows if r["epoch"] == final and r["split"] == "train"),
                    key=lambda r: r["layer_index"])  # fmt: skip
        te = sorted((r for r in rows if r["epoch"] == final and r["split"] == "test"),
                    key=lambda r: r["layer_index"])  # fmt: skip
        assert n["blocks"] == len(tr) - 1
        for k in ("pfc1", "pfc2", "pfc3", "nc1"):
            vals = [r[k] for r in tr]
            np.testing.assert_allclose(n["last_layer"][k], vals[-1], rtol=1e-12)
            np.testing.assert_allclose(n["test_last_layer"][k], te[-1][k], rtol=1e-12)
            assert n["strictly_decreasing"][k] == all(b < a for a, b in zip(vals, vals[1:]))
        goals_met = (
            n["last_layer"]["pfc1"] <= 0.1
            and n["last_layer"]["pfc2"] <= 0.1
            and n["last_layer"]["nc1"] <= 0.05
            and all(n["strictly_decreasing"][k] for k in ("pfc1", "pfc2", "nc1"))
            and n["non_increasing"]["pfc3"]
        )
        assert n["collapse_goals_met"] == goals_met
        assert isinstance(n["rising_during_training"], list)
    html = (quick_study / "report.html").read_text()
    summary = html.split("<h2>Summary</h2>", 1)[1].split("<h2>", 1)[0]
    for n in nets:
        if not n["collapse_goals_met"]:  # every unmet goal is named in the Summary
            assert "did not hold" in summary
            for k, g in n["goals"].items():
                if not g["met"]:
                    assert f"{k.upper()} = " in summary
    assert "heat maps" in html and "1b. The deep LayerNorm ResNet" in html
    for rel in ("deep/figures/heatmap_train.png", "deep/figures/fig2_test.png",
                "deep/networks.png", "train/figures/heatmap_train.png"):  # fmt: skip
        assert (quick_study / rel).is_file(), rel
    # the recipe table of --quick names the preset instead of the full demo's reasons
    deep = json.loads((quick_study / "deep" / "stage.json").read_text())
    why = {r["option"]: r["why"] for r in deep["recipe"]}
    assert why["epochs"].startswith("set by --quick")


@pytest.mark.slow
def test_full_demo(tmp_path, capsys):
    rc, out, _ = run(capsys, "demo", "--out", str(tmp_path / "full"), "--no-progress")
    assert rc == 0
    res = json.loads((tmp_path / "full" / "results.json").read_text())
    assert res["theorems_ok"] is True
    deep = res["networks"][1]
    assert deep["dataset"] == "mnist_5k" and deep["blocks"] >= 34
    assert deep["collapse_goals_met"] is True, deep
    assert deep["last_layer"]["nc1"] <= 0.05 and deep["last_layer"]["pfc1"] <= 0.1
    assert "Summary" in out or "collapse goals" in out


# ------------------------------------------------------------------------------------------
# issue 12: usage errors are one line and exit 2, before any long work; 1 only for a claim
# ------------------------------------------------------------------------------------------


def _status(capsys, argv, main_=None):
    """Exit status of ``main(argv)`` (returned or raised by argparse) and stderr."""
    try:
        rc = (main_ or main)(list(argv))
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error" in lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["demo", "--seed", "-1"], ["--seed", "-1"]),
        (["demo", "--instances", "0"], ["--instances", "0"]),
        (["check", "--instances", "0"], ["--instances", "0"]),
        (["check", "--solver-instances", "0"], ["--solver-instances"]),
        (["check", "--theorems", "1,9"], ["--theorems", "1,9"]),
        (["train", "--out", "x", "--seed", "-1"], ["--seed", "-1"]),
        (["train", "--out", "x", "--device", "tpu"], ["--device", "tpu"]),
        (["train", "--out", "x", "--lr", "inf"], ["--lr", "inf"]),
        (["train", "--out", "x", "--lr", "-1"], ["--lr", "-1"]),
        (["solve", "--device", "tpu"], ["--device", "tpu"]),
        (["solve", "--tol", "nan"], ["--tol", "nan"]),
        (["metrics"], ["file"]),
        ([], ["COMMAND"]),
        (["nosuch"], ["nosuch"]),
    ],
)
def test_usage_errors_are_one_line_exit_2(capsys, argv, needles):
    rc, _, err = _status(capsys, argv)
    assert rc == 2
    _one_line_error(err, *needles)


def test_lr_overflowing_float32_is_refused_up_front(capsys, tmp_path):
    out = tmp_path / "r"
    rc, _, err = _status(capsys, ["train", "--out", str(out), "--lr", "1e300", "--no-progress"])
    assert rc == 2
    _one_line_error(err, "lr=1e+300", "overflows")
    assert not out.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error(capsys, tmp_path):
    out = tmp_path / "r"
    rc, _, err = _status(capsys, ["train", "--out", str(out), "--device", "cuda", "--no-progress"])
    assert rc == 2
    _one_line_error(err, "CUDA is not available", "--device cpu")
    assert not (out / "config.json").exists()


@pytest.mark.parametrize("where", ["empty", "folder", "under_file", "unwritable"])
@pytest.mark.parametrize("cmd", ["check", "solve"])
def test_json_target_checked_before_the_work(capsys, tmp_path, monkeypatch, where, cmd):
    import time

    (tmp_path / "afile").write_text("x")
    target = {
        "empty": "",
        "folder": str(tmp_path),
        "under_file": str(tmp_path / "afile" / "r.json"),
        "unwritable": "/proc/pfc-no/r.json",
    }[where]
    if cmd == "check":
        # a huge run: the refusal must come before it starts
        argv = ["check", "--instances", "100000", "--no-progress", "--json", target]
    else:
        argv = ["solve", "--n", "100000", "--d", "500", "--no-progress", "--json", target]
    t0 = time.perf_counter()
    rc, out, err = _status(capsys, argv)
    assert rc == 2 and time.perf_counter() - t0 < 5
    _one_line_error(err, "--json")
    assert out == ""


def test_json_into_new_subfolder_still_works(capsys, tmp_path):
    j = tmp_path / "new" / "deeper" / "c.json"
    rc, _, _ = _status(
        capsys, ["check", "--instances", "2", "--theorems", "1", "--no-progress", "--json", str(j)]
    )
    assert rc == 0 and json.loads(j.read_text())["ok"] is True
    assert not list(tmp_path.rglob(".pfc-write-test-*"))


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    ("labels", "needle"),
    [
        (np.array(list("abcabcabcabc")), "integer class labels"),
        (np.array([object()] * 12, dtype=object), "cannot be read"),
        (np.arange(12) % 3 + 0.5, "non-integer"),
        (np.zeros((12, 2), dtype=int), "1-D"),
        (np.arange(5) % 3, "12 feature rows but 5 labels"),
    ],
)
def test_metrics_rejects_bad_labels_in_one_line(capsys, tmp_path, labels, needle):
    H = np.random.default_rng(0).standard_normal((12, 4))
    f = _npz(tmp_path / "f.npz", H=H, y=labels)
    rc, _, err = _status(capsys, ["metrics", f])
    assert rc == 2
    _one_line_error(err, needle)


def test_metrics_file_problems_are_one_line(capsys, tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    (tmp_path / "d.npz").mkdir()
    f = _npz(tmp_path / "s.npz", H=np.array(list("abcd")), y=np.arange(4) % 2)
    for path, needle in [
        (tmp_path / "a.npy", "single array"),
        (tmp_path / "junk.npz", "cannot read"),
        (tmp_path / "missing.npz", "cannot read"),
        (tmp_path / "d.npz", "cannot read"),
        (f, "real numeric"),
    ]:
        rc, _, err = _status(capsys, ["metrics", str(path)])
        assert rc == 2, path
        _one_line_error(err, needle)


def test_float_labels_with_integer_values_are_accepted(capsys, tmp_path):
    H = np.random.default_rng(0).standard_normal((12, 4))
    f = _npz(tmp_path / "f.npz", H=H, y=(np.arange(12) % 3).astype(float))
    rc, out, _ = _status(capsys, ["metrics", f])
    assert rc == 0 and "pfc1" in out


def test_interrupt_is_130_with_one_line(capsys, monkeypatch):
    import proofs_check

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(proofs_check, "check_theorem1", stop)
    rc, out, err = _status(capsys, ["check", "--theorems", "1", "--no-progress"])
    assert rc == 130 and "interrupted" in err
    assert "all claims" not in out


def test_os_error_is_one_line_exit_2(capsys, tmp_path, monkeypatch):
    import pfc.cli as cli

    def boom(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setitem(cli.COMMANDS, "metrics", boom)
    rc, _, err = _status(capsys, ["metrics", "whatever.npz"])
    assert rc == 2
    _one_line_error(err, "Permission denied", "x")


def test_console_gets_one_line_and_no_traceback(tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    for argv in (
        ["-m", "pfc", "check", "--instances", "2", "--json", str(tmp_path)],
        ["-m", "proofs_check", "--instances", "0"],
    ):  # (python -m resnet_pfc: the same handler, covered in process by tests/test_fuzz_cli.py)
        r = subprocess.run(
            [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 2, (argv, r.stderr)
        _one_line_error(r.stderr)


def test_study_resume_in_moved_folder_with_damaged_json(quick_study, tmp_path, capsys):
    import shutil

    moved = tmp_path / "moved" / "study"
    shutil.copytree(quick_study, moved)
    rc, _, err = _status(capsys, ["demo", "--quick", "--out", str(moved) + "/", "--resume",
                                  "--no-progress"])  # fmt: skip
    assert rc == 0, err
    (moved / "config.json").write_text("{not json")
    rc, _, err = _status(capsys, ["demo", "--quick", "--out", str(moved), "--resume",
                                  "--no-progress"])  # fmt: skip
    assert rc == 2
    _one_line_error(err, "not valid JSON", "--force")


def test_metrics_never_prints_a_silent_nan(capsys, tmp_path):
    H = np.random.default_rng(0).standard_normal((20, 3)) * 1e100
    f = _npz(tmp_path / "big.npz", H=H, y=np.arange(20) % 2)
    rc, out, err = _status(capsys, ["metrics", f])
    assert rc in (0, 2)
    if rc == 0 and ("nan" in out or "inf" in out):
        assert "warning" in err and "not finite" in err
    elif rc == 2:
        _one_line_error(err)


def test_every_subcommand_has_a_runner():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
