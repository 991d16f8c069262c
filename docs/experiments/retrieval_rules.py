"""Exploratory (docs/retrieval.md, "Choosing among the passages: rules tried on the negatives
model"), not a benchmark: read the top 10 passages of N_TUNE train questions from #8,000 (which the
quality benchmark's model never trained on; train pool) and of the first N_DEV dev questions (dev
pool) once with an export's engine, then choose each scoring rule's settings on the train questions
and score them on the dev questions:

- the shipped rule, (1 - w) * BM25 + w * (span - null), w on a grid of 21, k = 5 and 10;
- (1 - w) * BM25 + w * (span - a * null), (a, w) on a 7 x 21 grid;
- a logistic regression over per-passage features (BM25, BM25 minus the question's top BM25, span
  score, null score, ...; label: the passage's answer has F1 > 50), the argmax of its score.

    python docs/experiments/retrieval_rules.py EXPORT_DIR int8 N_TUNE N_DEV OUT.json

As run on 2026-12-04: the quality benchmark's model trained with retrieve.train_negatives=1 (its
int8 export), 1000 2000.
"""

import json
import re
import string
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
# ruff: noqa: E402  (the project on sys.path first)
import pipeline  # noqa: F401
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from machine import describe_machine
from pipeline.qa.analysis import question_scores
from pipeline.qa.exported import ExportedQA
from pipeline.qa.open_domain import answer_scores, read_passages
from pipeline.qa.predictions import passage_reader
from pipeline.qa.retrieval import DEFAULT_BM25, PassageIndex, documents_from_records
from pipeline.qa.squad import read_squad_json

export, engine, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[5])
n_tune, n_dev = int(sys.argv[3]), int(sys.argv[4])
squad = ROOT.parent / "shared/data/squad-v1.1"
qa = ExportedQA(export, engine)
reader = passage_reader(qa.logits, qa.tokenizer, qa.windows, tuple(qa.settings["signature_inputs"]), 20, 30)
dev = read_squad_json(squad / "dev-v1.1.json.gz")
train = read_squad_json(squad / "train-v1.1.reconstructed.json.gz")


def normalize(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def read(records, pool_records, source):
    pool = PassageIndex.build(documents_from_records(pool_records), qa.tokenizer, qa.windows, DEFAULT_BM25, source)
    gold = [r["answers"]["text"] for r in records]
    reads = read_passages(reader, pool, [r["question"] for r in records], 10)
    _, f1 = answer_scores(reads, gold)
    span = np.array([[-30.0 if a.get("score") is None else a["score"] for a in row] for row in reads.answers])
    margin = np.array([[-30.0 if a.get("null_odds") is None else -a["null_odds"] for a in row] for row in reads.answers])
    texts = [[normalize(a["answer"]) for a in row] for row in reads.answers]
    return {"bm25": reads.bm25, "span": span, "null": span - margin, "margin": margin, "f1": f1, "texts": texts}


tune = read(train[8000 : 8000 + n_tune], train, "train")
questions = dev[:n_dev]
devset = read(questions, dev, "dev")
answers = qa.answer_many([r["question"] for r in questions], [r["context"] for r in questions], 20, 30, batch_size=64)
_, iso_f1 = question_scores(
    {str(i): a["answer"] for i, a in enumerate(answers)},
    [{"id": str(i), "answers": r["answers"]} for i, r in enumerate(questions)],
    False,
)
isolated = float(iso_f1.mean())


def f1_of(d, scores):
    best = np.argmax(scores, axis=1)
    return float(d["f1"][np.arange(len(best)), best].mean())


def features(d, k, names):
    n, bm25 = len(d["f1"]), d["bm25"][:, :k]
    columns = {
        "bm25": bm25,
        "bm25_gap": bm25 - bm25[:, :1],
        "span": d["span"][:, :k],
        "null": d["null"][:, :k],
        "margin_gap": d["margin"][:, :k] - d["margin"][:, :k].max(1, keepdims=True),
        "votes": np.array([[sum(t == row[r] for t in row[:k]) for r in range(k)] for row in d["texts"]], float),
    }
    return np.stack([columns[c] for c in names], -1).reshape(n * k, len(names))


results = {"isolated_f1": isolated, "rules": []}
for k in (5, 10):
    grid = [(a, w) for a in np.linspace(0, 1.5, 7) for w in np.linspace(0, 1, 21)]

    def rule(d, a, w):
        return (1 - w) * d["bm25"][:, :k] + w * (d["span"][:, :k] - a * d["null"][:, :k])

    for name, choices in (("shipped: BM25 + (span - null)", [(1.0, w) for w in np.linspace(0, 1, 21)]), ("BM25 + span - a * null", grid)):
        tuned, a, w = max((f1_of(tune, rule(tune, a, w)), a, w) for a, w in choices)
        dev_f1 = f1_of(devset, rule(devset, a, w))
        results["rules"].append({"rule": name, "k": k, "a": a, "w": w, "tune_f1": tuned, "dev_f1": dev_f1, "share": dev_f1 / isolated})
    for names in (["bm25", "span", "null"], ["bm25", "bm25_gap", "span", "null"], ["bm25", "bm25_gap", "span", "null", "margin_gap", "votes"]):
        x = features(tune, k, names)
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(x), (tune["f1"][:, :k] > 50).reshape(-1))
        tuned = f1_of(tune, model.decision_function(scaler.transform(x)).reshape(-1, k))
        dev_f1 = f1_of(devset, model.decision_function(scaler.transform(features(devset, k, names))).reshape(-1, k))
        results["rules"].append({"rule": "logistic: " + " + ".join(names), "k": k, "tune_f1": tuned, "dev_f1": dev_f1, "share": dev_f1 / isolated})
for row in results["rules"]:
    print(f"k={row['k']:>2} {row['rule']:<60} tune F1 {row['tune_f1']:.2f}  dev F1 {row['dev_f1']:.2f}  {row['share']:.1%}")
results.update({"date": "2026-12-04", "machine": describe_machine(), "command": " ".join(sys.argv)})
out.write_text(json.dumps(results, indent=1) + "\n")
