"""The vectorized post-processing gives exactly the course loop's predictions."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.runtime.config import TokenizeConfig
from tests.reference import course_loop
from pipeline.qa.features import tokenize_dataset_dict
from pipeline.qa.postprocess import ContextOffsets, best_spans, postprocess_predictions
from pipeline.qa.squad import build_dataset_dict
from tests.helpers.project import SAMPLE_DIR, sample_data_config
from tests.helpers.qa_logits import realistic_logits


@pytest.fixture(scope="module")
def features(sample_raw, tokenizer):
    from datasets import DatasetDict

    raw = DatasetDict({"train": sample_raw["train"].select(range(2)), "validation": sample_raw["validation"]})
    return sample_raw["validation"], tokenize_dataset_dict(raw, tokenizer, TokenizeConfig(max_length=128, stride=32))[
        "validation"
    ]


@pytest.mark.parametrize("seed,n_best,max_answer_length", [(0, 20, 30), (1, 5, 3), (2, 1, 30)])
def test_identical_to_the_course_loop_on_every_sample_question(features, seed, n_best, max_answer_length):
    examples, feats = features
    starts, ends = realistic_logits(feats[:], dict(zip(examples["id"], examples["answers"])), seed)
    args = (examples["id"], examples["context"], feats["example_id"])
    loop = course_loop.best_spans(*args, feats["offset_mapping"], starts, ends, n_best, max_answer_length)
    arrow = ContextOffsets.from_dataset(feats)
    fast = best_spans(*args, arrow, starts, ends, n_best, max_answer_length, chunk_size=97)
    assert len(feats) > len(examples)  # several windows per example for many of them
    assert fast.keys() == loop.keys()
    assert fast == loop
    if n_best == 1:
        assert any(v is None for v in loop.values())  # the empty answer is covered too


def _assert_same_offsets(a: ContextOffsets, b: ContextOffsets) -> None:
    assert (a.row_starts == b.row_starts).all() and (a.is_context == b.is_context).all()
    context_tokens = np.flatnonzero(b.is_context)
    assert (a.char_start(context_tokens) == b.char_start(context_tokens)).all()
    assert (a.char_end(context_tokens) == b.char_end(context_tokens)).all()


def test_offsets_from_lists_equal_offsets_from_arrow(features):
    _, feats = features
    a = ContextOffsets.from_arrow(feats.data.column("offset_mapping"))
    b = ContextOffsets.from_lists(feats["offset_mapping"])
    _assert_same_offsets(a, b)
    assert a.is_context.sum() > 1000


def test_selected_views_use_the_selected_rows(features):
    _, feats = features
    view = feats.select([5, 2, 9])
    _assert_same_offsets(ContextOffsets.from_dataset(view), ContextOffsets.from_lists(view["offset_mapping"]))


@pytest.fixture(scope="module")
def v2_features(tokenizer):
    v2 = str(SAMPLE_DIR / "validation-v2.json.gz")
    raw, _ = build_dataset_dict(
        sample_data_config(train_file=v2, validation_file=v2, version_2_with_negative=True, max_train_samples=2)
    )
    return raw["validation"], tokenize_dataset_dict(raw, tokenizer, TokenizeConfig(max_length=128, stride=32))[
        "validation"
    ]


@pytest.mark.parametrize(
    "version_2,threshold,n_best", [(False, 0.0, 20), (True, 0.0, 20), (True, -2.0, 5), (True, 3.0, 1)]
)
def test_full_postprocessing_identical_to_the_loop(v2_features, version_2, threshold, n_best):
    """answers, n-best lists and null odds equal the course loop's (tests/reference)."""

    examples, feats = v2_features
    answers_by_id = dict(zip(examples["id"], examples["answers"]))
    boost = {i: 4.0 for i, a in answers_by_id.items() if not a["text"]}
    starts, ends = realistic_logits(feats[:], answers_by_id, seed=3, cls_boost=boost)
    args = (examples["id"], examples["context"], feats["example_id"])
    loop = course_loop.postprocess_predictions(
        *args, feats["offset_mapping"], starts, ends, n_best, 30, version_2, threshold
    )
    fast = postprocess_predictions(
        *args, ContextOffsets.from_dataset(feats), starts, ends, n_best, 30, version_2, threshold, chunk_size=9
    )
    assert fast.answers == loop.answers
    assert fast.nbest == loop.nbest
    assert fast.null_odds == loop.null_odds
    if version_2:
        assert sum(a == "" for a in fast.answers.values()) > 0


def test_no_features_gives_no_answers():
    offsets = ContextOffsets.from_lists([])
    assert best_spans(["q1"], ["some context"], [], offsets, [], []) == {"q1": None}


def test_top_n_gives_each_rows_largest_values_in_order_on_every_path():
    from pipeline.qa.postprocess import _top_n_desc

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (64, 50)).astype(np.float32)
    logits[:, 40:] = -np.inf  # batch padding
    logits[3, 10] = logits[3, 11]  # a tie inside the top n (lower index first)
    logits[3, 11] = logits[3].max() + 1
    logits[3, 10] = logits[3, 11]
    negatives = -np.abs(logits[5])  # all-negative row: the sortable-bits path must order them
    logits[5] = negatives
    idx, values = _top_n_desc(logits, 8)
    for row in range(len(logits)):
        expected = np.lexsort((np.arange(50), -logits[row]))[:8]
        assert idx[row].tolist() == expected.tolist(), row
        assert (values[row] == logits[row, expected]).all()
    assert idx[3, :2].tolist() == [10, 11]

    tied = logits.copy()
    tied[7, :8] = tied[7].max() + 1  # nine equal values around the 8th: the argpartition path
    tied[7, 8] = tied[7, 0]
    short = logits[:, :45].copy()
    short[9, 5:] = -np.inf  # fewer finite values than n
    for array in (tied, short):
        idx, values = _top_n_desc(array, 8)
        assert (values == -np.sort(-array, axis=1)[:, :8]).all()
        assert (np.take_along_axis(array, idx, axis=1) == values).all()


def test_offsets_from_a_sliced_arrow_column_read_the_slice(features):
    _, feats = features
    column = feats.data.column("offset_mapping").slice(3, 7)  # Arrow offsets into shared buffers
    _assert_same_offsets(ContextOffsets.from_arrow(column), ContextOffsets.from_lists(feats["offset_mapping"][3:10]))
