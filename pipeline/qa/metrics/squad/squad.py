"""SQuAD v1.1 metric (exact match and token F1) as a local `evaluate` module.

Implements the published SQuAD v1.1 evaluation definition (Rajpurkar et al., 2016):
answers are normalised (lower case, punctuation and the articles a/an/the removed,
whitespace collapsed); a prediction scores the maximum over the ground-truth answers of
exact match and of bag-of-tokens F1; both are averaged over questions as percentages.

It is loaded by path (`evaluate.load("pipeline/qa/metrics/squad")`), never from the hub.
Keep one import per line: evaluate scans this file's imports to find dependencies.
"""

import collections
import re
import string

import datasets
import evaluate

_DESCRIPTION = "SQuAD v1.1 exact match and F1, computed as the official evaluation script defines them."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str}
    references: list of {"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}}
Returns:
    exact_match: percentage of questions whose normalised prediction equals a normalised answer
    f1: mean over questions of the best token F1 against any answer, as a percentage
"""

_CITATION = (
    "Rajpurkar, Zhang, Lopyrev and Liang (2016). SQuAD: 100,000+ Questions for Machine Comprehension of Text. EMNLP."
)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text):
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction, ground_truth):
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction, ground_truth):
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(ground_truth).split()
    overlap = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted)
    recall = overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def best_over_ground_truths(score_fn, prediction, ground_truths):
    return max(score_fn(prediction, truth) for truth in ground_truths)


def squad_scores(predictions_by_id, references):
    """EM and F1 (percentages) of id->text predictions against reference records.

    A question without a prediction scores 0, as in the official script.
    """
    exact = f1 = 0.0
    for ref in references:
        if ref["id"] not in predictions_by_id:
            continue
        prediction = predictions_by_id[ref["id"]]
        truths = list(ref["answers"]["text"])
        exact += best_over_ground_truths(exact_match_score, prediction, truths)
        f1 += best_over_ground_truths(f1_score, prediction, truths)
    total = len(references)
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.features.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions, references):
        predictions_by_id = {p["id"]: p["prediction_text"] for p in predictions}
        return squad_scores(predictions_by_id, references)
