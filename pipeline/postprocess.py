"""Turn per-feature start/end logits into answers (the course's post-processing).

For each example, over all of its features (stride windows): take the n_best start and
end indices, skip spans whose tokens are outside the context (offset None), that end
before they start or that are longer than max_answer_length tokens; score a span as
start logit + end logit and keep the best. No valid span gives the empty answer.

`postprocess_predictions` adds what transformers' examples `utils_qa.postprocess_qa_predictions`
writes next to the answers, in the same layouts, so the official SQuAD scripts read them:

- the n-best list per example (text, probability, start_logit, end_logit), the probability
  being a softmax over the listed candidates' scores;
- SQuAD v2.0 (`version_2_with_negative`): a null answer scored as the minimum over the
  example's windows of CLS start + end logit; the answer is "" when null score minus best
  span score (the "null odds") is above `null_score_diff_threshold`.

With version_2_with_negative off, the answers are exactly the course's loop (`best_spans`).

Pure numpy/Python: used by the evaluate stage, pipeline.evaluate_model and pipeline.predict.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np

# The tokenizer puts CLS first in every window; SQuAD v2.0 training labels unanswerable
# windows with it (pipeline.tokenize.CLS_INDEX), so its logits score "no answer".
CLS_INDEX = 0


class Span(NamedTuple):
    """An answer candidate (immutable; a NamedTuple builds ~5x faster than a frozen dataclass,
    which counts with one per question)."""

    text: str
    score: float
    start_char: int
    end_char: int
    start_logit: float
    end_logit: float


def top_indices(logits: np.ndarray, n_best: int) -> list[int]:
    """Indices of the n_best largest logits, largest first (the course's argsort slice)."""
    return np.argsort(logits)[-1 : -n_best - 1 : -1].tolist()


def feature_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: Sequence,
    context: str,
    n_best: int,
    max_answer_length: int,
) -> list[Span]:
    """Every valid candidate span of one feature.

    Logits past the feature's own length (batch padding) are cut off first, so padding
    never takes one of the n_best places.
    """
    spans = []
    start_logits = start_logits[: len(offsets)]
    end_logits = end_logits[: len(offsets)]
    for start_index in top_indices(start_logits, n_best):
        for end_index in top_indices(end_logits, n_best):
            if offsets[start_index] is None or offsets[end_index] is None:
                continue
            if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                continue
            start_char, end_char = offsets[start_index][0], offsets[end_index][1]
            spans.append(
                Span(
                    text=context[start_char:end_char],
                    score=float(start_logits[start_index] + end_logits[end_index]),
                    start_char=int(start_char),
                    end_char=int(end_char),
                    start_logit=float(start_logits[start_index]),
                    end_logit=float(end_logits[end_index]),
                )
            )
    return spans


def group_features(feature_example_ids: Sequence[str]) -> dict[str, list[int]]:
    features_per_example: dict[str, list[int]] = defaultdict(list)
    for i, example_id in enumerate(feature_example_ids):
        features_per_example[example_id].append(i)
    return features_per_example


def example_candidates(
    feature_indices: Sequence[int],
    context: str,
    feature_offsets: Sequence[Sequence],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best: int,
    max_answer_length: int,
) -> list[Span]:
    """Every valid span of one example over all of its windows, in the course's order."""
    candidates: list[Span] = []
    for f in feature_indices:
        candidates.extend(
            feature_spans(
                np.asarray(start_logits[f]), np.asarray(end_logits[f]), feature_offsets[f], context,
                n_best, max_answer_length,
            )
        )
    return candidates


def best_spans(
    example_ids: Sequence[str],
    contexts: Sequence[str],
    feature_example_ids: Sequence[str],
    feature_offsets: Sequence[Sequence],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, Span | None]:
    """The best span per example id (None when no feature has a valid span).

    start_logits/end_logits hold one array per feature (any length up to the feature's
    own); positions past a feature's offsets are treated as padding and never chosen.
    """
    features_per_example = group_features(feature_example_ids)
    best: dict[str, Span | None] = {}
    for example_id, context in zip(example_ids, contexts):
        candidates = example_candidates(
            features_per_example.get(example_id, []), context, feature_offsets, start_logits, end_logits,
            n_best, max_answer_length,
        )
        best[example_id] = max(candidates, key=lambda s: s.score) if candidates else None
    return best


def answer_texts(spans: dict[str, Span | None]) -> dict[str, str]:
    """id -> answer text, "" where there is no valid span (the SQuAD predictions.json layout)."""
    return {example_id: span.text if span else "" for example_id, span in spans.items()}


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


def postprocess_predictions(
    example_ids: Sequence[str],
    contexts: Sequence[str],
    feature_example_ids: Sequence[str],
    feature_offsets: Sequence[Sequence],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> QAPredictions:
    """Answers, n-best lists and (SQuAD v2.0) null odds for every example."""
    features_per_example = group_features(feature_example_ids)
    collector = PredictionCollector(version_2_with_negative, null_score_diff_threshold, n_best)
    for example_id, context in zip(example_ids, contexts):
        feature_indices = features_per_example.get(example_id, [])
        candidates = example_candidates(
            feature_indices, context, feature_offsets, start_logits, end_logits, n_best, max_answer_length
        )
        # sorted() is stable: among equal scores the first candidate stays first, the span
        # the course's max() picks.
        ranked = sorted(candidates, key=lambda s: s.score, reverse=True)[:n_best]
        null = null_span(feature_indices, start_logits, end_logits) if version_2_with_negative else None
        collector.add(example_id, ranked, null)
    return collector.result()


class PredictionCollector:
    """Turns each example's ranked spans (best first) and null span into utils_qa's outputs.

    Shared by the loop above and pipeline.vectorized_postprocess, so both apply the same
    SQuAD v2.0 rule: predict "" when null score - best span score > threshold.
    """

    def __init__(self, version_2_with_negative: bool, null_score_diff_threshold: float, n_best: int) -> None:
        self.version_2 = version_2_with_negative
        self.threshold = null_score_diff_threshold
        self.n_best = n_best
        self.answers: dict[str, str] = {}
        self.nbest: dict[str, list[dict]] = {}
        self.null_odds: dict[str, float] = {}

    def add(self, example_id: str, ranked: list[Span], null: Optional[Span]) -> None:
        best = ranked[0] if ranked else None
        if not self.version_2:
            self.answers[example_id] = best.text if best else ""
            self.nbest[example_id] = nbest_entries(ranked)
            return
        listed = sorted(ranked + ([null] if null is not None else []), key=lambda s: s.score, reverse=True)[: self.n_best]
        if null is not None and not any(span is null for span in listed):
            listed.append(null)  # utils_qa always lists the null answer
        odds = null.score - best.score if best is not None and null is not None else math.inf
        self.null_odds[example_id] = odds
        self.answers[example_id] = "" if best is None or odds > self.threshold else best.text
        self.nbest[example_id] = nbest_entries(listed)

    def result(self) -> "QAPredictions":
        return QAPredictions(self.answers, self.nbest, self.null_odds if self.version_2 else None)


