"""The evaluate stage's function on small real inputs: SQuAD v1.1 and v2.0 metrics in
metrics/eval.json, the three prediction files, and all of it in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline import download, negatives, tokenize
from pipeline.evaluate import evaluate
from pipeline.qa.metrics import load_metric
from pipeline.runtime.compose import compose_params_text
from pipeline.runtime.config import from_dict
from pipeline.runtime.paths import (
    EVAL_METRICS_FILE,
    NEGATIVES_FILE,
    PREDICTIONS_DIR,
    RAW_DIR,
    RISK_COVERAGE_PLOT_FILE,
    SLICES_METRICS_FILE,
    SLICES_PLOT_FILE,
    TOKENIZED_DIR,
    TRAINED_DIR,
)
from tests.helpers.project import SAMPLE_DIR
from tests.helpers.saved_model import save_packaged_model

V2_KEYS = {
    "exact",
    "f1",
    "total",
    "HasAns_exact",
    "HasAns_f1",
    "HasAns_total",
    "NoAns_exact",
    "NoAns_f1",
    "NoAns_total",
    "best_exact",
    "best_exact_thresh",
    "best_f1",
    "best_f1_thresh",
}
ANALYSIS_KEYS = {
    "exact_match_ci95_low",
    "exact_match_ci95_high",
    "f1_ci95_low",
    "f1_ci95_high",
    "risk_coverage_area",
    "expected_calibration_error",
}


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    return save_packaged_model(tmp_path_factory.mktemp("trained"))


def stage_inputs(root, cfg):
    """data/raw and data/tokenized for the first 32 questions, written by the first stages,
    and the model in models/trained (the stages read these paths from the working directory)."""
    download.run(cfg.data, root / RAW_DIR)
    negatives.run(cfg, root / RAW_DIR, root / NEGATIVES_FILE)
    tokenize.run(cfg, root / RAW_DIR, root / TOKENIZED_DIR, negatives_file=root / NEGATIVES_FILE)
    return root / RAW_DIR, root / TOKENIZED_DIR


@pytest.mark.parametrize("version_2", [False, True], ids=["v1.1", "v2.0"])
def test_evaluate_writes_metrics_prediction_files_and_logs_them(trained_dir, tmp_path, monkeypatch, version_2):
    from datasets import load_from_disk
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # the local MLflow store keeps artifacts beside the repo root
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    validation = str(SAMPLE_DIR / ("validation-v2.json.gz" if version_2 else "validation.json.gz"))
    overrides = ["data=sample_v2"] if version_2 else []
    overrides += [
        f"data.train_file={validation}",
        f"data.validation_file={validation}",
        "data.max_train_samples=4",
        "data.max_eval_samples=32",
        "tokenize.max_length=128",
        "tokenize.stride=32",
        "evaluate.batch_size=8",
    ]
    cfg = from_dict(yaml.safe_load(compose_params_text(overrides)))
    raw_dir, tokenized_dir = stage_inputs(tmp_path, cfg)
    (tmp_path / TRAINED_DIR).parent.mkdir(parents=True)
    (tmp_path / TRAINED_DIR).symlink_to(trained_dir)
    metrics_file, predictions_dir = tmp_path / EVAL_METRICS_FILE, tmp_path / PREDICTIONS_DIR

    metrics = evaluate(cfg)

    written = json.loads(metrics_file.read_text())
    assert written == {k: v for k, v in metrics.items() if k != "mlflow_run_id"}
    assert written["examples"] == 32 and written["features"] > 32
    files = {p.name: json.loads(p.read_text()) for p in predictions_dir.iterdir()}
    answers = files["predictions.json"]
    assert len(answers) == 32 and all(isinstance(v, str) for v in answers.values())
    assert set(files["nbest_predictions.json"]) == set(answers)
    validation = load_from_disk(str(raw_dir))["validation"]
    references = [{"id": i, "answers": a} for i, a in zip(validation["id"], validation["answers"])]
    if version_2:
        assert sorted(files) == ["evaluation.json", "nbest_predictions.json", "null_odds.json", "predictions.json"]
        assert set(written) == V2_KEYS | ANALYSIS_KEYS | {"exact_match", "examples", "features"}
        assert written["exact_match"] == written["exact"] and written["NoAns_total"] == 2
        rescored = load_metric("squad_v2").compute(
            predictions=[
                {"id": i, "prediction_text": t, "no_answer_probability": files["null_odds.json"][i]}
                for i, t in answers.items()
            ],
            references=references,
            no_answer_threshold=cfg.evaluate.null_score_diff_threshold,
        )
    else:
        assert sorted(files) == ["evaluation.json", "nbest_predictions.json", "predictions.json"]
        assert set(written) == ANALYSIS_KEYS | {"exact_match", "f1", "examples", "features"}
        rescored = load_metric("squad").compute(
            predictions=[{"id": i, "prediction_text": t} for i, t in answers.items()], references=references
        )
    assert {k: written[k] for k in rescored} == pytest.approx(rescored)
    # what the export registers with the model: these scores, with the settings that gave them
    record = files["evaluation.json"]
    assert (record["f1"], record["exact_match"]) == (written["f1"], written["exact_match"])
    assert record["answer_settings"]["evaluate.n_best"] == cfg.evaluate.n_best
    assert written["exact_match_ci95_low"] <= written["exact_match"] <= written["exact_match_ci95_high"]
    assert written["f1_ci95_low"] <= written["f1"] <= written["f1_ci95_high"]
    assert 0.0 <= written["expected_calibration_error"] <= 1.0 and 0.0 <= written["risk_coverage_area"] <= 100.0

    # slices: every question once per dimension, and the counts-weighted F1 is the overall F1
    slices = json.loads((tmp_path / SLICES_METRICS_FILE).read_text())
    assert set(slices) == {"question_word", "answer_tokens", "windows", "answer_position"}
    for dimension in slices.values():
        assert sum(row["count"] for row in dimension.values()) == 32
        assert sum(row["f1"] * row["count"] for row in dimension.values()) / 32 == pytest.approx(written["f1"])
    if version_2:
        assert slices["answer_tokens"]["no answer"]["count"] == 2
    rows = json.loads((tmp_path / SLICES_PLOT_FILE).read_text())
    assert len(rows) == sum(len(d) for d in slices.values()) and rows[0]["slice"].startswith("question word: ")
    curve = (tmp_path / RISK_COVERAGE_PLOT_FILE).read_text().splitlines()
    assert curve[0] == "coverage,f1,threshold" and len(curve) == 33
    assert float(curve[-1].split(",")[0]) == 1.0 and float(curve[-1].split(",")[1]) == pytest.approx(
        written["f1"], abs=1e-4
    )

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(metrics["mlflow_run_id"])
    assert run.data.metrics["f1"] == pytest.approx(written["f1"])
    if version_2:
        assert run.data.metrics["NoAns_exact"] == pytest.approx(written["NoAns_exact"])
    assert run.data.metrics["f1_ci95_low"] == pytest.approx(written["f1_ci95_low"])
    assert run.data.metrics["overlap.validation_questions_in_train"] == 4  # train: the same file's first 4
    logged = sorted(a.path for a in client.list_artifacts(run.info.run_id, "predictions"))
    assert logged == [f"predictions/{name}" for name in sorted(files)]
    (tmp_path / "artifacts").mkdir()
    table = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "evaluation/slices.json", str(tmp_path / "artifacts"))
        ).read_text()
    )
    assert table["columns"] == ["dimension", "slice", "count", "exact_match", "f1"] and len(table["data"]) == len(rows)
