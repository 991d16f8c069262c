"""Post-processing: hand-built logits give the expected spans; invalid spans are never chosen."""

from __future__ import annotations

import numpy as np

from tests.helpers.postprocess import answer_texts, best_spans

CONTEXT = "Paris is the capital of France."
#          0     6  9   13      21 24    30
# tokens:  [CLS] where ? [SEP] paris is the capital of france . [SEP]
OFFSETS = [None, None, None, None, [0, 5], [6, 8], [9, 12], [13, 20], [21, 23], [24, 30], [30, 31], None]


def logits(peaks: dict[int, float], length: int = len(OFFSETS)) -> np.ndarray:
    out = np.full(length, -10.0, dtype=np.float32)
    for index, value in peaks.items():
        out[index] = value
    return out


def predict(starts, ends, offsets=None, n_best=20, max_answer_length=30, context=CONTEXT):
    offsets = offsets or [OFFSETS] * len(starts)
    ids = ["q"] * len(starts)
    return best_spans(["q"], [context], ids, offsets, starts, ends, n_best, max_answer_length)["q"]


def test_highest_scoring_valid_span_wins():
    span = predict([logits({4: 5.0, 9: 2.0})], [logits({4: 4.0, 9: 3.0})])
    assert span.text == "Paris"
    assert (span.start_char, span.end_char) == (0, 5)
    assert span.score == 9.0


def test_multi_token_span():
    span = predict([logits({6: 5.0})], [logits({9: 5.0})])
    assert span.text == "the capital of France"
    assert span.score == 10.0


def test_offsets_outside_the_context_are_never_chosen():
    # CLS and question tokens carry the highest logits, yet only context tokens may be chosen
    span = predict([logits({0: 50.0, 2: 40.0, 7: 1.0})], [logits({0: 50.0, 11: 45.0, 7: 1.0})])
    assert span.text == "capital"


def test_spans_that_end_before_they_start_are_skipped():
    # every pair but (7, 7) is reversed
    span = predict([logits({9: 9.0, 7: 1.0})], [logits({4: 9.0, 7: 1.0})], n_best=2)
    assert span.text == "capital"


def test_spans_longer_than_max_answer_length_are_skipped():
    # (4, 9) is 6 tokens and (4, 7) 4 tokens, over the limit of 3; (7, 9) is 3 tokens
    span = predict([logits({4: 9.0, 7: 1.0})], [logits({9: 9.0, 7: 1.0})], n_best=2, max_answer_length=3)
    assert span.text == "capital of France"
    assert span.score == 10.0


def test_no_valid_span_gives_the_empty_answer():
    start, end = logits({9: 5.0}), logits({4: 5.0})
    # only reversed pairs among the top-1 indices
    assert predict([start], [end], n_best=1) is None
    spans = best_spans(["q"], [CONTEXT], ["q"], [OFFSETS], [start], [end], n_best=1, max_answer_length=30)
    assert answer_texts(spans) == {"q": ""}


def test_example_without_features_gets_the_empty_answer():
    spans = best_spans(["q", "r"], [CONTEXT, CONTEXT], ["q"], [OFFSETS], [logits({4: 1.0})], [logits({4: 1.0})])
    assert answer_texts(spans) == {"q": "Paris", "r": ""}


def test_best_span_over_several_windows_of_one_example():
    second_window = [None, None, None, None, [13, 20], [21, 23], [24, 30], [30, 31], None]
    span = predict(
        [logits({4: 1.0}), logits({6: 6.0}, length=len(second_window))],
        [logits({4: 1.0}), logits({6: 6.0}, length=len(second_window))],
        offsets=[OFFSETS, second_window],
    )
    assert span.text == "France"
    assert span.score == 12.0


def test_padding_positions_beyond_the_offsets_are_ignored():
    padded = np.concatenate([logits({7: 1.0}), np.full(20, 99.0, dtype=np.float32)])
    assert predict([padded], [padded]).text == "capital"
