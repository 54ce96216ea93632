"""Run files that were crafted or damaged: metrics.csv, geodesic.csv, config.json and the rows a
checkpoint restores are checked before figures, reports or file names are built from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tiny_data import TINY_RUN

from pfc.cli import main as pfc_main
from resnet_pfc import train
from resnet_pfc.checkpoint import load_checkpoint, save_checkpoint
from resnet_pfc.config import TrainConfig
from resnet_pfc.figures import draw_figures
from resnet_pfc.report import write_report
from resnet_pfc.runs import SPLITS, check_rows, read_csv, read_run_config
from ufm.errors import InputError, PFCError

TINY = TINY_RUN


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ok"
    train(TrainConfig(**TINY, epochs=1, out=str(out)))
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    run = tmp_path / "deep" / "down" / "run"
    shutil.copytree(finished, run)
    return run


def _edit_line(path: Path, line: int, old: str, new: str) -> None:
    lines = path.read_text().split("\n")
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("\n".join(lines))


@pytest.mark.parametrize("split", ["../../../evil", "/tmp/evil", "train/../../x", "Train", ""])
def test_crafted_split_writes_no_file_outside_the_run(finished, tmp_path, capsys, split):
    run = _copy(finished, tmp_path)
    _edit_line(run / "metrics.csv", 2, ",train,", f",{split},")
    with pytest.raises(InputError, match="column 'split'.*must be one of"):
        draw_figures(run)
    assert pfc_main(["figures", str(run)]) == 2
    assert pfc_main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "metrics.csv" in err
    before = {p for p in tmp_path.rglob("*.png")}
    assert all(p.is_relative_to(run) for p in before)


def test_crafted_split_in_geodesic_csv_is_refused(finished, tmp_path):
    run = _copy(finished, tmp_path)
    _edit_line(run / "geodesic.csv", 2, ",train,", ",../evil,")
    with pytest.raises(InputError, match="geodesic.csv.*line 2.*'split'"):
        draw_figures(run)


def test_figure_names_only_from_known_splits(tmp_path):
    from resnet_pfc.figures import _figure_path

    assert _figure_path(tmp_path, "fig2", "train") == tmp_path / "figures" / "fig2_train.png"
    with pytest.raises(PFCError, match="not one of"):
        _figure_path(tmp_path, "fig2", "../x")
    assert SPLITS == ("train", "test")


def test_crafted_rows_in_a_checkpoint_are_refused_on_resume(finished, tmp_path):
    run = _copy(finished, tmp_path)
    ck = run / "checkpoints" / "last.pt"
    state = load_checkpoint(ck)
    state["rows"][0]["split"] = "../../../../evil"
    save_checkpoint(ck, state)
    (run / "checkpoints" / "last.prev.pt").unlink(missing_ok=True)
    with pytest.raises(PFCError, match="checkpoint.*'split' holds '../../../../evil'"):
        train(TrainConfig(**TINY, epochs=1, out=str(run), resume=True))
    assert not list(tmp_path.rglob("*evil*"))


@pytest.mark.parametrize(
    "line,old,new,match",
    [
        (2, "0,train", "x,train", "column 'epoch' holds 'x'"),
        (2, ",input,0,", ",input,-1,", "column 'layer_index' holds '-1'"),
        (2, ",input,0,0.0,", ",input,0,abc,", "column 'position' holds 'abc'"),
        (1, "split", "splot", r"no column\(s\) \['split'\]"),
    ],
)
def test_damaged_metrics_csv_names_file_line_and_column(
    finished, tmp_path, capsys, line, old, new, match
):
    run = _copy(finished, tmp_path)
    _edit_line(run / "metrics.csv", line, old, new)
    with pytest.raises(InputError, match=match):
        read_csv(run / "metrics.csv")
    for cmd in ("figures", "report"):
        assert pfc_main([cmd, str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("metrics.csv") >= 2


def test_metrics_csv_without_rows(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    text = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text(text.split("\n")[0] + "\n")
    assert pfc_main(["figures", str(run)]) == 2
    assert pfc_main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "has no rows" in err and "train" in err


@pytest.mark.parametrize(
    "text,match",
    [
        ("[1, 2]", "holds a JSON list, not an object"),
        ('{"config": [1]}', "entry 'config' is a JSON list"),
        ('{"config": {"milestones": "ab"}}', "config.milestones must be a list"),
        ('{"config": {}, "versions": 3}', "entry 'versions' is a JSON int"),
        ("{not json", "is not valid JSON"),
        ('"just text"', "holds a JSON str"),
    ],
)
def test_damaged_config_json_is_a_clear_error(finished, tmp_path, capsys, text, match):
    run = _copy(finished, tmp_path)
    (run / "config.json").write_text(text)
    with pytest.raises(PFCError, match=match):
        read_run_config(run / "config.json")
    for cmd in ("figures", "report"):
        assert pfc_main([cmd, str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("config.json") == 2 and "rerun" in err


def test_damaged_epsilon_in_config_json(finished, tmp_path):
    run = _copy(finished, tmp_path)
    doc = json.loads((run / "config.json").read_text())
    doc["config"]["epsilon"] = "tiny"
    (run / "config.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="config.epsilon must be a number"):
        write_report(run)


def test_check_rows_kinds():
    good = [{"epoch": 0, "split": "test", "layer": "input", "layer_index": 0, "pfc1": None}]
    assert check_rows(good, where="x") is good
    for bad in (
        {"rows": 1},
        [1],
        [{**good[0], "epoch": True}],
        [{**good[0], "pfc1": "1.0"}],
        [{**good[0], "layer": 3}],
    ):
        with pytest.raises(InputError, match="where"):
            check_rows(bad, where="where")


@pytest.mark.parametrize(
    "stage,match",
    [
        ("[1]", "holds a JSON list, not a stage record"),
        ('{"tpt": 3, "summary": []}', "are damaged or were written by another version"),
    ],
)
def test_damaged_stage_json_of_a_study(finished, tmp_path, capsys, stage, match):
    study = tmp_path / "study"
    shutil.copytree(finished, study / "train")
    (study / "train" / "stage.json").write_text(stage)
    assert pfc_main(["report", str(study)]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
