"""Retrieve, then read, on real SQuAD v1.1: an export (models/export, or benchmarks/int8.py
--keep-export's) answering the first N dev questions from a BM25 index of every dev paragraph
(and, with --pool dev+train, of every train paragraph too), beside reading the gold paragraph.

    python benchmarks/retrieval.py --export DIR [--engine int8] [--questions 2000] [--pool dev]

Steps, as the index, tune_retrieval and evaluate_open stages take them (pipeline.qa.retrieval,
the same code): k and the weight chosen on --tune-questions train questions (from #--tune-from:
0 as tune_retrieval, 8000 for questions the quality benchmark's model never trained on) over the
train paragraphs (tune_on_questions); the pool's index (its build time); every dev question's
top 20 passages (answer recall at 1/5/10/20) and its top 10 read (EM/F1 end to end at k = 1, 5,
10 and the chosen k) beside isolated EM/F1 (the gold paragraph read by the same engine); latency:
the first --latency-questions questions one at a time (retrieval + reading at the chosen k,
qa.retrieval.answer_open), for every engine the export has, side by side in this run.
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
from pipeline.qa.analysis import question_scores  # noqa: E402
from pipeline.qa.exported import ExportedQA  # noqa: E402
from pipeline.qa.predictions import passage_reader  # noqa: E402
from pipeline.qa.retrieval import DEFAULT_BM25, PassageIndex, documents_from_records  # noqa: E402
from pipeline.qa.open_domain import (  # noqa: E402
    answer_in_passages,
    answer_open,
    answer_scores,
    integrated_scores,
    read_passages,
    recall_at,
    tune_on_questions,
    weight_grid,
)
from pipeline.qa.serving import INT8_DIR  # noqa: E402
from pipeline.qa.squad import read_squad_json  # noqa: E402

from machine import describe_machine  # noqa: E402

# What each section times of the pipeline's own code (tests/stages/test_benchmarks_time_production_code.py).
TIMED_PRODUCTION_CODE = {
    "index": ("build_index", ("pipeline.qa.retrieval.PassageIndex.build",)),
    "reading": ("read_top", ("pipeline.qa.open_domain.read_passages",)),
    "tuning": ("tune", ("pipeline.qa.open_domain.tune_on_questions",)),
    "latency": ("latency", ("pipeline.qa.open_domain.answer_open",)),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_index(records: list[dict], qa: ExportedQA, source: str) -> tuple[PassageIndex, float]:
    documents, tokenizer, windows = documents_from_records(records), qa.tokenizer, qa.windows
    started = time.perf_counter()
    index = PassageIndex.build(documents, tokenizer, windows, DEFAULT_BM25, source)
    return index, time.perf_counter() - started


def read_top(reader, index: PassageIndex, questions: list[str], k: int):
    started = time.perf_counter()
    reads = read_passages(reader, index, questions, k)
    return reads, time.perf_counter() - started


def reader_of(qa: ExportedQA):
    return passage_reader(qa.logits, qa.tokenizer, qa.windows, tuple(qa.settings["signature_inputs"]), 20, 30)


def tune(reader, pool: PassageIndex, questions: list[dict], ks: list[int]) -> tuple[int, float, float, float]:
    texts, gold = [r["question"] for r in questions], [r["answers"]["text"] for r in questions]
    weights = weight_grid(21)
    started = time.perf_counter()
    k, weight, f1 = tune_on_questions(reader, pool, texts, gold, ks, weights)
    return k, weight, f1, time.perf_counter() - started


def latency(reader, index: PassageIndex, questions: list[str], k: int, weight: float) -> dict:
    answer_open(reader, index, questions[:1], k, weight)  # warm-up
    times = []
    for question in questions:
        started = time.perf_counter()
        answer_open(reader, index, [question], k, weight)
        times.append(1000.0 * (time.perf_counter() - started))
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)), "questions": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=Path, required=True, help="a model export (models/export)")
    parser.add_argument(
        "--engine", default="float32", choices=("float32", "int8"), help="the engine of the EM/F1 figures"
    )
    parser.add_argument("--squad-dir", type=Path, default=ROOT.parent / "shared/data/squad-v1.1")
    parser.add_argument("--questions", type=int, default=2000, help="the first N dev questions")
    parser.add_argument("--tune-questions", type=int, default=200, help="train questions k and weight are chosen on")
    parser.add_argument(
        "--tune-from",
        type=int,
        default=0,
        help="the first of them (0: as tune_retrieval; 8000: the quality benchmark's held-out train questions)",
    )
    parser.add_argument("--k-choices", default="1,3,5", help="the k the choice is among")
    parser.add_argument("--pool", default="dev", choices=("dev", "dev+train"), help="the paragraphs searched")
    parser.add_argument("--latency-questions", type=int, default=100)
    args = parser.parse_args()

    qa = ExportedQA(args.export, args.engine)
    reader = reader_of(qa)
    dev = read_squad_json(args.squad_dir / "dev-v1.1.json.gz")
    train = read_squad_json(args.squad_dir / "train-v1.1.reconstructed.json.gz")

    train_index, _ = build_index(train, qa, "train")
    k_choices = [int(k) for k in args.k_choices.split(",")]
    k, weight, tune_f1, tune_seconds = tune(
        reader, train_index, train[args.tune_from : args.tune_from + args.tune_questions], k_choices
    )
    log(
        f"chose k={k}, weight={weight} on {args.tune_questions} train questions from #{args.tune_from} "
        f"(F1 {tune_f1:.2f}, {tune_seconds:.0f} s)"
    )

    pool = dev + (train if args.pool == "dev+train" else [])
    index, index_seconds = build_index(pool, qa, args.pool)
    log(f"index: {index.meta['passages']} passages of {index.meta['documents']} paragraphs in {index_seconds:.2f} s")
    questions = dev[: args.questions]
    texts, gold = [r["question"] for r in questions], [r["answers"]["text"] for r in questions]
    started = time.perf_counter()
    ranked, _ = index.search(texts, 20)
    search_ms = 1000.0 * (time.perf_counter() - started) / len(texts)
    recall = recall_at(answer_in_passages(ranked, index, gold), (1, 5, 10, 20))
    log(f"recall@1/5/10/20: {[round(v, 3) for v in recall.values()]}; reading the top {max(10, k)} ...")
    reads, read_seconds = read_top(reader, index, texts, max(10, k))
    exact, f1 = answer_scores(reads, gold)
    integrated = {kk: integrated_scores(reads, exact, f1, kk, weight) for kk in sorted({1, 5, 10, k})}
    answers = qa.answer_many(texts, [r["context"] for r in questions], 20, 30, batch_size=64)
    references = [{"id": str(i), "answers": r["answers"]} for i, r in enumerate(questions)]
    iso_exact, iso_f1 = question_scores(
        {str(i): a["answer"] for i, a in enumerate(answers)}, references, version_2_with_negative=False
    )
    isolated = {"exact_match": float(iso_exact.mean()), "f1": float(iso_f1.mean())}
    engines = ["float32", "int8"] if (args.export / INT8_DIR).is_dir() else ["float32"]
    lat = {}
    for engine in engines:
        engine_reader = reader if engine == args.engine else reader_of(ExportedQA(args.export, engine))
        lat[engine] = latency(engine_reader, index, texts[: args.latency_questions], k, weight)
        log(f"latency {engine}: p50 {lat[engine]['p50']:.0f} ms, p95 {lat[engine]['p95']:.0f} ms")
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "command": " ".join(sys.argv),
        "export": str(args.export),
        "engine": args.engine,
        "pool": args.pool,
        "passages": index.meta["passages"],
        "paragraphs": index.meta["documents"],
        "index_seconds": index_seconds,
        "search_ms_per_question": search_ms,
        "questions": len(texts),
        "chosen": {
            "k": k,
            "weight": weight,
            "tune_questions": args.tune_questions,
            "tune_from": args.tune_from,
            "tune_f1": tune_f1,
        },
        "recall": {f"at_{kk}": v for kk, v in recall.items()},
        "integrated": {f"at_{kk}": v for kk, v in integrated.items()},
        "integrated_chosen": integrated[k],
        "isolated": isolated,
        "integrated_share_of_isolated": integrated[k]["f1"] / isolated["f1"],
        "reading_passages_per_second": reads.passage.size / read_seconds,
        "latency_ms": lat,
    }
    out = ROOT / "benchmarks/results" / f"retrieval-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))
    print(
        f"integrated at k={k}: F1 {integrated[k]['f1']:.2f} = {result['integrated_share_of_isolated']:.1%} of isolated"
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
