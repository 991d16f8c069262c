"""Retrieve, then read, on real SQuAD v1.1: an export (models/export, or benchmarks/int8.py
--keep-export's) answering the first N dev questions from a BM25 index of every dev paragraph
(and, with --pool dev+train, of every train paragraph too), beside reading the gold paragraph.

    python benchmarks/retrieval.py --export models/export [--engine float32] [--questions 2000]

Steps, as the index and evaluate_open stages take them (pipeline.qa.retrieval, the same code):
the index (its build time); k and the weight chosen on the first --tune-questions train
questions over the train paragraphs; every dev question's top 20 passages (answer recall at
1/5/10/20) and its top 10 read (EM/F1 end to end at k = 1, 5, 10 and the chosen k, and
isolated: the gold paragraph); latency: the first --latency-questions questions one at a time
(retrieval + reading at the chosen k, ExportedQA.answer_open: what the served model runs).
Prints a summary and writes JSON to benchmarks/results/retrieval-*.json with the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.exported import ExportedQA  # noqa: E402
from pipeline.qa.predictions import passage_reader  # noqa: E402
from pipeline.qa.retrieval import (  # noqa: E402
    DEFAULT_BM25,
    PassageIndex,
    answer_in_passages,
    answer_scores,
    choose_settings,
    documents_from_records,
    integrated_scores,
    read_passages,
    recall_at,
)
from pipeline.qa.squad import read_squad_json  # noqa: E402

from machine import describe_machine  # noqa: E402

# What each section times of the pipeline's own code (tests/stages/test_benchmarks_time_production_code.py).
TIMED_PRODUCTION_CODE = {
    "index": ("build_index", ("pipeline.qa.retrieval.PassageIndex.build",)),
    "reading": ("read_top", ("pipeline.qa.retrieval.read_passages",)),
    "latency": ("latency", ("pipeline.qa.exported.ExportedQA.answer_open",)),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_index(records: list[dict], qa: ExportedQA, source: str) -> tuple[PassageIndex, float]:
    documents = documents_from_records(records)
    started = time.perf_counter()
    index = PassageIndex.build(documents, qa.tokenizer, qa.windows, DEFAULT_BM25, source)
    return index, time.perf_counter() - started


def read_top(reader, index: PassageIndex, questions: list[str], k: int):
    started = time.perf_counter()
    reads = read_passages(reader, index, questions, k)
    return reads, time.perf_counter() - started


def latency(qa: ExportedQA, index: PassageIndex, questions: list[str], k: int, weight: float) -> dict:
    qa.answer_open(index, questions[:1], k, weight, 20, 30)  # warm-up
    times = []
    for question in questions:
        started = time.perf_counter()
        qa.answer_open(index, [question], k, weight, 20, 30)
        times.append(1000.0 * (time.perf_counter() - started))
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)), "questions": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=Path, required=True, help="a model export (models/export)")
    parser.add_argument("--engine", default="float32", choices=("float32", "int8"))
    parser.add_argument("--squad-dir", type=Path, default=ROOT.parent / "shared/data/squad-v1.1")
    parser.add_argument("--questions", type=int, default=2000, help="the first N dev questions")
    parser.add_argument("--tune-questions", type=int, default=300, help="train questions k and weight are chosen on")
    parser.add_argument("--k-choices", default="1,3,5", help="the k the choice is among")
    parser.add_argument("--pool", default="dev", choices=("dev", "dev+train"), help="the paragraphs searched")
    parser.add_argument("--latency-questions", type=int, default=100)
    args = parser.parse_args()

    qa = ExportedQA(args.export, args.engine)
    reader = passage_reader(qa.logits, qa.tokenizer, qa.windows, tuple(qa.settings["signature_inputs"]), 20, 30)
    dev = read_squad_json(args.squad_dir / "dev-v1.1.json.gz")
    train = read_squad_json(args.squad_dir / "train-v1.1.reconstructed.json.gz")

    # k and weight, on train questions over the train paragraphs
    train_index, _ = build_index(train, qa, "train")
    tune = train[: args.tune_questions]
    k_choices = [int(k) for k in args.k_choices.split(",")]
    tune_reads, _ = read_top(reader, train_index, [r["question"] for r in tune], max(k_choices))
    _, tune_f1 = answer_scores(tune_reads, [r["answers"]["text"] for r in tune])
    k, weight, tune_score = choose_settings(
        tune_reads, tune_f1, k_choices, [round(w, 2) for w in np.linspace(0, 1, 21)]
    )
    log(f"chose k={k}, weight={weight} on {len(tune)} train questions (F1 {tune_score:.2f})")

    pool = dev + (train if args.pool == "dev+train" else [])
    index, index_seconds = build_index(pool, qa, args.pool)
    log(f"index: {index.meta['passages']} passages of {index.meta['documents']} paragraphs in {index_seconds:.2f} s")
    questions = dev[: args.questions]
    texts, gold = [r["question"] for r in questions], [r["answers"]["text"] for r in questions]
    ranked, _ = index.search(texts, 20)
    recall = recall_at(answer_in_passages(ranked, index, gold), (1, 5, 10, 20))
    reads, read_seconds = read_top(reader, index, texts, max(10, k))
    exact, f1 = answer_scores(reads, gold)
    integrated = {kk: integrated_scores(reads, exact, f1, kk, weight) for kk in sorted({1, 5, 10, k})}
    isolated_answers = qa.answer_many(texts, [r["context"] for r in questions], 20, 30, batch_size=64)
    from pipeline.qa.metrics import metric_module

    metric = metric_module("squad")
    isolated = {
        "exact_match": 100
        * float(
            np.mean(
                [
                    metric.best_over_ground_truths(metric.exact_match_score, a["answer"], g)
                    for a, g in zip(isolated_answers, gold)
                ]
            )
        ),
        "f1": 100
        * float(
            np.mean(
                [
                    metric.best_over_ground_truths(metric.f1_score, a["answer"], g)
                    for a, g in zip(isolated_answers, gold)
                ]
            )
        ),
    }
    lat = latency(qa, index, texts[: args.latency_questions], k, weight)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "export": str(args.export),
        "engine": args.engine,
        "pool": args.pool,
        "passages": index.meta["passages"],
        "paragraphs": index.meta["documents"],
        "index_seconds": index_seconds,
        "questions": len(texts),
        "chosen": {"k": k, "weight": weight, "tune_questions": len(tune), "tune_f1": tune_score},
        "recall": {f"at_{kk}": v for kk, v in recall.items()},
        "integrated": {f"at_{kk}": v for kk, v in integrated.items()},
        "isolated": isolated,
        "integrated_share_of_isolated": integrated[k]["f1"] / isolated["f1"],
        "reading_windows_per_second": reads.passage.size / read_seconds,
        "latency_ms": lat,
    }
    out = ROOT / "benchmarks/results" / f"retrieval-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("integrated",)}, indent=1))
    print(
        f"integrated at k={k}: F1 {integrated[k]['f1']:.2f} = {result['integrated_share_of_isolated']:.1%} of isolated"
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
