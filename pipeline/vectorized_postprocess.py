"""The course's post-processing, vectorized with numpy.

Same rule as pipeline.postprocess (the course's loop): per feature, the n_best start and
end indices; spans must lie in the context, end >= start and be at most max_answer_length
tokens; score = start logit + end logit; best over all features of the example. Instead
of 400 Python iterations per feature, a chunk of features is scored at once:

- top-n indices with `argpartition`, then ordered by logit, largest first;
- an [features, n_best, n_best] score tensor with invalid pairs masked to -inf;
- the best pair per feature, then the best feature per example.

Ties resolve as in the loop (start-major, then end, then feature order), so predictions
are identical as long as no two logits in a feature's top n_best are exactly equal (the
course's own argsort leaves that order unspecified too).

Offsets come as Arrow columns (what `datasets` stores) and are turned into flat numpy
arrays without a per-token Python loop.
"""

from __future__ import annotations


from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.postprocess import PredictionCollector, QAPredictions, Span, group_features, null_span


@dataclass
class ContextOffsets:
    """Character offsets of every token, flat: rows via `row_starts`; is_context False for
    tokens outside the context (offset None)."""

    row_starts: np.ndarray  # [F + 1] token offsets of each feature
    is_context: np.ndarray  # [T] bool
    char_start: np.ndarray  # [T]
    char_end: np.ndarray  # [T]

    @classmethod
    def from_arrow(cls, chunked_array) -> "ContextOffsets":
        outer = chunked_array.combine_chunks()
        inner = outer.flatten()  # one entry per token; null where the offset is None
        row_starts = outer.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        row_starts = row_starts - row_starts[0]
        is_context = inner.is_valid().to_numpy(zero_copy_only=False)
        pair_starts = inner.offsets.to_numpy(zero_copy_only=False).astype(np.int64)[:-1]
        values = inner.values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)  # no 30 MB copy
        base = inner.offsets[0].as_py()
        # A null (non-context) entry has no values: its offset is the next entry's, or
        # the end, so clip it into range and zero what it reads.
        pair = np.minimum(pair_starts - base, max(len(values) - 2, 0))
        char_start = np.where(is_context, values[pair], 0) if len(values) else np.zeros(len(is_context), np.int64)
        char_end = np.where(is_context, values[pair + 1], 0) if len(values) else np.zeros(len(is_context), np.int64)
        return cls(row_starts, is_context, char_start, char_end)

    @classmethod
    def from_dataset(cls, dataset) -> "ContextOffsets":
        if dataset._indices is not None:  # select()/shuffle() views: materialise the rows
            dataset = dataset.flatten_indices()
        return cls.from_arrow(dataset.data.column("offset_mapping"))

    @classmethod
    def from_lists(cls, offsets: Sequence[Sequence]) -> "ContextOffsets":
        lengths = np.fromiter((len(o) for o in offsets), dtype=np.int64, count=len(offsets))
        row_starts = np.zeros(len(offsets) + 1, dtype=np.int64)
        np.cumsum(lengths, out=row_starts[1:])
        flat = [pair for row in offsets for pair in row]
        is_context = np.fromiter((p is not None for p in flat), dtype=bool, count=len(flat))
        char_start = np.fromiter((p[0] if p is not None else 0 for p in flat), dtype=np.int64, count=len(flat))
        char_end = np.fromiter((p[1] if p is not None else 0 for p in flat), dtype=np.int64, count=len(flat))
        return cls(row_starts, is_context, char_start, char_end)


def _as_list(values: Sequence) -> list:
    """A plain list; `datasets` columns iterate row by row through their formatter (slow),
    while slicing them converts in one Arrow call."""
    return values if isinstance(values, list) else values[:]


def _top_n_desc(logits: np.ndarray, n: int) -> np.ndarray:
    """[F, n] indices of the n largest values per row, largest first."""
    width = logits.shape[1]
    n = min(n, width)
    part = np.argpartition(logits, width - n, axis=1)[:, width - n :]
    order = np.argsort(-np.take_along_axis(logits, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


@dataclass
class FlatLogits:
    """Every feature's start/end logits cut to its own length and laid end to end, so the
    token rows of ContextOffsets index them directly (no per-feature Python work later)."""

    start: np.ndarray  # [T] float32
    end: np.ndarray  # [T] float32

    @classmethod
    def concatenate(cls, start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray],
                    offsets: ContextOffsets) -> "FlatLogits":
        lengths = np.diff(offsets.row_starts).tolist()
        if not lengths:  # no features: nothing to concatenate
            return cls(np.zeros(0, np.float32), np.zeros(0, np.float32))
        # Logits past a feature's offsets are batch padding: cut off, never chosen.
        return cls(
            np.concatenate([s[:n] for s, n in zip(start_logits, lengths)]).astype(np.float32, copy=False),
            np.concatenate([e[:n] for e, n in zip(end_logits, lengths)]).astype(np.float32, copy=False),
        )


def feature_candidates(
    logits: FlatLogits,
    offsets: ContextOffsets,
    features: np.ndarray,
    n_best: int,
    max_answer_length: int,
    keep: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `keep` best valid spans of each given feature, best first.

    Returns [len(features), keep] arrays: score (-inf where there is no such span), start
    token, end token. Ties keep the loop's order (start-major, then end).
    """
    first_token = offsets.row_starts[features]
    lengths = offsets.row_starts[features + 1] - first_token
    width = int(lengths.max())
    # Gather the ragged rows into [features, width]; positions past a row's end read a
    # clipped token and are masked out (-inf logits, not context).
    columns = np.arange(width)
    outside = columns[None, :] >= lengths[:, None]
    token = np.minimum(first_token[:, None] + columns[None, :], len(logits.start) - 1)
    starts = logits.start[token]
    ends = logits.end[token]
    context = offsets.is_context[token]
    starts[outside] = -np.inf
    ends[outside] = -np.inf
    context[outside] = False

    top_s = _top_n_desc(starts, n_best)
    top_e = _top_n_desc(ends, n_best)
    rows = np.arange(len(features))[:, None]
    # end - start as unsigned: negative differences wrap to huge values, so one comparison
    # checks 0 <= end - start < max_answer_length (end >= start, length <= max).
    difference = (top_e[:, None, :] - top_s[:, :, None]).astype(np.int32).view(np.uint32)
    valid = difference < max_answer_length
    valid &= context[rows, top_s][:, :, None]
    valid &= context[rows, top_e][:, None, :]
    scores = starts[rows, top_s][:, :, None] + ends[rows, top_e][:, None, :]
    np.copyto(scores, -np.inf, where=~valid)
    flat = scores.reshape(len(features), -1)
    if keep == 1:
        order = np.argmax(flat, axis=1)[:, None]  # first maximum: start-major, as the loop
    else:
        order = np.argsort(-flat, axis=1, kind="stable")[:, :keep]
    n_end = top_e.shape[1]
    return (
        np.take_along_axis(flat, order, axis=1),
        np.take_along_axis(top_s, order // n_end, axis=1),
        np.take_along_axis(top_e, order % n_end, axis=1),
    )


def _all_feature_candidates(logits: FlatLogits, offsets: ContextOffsets, n_best, max_answer_length, keep,
                            chunk_size):
    n_features = len(offsets.row_starts) - 1
    score = np.full((n_features, keep), -np.inf, dtype=np.float32)
    start = np.zeros((n_features, keep), dtype=np.int64)
    end = np.zeros((n_features, keep), dtype=np.int64)
    # Chunks of similar length: each is padded only to its own longest feature.
    by_length = np.argsort(np.diff(offsets.row_starts), kind="stable")
    for begin in range(0, n_features, chunk_size):
        chunk = by_length[begin : begin + chunk_size]
        s, b, e = feature_candidates(logits, offsets, chunk, n_best, max_answer_length, keep)
        score[chunk, : s.shape[1]], start[chunk, : s.shape[1]], end[chunk, : s.shape[1]] = s, b, e
    return score, start, end


def _spans(contexts: Sequence[str], offsets: ContextOffsets, logits: FlatLogits, features: np.ndarray,
           starts: np.ndarray, ends: np.ndarray, scores: np.ndarray) -> list[Span]:
    """Span objects for parallel arrays of (feature, start token, end token, score); the
    offsets and logits are gathered for all of them at once."""
    token_s = offsets.row_starts[features] + starts
    token_e = offsets.row_starts[features] + ends
    start_chars = offsets.char_start[token_s].tolist()
    end_chars = offsets.char_end[token_e].tolist()
    return [
        Span(context[a:b], score, a, b, start_logit, end_logit)
        for context, a, b, score, start_logit, end_logit in zip(
            contexts, start_chars, end_chars, scores.astype(np.float64).tolist(),
            logits.start[token_s].astype(np.float64).tolist(), logits.end[token_e].astype(np.float64).tolist(),
        )
    ]


def best_spans_vectorized(
    example_ids: Sequence[str],
    contexts: Sequence[str],
    feature_example_ids: Sequence[str],
    offsets: ContextOffsets,
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
    chunk_size: int = 2048,
) -> dict[str, Span | None]:
    """Same result as pipeline.postprocess.best_spans; memory bounded by chunk_size features."""
    example_ids, contexts, feature_example_ids = map(_as_list, (example_ids, contexts, feature_example_ids))
    logits = FlatLogits.concatenate(start_logits, end_logits, offsets)
    score, start, end = _all_feature_candidates(logits, offsets, n_best, max_answer_length, 1, chunk_size)
    # Best feature per example without a Python loop over features: sort by (example,
    # -score, feature) and take each example's first row, which is the loop's choice (the
    # highest score, the earliest feature on ties).
    code_of = {example_id: i for i, example_id in enumerate(example_ids)}
    codes = np.fromiter((code_of.get(e, -1) for e in feature_example_ids), dtype=np.int64, count=len(feature_example_ids))
    order = np.lexsort((np.arange(len(codes)), -score[:, 0], codes))
    sorted_codes = codes[order]
    firsts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) if len(codes) else codes
    best = order[firsts]
    best = best[(codes[best] >= 0) & np.isfinite(score[best, 0])]
    answered = codes[best].tolist()
    spans = _spans([contexts[c] for c in answered], offsets, logits, best, start[best, 0], end[best, 0],
                   score[best, 0])
    result: dict[str, Span | None] = dict.fromkeys(example_ids)
    result.update(zip([example_ids[c] for c in answered], spans))
    return result


def postprocess_predictions_vectorized(
    example_ids: Sequence[str],
    contexts: Sequence[str],
    feature_example_ids: Sequence[str],
    offsets: ContextOffsets,
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
    chunk_size: int = 2048,
) -> QAPredictions:
    """Same result as pipeline.postprocess.postprocess_predictions (answers, n-best lists,
    null odds), with the per-feature work vectorized.

    An example's n_best best spans are among the n_best best of each of its features, so
    only those are ranked per example (a stable sort keeps the loop's order on ties).
    """
    example_ids, contexts, feature_example_ids = map(_as_list, (example_ids, contexts, feature_example_ids))
    logits = FlatLogits.concatenate(start_logits, end_logits, offsets)
    score, start, end = _all_feature_candidates(logits, offsets, n_best, max_answer_length, n_best, chunk_size)
    features_per_example = group_features(feature_example_ids)
    collector = PredictionCollector(version_2_with_negative, null_score_diff_threshold, n_best)
    keep = score.shape[1]
    for example_id, context in zip(example_ids, contexts):
        features = features_per_example.get(example_id, [])
        ranked_spans: list[Span] = []
        if features:
            candidate_scores = score[features].ravel()
            ranked = np.argsort(-candidate_scores, kind="stable")[:n_best]
            ranked = ranked[np.isfinite(candidate_scores[ranked])]
            rows, ks = np.asarray(features)[ranked // keep], ranked % keep
            ranked_spans = _spans([context] * len(ranked), offsets, logits, rows, start[rows, ks], end[rows, ks],
                                  candidate_scores[ranked])
        null = null_span(features, start_logits, end_logits) if version_2_with_negative else None
        collector.add(example_id, ranked_spans, null)
    return collector.result()
