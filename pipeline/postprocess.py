"""Turn per-feature start/end logits into answer spans (the course's post-processing).

For each example, over all of its features (stride windows): take the n_best start and
end indices, skip spans whose tokens are outside the context (offset None), that end
before they start or that are longer than max_answer_length tokens; score a span as
start logit + end logit and keep the best. No valid span gives the empty answer.

Pure numpy/Python: used by the evaluate stage and by pipeline.predict.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Span:
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
        candidates: list[Span] = []
        for f in features_per_example.get(example_id, []):
            candidates.extend(
                feature_spans(
                    np.asarray(start_logits[f]), np.asarray(end_logits[f]), feature_offsets[f], context,
                    n_best, max_answer_length,
                )
            )
        best[example_id] = max(candidates, key=lambda s: s.score) if candidates else None
    return best


def answer_texts(spans: dict[str, Span | None]) -> dict[str, str]:
    """id -> answer text, "" where there is no valid span (the SQuAD predictions.json layout)."""
    return {example_id: span.text if span else "" for example_id, span in spans.items()}
