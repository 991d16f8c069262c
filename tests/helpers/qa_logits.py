"""Seeded start/end logits over real tokenized features, shaped like a fine-tuned model's.

Used by the post-processing and metric tests: noise everywhere, context tokens a little
higher, and in every window one peak of random height, on the gold answer's tokens (now and
then shifted by a token, so some predictions only partly match) or on a random short
context span. Windows of one example get different peaks, so the best span has to be chosen
across windows.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def answer_tokens(offsets: Sequence, start_char: int, end_char: int) -> Optional[tuple[int, int]]:
    """First and last token of the window covering [start_char, end_char), if the window holds it."""
    context = [k for k, o in enumerate(offsets) if o is not None]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return None
    start = next(k for k in context if offsets[k][1] > start_char)
    end = next(k for k in reversed(context) if offsets[k][0] < end_char)
    return start, end


def realistic_logits(
    features: dict, answers_by_id: dict, seed: int, hit_rate: float = 0.6, cls_boost: Optional[dict] = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One (start, end) float32 array per feature, each of the feature's own length.

    answers_by_id: example id -> {"text": [...], "answer_start": [...]}. cls_boost: example
    id -> value added to the CLS logits of its windows (a model's "no answer" signal).
    """
    rng = np.random.default_rng(seed)
    starts, ends = [], []
    for example_id, offsets in zip(features["example_id"], features["offset_mapping"]):
        n = len(offsets)
        start = rng.normal(0.0, 1.5, n).astype(np.float32)
        end = rng.normal(0.0, 1.5, n).astype(np.float32)
        context = np.array([k for k, o in enumerate(offsets) if o is not None])
        start[context] += 1.0
        end[context] += 1.0
        answers = answers_by_id[example_id]
        gold = None
        if answers["text"] and rng.random() < hit_rate:
            first = answers["answer_start"][0]
            gold = answer_tokens(offsets, first, first + len(answers["text"][0]))
        if gold is not None:
            s, e = gold
            shift = int(rng.choice([-1, 0, 0, 0, 1]))  # mostly exact, sometimes one token off
            s, e = min(max(s + shift, context[0]), e), e
        else:
            s = int(rng.choice(context))
            e = min(s + int(rng.integers(0, 4)), int(context[-1]))
        peak = np.float32(rng.uniform(3.0, 9.0))
        start[s] += peak
        end[e] += peak
        if cls_boost and example_id in cls_boost:
            start[0] += np.float32(cls_boost[example_id])
            end[0] += np.float32(cls_boost[example_id])
        starts.append(start)
        ends.append(end)
    return starts, ends
