"""Exploratory (docs/retrieval.md, "Training the reader on retrieved passages"), not a benchmark:
fine-tune a trained model briefly on train questions with their gold paragraph (span labels) plus
NEG retrieved train passages without the answer (no-answer labels, the [CLS] token), then measure
retrieve-then-read on the first N_DEV dev questions (dev pool, k = 5, w chosen on the first 200
train questions) and isolated F1 on the same questions.

    python docs/experiments/retrieval_negatives.py MODEL_DIR N_TRAIN N_DEV NEG OUT.json

As run on 2026-12-04: MODEL_DIR = the quality benchmark's model, 1500 1000 1. The "before" figures
of docs/retrieval.md came from the same model's int8 export reading the same questions.
"""

import sys
import time
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
# ruff: noqa: E402  (the project on sys.path first)
import pipeline  # noqa
import tensorflow as tf
from pipeline.qa.modeling import load_qa_model, load_tokenizer
from pipeline.qa.features import prepare_train_features
from pipeline.qa.inference import keras_logits_fn
from pipeline.qa.predictions import passage_reader
from pipeline.qa.retrieval import DEFAULT_BM25, PassageIndex, documents_from_records
from pipeline.qa.open_domain import read_passages, answer_scores, integrated_scores, tune_on_questions, weight_grid
from pipeline.qa.analysis import question_scores
from pipeline.qa.squad import read_squad_json
from pipeline.runtime.config import TokenizeConfig

MODEL = sys.argv[1]
N_TRAIN, N_DEV, NEG = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
W = TokenizeConfig(max_length=384, stride=128, warn_windows=None, max_windows=None)
sq = str(ROOT.parent / "shared/data/squad-v1.1") + "/"
train = read_squad_json(sq + "train-v1.1.reconstructed.json.gz")
dev = read_squad_json(sq + "dev-v1.1.json.gz")
tok = load_tokenizer(MODEL)
model = load_qa_model(MODEL)
t0 = time.time()
pool = PassageIndex.build(documents_from_records(train), tok, W, DEFAULT_BM25, "train")
rng = random.Random(0)
qs = train[2000 : 2000 + N_TRAIN]
ranked, _ = pool.search([q["question"] for q in qs], 10)
ex = {"id": [], "question": [], "context": [], "answers": []}
for q, row in zip(qs, ranked):
    ex["id"].append(q["id"])
    ex["question"].append(q["question"])
    ex["context"].append(q["context"])
    ex["answers"].append(q["answers"])
    negs = [p for p in row if not any(a in pool.passages[p].text for a in q["answers"]["text"])][:NEG]
    for p in negs:
        ex["id"].append(q["id"] + "-neg")
        ex["question"].append(q["question"])
        ex["context"].append(pool.passages[p].text)
        ex["answers"].append({"text": [], "answer_start": []})
f = prepare_train_features(ex, tok, W)
n = len(f["input_ids"])
print("features", n, "negatives", sum(1 for i in ex["id"] if i.endswith("-neg")), flush=True)
order = sorted(range(n), key=lambda i: len(f["input_ids"][i]))
batches = [order[i : i + 16] for i in range(0, n, 16)]
rng.shuffle(batches)
opt = tf.keras.optimizers.Adam(2e-5)
names = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in f]


@tf.function(reduce_retracing=True)
def step(inputs, sp, ep):
    with tf.GradientTape() as tape:
        out = model(inputs, training=True)
        l1 = tf.keras.losses.sparse_categorical_crossentropy(sp, out.start_logits, from_logits=True)
        l2 = tf.keras.losses.sparse_categorical_crossentropy(ep, out.end_logits, from_logits=True)
        loss = tf.reduce_mean(l1 + l2) / 2
    g = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(g, model.trainable_variables))
    return loss


t1 = time.time()
for bi, b in enumerate(batches):
    width = max(len(f["input_ids"][i]) for i in b)
    inputs = {k: tf.constant([f[k][i] + [0] * (width - len(f[k][i])) for i in b]) for k in names}
    loss = step(
        inputs, tf.constant([f["start_positions"][i] for i in b]), tf.constant([f["end_positions"][i] for i in b])
    )
    if bi % 20 == 0:
        print(bi, len(batches), float(loss), round(time.time() - t1), flush=True)
print("trained", round(time.time() - t1), "s", flush=True)
reader = passage_reader(keras_logits_fn(model), tok, W, tuple(names), 20, 30, 64)
tune_q = train[:200]
k, w, tf1 = tune_on_questions(
    reader, pool, [q["question"] for q in tune_q], [q["answers"]["text"] for q in tune_q], [5], weight_grid(21)
)
print("tuned w", w, tf1, flush=True)
devpool = PassageIndex.build(documents_from_records(dev), tok, W, DEFAULT_BM25, "dev")
dq = dev[:N_DEV]
texts, gold = [q["question"] for q in dq], [q["answers"]["text"] for q in dq]
reads = read_passages(reader, devpool, texts, 5)
exact, f1 = answer_scores(reads, gold)
res = {
    "w_tuned": w,
    "integrated_tuned": integrated_scores(reads, exact, f1, 5, w),
    "integrated_oracle_w": max(integrated_scores(reads, exact, f1, 5, ww)["f1"] for ww in weight_grid(21)),
}
from pipeline.qa.predictions import answer_questions

ans = answer_questions(
    keras_logits_fn(model), tok, texts, [q["context"] for q in dq], W, tuple(names), 20, 30, False, 0.0, batch_size=64
)
e, ff = question_scores(
    {str(i): a["answer"] for i, a in enumerate(ans)},
    [{"id": str(i), "answers": q["answers"]} for i, q in enumerate(dq)],
    False,
)
res["isolated"] = {"exact_match": float(e.mean()), "f1": float(ff.mean())}
res["share"] = res["integrated_tuned"]["f1"] / res["isolated"]["f1"]
print(json.dumps(res, indent=1))
json.dump(res, open(sys.argv[5], "w"), indent=1)
