"""The Hugging Face course's post-processing loop (chapter 7, "Question answering",
TensorFlow), kept once, as the reference the production code (pipeline.qa.postprocess,
vectorized) is checked against by the parity tests and timed against by the speed benchmark.

- `course_loop_as_written`: the course's code verbatim (answers only), rows read from the
  `datasets` objects inside the loop;
- `best_spans` / `postprocess_predictions`: the same loop per feature, returning spans, and
  with utils_qa's n-best lists and SQuAD v2.0 null odds (through the library's one answer
  rule, qa.answers.PredictionCollector).
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np

from pipeline.qa.answers import PredictionCollector, QAPredictions, Span, group_features, null_span


def course_loop_as_written(examples, features, start_logits, end_logits, n_best: int, max_answer_length: int):
    """The course's post-processing loop verbatim (chapter 7, TensorFlow), answers only:
    rows are read from the `datasets` objects inside the loop, as the course does."""
    example_to_features = collections.defaultdict(list)
    for idx, feature in enumerate(features):
        example_to_features[feature["example_id"]].append(idx)
    predicted = {}
    for example in examples:
        example_id = example["id"]
        context = example["context"]
        answers = []
        for feature_index in example_to_features[example_id]:
            start_logit = start_logits[feature_index]
            end_logit = end_logits[feature_index]
            offsets = features[feature_index]["offset_mapping"]
            start_indexes = np.argsort(start_logit)[-1 : -n_best - 1 : -1].tolist()
            end_indexes = np.argsort(end_logit)[-1 : -n_best - 1 : -1].tolist()
            for start_index in start_indexes:
                for end_index in end_indexes:
                    if offsets[start_index] is None or offsets[end_index] is None:
                        continue
                    if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                        continue
                    answers.append(
                        {
                            "text": context[offsets[start_index][0] : offsets[end_index][1]],
                            "logit_score": start_logit[start_index] + end_logit[end_index],
                        }
                    )
        best_answer = max(answers, key=lambda x: x["logit_score"]) if answers else None
        predicted[example_id] = best_answer["text"] if best_answer else ""
    return predicted


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
                np.asarray(start_logits[f]),
                np.asarray(end_logits[f]),
                feature_offsets[f],
                context,
                n_best,
                max_answer_length,
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
            features_per_example.get(example_id, []),
            context,
            feature_offsets,
            start_logits,
            end_logits,
            n_best,
            max_answer_length,
        )
        best[example_id] = max(candidates, key=lambda s: s.score) if candidates else None
    return best


def answer_texts(spans: dict[str, Span | None]) -> dict[str, str]:
    """id -> answer text, "" where there is no valid span (the SQuAD predictions.json layout)."""
    return {example_id: span.text if span else "" for example_id, span in spans.items()}


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
    """Answers, n-best lists and (SQuAD v2.0) null odds for every example, by the loop."""
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
