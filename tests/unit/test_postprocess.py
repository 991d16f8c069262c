"""Post-processing (pipeline.qa.postprocess) on hand-built logits: the expected spans, invalid spans
never chosen, n-best lists and SQuAD v2.0 null answers (transformers' utils_qa rules)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.helpers.postprocess import answer_texts, best_spans, postprocess_predictions

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


# --- n-best lists and SQuAD v2.0 null answers ---------------------------------------------


def postprocess(starts, ends, n_best=20, v2=False, threshold=0.0, offsets=None):
    offsets = offsets or [OFFSETS] * len(starts)
    return postprocess_predictions(
        ["q"],
        [CONTEXT],
        ["q"] * len(starts),
        offsets,
        starts,
        ends,
        n_best,
        30,
        version_2_with_negative=v2,
        null_score_diff_threshold=threshold,
    )


def test_nbest_lists_the_top_spans_with_softmax_probabilities():
    # candidates: (4,4) "Paris" 9, (4,9) 8, (7,9) "capital of France" 6; (7,4) ends before it starts
    result = postprocess([logits({4: 5.0, 7: 3.0})], [logits({4: 4.0, 9: 3.0})], n_best=2)
    assert result.answers == {"q": "Paris"}
    assert result.null_odds is None
    nbest = result.nbest["q"]
    assert [(e["text"], e["start_logit"], e["end_logit"]) for e in nbest] == [
        ("Paris", 5.0, 4.0),
        ("Paris is the capital of France", 5.0, 3.0),  # n_best=2 entries, best first
    ]
    assert nbest[0]["probability"] == pytest.approx(1 / (1 + math.exp(-1)))
    assert nbest[1]["probability"] == pytest.approx(math.exp(-1) / (1 + math.exp(-1)))
    assert list(nbest[0]) == ["start_logit", "end_logit", "text", "probability"]  # utils_qa's entry layout


def test_v1_without_a_valid_span_has_an_empty_answer_and_list():
    result = postprocess([logits({9: 5.0})], [logits({4: 5.0})], n_best=1)
    assert result.answers == {"q": ""} and result.nbest == {"q": []}


def test_v2_null_score_is_the_minimum_cls_score_over_windows():
    second_window = [None, None, None, None, [13, 20], [21, 23], [24, 30], [30, 31], None]
    starts = [logits({0: 3.0, 4: 5.0}), logits({0: 1.0, 6: 2.0}, length=len(second_window))]
    ends = [logits({0: 3.0, 4: 4.0}), logits({0: 1.5, 6: 2.0}, length=len(second_window))]
    # null = min(3 + 3, 1 + 1.5) = 2.5; best span "Paris" = 9: odds -6.5
    result = postprocess(starts, ends, v2=True, offsets=[OFFSETS, second_window])
    assert result.null_odds == {"q": -6.5}
    assert result.answers == {"q": "Paris"}
    null_entry = [e for e in result.nbest["q"] if e["text"] == ""]
    assert [(e["start_logit"], e["end_logit"]) for e in null_entry] == [(1.0, 1.5)]
    assert result.nbest["q"][0]["text"] == "Paris"
    assert sum(e["probability"] for e in result.nbest["q"]) == pytest.approx(1.0)


@pytest.mark.parametrize("threshold,answer", [(0.0, "Paris"), (-6.0, "Paris"), (-6.5, "Paris"), (-7.0, "")])
def test_v2_answer_is_empty_only_when_null_odds_exceed_the_threshold(threshold, answer):
    result = postprocess([logits({0: 1.0, 4: 5.0})], [logits({0: 1.5, 4: 4.0})], v2=True, threshold=threshold)
    assert result.null_odds == {"q": -6.5}
    assert result.answers == {"q": answer}


def test_v2_confident_null_wins_and_is_listed_first():
    result = postprocess([logits({0: 12.0, 4: 5.0})], [logits({0: 11.0, 4: 4.0})], v2=True)
    assert result.null_odds == {"q": 14.0}
    assert result.answers == {"q": ""}
    assert result.nbest["q"][0]["text"] == "" and result.nbest["q"][1]["text"] == "Paris"


def test_v2_null_is_listed_even_outside_the_top_n_best():
    result = postprocess([logits({4: 5.0})], [logits({4: 4.0})], n_best=1, v2=True)  # CLS -20: not in the top 1
    assert [e["text"] for e in result.nbest["q"]] == ["Paris", ""]


def test_v2_without_a_valid_span_answers_empty_at_any_threshold():
    result = postprocess([logits({9: 5.0})], [logits({4: 5.0})], n_best=1, v2=True, threshold=1e9)
    assert result.answers == {"q": ""}
    assert result.null_odds == {"q": math.inf}
    assert [e["text"] for e in result.nbest["q"]] == [""]
