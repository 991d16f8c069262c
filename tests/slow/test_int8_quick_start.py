"""The int8 engine against the float one on the quick-start model (issue: int8 answers): the
quick start's own pipeline (`make repro`'s stages and settings, on the shipped sample) with
export.engine=int8 trains the model, then the export quantizes it; on the sample's validation
questions the int8 answers must equal the float answers for at least 95% of them and score
within 1 F1 point.

Slow (the quick start's training: minutes), so not in `make test`: `make test-slow` runs it.
tests/e2e/test_int8_export.py tests the int8 plumbing on the tiny checkpoint within `make test`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.qa.analysis import question_scores
from pipeline.qa.squad import read_squad_json
from pipeline.runtime.files import read_json
from tests.helpers.project import executed_stages, make_repo, run_cmd, set_params

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def test_the_quick_start_models_int8_answers_agree_with_its_float_answers(tmp_path):
    repo = make_repo(tmp_path, {})  # conf/ as shipped: the quick start's settings
    set_params(repo, {"export": {"engine": "int8"}})
    proc = run_cmd(["dvc", "repro", "export"], repo, timeout=3000)
    assert {"train", "evaluate", "export"} <= executed_stages(proc)
    # the quick start's quality bar (issue: int8 answers; 59.86 before its faster settings)
    assert read_json(repo / "metrics/eval.json")["f1"] >= 55.0
    assert_int8_agrees_with_float(repo)


def assert_int8_agrees_with_float(repo: Path) -> None:
    """The checks, on a project whose `dvc repro` ran with export.engine=int8."""
    float_answers = read_json(repo / "predictions/predictions.json")
    int8_answers = read_json(repo / "models/export/int8/predictions.json")
    assert int8_answers.keys() == float_answers.keys() and len(float_answers) > 500
    same = sum(int8_answers[i] == a for i, a in float_answers.items()) / len(float_answers)
    assert same >= 0.95, f"int8 gives the float answer for {same:.1%} of the questions"

    records = read_squad_json(repo / "data/sample/validation.json.gz")
    references = [{"id": r["id"], "answers": r["answers"]} for r in records if r["id"] in float_answers]
    assert len(references) == len(float_answers)
    float_f1 = question_scores(float_answers, references, False)[1].mean()
    int8_f1 = question_scores(int8_answers, references, False)[1].mean()
    assert float_f1 > 50  # a trained model (the quick start scores about 60)
    assert abs(int8_f1 - float_f1) <= 1.0, (float_f1, int8_f1)
    # the export's own record says the same
    evaluation = read_json(repo / "models/export/int8/evaluation.json")
    assert evaluation["f1"] == pytest.approx(int8_f1, abs=1e-6)
    assert evaluation["float"]["f1"] == pytest.approx(float_f1, abs=1e-6)
    assert evaluation["agreement_with_float"] == pytest.approx(same)
