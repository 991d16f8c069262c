"""SQuAD v2.0 metric (exact match and token F1 with unanswerable questions) as a local `evaluate` module.

Implements the published SQuAD v2.0 evaluation definition (Rajpurkar, Jia and Liang, 2018):

- answers are normalised as in v1.1 (lower case, punctuation and the articles a/an/the
  removed, whitespace collapsed); gold answers that normalise to nothing are dropped, and a
  question left without gold answers (an unanswerable one) has the single gold answer "";
- exact match: normalised strings equal; F1: bag-of-tokens F1, except that when the
  prediction or the gold answer is empty, F1 is 1 if both are empty and 0 otherwise;
  each question takes the maximum over its gold answers;
- a question whose no-answer probability is above `no_answer_threshold` (default 1.0) counts
  as answered "" (it scores 1 if unanswerable, else 0), whatever its prediction text;
- exact/f1 are averaged over all questions, HasAns_* over answerable and NoAns_* over
  unanswerable ones (each group's keys only when it has questions), as percentages;
- best_exact/best_f1: the best score over thresholds on the no-answer probability (questions
  above the threshold answered "", the rest as predicted, from the raw scores), with the
  threshold reaching it (best_*_thresh). Questions are visited in ascending probability
  order, ties kept in prediction order, and every question is a candidate cut-off. As in
  the official script, the sweep counts an unanswerable question as wrongly answered
  whenever its prediction text is not empty, even one that normalises to nothing (".")
  and so scores 1 in exact/f1.

The no-answer probability may be any score where larger means "more likely unanswerable",
for example the null odds (null score minus best span score) of pipeline.postprocess; the
thresholds are then null-odds thresholds.

It is loaded by path (`evaluate.load("pipeline/qa/metrics/squad_v2")`), never from the hub.
Keep one import per line: evaluate scans this file's imports to find dependencies.
"""

import collections
import re
import string

import datasets
import evaluate

_DESCRIPTION = (
    "SQuAD v2.0 exact match and F1 with unanswerable questions, computed as the official evaluation defines them."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str, "no_answer_probability": float}
    references: list of {"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}}
        (empty answer lists for unanswerable questions); the same ids as the predictions
    no_answer_threshold: questions whose no_answer_probability is above it count as answered ""
Returns:
    exact, f1, total; HasAns_exact, HasAns_f1, HasAns_total; NoAns_exact, NoAns_f1, NoAns_total;
    best_exact, best_exact_thresh, best_f1, best_f1_thresh
"""

_CITATION = "Rajpurkar, Jia and Liang (2018). Know What You Don't Know: Unanswerable Questions for SQuAD. ACL."

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text):
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text):
    return normalize_answer(text).split() if text else []


def exact_score(gold, prediction):
    return float(normalize_answer(gold) == normalize_answer(prediction))


def f1_score(gold, prediction):
    gold_tokens = answer_tokens(gold)
    predicted_tokens = answer_tokens(prediction)
    if not gold_tokens or not predicted_tokens:
        # "No answer" against "no answer" is right; against any answer it is wrong.
        return float(gold_tokens == predicted_tokens)
    overlap = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answer_texts):
    """Gold answers that survive normalisation, or [""] for an unanswerable question."""
    kept = [text for text in answer_texts if normalize_answer(text)]
    return kept or [""]


def raw_scores(predictions_by_id, golds_by_id):
    """Per-question exact and F1, each the maximum over the question's gold answers."""
    exact, f1 = {}, {}
    for qid, golds in golds_by_id.items():
        prediction = predictions_by_id[qid]
        exact[qid] = max(exact_score(gold, prediction) for gold in golds)
        f1[qid] = max(f1_score(gold, prediction) for gold in golds)
    return exact, f1


def apply_no_answer_threshold(scores, no_answer_probabilities, has_answer, threshold):
    """Questions above the threshold count as answered "": 1 if unanswerable, else 0."""
    return {
        qid: float(not has_answer[qid]) if no_answer_probabilities[qid] > threshold else score
        for qid, score in scores.items()
    }


def mean_percentage(scores, qids):
    return 100.0 * sum(scores[qid] for qid in qids) / len(qids)


def best_threshold(predictions_by_id, scores, no_answer_probabilities, has_answer):
    """The best total score over no-answer thresholds, and the threshold reaching it.

    Start from a threshold below every probability (every question answered "": each
    unanswerable one scores 1), then raise it past one question at a time: an answerable
    question gains its raw score, an unanswerable one loses 1 if it was given an answer.
    """
    current = best = float(sum(1 for qid in scores if not has_answer[qid]))
    best_thresh = 0.0
    for qid in sorted(no_answer_probabilities, key=lambda q: no_answer_probabilities[q]):
        if has_answer[qid]:
            current += scores[qid]
        elif predictions_by_id[qid]:
            current -= 1
        if current > best:
            best = current
            best_thresh = no_answer_probabilities[qid]
    return 100.0 * best / len(scores), best_thresh


def squad_v2_scores(predictions, references, no_answer_threshold=1.0):
    predictions_by_id = {p["id"]: p["prediction_text"] for p in predictions}
    probabilities = {p["id"]: p["no_answer_probability"] for p in predictions}
    golds_by_id = {r["id"]: gold_answers(r["answers"]["text"]) for r in references}
    has_answer = {r["id"]: bool(r["answers"]["text"]) for r in references}
    if set(predictions_by_id) != set(golds_by_id) or len(predictions) != len(predictions_by_id):
        missing = sorted(set(golds_by_id) - set(predictions_by_id))[:3]
        extra = sorted(set(predictions_by_id) - set(golds_by_id))[:3]
        raise ValueError(
            f"predictions and references must hold the same unique ids (missing predictions e.g. {missing}, "
            f"predictions without a reference e.g. {extra})"
        )

    exact_raw, f1_raw = raw_scores(predictions_by_id, golds_by_id)
    exact = apply_no_answer_threshold(exact_raw, probabilities, has_answer, no_answer_threshold)
    f1 = apply_no_answer_threshold(f1_raw, probabilities, has_answer, no_answer_threshold)

    all_qids = list(golds_by_id)
    result = {"exact": mean_percentage(exact, all_qids), "f1": mean_percentage(f1, all_qids), "total": len(all_qids)}
    for prefix, qids in (
        ("HasAns", [q for q in all_qids if has_answer[q]]),
        ("NoAns", [q for q in all_qids if not has_answer[q]]),
    ):
        if qids:
            result[f"{prefix}_exact"] = mean_percentage(exact, qids)
            result[f"{prefix}_f1"] = mean_percentage(f1, qids)
            result[f"{prefix}_total"] = len(qids)
    result["best_exact"], result["best_exact_thresh"] = best_threshold(
        predictions_by_id, exact_raw, probabilities, has_answer
    )
    result["best_f1"], result["best_f1_thresh"] = best_threshold(predictions_by_id, f1_raw, probabilities, has_answer)
    return result


class SquadV2(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "id": datasets.Value("string"),
                        "prediction_text": datasets.Value("string"),
                        # float64: null odds are compared with the threshold exactly as
                        # post-processing compared them (float32 would round them).
                        "no_answer_probability": datasets.Value("float64"),
                    },
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.features.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions, references, no_answer_threshold=1.0):
        return squad_v2_scores(predictions, references, no_answer_threshold)
