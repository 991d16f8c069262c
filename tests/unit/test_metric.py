"""The local squad metric module: official definitions, loaded by path, no hub."""

from __future__ import annotations

import pytest

from pipeline.qa.metrics import METRICS_DIR, load_metric


@pytest.fixture(scope="module")
def squad():
    return load_metric("squad")


def compute(metric, pairs):
    predictions = [{"id": str(i), "prediction_text": p} for i, (p, _) in enumerate(pairs)]
    references = [
        {"id": str(i), "answers": {"text": t, "answer_start": [0] * len(t)}} for i, (_, t) in enumerate(pairs)
    ]
    return metric.compute(predictions=predictions, references=references)


def test_loaded_from_the_repo_not_the_hub(squad):
    assert (METRICS_DIR / "squad" / "squad.py").is_file()
    assert type(squad).__name__ == "Squad"


def test_normalisation_and_max_over_ground_truths(squad):
    assert compute(squad, [("The Denver Broncos!", ["Denver Broncos"])]) == {"exact_match": 100.0, "f1": 100.0}
    assert compute(squad, [("Broncos", ["Carolina Panthers", "broncos"])]) == {"exact_match": 100.0, "f1": 100.0}


def test_token_f1(squad):
    # prediction 3 tokens, truth 2 tokens, 2 shared: P=2/3, R=1 -> F1=0.8
    result = compute(squad, [("Denver Broncos team", ["Denver Broncos"])])
    assert result["exact_match"] == 0.0
    assert result["f1"] == pytest.approx(80.0)


def test_average_over_questions_and_empty_prediction(squad):
    result = compute(squad, [("1976", ["1976"]), ("", ["Santa Clara"])])
    assert result == {"exact_match": 50.0, "f1": 50.0}
