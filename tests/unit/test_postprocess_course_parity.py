"""The production post-processing (pipeline.qa.postprocess) gives exactly the course's
predictions on real, multi-window features.

The reference is the Hugging Face course's loop as written (chapter 7, "Question answering",
compute_metrics), kept once in tests/reference/course_loop.py.
"""

from __future__ import annotations

import collections

from datasets import Dataset

import pytest

from pipeline.runtime.config import TokenizeConfig
from tests.helpers.postprocess import answer_texts, best_spans, postprocess_predictions
from tests.reference.course_loop import course_loop_as_written
from pipeline.qa.features import prepare_validation_features
from tests.helpers.qa_logits import realistic_logits

WINDOWS = TokenizeConfig(max_length=128, stride=32)  # short windows: many examples get several


@pytest.fixture(scope="module")
def sample(sample_raw, tokenizer):
    examples = sample_raw["validation"][:]
    features = prepare_validation_features(examples, tokenizer, WINDOWS)
    answers_by_id = dict(zip(examples["id"], examples["answers"]))
    return examples, features, answers_by_id


def test_the_sample_has_many_multi_window_examples(sample):
    examples, features, _ = sample
    windows = collections.Counter(features["example_id"])
    assert set(windows) == set(examples["id"])
    assert sum(n > 1 for n in windows.values()) >= 0.5 * len(examples["id"])
    assert max(windows.values()) >= 4


@pytest.mark.parametrize("seed,n_best,max_answer_length", [(0, 20, 30), (1, 20, 30), (2, 3, 4), (3, 1, 30)])
def test_predictions_equal_the_course_loop_for_every_example(sample, seed, n_best, max_answer_length):
    examples, features, answers_by_id = sample
    starts, ends = realistic_logits(features, answers_by_id, seed)
    expected = course_loop_as_written(
        Dataset.from_dict(examples), Dataset.from_dict(features), starts, ends, n_best, max_answer_length
    )

    spans = best_spans(
        examples["id"],
        examples["context"],
        features["example_id"],
        features["offset_mapping"],
        starts,
        ends,
        n_best,
        max_answer_length,
    )
    full = postprocess_predictions(
        examples["id"],
        examples["context"],
        features["example_id"],
        features["offset_mapping"],
        starts,
        ends,
        n_best,
        max_answer_length,
    )

    assert answer_texts(spans) == expected  # 100% of the examples, in the same order
    assert full.answers == expected
    assert full.null_odds is None
    # the n-best list starts with the answer, whenever there is one
    assert all(full.nbest[i][0]["text"] == expected[i] for i in expected if expected[i])

    # The comparison bites: multi-window examples whose answer comes from a later window,
    # and (with small n_best / max_answer_length) examples without any valid span.
    windows = collections.defaultdict(list)
    for f, example_id in enumerate(features["example_id"]):
        windows[example_id].append(f)
    contexts = dict(zip(examples["id"], examples["context"]))
    from_later_window = 0
    for example_id, span in spans.items():
        if span is None or len(windows[example_id]) < 2:
            continue
        first = windows[example_id][0]
        first_window_best = best_spans(
            [example_id],
            [contexts[example_id]],
            [example_id],
            [features["offset_mapping"][first]],
            [starts[first]],
            [ends[first]],
            n_best,
            max_answer_length,
        )[example_id]
        if first_window_best is None or first_window_best.score < span.score:
            from_later_window += 1
    assert from_later_window >= 50
    if n_best <= 3:
        assert any(text == "" for text in expected.values())
