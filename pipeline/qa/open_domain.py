"""Read, after retrieving: the reader's answers from the top-ranked passages of a qa.retrieval
index, combined with the retriever's scores (BERTserini's linear interpolation), and how they are
measured and tuned.

The top max(k) passages of each question are read once by the reader
(qa.predictions.passage_reader: the evaluate stage's answer rule, every passage's best span
kept), then for each k the answer is the passage answer with the highest
(1 - weight) * bm25 score + weight * reader score, the reader score being the span's score minus
the passage's null score (start + end logit of [CLS]): a passage-level confidence the raw span
score lacks when the reader never saw a passage without the answer in training (measured in
docs/retrieval.md; retrieve.train_negatives trains it on such passages). k and the weight are
chosen on train questions (`tune_on_questions`), never on the questions being scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from pipeline.qa.analysis import question_scores
from pipeline.qa.retrieval import PassageIndex, holds_answer

# The reader: (questions, contexts) -> one answer dict per pair ("answer", "score", "start",
# "null_odds": null score minus the span's score).
Reader = Callable[[Sequence[str], Sequence[str]], list[dict[str, Any]]]


# --- reading the retrieved passages -------------------------------------------------------------


@dataclass
class Reads:
    """The reader's answer in each retrieved passage: [questions, K] arrays, rank order."""

    passage: np.ndarray  # passage index
    bm25: np.ndarray  # BM25 score
    reader: np.ndarray  # the passage's best span score minus its null score; -inf without a span
    answers: list[list[dict[str, Any]]]  # the reader's answer dict per question and rank

    def choose(self, k: int, weight: float) -> np.ndarray:
        """Per question, the rank (< k) of the answer with the best combined score."""
        k = min(k, self.bm25.shape[1])
        combined = (1.0 - weight) * self.bm25[:, :k] + weight * self.reader[:, :k]
        return np.argmax(combined, axis=1)


def read_passages(
    reader: Reader,
    index: PassageIndex,
    questions: Sequence[str],
    k: int,
    batch: int = 512,
    searched: Optional[tuple[np.ndarray, np.ndarray]] = None,
) -> Reads:
    """Retrieve the top k passages of every question and read each with the reader. `searched`:
    index.search's (passages, scores) of these questions to at least k, when the caller has them."""
    ranked, bm25 = index.search(questions, k) if searched is None else (searched[0][:, :k], searched[1][:, :k])
    n, kk = ranked.shape
    answers: list[dict[str, Any]] = []
    pairs = [(q, int(p)) for q, row in zip(questions, ranked) for p in row]
    for first in range(0, len(pairs), batch):
        chunk = pairs[first : first + batch]
        answers.extend(reader([q for q, _ in chunk], [index.passages[p].text for _, p in chunk]))
    reader_scores = np.array(
        [-np.inf if a.get("score") is None or a.get("null_odds") is None else -a["null_odds"] for a in answers],
        dtype=np.float64,
    )
    rows = [answers[i * kk : (i + 1) * kk] for i in range(n)]
    return Reads(ranked, bm25, reader_scores.reshape(n, kk), rows)


def open_answer(index: PassageIndex, reads: Reads, question: int, rank: int) -> dict[str, Any]:
    """The answer of question `question` from its passage at `rank`: text, scores, where it is."""
    read = reads.answers[question][rank]
    passage = index.passages[int(reads.passage[question, rank])]
    offset = None if read.get("start") is None else passage.start + read["start"]
    return {
        "answer": read["answer"],
        "score": read.get("score"),
        "reader_score": None if read.get("null_odds") is None else round(-float(read["null_odds"]), 4),
        "retriever_score": round(float(reads.bm25[question, rank]), 4),
        "doc_id": passage.doc_id,
        "title": passage.title,
        "start": offset,
        "end": None if offset is None else offset + len(read["answer"]),
        "passage_rank": rank + 1,
    }


def answer_open(
    reader: Reader, index: PassageIndex, questions: Sequence[str], k: int, weight: float
) -> list[dict[str, Any]]:
    """Answer questions from the index: read the top k passages, keep the best combined answer."""
    reads = read_passages(reader, index, questions, k)
    best = reads.choose(k, weight)
    return [open_answer(index, reads, i, int(r)) for i, r in enumerate(best)]


# --- measuring ------------------------------------------------------------------------------


def answer_in_passages(ranked: np.ndarray, index: PassageIndex, gold: Sequence[Sequence[str]]) -> np.ndarray:
    """[questions, K] booleans: a gold answer's text occurs in the passage at that rank (DrQA's
    answer recall); `ranked` is PassageIndex.search's passage indices."""
    hits = np.zeros(ranked.shape, dtype=bool)
    for i, answers in enumerate(gold):
        for r, p in enumerate(ranked[i]):
            hits[i, r] = holds_answer(index.passages[int(p)].text, answers)
    return hits


def recall_at(hits: np.ndarray, ks: Iterable[int]) -> dict[int, float]:
    return {k: float(hits[:, :k].any(axis=1).mean()) if len(hits) else 0.0 for k in ks}


def answer_scores(reads: Reads, gold: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """[questions, K] exact match and F1 (0-100) of the answer read at each rank, scored as the
    evaluate stage scores answers (qa.analysis.question_scores, SQuAD v1.1's rule)."""
    references = [{"id": str(i), "answers": {"text": list(answers)}} for i, answers in enumerate(gold)]
    exact, f1 = np.zeros(reads.passage.shape), np.zeros(reads.passage.shape)
    for r in range(reads.passage.shape[1]):
        answers = {str(i): row[r]["answer"] for i, row in enumerate(reads.answers)}
        exact[:, r], f1[:, r] = question_scores(answers, references, version_2_with_negative=False)
    return exact, f1


def integrated_scores(reads: Reads, exact: np.ndarray, f1: np.ndarray, k: int, weight: float) -> dict[str, float]:
    """EM and F1 end to end: each question answered from its top k passages."""
    best = reads.choose(k, weight)
    rows = np.arange(len(best))
    return {"exact_match": float(exact[rows, best].mean()), "f1": float(f1[rows, best].mean())}


def choose_settings(
    reads: Reads, f1: np.ndarray, ks: Sequence[int], weights: Sequence[float]
) -> tuple[int, float, float]:
    """The (k, weight) with the best mean F1 over these (train) questions, and that F1. Ties go to
    the smaller k (less to read per question), then the smaller weight."""
    best: Optional[tuple[float, int, float]] = None
    for k in sorted(ks):
        for weight in sorted(weights):
            score = float(f1[np.arange(len(f1)), reads.choose(k, weight)].mean())
            if best is None or score > best[0] + 1e-9:
                best = (score, k, weight)
    assert best is not None
    return best[1], best[2], best[0]


def weight_grid(steps: int) -> list[float]:
    """`steps` evenly spaced interpolation weights from 0 (BM25 alone) to 1 (the reader alone)."""
    return [round(float(w), 6) for w in np.linspace(0.0, 1.0, steps)]


def tune_on_questions(
    reader: Reader,
    pool: PassageIndex,
    questions: Sequence[str],
    gold: Sequence[Sequence[str]],
    ks: Sequence[int],
    weights: Sequence[float],
) -> tuple[int, float, float]:
    """choose_settings on these (train) questions answered from `pool`: each question's top max(ks)
    passages read once. Returns (k, weight, F1)."""
    reads = read_passages(reader, pool, questions, max(ks))
    _, f1 = answer_scores(reads, gold)
    return choose_settings(reads, f1, ks, weights)
