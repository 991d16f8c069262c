"""pipeline.evaluate_model: a saved or exported model scored on any SQuAD-format file, on small
slices of the shipped samples, with a model directory saved from the packaged model."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers.project import PROJECT_ROOT, SAMPLE_DIR
from pipeline.qa.squad import read_squad_json
from pipeline.runtime.errors import PipelineError
from pipeline.evaluate_model import run
from pipeline.qa.metrics import load_metric
from tests.helpers.saved_model import save_packaged_model

SLICE = ["--max-samples", "20", "--max-length", "128", "--stride", "32", "--batch-size", "8"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A save_pretrained directory (what the train stage writes to models/trained)."""
    return save_packaged_model(tmp_path_factory.mktemp("trained"))


def first_records(name, n=20):
    return read_squad_json(SAMPLE_DIR / name)[:n]


def pipeline_output_state():
    """mtimes of everything under the DVC pipeline's outputs in the working copy."""
    roots = [PROJECT_ROOT / p for p in ("metrics", "predictions", "models", "data/raw", "data/tokenized")]
    return {str(f): f.stat().st_mtime_ns for root in roots if root.exists() for f in root.rglob("*")}


def test_scores_a_saved_model_on_a_slice_and_writes_metrics_and_predictions(model_dir, tmp_path):
    before = pipeline_output_state()
    out, predictions_dir = tmp_path / "eval" / "dev.json", tmp_path / "preds"
    metrics = run(
        [
            "--model",
            str(model_dir),
            "--data",
            str(SAMPLE_DIR / "validation.json.gz"),
            "--out",
            str(out),
            "--predictions-dir",
            str(predictions_dir),
            *SLICE,
        ],
        progress=False,
    )

    assert json.loads(out.read_text()) == metrics
    assert metrics["examples"] == 20 and metrics["features"] > 20  # 128-token windows: several per context
    assert metrics["settings"]["max_length"] == 128 and metrics["settings"]["stride"] == 32
    assert sorted(p.name for p in predictions_dir.iterdir()) == ["nbest_predictions.json", "predictions.json"]
    # the metrics are those of the predictions written, against the file's first 20 questions
    records = first_records("validation.json.gz")
    answers = json.loads((predictions_dir / "predictions.json").read_text())
    assert list(answers) == [r["id"] for r in records]
    rescored = load_metric("squad").compute(
        predictions=[{"id": r["id"], "prediction_text": answers[r["id"]]} for r in records],
        references=[{"id": r["id"], "answers": r["answers"]} for r in records],
    )
    assert {k: metrics[k] for k in ("exact_match", "f1")} == rescored
    nbest = json.loads((predictions_dir / "nbest_predictions.json").read_text())
    assert all(nbest[i][0]["text"] == answers[i] for i in answers if answers[i])
    assert pipeline_output_state() == before


def test_an_export_directory_supplies_its_windows(model_dir, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(model_dir, export / "hf")
    (export / "inference.json").write_text(json.dumps({"max_length": 128, "stride": 32}))
    data = str(SAMPLE_DIR / "validation.json.gz")
    from_export = run(
        ["--model", str(export), "--data", data, "--out", str(tmp_path / "a.json"), "--max-samples", "20"],
        progress=False,
    )
    from_flags = run(
        ["--model", str(model_dir), "--data", data, "--out", str(tmp_path / "b.json"), *SLICE], progress=False
    )
    assert (from_export["settings"]["max_length"], from_export["settings"]["stride"]) == (128, 32)
    strip = lambda m: {k: v for k, v in m.items() if k not in ("settings", "expected_calibration_error")}  # noqa: E731
    assert strip(from_export) == strip(from_flags)
    # the answer probabilities behind the calibration error agree up to float rounding of the logits
    assert from_export["expected_calibration_error"] == pytest.approx(
        from_flags["expected_calibration_error"], abs=1e-6
    )


def test_squad_v2_file_with_null_threshold(model_dir, tmp_path):
    data = str(SAMPLE_DIR / "validation-v2.json.gz")
    records = first_records("validation-v2.json.gz", 32)  # the first paragraph's 30 questions and 2 borrowed ones
    unanswerable = sum(not r["answers"]["text"] for r in records)
    assert unanswerable == 2

    common = ["--model", str(model_dir), "--data", data, "--version-2-with-negative", *SLICE, "--max-samples", "32"]
    metrics = run(
        [*common, "--out", str(tmp_path / "v2.json"), "--predictions-dir", str(tmp_path / "preds")], progress=False
    )
    assert metrics["exact_match"] == metrics["exact"] and metrics["total"] == 32
    assert (metrics["HasAns_total"], metrics["NoAns_total"]) == (30, 2)
    answers = json.loads((tmp_path / "preds" / "predictions.json").read_text())
    null_odds = json.loads((tmp_path / "preds" / "null_odds.json").read_text())
    assert set(null_odds) == set(answers)
    assert all((answers[i] == "") == (null_odds[i] > 0.0) for i in answers)  # the default threshold 0.0
    rescored = load_metric("squad_v2").compute(
        predictions=[{"id": i, "prediction_text": answers[i], "no_answer_probability": null_odds[i]} for i in answers],
        references=[{"id": r["id"], "answers": r["answers"]} for r in records],
        no_answer_threshold=0.0,
    )
    assert {k: metrics[k] for k in rescored} == pytest.approx(rescored)

    always_null = run(
        [*common, "--out", str(tmp_path / "null.json"), "--null-score-diff-threshold=-1e9"], progress=False
    )
    assert (always_null["NoAns_exact"], always_null["HasAns_exact"], always_null["HasAns_f1"]) == (100.0, 0.0, 0.0)
    assert always_null["settings"]["null_score_diff_threshold"] == -1e9


def write_squad(path, qas, version="1.1"):
    data = {
        "version": version,
        "data": [{"title": "T", "paragraphs": [{"context": "The cat sat on the mat.", "qas": qas}]}],
    }
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(data, fh)
    return str(path)


@pytest.mark.parametrize(
    "case,message",
    [
        (
            "v2 without the flag",
            r"v2\.json\.gz: 1 unanswerable \(is_impossible\) questions, e\.g\. id='q2'; add --version-2-with-negative",
        ),
        (
            "bad record",
            r"bad\.json\.gz: record id='q2': answer 'dog' does not match context .*\(1 bad record\(s\) in the file",
        ),
        ("missing data", r"--data .*nowhere\.json: file not found"),
        ("not a model", r"--model .*: neither a saved model \(config\.json\) nor a model export"),
        ("stride", r"--stride=128 is invalid: use >= 0 and less than --max-length \(128\)"),
        ("threshold without v2", r"--null-score-diff-threshold applies to SQuAD v2\.0 only"),
        ("pipeline metrics", r"--out .*metrics/eval\.json: overlaps the DVC pipeline output .*metrics/eval\.json"),
        ("pipeline predictions", r"--predictions-dir .*: overlaps the DVC pipeline output"),
        ("no windows", r"--model .*: no record of the windows it was trained with .*; pass --max-length and --stride"),
        ("out is a directory", r"--out .*: is a directory; give a file path"),
    ],
)
def test_bad_input_stops_before_loading_the_model_with_one_clear_message(model_dir, tmp_path, case, message):
    good = {"id": "q1", "question": "Who sat?", "answers": [{"text": "The cat", "answer_start": 0}]}
    data = write_squad(tmp_path / "good.json.gz", [good])
    args = {
        "--model": str(model_dir),
        "--data": data,
        "--out": str(tmp_path / "m.json"),
        "--max-length": "128",
        "--stride": "32",
    }
    extra = []
    if case == "v2 without the flag":
        args["--data"] = write_squad(
            tmp_path / "v2.json.gz",
            [good, {"id": "q2", "question": "Who flew?", "answers": [], "is_impossible": True}],
            "v2.0",
        )
    elif case == "bad record":
        args["--data"] = write_squad(
            tmp_path / "bad.json.gz",
            [good, {"id": "q2", "question": "What?", "answers": [{"text": "dog", "answer_start": 4}]}],
        )
    elif case == "missing data":
        args["--data"] = str(tmp_path / "nowhere.json")
    elif case == "not a model":
        args["--model"] = str(tmp_path)
    elif case == "stride":
        args["--stride"] = "128"
    elif case == "no windows":
        del args["--max-length"], args["--stride"]
    elif case == "out is a directory":
        args["--out"] = str(tmp_path / "outdir")
        (tmp_path / "outdir").mkdir()
    elif case == "threshold without v2":
        extra = ["--null-score-diff-threshold", "1.5"]
    elif case == "pipeline metrics":
        args["--out"] = str(PROJECT_ROOT / "metrics" / "eval.json")
    elif case == "pipeline predictions":
        extra = ["--predictions-dir", str(PROJECT_ROOT)]  # above predictions/: would overwrite pipeline outputs
    with pytest.raises(PipelineError, match=message):
        run([x for pair in args.items() for x in pair] + extra, progress=False)
    assert not (tmp_path / "m.json").exists()
    assert not list(tmp_path.rglob(".*.tmp-*"))  # no temp file left behind


def test_command_line_error_is_one_line_and_exit_code_1(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.evaluate_model",
            "--model",
            str(tmp_path / "none"),
            "--data",
            "x.json",
            "--out",
            str(tmp_path / "m.json"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: --model {tmp_path / 'none'}: directory not found"]


WINDOWS = ["--max-length", "128", "--stride", "32", "--batch-size", "8"]


def test_several_sets_give_one_report_with_intervals_and_differences(model_dir, tmp_path):
    """Two sample files listed in a YAML file (one with its own max_samples) and a small file with
    a misplaced answer (repaired) and a wrong one (dropped): one JSON, one markdown table."""
    sets_file = tmp_path / "sets.yaml"
    sets_file.write_text(
        f"sets:\n  - {{name: dev, path: {SAMPLE_DIR / 'validation.json.gz'}, max_samples: 12}}\n"
        f"  - {SAMPLE_DIR / 'train.json.gz'}\n"
    )
    cat = write_squad(
        tmp_path / "cat.json.gz",
        [
            {"id": 1, "question": "Who sat?", "answers": [{"text": "The cat", "answer_start": 0}]},  # an integer id
            {"id": "q2", "question": "Where?", "answers": [{"text": " the mat", "answer_start": 16}]},  # repaired to 15
            {"id": "q3", "question": "What?", "answers": [{"text": "dog", "answer_start": 4}]},  # dropped
        ],
    )
    out = tmp_path / "eval" / "report.json"
    report = run(
        [
            "--model",
            str(model_dir),
            "--data",
            str(sets_file),
            "--data",
            cat,
            "--out",
            str(out),
            "--max-samples",
            "8",
            "--bad-records",
            "repair",
            "--predictions-dir",
            str(tmp_path / "preds"),
            *WINDOWS,
        ],
        progress=False,
    )

    assert json.loads(out.read_text()) == report
    sets = report["sets"]
    assert [s["name"] for s in sets] == ["dev", "train", "cat"]
    assert [s["examples"] for s in sets] == [12, 8, 2] and all(s["features"] >= s["examples"] for s in sets)
    assert [s["f1_diff_to_first"] for s in sets] == pytest.approx(
        [0.0, sets[1]["f1"] - sets[0]["f1"], sets[2]["f1"] - sets[0]["f1"]]
    )
    for s in sets:
        assert s["exact_match_ci95_low"] <= s["exact_match"] <= s["exact_match_ci95_high"]
        assert s["f1_ci95_low"] <= s["f1"] <= s["f1_ci95_high"]
        assert sum(row["count"] for row in s["slices"]["question_word"].values()) == s["examples"]
    assert (sets[2]["bad_records"]["repaired"], sets[2]["bad_records"]["dropped"]) == (1, 1)
    assert "answer ' the mat' at 16 -> 'the mat' at 15" in sets[2]["bad_records"]["repaired_examples"][0]
    assert report["settings"]["bootstrap_samples"] == 1000 and report["settings"]["bad_records"] == "repair"
    for s in sets:
        answers = json.loads((tmp_path / "preds" / s["name"] / "predictions.json").read_text())
        assert len(answers) == s["examples"]
    assert set(json.loads((tmp_path / "preds" / "cat" / "predictions.json").read_text())) == {"1", "q2"}

    table = (tmp_path / "eval" / "report.md").read_text().splitlines()
    assert table[2] == "| set | questions | features | EM [95% CI] | F1 [95% CI] | F1 − first set |"
    rows = [
        line for line in table if line.startswith("| dev") or line.startswith("| train") or line.startswith("| cat")
    ]
    assert len(rows) == 3 and rows[0].endswith("| — |")
    assert f"{sets[1]['f1_diff_to_first']:+.2f} |" in rows[1]
    assert table[-1] == "Bad records (--bad-records repair): cat: repaired 1, dropped 1."

    # a set scored alone gives the same figures as in the report
    alone = run(
        [
            "--model",
            str(model_dir),
            "--data",
            str(SAMPLE_DIR / "validation.json.gz"),
            "--max-samples",
            "12",
            "--out",
            str(tmp_path / "alone.json"),
            *WINDOWS,
        ],
        progress=False,
    )
    same = ("settings", "expected_calibration_error", "bad_records")
    assert {k: v for k, v in alone.items() if k not in same} == {
        k: v for k, v in sets[0].items() if k not in same + ("name", "data", "max_samples", "f1_diff_to_first")
    }


@pytest.mark.parametrize(
    "listing,message",
    [
        ("sets: []", r"sets\.yaml: expected a list of sets"),
        ("- {path: a.json, colour: red}", r"sets\.yaml: set 1 .* must be a path or a mapping with 'path'"),
        ("- {path: a.json, max_samples: 0}", r"sets\.yaml: set 1: max_samples=0 is invalid"),
        ("- nowhere.json", r"--data .*nowhere\.json: file not found"),
        ("[unclosed", r"sets\.yaml: not a readable YAML list of sets"),
    ],
)
def test_a_bad_list_of_sets_stops_with_one_clear_message(model_dir, tmp_path, listing, message):
    (tmp_path / "sets.yaml").write_text(listing)
    with pytest.raises(PipelineError, match=message):
        run(
            [
                "--model",
                str(model_dir),
                "--data",
                str(tmp_path / "sets.yaml"),
                "--out",
                str(tmp_path / "r.json"),
                *WINDOWS,
            ],
            progress=False,
        )
    assert not (tmp_path / "r.json").exists()
