"""Answers from scored spans: the span type, the SQuAD v2.0 null-answer rule, the n-best
layout, and answering one question.

`PredictionCollector` is the one place the answer rule lives: given an example's spans
ranked best first (from qa.postprocess, the vectorized post-processing) and, for SQuAD v2.0,
its null span, it picks the answer and writes transformers' utils_qa layouts:

- predictions: id -> answer text ("" = no answer);
- n-best: the best candidates (text, probability, start_logit, end_logit), the
  probability a softmax over the listed candidates' scores;
- SQuAD v2.0 null odds: null score (CLS start + end logit, minimum over the example's
  windows) minus the best span score; the answer is "" when the odds are above
  `null_score_diff_threshold`.

The evaluate stage, pipeline.evaluate_model and pipeline.predict all answer through it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

import numpy as np

from pipeline.qa.features import CLS_INDEX


class Span(NamedTuple):
    """An answer candidate (immutable; a NamedTuple builds ~5x faster than a frozen dataclass,
    which counts with one per question)."""

    text: str
    score: float
    start_char: int
    end_char: int
    start_logit: float
    end_logit: float


def group_features(feature_example_ids: Sequence[str]) -> dict[str, list[int]]:
    features_per_example: dict[str, list[int]] = defaultdict(list)
    for i, example_id in enumerate(feature_example_ids):
        features_per_example[example_id].append(i)
    return features_per_example


def null_span(
    feature_indices: Sequence[int], start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray]
) -> Span | None:
    """The example's "no answer" candidate: CLS start + end logit, minimum over its windows.

    The minimum (as utils_qa) lets the window most confident that it holds an answer decide:
    a long context whose answer sits in one window is not unanswerable because the other
    windows (rightly) see no answer.
    """
    null: Span | None = None
    for f in feature_indices:
        start_logit, end_logit = start_logits[f][CLS_INDEX], end_logits[f][CLS_INDEX]
        score = float(start_logit + end_logit)
        if null is None or score < null.score:
            null = Span("", score, 0, 0, float(start_logit), float(end_logit))
    return null


def nbest_entries(spans: Sequence[Span]) -> list[dict]:
    """utils_qa's n-best layout; probability is a softmax over these spans' scores."""
    if not spans:
        return []
    scores = np.array([s.score for s in spans], dtype=np.float64)
    weights = np.exp(scores - scores.max())  # shifted by the max so exp cannot overflow
    probabilities = weights / weights.sum()
    return [
        {"start_logit": s.start_logit, "end_logit": s.end_logit, "text": s.text, "probability": float(p)}
        for s, p in zip(spans, probabilities)
    ]


@dataclass
class QAPredictions:
    """Post-processed predictions of a split, one entry per example id, in utils_qa's file layouts."""

    answers: dict[str, str]  # predictions.json: id -> answer text ("" = no answer)
    nbest: dict[str, list[dict]]  # nbest_predictions.json: id -> best candidates, best first
    # null_odds.json (SQuAD v2.0 only): id -> null score minus best span score; +inf when
    # no span is valid, so the example is unanswerable at any threshold.
    null_odds: Optional[dict[str, float]] = None
    # id -> the span answered (its score and character offsets); None where the answer is "".
    spans: dict[str, Optional[Span]] = field(default_factory=dict)


class PredictionCollector:
    """Turns each example's ranked spans (best first) and null span into utils_qa's outputs.

    The one answer rule: the best span answers; under SQuAD v2.0, "" when null score - best
    span score > threshold. (tests/reference's course loop feeds it too, for parity.)
    """

    def __init__(self, version_2_with_negative: bool, null_score_diff_threshold: float, n_best: int) -> None:
        self.version_2 = version_2_with_negative
        self.threshold = null_score_diff_threshold
        self.n_best = n_best
        self.answers: dict[str, str] = {}
        self.nbest: dict[str, list[dict]] = {}
        self.null_odds: dict[str, float] = {}
        self.spans: dict[str, Optional[Span]] = {}

    def add(self, example_id: str, ranked: list[Span], null: Optional[Span]) -> None:
        best = ranked[0] if ranked else None
        if not self.version_2:
            self.answers[example_id] = best.text if best else ""
            self.spans[example_id] = best
            self.nbest[example_id] = nbest_entries(ranked)
            return
        listed = sorted(ranked + ([null] if null is not None else []), key=lambda s: s.score, reverse=True)[
            : self.n_best
        ]
        if null is not None and not any(span is null for span in listed):
            listed.append(null)  # utils_qa always lists the null answer
        odds = null.score - best.score if best is not None and null is not None else math.inf
        self.null_odds[example_id] = odds
        answered = best if best is not None and odds <= self.threshold else None
        self.answers[example_id] = answered.text if answered is not None else ""
        self.spans[example_id] = answered
        self.nbest[example_id] = nbest_entries(listed)

    def result(self) -> "QAPredictions":
        return QAPredictions(self.answers, self.nbest, self.null_odds if self.version_2 else None, self.spans)


def same_answer_share(answers: dict[str, str], reference: dict[str, str]) -> float:
    """The share of reference's questions whose answer text in `answers` is the same (int8 against
    float: docs/int8.md)."""
    return sum(answers.get(i) == a for i, a in reference.items()) / max(len(reference), 1)
