"""Exploratory (docs/retrieval.md, "Shared normalization"), not a benchmark: fine-tune a trained
model briefly on groups of passages per train question (its gold paragraph's windows with span
labels plus NEG retrieved train passages without the answer, labelled [CLS]), with the per-feature
loss plus a loss that normalizes the span scores over the whole group (Clark & Gardner 2018:
one softmax over the start (end) logits of every context token of every passage of the question),
so that span scores become comparable across passages. Then retrieve-then-read on the first N_DEV
dev questions (dev pool, k = 5) with two reader scores - span minus null (the shipped rule) and the
raw span score - each with its weight chosen on train questions #0-199, and isolated F1.

    python docs/experiments/retrieval_sharednorm.py MODEL_DIR N_TRAIN N_DEV NEG SHARED OUT.json

SHARED: the weight of the group loss (0 = the plain recipe of retrieval_negatives.py, grouped batches).
"""

import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
# ruff: noqa: E402  (the project on sys.path first)
import numpy as np
import pipeline  # noqa
import tensorflow as tf
from pipeline.qa.analysis import question_scores
from pipeline.qa.features import prepare_train_features
from pipeline.qa.inference import keras_logits_fn
from pipeline.qa.modeling import load_qa_model, load_tokenizer
from pipeline.qa.open_domain import answer_scores, choose_settings, integrated_scores, read_passages, weight_grid
from pipeline.qa.predictions import answer_questions, passage_reader
from pipeline.qa.retrieval import DEFAULT_BM25, PassageIndex, documents_from_records
from pipeline.qa.squad import read_squad_json
from pipeline.runtime.config import TokenizeConfig

MODEL = sys.argv[1]
N_TRAIN, N_DEV, NEG, SHARED = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
OUT = sys.argv[6]
W = TokenizeConfig(max_length=384, stride=128, warn_windows=None, max_windows=None)
sq = str(ROOT.parent / "shared/data/squad-v1.1") + "/"
train = read_squad_json(sq + "train-v1.1.reconstructed.json.gz")
dev = read_squad_json(sq + "dev-v1.1.json.gz")
tok = load_tokenizer(MODEL)
model = load_qa_model(MODEL)
pool = PassageIndex.build(documents_from_records(train), tok, W, DEFAULT_BM25, "train")
rng = random.Random(0)
qs = train[2000 : 2000 + N_TRAIN]
ranked, _ = pool.search([q["question"] for q in qs], 10)
names = None
groups = []  # per question: list of feature dicts
for q, row in zip(qs, ranked):
    negs = [p for p in row if not any(a in pool.passages[p].text for a in q["answers"]["text"])][:NEG]
    ex = {
        "id": [q["id"]] + [q["id"] + "-neg"] * len(negs),
        "question": [q["question"]] * (1 + len(negs)),
        "context": [q["context"]] + [pool.passages[p].text for p in negs],
        "answers": [q["answers"]] + [{"text": [], "answer_start": []}] * len(negs),
    }
    f = prepare_train_features(ex, tok, W)
    names = names or [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in f]
    feats = [{k: f[k][i] for k in names + ["start_positions", "end_positions"]} for i in range(len(f["input_ids"]))]
    if any(ft["start_positions"] > 0 for ft in feats):
        groups.append(feats)
n = sum(len(g) for g in groups)
print("groups", len(groups), "features", n, flush=True)
rng.shuffle(groups)
PER_BATCH = 4
batches = [groups[i : i + PER_BATCH] for i in range(0, len(groups), PER_BATCH)]
opt = tf.keras.optimizers.Adam(2e-5)


def group_lse(logits, mask, seg, n_groups):
    """logsumexp over the masked positions of each group's features: [n_groups]."""
    neg = tf.fill(tf.shape(logits), -1e9)
    x = tf.where(mask, logits, neg)
    row_max = tf.reduce_max(x, axis=1)  # [B]
    gmax = tf.math.unsorted_segment_max(row_max, seg, n_groups)  # [G]
    rows = tf.reduce_sum(tf.exp(x - tf.gather(gmax, seg)[:, None]) * tf.cast(mask, x.dtype), axis=1)
    return tf.math.log(tf.math.unsorted_segment_sum(rows, seg, n_groups) + 1e-30) + gmax


@tf.function(reduce_retracing=True)
def step(inputs, sp, ep, seg, n_groups):
    with tf.GradientTape() as tape:
        out = model(inputs, training=True)
        s, e = tf.cast(out.start_logits, tf.float32), tf.cast(out.end_logits, tf.float32)
        per = tf.keras.losses.sparse_categorical_crossentropy(sp, s, from_logits=True)
        per += tf.keras.losses.sparse_categorical_crossentropy(ep, e, from_logits=True)
        loss = tf.reduce_mean(per) / 2
        if SHARED > 0:
            width = tf.shape(s)[1]
            ctx = tf.logical_and(inputs["attention_mask"] > 0, inputs["token_type_ids"] > 0)
            labelled = (sp > 0)[:, None]
            pos = tf.range(width)[None, :]
            ts = tf.logical_and(labelled, tf.equal(pos, sp[:, None]))
            te = tf.logical_and(labelled, tf.equal(pos, ep[:, None]))
            gl = group_lse(s, ctx, seg, n_groups) - group_lse(s, ts, seg, n_groups)
            gl += group_lse(e, ctx, seg, n_groups) - group_lse(e, te, seg, n_groups)
            loss += SHARED * tf.reduce_mean(gl) / 2
    g = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(g, model.trainable_variables))
    return loss


t1 = time.time()
for bi, b in enumerate(batches):
    feats = [ft for g in b for ft in g]
    seg = [gi for gi, g in enumerate(b) for _ in g]
    width = max(len(ft["input_ids"]) for ft in feats)
    inputs = {k: tf.constant([ft[k] + [0] * (width - len(ft[k])) for ft in feats]) for k in names}
    loss = step(
        inputs,
        tf.constant([ft["start_positions"] for ft in feats]),
        tf.constant([ft["end_positions"] for ft in feats]),
        tf.constant(seg),
        tf.constant(len(b)),
    )
    if bi % 25 == 0:
        print(bi, len(batches), float(loss), round(time.time() - t1), flush=True)
train_s = round(time.time() - t1)
print("trained", train_s, "s", flush=True)
logits_fn = keras_logits_fn(model)  # one traced forward for the passages and the isolated reads
reader = passage_reader(logits_fn, tok, W, tuple(names), 20, 30, 64)


def raw_span(reads):
    score = np.array([[-np.inf if a.get("score") is None else a["score"] for a in row] for row in reads.answers])
    return replace(reads, reader=score)


tune_q = train[:200]
treads = read_passages(reader, pool, [q["question"] for q in tune_q], 5)
_, tf1 = answer_scores(treads, [q["answers"]["text"] for q in tune_q])
rules = {"span_minus_null": lambda r: r, "raw_span": raw_span}
tuned = {name: choose_settings(fn(treads), tf1, [5], weight_grid(21)) for name, fn in rules.items()}
print("tuned", tuned, flush=True)
devpool = PassageIndex.build(documents_from_records(dev), tok, W, DEFAULT_BM25, "dev")
dq = dev[:N_DEV]
texts, gold = [q["question"] for q in dq], [q["answers"]["text"] for q in dq]
reads = read_passages(reader, devpool, texts, 5)
exact, f1 = answer_scores(reads, gold)
ans = answer_questions(
    logits_fn, tok, texts, [q["context"] for q in dq], W, tuple(names), 20, 30, False, 0.0, batch_size=64
)
e, ff = question_scores(
    {str(i): a["answer"] for i, a in enumerate(ans)},
    [{"id": str(i), "answers": q["answers"]} for i, q in enumerate(dq)],
    False,
)
res = {
    "args": sys.argv[1:],
    "features": n,
    "train_seconds": train_s,
    "isolated": {"exact_match": float(e.mean()), "f1": float(ff.mean())},
}
for name, fn in rules.items():
    _, w, train_f1 = tuned[name]
    integ = integrated_scores(fn(reads), exact, f1, 5, w)
    res[name] = {
        "w": w,
        "train_f1": train_f1,
        "integrated": integ,
        "share": integ["f1"] / res["isolated"]["f1"],
        "oracle_w_f1": max(integrated_scores(fn(reads), exact, f1, 5, ww)["f1"] for ww in weight_grid(21)),
    }
print(json.dumps(res, indent=1))
json.dump(res, open(OUT, "w"), indent=1)
