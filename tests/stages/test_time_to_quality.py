"""The quality benchmark's budget and time-to-quality curve (benchmarks/quality.py), on real
components: the budget from a measured course-recipe throughput, the train stage's model
snapshots (`--snapshots`) of a tiny real training, each scored, the curve written and logged to
a real MLflow sqlite store."""

from __future__ import annotations

import json
import math
import sys

import pytest
from mlflow.tracking import MlflowClient

from pipeline.qa.predictions import evaluate_file
from pipeline.runtime.config import load_config
from pipeline.runtime.files import read_json
from tests.helpers.project import PROJECT_ROOT, run_cmd, update_conf

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))

import course_recipe  # noqa: E402
import quality  # noqa: E402

MEASURED = {
    "features": 320,
    "steps": 20,
    "batch_size": 16,
    "first_step_seconds": 9.0,
    "steady_step_seconds": 3.5,
    "steady_features_per_second": 16 / 3.5,
}


def test_the_budget_is_the_course_recipes_epoch_from_its_measured_throughput():
    # 8,117 features = 507 full batches of 16 (prepare_tf_dataset drops the last 5 features):
    # the first step (tracing) and 506 steady ones
    assert course_recipe.course_epoch_seconds(8117, MEASURED) == pytest.approx(9.0 + 506 * 3.5)
    assert course_recipe.course_epoch_seconds(31, MEASURED) == pytest.approx(9.0)
    info = quality.budget(MEASURED, 8117)
    assert info["course_epoch_seconds"] == pytest.approx(1780.0)
    assert info["target_seconds"] == pytest.approx(0.65 * 1780.0, abs=0.01)
    assert info["stretch_seconds"] == pytest.approx(1780.0)
    # twice as fast a machine halves the budget: it travels with the CPU
    faster = {**MEASURED, "first_step_seconds": 4.5, "steady_step_seconds": 1.75}
    assert quality.budget(faster, 8117)["target_seconds"] == pytest.approx(info["target_seconds"] / 2, abs=0.01)
    with pytest.raises(ValueError, match="no full batch"):
        course_recipe.course_epoch_seconds(15, MEASURED)


def test_the_course_recipe_is_timed_on_real_features_in_float32(project, tiny_checkpoint):
    import tensorflow as tf
    from datasets import load_from_disk

    from pipeline.qa.batching import FeatureTable

    split = load_from_disk(str(project / "data/tokenized"))["train"]
    table = FeatureTable.from_dataset(split.select(range(40)))
    with pytest.raises(ValueError, match="need 2 or more"):
        course_recipe.measure_course_training(table, str(tiny_checkpoint), 31)
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")  # the course's float32 whatever the caller set
    try:
        measured = course_recipe.measure_course_training(table, str(tiny_checkpoint), 40)
        assert tf.keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # and the caller's policy is back
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    # 40 features: 2 full batches of 16, the remainder dropped as prepare_tf_dataset does
    assert measured["features"] == 32 and measured["steps"] == 2 and measured["max_length"] == 384
    assert measured["precision"] == "float32"
    assert 0 < measured["steady_step_seconds"] and measured["first_step_seconds"] > 0
    assert measured["seconds"] >= measured["first_step_seconds"] + measured["steady_step_seconds"]
    assert measured["steady_features_per_second"] == pytest.approx(16 / measured["steady_step_seconds"])


def test_snapshots_make_a_curve_that_is_scored_written_and_logged(project, tmp_path):
    repo = project  # tokenized on the tiny config and checkpoint
    update_conf(repo, {"train/cpu.yaml": {"epochs": 2}})
    snapshots = tmp_path / "snapshots"
    bad = run_cmd([sys.executable, "-m", "pipeline.train", "--snapshot-every-steps", "5"], repo, check=False)
    assert (
        bad.returncode != 0
        and "error: --snapshot-every-steps 5: use a positive number of steps, together with --snapshots DIR"
        in bad.stderr
    )
    out = run_cmd(
        [sys.executable, "-m", "pipeline.train", "--snapshots", str(snapshots), "--snapshot-every-steps", "5"], repo
    )
    summary = read_json(repo / "metrics/train.json")
    per_epoch = summary["steps"] // 2
    assert summary["steps"] == 2 * per_epoch == 26  # 100 features, batch 8
    # every 5 steps and at the end of each epoch, never at the last step (that is the trained model)
    expected = sorted({*range(5, 26, 5), per_epoch})
    assert sorted(int(d.name.split("-")[1]) for d in snapshots.iterdir()) == expected
    assert out.stdout.count("snapshot of step ") == len(expected)
    infos = [read_json(snapshots / f"step-{s:06d}" / "snapshot.json") for s in expected]
    assert [i["step"] for i in infos] == expected and infos[expected.index(13)]["epoch"] == 1.0
    seconds = [i["train_seconds"] for i in infos]
    assert seconds == sorted(seconds) and 0 < seconds[0] and seconds[-1] < summary["train_seconds"]
    snapshot = snapshots / f"step-{expected[0]:06d}"
    assert (snapshot / "tf_model.h5").is_file() and read_json(snapshot / "qa_windows.json")["max_length"] == 128

    points = quality.curve_points(snapshots, repo / "models/trained", summary)
    assert [p["step"] for p in points] == expected + [26] and points[-1]["train_seconds"] == summary["train_seconds"]
    # score two points on real predictions (the snapshot of epoch 1 and the trained model)
    points = [p for p in points if p["step"] in (13, 26)]
    cfg = load_config(str(repo / "params.yaml"))
    validation = PROJECT_ROOT / "data/sample/validation.json.gz"

    def score(model_dir):
        metrics = evaluate_file(model_dir, validation, cfg.tokenize, cfg.evaluate, max_samples=24, progress=False)[0]
        return {"tuning": metrics, "dev": metrics}

    course_epoch = 100.0
    curve = quality.score_curve(points, course_epoch, score)
    direct = evaluate_file(
        repo / "models/trained", validation, cfg.tokenize, cfg.evaluate, max_samples=24, progress=False
    )[0]
    assert curve[-1]["dev_f1"] == pytest.approx(direct["f1"], abs=1e-4)
    assert curve[0]["budget_fraction"] == pytest.approx(points[0]["train_seconds"] / course_epoch, abs=1e-4)
    assert all(0 <= p["dev_f1"] <= 100 and p["tuning_exact_match"] <= p["tuning_f1"] + 1e-9 for p in curve)

    # the verdict chooses by tuning F1 within the budget fraction, never by dev
    rigged = [dict(curve[0], tuning_f1=90.0, dev_f1=10.0), dict(curve[1], tuning_f1=5.0, dev_f1=99.0)]
    chosen = quality.verdict(rigged, 10.0, 70.0)
    assert chosen["chosen"]["step"] == 13 and not chosen["met"]
    assert quality.verdict(rigged, 0.0, 70.0) == {
        "budget_fraction": 0.0,
        "dev_f1_target": 70.0,
        "met": False,
        "chosen": None,
    }
    assert quality.first_reaching(rigged, 70.0)["step"] == 26

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    run_id = client.create_run(client.create_experiment("curve")).info.run_id
    budget_info = quality.budget(MEASURED, summary["train_features"])
    written = quality.log_curve(client, run_id, curve, budget_info, tmp_path)
    assert json.loads(written.read_text()) == {"budget": budget_info, "curve": curve}
    history = client.get_metric_history(run_id, "curve_dev_f1")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (p["step"], p["dev_f1"]) for p in curve
    ]
    assert [m.value for m in client.get_metric_history(run_id, "curve_train_seconds")] == [
        p["train_seconds"] for p in curve
    ]
    assert client.get_run(run_id).data.metrics["course_epoch_seconds"] == budget_info["course_epoch_seconds"]
    assert [a.path for a in client.list_artifacts(run_id)] == ["time_to_quality.json"]
    assert math.isclose(budget_info["course_epoch_seconds"], 9.0 + (100 // 16 - 1) * 3.5)
