"""SQuAD v2.0 end to end at the function level on the shipped v2.0 sample:
download validation -> tokenize -> post-processing with null answers -> squad_v2 metric."""

from __future__ import annotations

import gzip
import importlib.util
import json

import numpy as np
import pytest
import yaml

from tests.helpers.project import PROJECT_ROOT, SAMPLE_DIR
from pipeline.runtime.compose import compose_params_text
from pipeline.runtime.config import TokenizeConfig, from_dict
from pipeline.qa.squad import build_dataset_dict
from pipeline.qa.metrics import load_metric
from pipeline.qa.metrics.squad.squad import normalize_answer
from tests.helpers.postprocess import postprocess_predictions
from pipeline.qa.features import CLS_INDEX, prepare_train_features, prepare_validation_features
from tests.helpers.qa_logits import answer_tokens, realistic_logits

WINDOWS = TokenizeConfig(max_length=128, stride=32)  # several windows per example: the null minimum matters


def load_squad(name):
    with gzip.open(SAMPLE_DIR / name, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def all_qas(squad):
    return [(p["context"], qa) for a in squad["data"] for p in a["paragraphs"] for qa in p["qas"]]


def test_the_script_rebuilds_the_shipped_v2_samples_byte_for_byte(tmp_path):
    spec = importlib.util.spec_from_file_location("make_sample_v2", SAMPLE_DIR / "make_sample_v2.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(tmp_path)
    for name in ("train-v2.json.gz", "validation-v2.json.gz"):
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name


@pytest.mark.parametrize(
    "v1,v2,total,unanswerable",
    [
        ("validation.json.gz", "validation-v2.json.gz", 819, 192),
        ("train.json.gz", "train-v2.json.gz", 3477, 881),
    ],
)
def test_v2_sample_is_the_v1_sample_plus_questions_whose_answer_is_not_in_the_context(v1, v2, total, unanswerable):
    original, extended = load_squad(v1), load_squad(v2)
    assert extended["version"] == "v2.0"
    qas = all_qas(extended)
    assert len(qas) == total and all("is_impossible" in qa for _, qa in qas)
    answerable = [
        (c, {k: v for k, v in qa.items() if k != "is_impossible"}) for c, qa in qas if not qa["is_impossible"]
    ]
    assert answerable == all_qas(original)  # the v1.1 questions, unchanged and in order
    borrowed = {qa["id"]: qa for _, qa in all_qas(original)}
    negatives = [(c, qa) for c, qa in qas if qa["is_impossible"]]
    assert len(negatives) == unanswerable
    for context, qa in negatives:
        assert qa["answers"] == [] and qa["id"].endswith("-unanswerable")
        source = borrowed[qa["id"].removesuffix("-unanswerable")]
        assert qa["question"] == source["question"]
        assert not any(a["text"].lower() in context.lower() for a in source["answers"])


@pytest.fixture(scope="module")
def v2_validation(tokenizer):
    """The data=sample_v2 config through the download stage's validation, then tokenized."""
    cfg = from_dict(yaml.safe_load(compose_params_text(["data=sample_v2"])))
    assert cfg.data.version_2_with_negative
    for key in ("train_file", "validation_file"):
        setattr(cfg.data, key, str(PROJECT_ROOT / getattr(cfg.data, key)))
    dataset, summary = build_dataset_dict(cfg.data)
    assert summary["train"]["examples"] == 1600 and summary["validation"]["examples"] == 819
    examples = dataset["validation"][:]
    features = prepare_validation_features(examples, tokenizer, WINDOWS)
    return examples, features


def test_unanswerable_questions_are_labelled_with_cls_in_every_window(v2_validation, tokenizer):
    examples, _ = v2_validation
    unanswerable = [i for i, a in enumerate(examples["answers"]) if not a["text"]]
    assert len(unanswerable) == 192
    subset = {key: [examples[key][i] for i in unanswerable[:40]] for key in examples}
    labels = prepare_train_features(subset, tokenizer, WINDOWS)
    assert len(labels["start_positions"]) >= 40
    assert set(labels["start_positions"]) == set(labels["end_positions"]) == {CLS_INDEX}


def score_v2(examples, predictions, threshold):
    return load_metric("squad_v2").compute(
        predictions=[
            {"id": i, "prediction_text": predictions.answers[i], "no_answer_probability": predictions.null_odds[i]}
            for i in examples["id"]
        ],
        references=[{"id": i, "answers": a} for i, a in zip(examples["id"], examples["answers"])],
        no_answer_threshold=threshold,
    )


def postprocess(examples, features, starts, ends, threshold=0.0):
    return postprocess_predictions(
        examples["id"],
        examples["context"],
        features["example_id"],
        features["offset_mapping"],
        starts,
        ends,
        version_2_with_negative=True,
        null_score_diff_threshold=threshold,
    )


def test_all_null_predictions_score_every_unanswerable_and_no_answerable_question(v2_validation):
    examples, features = v2_validation
    answers_by_id = dict(zip(examples["id"], examples["answers"]))
    starts, ends = realistic_logits(features, answers_by_id, seed=0, cls_boost=dict.fromkeys(examples["id"], 30.0))
    predictions = postprocess(examples, features, starts, ends)
    assert set(predictions.answers.values()) == {""}
    assert all(odds > 0 for odds in predictions.null_odds.values())
    result = score_v2(examples, predictions, 0.0)
    assert (result["HasAns_exact"], result["HasAns_f1"], result["HasAns_total"]) == (0.0, 0.0, 627)
    assert (result["NoAns_exact"], result["NoAns_f1"], result["NoAns_total"]) == (100.0, 100.0, 192)
    assert result["exact"] == result["f1"] == pytest.approx(100 * 192 / 819)


def oracle_logits(examples, features):
    """A perfect model: peaks on the gold tokens, CLS low in the window holding the answer,
    CLS highest everywhere for unanswerable questions."""
    answers_by_id = dict(zip(examples["id"], examples["answers"]))
    starts, ends = [], []
    for example_id, offsets in zip(features["example_id"], features["offset_mapping"]):
        start, end = np.zeros(len(offsets), np.float32), np.zeros(len(offsets), np.float32)
        answers = answers_by_id[example_id]
        gold = None
        if answers["text"]:
            first = answers["answer_start"][0]
            gold = answer_tokens(offsets, first, first + len(answers["text"][0]))
        if gold is not None:
            start[gold[0]] = end[gold[1]] = 10.0
            start[CLS_INDEX] = end[CLS_INDEX] = -5.0
        else:
            start[CLS_INDEX] = end[CLS_INDEX] = 10.0 if not answers["text"] else 5.0
        starts.append(start)
        ends.append(end)
    return starts, ends


def test_a_perfect_model_answers_answerable_questions_and_abstains_on_the_others(v2_validation):
    examples, features = v2_validation
    predictions = postprocess(examples, features, *oracle_logits(examples, features))
    unanswerable = {i for i, a in zip(examples["id"], examples["answers"]) if not a["text"]}
    assert {i for i, text in predictions.answers.items() if text == ""} == unanswerable
    result = score_v2(examples, predictions, 0.0)
    assert (result["NoAns_exact"], result["NoAns_f1"]) == (100.0, 100.0)
    # token spans of answers that end inside a word ("evolution" in "evolutionary") are longer
    assert result["HasAns_exact"] >= 97.0 and result["HasAns_f1"] >= 99.0
    assert result["exact"] == pytest.approx((result["HasAns_exact"] * 627 + 100.0 * 192) / 819)


def test_best_f1_threshold_set_as_the_null_threshold_gives_best_f1(v2_validation):
    examples, features = v2_validation
    answers_by_id = dict(zip(examples["id"], examples["answers"]))
    rng = np.random.default_rng(7)
    # a model with a noisy "no answer" signal: unanswerable questions get a higher CLS on average
    boost = {i: float(rng.normal(6.0 if not a["text"] else 2.0, 3.0)) for i, a in answers_by_id.items()}
    starts, ends = realistic_logits(features, answers_by_id, seed=7, cls_boost=boost)

    first = score_v2(examples, postprocess(examples, features, starts, ends, 0.0), 0.0)
    assert first["best_f1"] > first["f1"] + 1.0  # threshold 0.0 is not the best for this model
    assert first["best_f1_thresh"] < 0.0

    threshold = first["best_f1_thresh"]
    tuned = postprocess(examples, features, starts, ends, threshold)
    second = score_v2(examples, tuned, threshold)
    # Equal but for one quirk of the official sweep: an unanswerable question answered with
    # a text that normalises to nothing (".") is right in f1 but wrong in the sweep.
    quirks = sum(
        1
        for i, a in zip(examples["id"], examples["answers"])
        if not a["text"] and tuned.answers[i] and not normalize_answer(tuned.answers[i])
    )
    assert quirks <= 20
    assert second["f1"] == pytest.approx(first["best_f1"] + 100.0 * quirks / 819, abs=1e-9)
    # the metric scores exactly the answers post-processing chose
    assert second == pytest.approx(score_v2(examples, tuned, float("inf")), abs=1e-9)
