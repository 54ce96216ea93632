"""The layout of pfc: the report never loads the runner, every stage has its module, the
certificate subsample and the config file round trip are right."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pfc import runner
from pfc.certificates import balanced_idx
from pfc.config import STAGES, StudyConfig, config_doc, resolve_study_config
from ufm.errors import InputError


def test_html_report_does_not_import_the_runner_or_the_stages():
    code = (
        "import sys, pfc.html_report; "
        "bad = [m for m in sys.modules if m in ('pfc.runner', 'pfc.stages') "
        "or m.startswith('pfc.stages.')]; print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_stage_has_a_run_function_in_order():
    assert tuple(runner.STAGE_RUNS) == STAGES
    for name, fn in runner.STAGE_RUNS.items():
        assert fn.__module__ == f"pfc.stages.{name}" and fn.__name__ == "run"


def test_balanced_idx_takes_the_first_m_of_every_class():
    y = np.array([2, 0, 1, 0, 2, 1, 0, 2, 1])
    idx = balanced_idx(y, 2, 3)
    np.testing.assert_array_equal(idx, [1, 3, 2, 5, 0, 4])
    with pytest.raises(InputError, match="class 0 has only 3 samples"):
        balanced_idx(y, 4, 3)


def test_config_doc_holds_every_option_and_lists_for_tuples():
    cfg = resolve_study_config(StudyConfig(quick=True))
    doc = config_doc(cfg)
    assert set(doc) == set(StudyConfig.__dataclass_fields__)
    assert isinstance(doc["lams"], list) and doc["lams"] == list(cfg.lams)
    assert isinstance(doc["lr_drops"], list) and doc["lr_drops"] == list(cfg.lr_drops)
    assert runner.RESUME_FREE <= set(doc)
    # each network's training options as trained: with what the study sets, not the defaults
    for net in ("fc", "deep"):
        assert doc[net]["dataset"] == cfg.dataset and doc[net]["eval_test"] is True
        assert isinstance(doc[net]["milestones"], list) and doc[net]["milestones"]
        assert not {"out", "resume", "threads", "progress"} & set(doc[net])
    assert config_doc(resolve_study_config(StudyConfig(quick=True, progress=False, threads=2))) == (
        config_doc(resolve_study_config(StudyConfig(quick=True)))
        | {"progress": False, "threads": 2}
    )
