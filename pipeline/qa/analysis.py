"""Evaluation beyond one number: slices, bootstrap intervals, risk-coverage and calibration.

Pure numpy/Python over post-processed predictions (qa.answers.QAPredictions) and the
examples they answer. Every figure starts from the per-question scores of the SQuAD metric,
computed by the metric script's own functions (its normalisation and max over gold answers:
pipeline/qa/metrics/squad for v1.1, squad_v2 for v2.0), so the mean over all questions is
the metric's EM / F1.

- Slices (EM, F1 and count per slice), each question in one slice of every dimension:
  question word: the first of what/who/when/where/why/how/which in the question (whom and
  whose count as who), else "other"; answer tokens: whitespace-separated words of the first
  gold answer's text (unanswerable v2.0 questions: "no answer"); windows: how many features
  (stride windows) the question's context was split into; answer position: where the first
  gold answer starts, as a fraction of the context's characters (first/second/last third).
- Intervals: a seeded percentile bootstrap over questions (the same resamples for EM and F1).
- Confidence: the n-best probability of the answer given (a softmax over the listed
  candidates' scores); a question without any candidate has confidence 0.
- Risk-coverage: answer the most confident questions first; at coverage k/n the curve is
  the F1 of those k questions. Its area is the mean of the curve over k = 1..n (0-100,
  higher is better; the "risk" view 100 - F1 has area 100 - this). Questions with equal
  confidence cannot be separated by a cut-off: each of them counts with their mean F1.
- Expected calibration error (ECE): |mean EM - mean confidence| per equal-width confidence
  bin (10 bins over [0, 1]), weighted by the bin's share of questions; EM as 0/1, so ECE is
  in [0, 1].
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from pipeline.qa.answers import QAPredictions
from pipeline.qa.metrics import metric_module

QUESTION_WORDS = ("what", "who", "when", "where", "why", "how", "which")
QUESTION_WORD_ALIASES = {"whom": "who", "whose": "who"}
OTHER = "other"
NO_ANSWER = "no answer"
# (lowest, highest or None, label): whitespace words of the first gold answer.
ANSWER_TOKEN_BUCKETS = ((1, 1, "1"), (2, 2, "2"), (3, 4, "3-4"), (5, 8, "5-8"), (9, None, "9+"))
WINDOW_LABELS = ("1", "2", "3+")
POSITION_LABELS = ("first third", "second third", "last third")

# dimension -> every slice label, in report order (empty slices are left out of the results).
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "question_word": (*QUESTION_WORDS, OTHER),
    "answer_tokens": (*(label for _, _, label in ANSWER_TOKEN_BUCKETS), NO_ANSWER),
    "windows": WINDOW_LABELS,
    "answer_position": (*POSITION_LABELS, NO_ANSWER),
}
DIMENSION_TITLES = {
    "question_word": "question word",
    "answer_tokens": "answer tokens",
    "windows": "windows",
    "answer_position": "answer position",
}

CONFIDENCE_LEVEL = 0.95
CALIBRATION_BINS = 10
BOOTSTRAP_CHUNK = 50  # resamples drawn at once: memory is chunk x questions indices
CURVE_POINTS = 500  # at most this many risk-coverage points in the plot file (the area uses all)


# --- slices -----------------------------------------------------------------------------


def question_word(question: str) -> str:
    for word in re.findall(r"[a-z]+", question.lower()):
        word = QUESTION_WORD_ALIASES.get(word, word)
        if word in QUESTION_WORDS:
            return word
    return OTHER


def answer_tokens_slice(answers: Mapping[str, Sequence]) -> str:
    texts = answers["text"]
    if not texts:
        return NO_ANSWER
    n = len(texts[0].split())
    for low, high, label in ANSWER_TOKEN_BUCKETS:
        if n >= low and (high is None or n <= high):
            return label
    return ANSWER_TOKEN_BUCKETS[0][2]  # an answer of whitespace only (not valid input) counts as short


def windows_slice(n_windows: int) -> str:
    return WINDOW_LABELS[min(max(n_windows, 1), len(WINDOW_LABELS)) - 1]


def answer_position_slice(context: str, answers: Mapping[str, Sequence]) -> str:
    if not answers["answer_start"]:
        return NO_ANSWER
    fraction = answers["answer_start"][0] / max(len(context), 1)
    return POSITION_LABELS[min(int(fraction * len(POSITION_LABELS)), len(POSITION_LABELS) - 1)]


def slice_labels(question: str, context: str, answers: Mapping[str, Sequence], n_windows: int) -> dict[str, str]:
    """The question's slice in each dimension."""
    return {
        "question_word": question_word(question),
        "answer_tokens": answer_tokens_slice(answers),
        "windows": windows_slice(n_windows),
        "answer_position": answer_position_slice(context, answers),
    }


def windows_per_example(feature_example_ids: Iterable[str]) -> Counter:
    """example id -> number of features (windows) of its context."""
    return Counter(feature_example_ids)


def slice_scores(exact: np.ndarray, f1: np.ndarray, labels: Sequence[Mapping[str, str]]) -> dict[str, dict[str, dict]]:
    """dimension -> slice -> {exact_match, f1, count} (percentages), non-empty slices in report order."""
    table: dict[str, dict[str, dict]] = {}
    for dimension, order in DIMENSIONS.items():
        column = np.array([row[dimension] for row in labels], dtype=object)
        table[dimension] = {}
        for label in order:
            mask = column == label
            count = int(mask.sum())
            if count:
                table[dimension][label] = {
                    "exact_match": float(exact[mask].mean()),
                    "f1": float(f1[mask].mean()),
                    "count": count,
                }
    return table


# --- per-question scores ----------------------------------------------------------------


def question_scores(
    answers: Mapping[str, str], references: Sequence[Mapping[str, Any]], version_2_with_negative: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-question exact match and F1 (0-100) of id -> answer text against the references,
    by the metric's own functions (v1.1: squad; v2.0: squad_v2, "" scoring as no answer)."""
    metric = metric_module("squad_v2" if version_2_with_negative else "squad")
    exact, f1 = [], []
    for ref in references:
        prediction = answers[ref["id"]]
        if version_2_with_negative:
            golds = metric.gold_answers(ref["answers"]["text"])
            exact.append(max(metric.exact_score(g, prediction) for g in golds))
            f1.append(max(metric.f1_score(g, prediction) for g in golds))
        else:
            golds = list(ref["answers"]["text"])
            exact.append(metric.best_over_ground_truths(metric.exact_match_score, prediction, golds))
            f1.append(metric.best_over_ground_truths(metric.f1_score, prediction, golds))
    return 100.0 * np.array(exact, dtype=np.float64), 100.0 * np.array(f1, dtype=np.float64)


def answer_confidence(predictions: QAPredictions, ids: Sequence[str]) -> np.ndarray:
    """The n-best probability of each question's answer (the first listed candidate with
    the answer's text: the span answered, or the null answer ""); 0 without candidates."""
    confidence = np.zeros(len(ids), dtype=np.float64)
    for i, qid in enumerate(ids):
        answer = predictions.answers[qid]
        for entry in predictions.nbest.get(qid, []):
            if entry["text"] == answer:
                confidence[i] = entry["probability"]
                break
    return confidence


# --- intervals --------------------------------------------------------------------------


def bootstrap_intervals(
    scores: Mapping[str, np.ndarray], samples: int, seed: int, confidence_level: float = CONFIDENCE_LEVEL
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the means of per-question scores (same resamples for
    every score). Reproducible for a given seed, sample count and number of questions."""
    names = list(scores)
    values = np.stack([np.asarray(scores[name], dtype=np.float64) for name in names])
    n = values.shape[1]
    if n == 0 or samples < 1:
        raise ValueError("bootstrap needs at least one question and one resample")
    rng = np.random.default_rng(seed)
    means = np.empty((len(names), samples), dtype=np.float64)
    for begin in range(0, samples, BOOTSTRAP_CHUNK):
        size = min(BOOTSTRAP_CHUNK, samples - begin)
        indices = rng.integers(0, n, size=(size, n))
        means[:, begin : begin + size] = values[:, indices].mean(axis=2)
    tail = 100.0 * (1.0 - confidence_level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=1)
    return {name: (float(low[i]), float(high[i])) for i, name in enumerate(names)}


# --- risk-coverage and calibration ------------------------------------------------------


@dataclass
class RiskCoverage:
    coverage: np.ndarray  # k / n for k = 1..n
    f1: np.ndarray  # F1 (0-100) of the k most confident questions
    threshold: np.ndarray  # the k-th highest confidence: answering when confidence >= it covers >= k
    area: float


def risk_coverage(confidence: np.ndarray, f1: np.ndarray) -> RiskCoverage:
    """F1 of the answered questions against the fraction answered, most confident first."""
    confidence = np.asarray(confidence, dtype=np.float64)
    f1 = np.asarray(f1, dtype=np.float64)
    n = len(confidence)
    if n == 0:
        raise ValueError("risk-coverage needs at least one question")
    order = np.argsort(-confidence, kind="stable")
    sorted_confidence, sorted_f1 = confidence[order], f1[order]
    # Tied confidences: every ordering among them is as likely, so each counts with their mean.
    _, group_start, group_size = np.unique(-sorted_confidence, return_index=True, return_counts=True)
    group_mean = np.add.reduceat(sorted_f1, group_start) / group_size
    effective = np.repeat(group_mean, group_size)
    k = np.arange(1, n + 1)
    curve = np.cumsum(effective) / k
    return RiskCoverage(k / n, curve, sorted_confidence, float(curve.mean()))


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> tuple[float, list[dict]]:
    """Expected calibration error of 0/1 correctness against confidence in [0, 1], and the
    reliability table (one row per non-empty bin)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    n = len(confidence)
    if n == 0:
        raise ValueError("calibration needs at least one question")
    index = np.minimum((np.clip(confidence, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    ece, rows = 0.0, []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        if not count:
            continue
        accuracy, mean_confidence = float(correct[mask].mean()), float(confidence[mask].mean())
        ece += count / n * abs(accuracy - mean_confidence)
        rows.append(
            {
                "bin_low": b / bins,
                "bin_high": (b + 1) / bins,
                "count": count,
                "confidence": mean_confidence,
                "accuracy": accuracy,
            }
        )
    return float(ece), rows


# --- everything at once -----------------------------------------------------------------


@dataclass
class Analysis:
    """What the evaluate stage and pipeline.evaluate_model report beyond EM and F1."""

    summary: dict[str, float]  # flat numbers for metrics/eval.json (intervals, risk-coverage area, ECE)
    slices: dict[str, dict[str, dict]]  # dimension -> slice -> {exact_match, f1, count}
    curve: RiskCoverage
    reliability: list[dict] = field(default_factory=list)

    def slice_rows(self) -> list[dict]:
        """One row per slice ("question word: what", ...): the shape of a DVC bar plot."""
        return [
            {
                "slice": f"{DIMENSION_TITLES[dimension]}: {label}",
                "f1": row["f1"],
                "exact_match": row["exact_match"],
                "count": row["count"],
            }
            for dimension, slices in self.slices.items()
            for label, row in slices.items()
        ]

    def slice_table(self) -> dict[str, list]:
        """Columns (dimension, slice, count, exact_match, f1): an MLflow table."""
        rows = [(dimension, label, row) for dimension, slices in self.slices.items() for label, row in slices.items()]
        return {
            "dimension": [r[0] for r in rows],
            "slice": [r[1] for r in rows],
            "count": [r[2]["count"] for r in rows],
            "exact_match": [r[2]["exact_match"] for r in rows],
            "f1": [r[2]["f1"] for r in rows],
        }

    def curve_rows(self, max_points: int = CURVE_POINTS) -> list[dict]:
        """The risk-coverage curve, thinned to at most max_points evenly spaced points (the last included)."""
        n = len(self.curve.coverage)
        picks = np.unique(np.linspace(0, n - 1, num=min(n, max_points)).round().astype(np.int64))
        return [
            {
                "coverage": round(float(self.curve.coverage[i]), 6),
                "f1": round(float(self.curve.f1[i]), 4),
                "threshold": round(float(self.curve.threshold[i]), 6),
            }
            for i in picks
        ]


def analyse(
    predictions: QAPredictions,
    examples: Mapping[str, Sequence],
    windows: Mapping[str, int],
    version_2_with_negative: bool,
    bootstrap_samples: int,
    seed: int,
    scores: Optional[tuple[np.ndarray, np.ndarray]] = None,
) -> Analysis:
    """Slices, intervals, risk-coverage and calibration of predictions on examples (columns id,
    question, context, answers); `windows` is example id -> number of features."""
    ids = list(examples["id"])
    answers = list(examples["answers"])
    references = [{"id": i, "answers": a} for i, a in zip(ids, answers)]
    exact, f1 = (
        scores if scores is not None else question_scores(predictions.answers, references, version_2_with_negative)
    )
    labels = [
        slice_labels(q, c, a, windows.get(i, 1))
        for i, q, c, a in zip(ids, examples["question"], examples["context"], answers)
    ]
    intervals = bootstrap_intervals({"exact_match": exact, "f1": f1}, bootstrap_samples, seed)
    confidence = answer_confidence(predictions, ids)
    curve = risk_coverage(confidence, f1)
    ece, reliability = calibration(confidence, exact / 100.0)
    summary = {
        "exact_match_ci95_low": intervals["exact_match"][0],
        "exact_match_ci95_high": intervals["exact_match"][1],
        "f1_ci95_low": intervals["f1"][0],
        "f1_ci95_high": intervals["f1"][1],
        "risk_coverage_area": curve.area,
        "expected_calibration_error": ece,
    }
    return Analysis(summary, slice_scores(exact, f1, labels), curve, reliability)
