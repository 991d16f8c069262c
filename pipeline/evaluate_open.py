"""Stage evaluate_open (open/dvc.yaml, `make repro-open`): models/trained/ reading from models/index/
-> metrics/open.json, plots/open/. Retrieve, then read, measured beside reading the gold paragraph.

    python -m pipeline.evaluate_open [--params params.yaml]

A pipeline file of its own, so `dvc repro` / `dvc exp run` (and `make repro`) skip it: reading the
top 10 passages of every validation question costs ten evaluations. `dvc repro open/dvc.yaml`
runs it and whatever it needs.

1. k and the weight w of (1 - w) * BM25 + w * reader score: the tune_retrieval stage's choice,
   made on train questions (models/retrieval.json), never on validation questions.
2. Answer every validation question with an answer (SQuAD v2.0's unanswerable ones are left
   out) from models/index: answer-in-top-k recall for k = 1, 5, 10, 20 (a gold answer's text is
   in one of the top k passages), EM/F1 end to end ("integrated") for k = 1, 5, 10 and the
   chosen k, and EM/F1 from the gold paragraph ("isolated": the reader's ceiling: the evaluate
   stage's answers in predictions/, scored on the same questions, so equal to metrics/eval.json
   for SQuAD v1.1).
3. Latency: the first retrieve.latency_questions questions answered one at a time (retrieval +
   reading at the chosen k), p50 and p95 in ms.

metrics/open.json and plots/open/ (recall and integrated F1 per k) are DVC metrics and plots;
the figures are logged to the training run in MLflow as open.* metrics, with metrics/open.json
and the index's record (models/index/index.json) as artifacts.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.analysis import question_scores
from pipeline.qa.modeling import read_windows
from pipeline.qa.predictions import PREDICTIONS_FILE, LoadedModel
from pipeline.qa.squad import answerable, load_saved
from pipeline.qa.retrieval import META_FILE, PassageIndex
from pipeline.qa.open_domain import (
    answer_in_passages,
    answer_open,
    answer_scores,
    integrated_scores,
    read_passages,
    recall_at,
)
from pipeline.runtime import tracking
from pipeline.runtime.config import PipelineConfig, TokenizeConfig, stage_config
from pipeline.runtime.errors import PipelineError, stage_entry_point
from pipeline.runtime.files import read_json, write_csv, write_json
from pipeline.runtime.lineage import check_model_windows
from pipeline.runtime.paths import (
    INDEX_DIR,
    OPEN_F1_PLOT_FILE,
    OPEN_METRICS_FILE,
    PREDICTIONS_DIR,
    RAW_DIR,
    RECALL_PLOT_FILE,
    RETRIEVAL_FILE,
    TRAINED_DIR,
    require_output,
)

RECALL_K = (1, 5, 10, 20)
INTEGRATED_K = (1, 5, 10)


def evaluate_open(cfg: PipelineConfig) -> dict[str, Any]:
    index, loaded, windows = load_inputs(cfg)
    tracking.check_server(tracking.tracking_uri())  # a down server stops us before any work
    ev = cfg.evaluate
    reader = loaded.reader(windows, ev.n_best, ev.max_answer_length, ev.batch_size)
    chosen = read_json(RETRIEVAL_FILE)
    k, weight = int(chosen["k"]), float(chosen["weight"])
    questions = answerable(load_saved(RAW_DIR)["validation"])
    if questions.num_rows == 0:
        raise PipelineError(f"{RAW_DIR}: the validation split has no answerable question to retrieve for")
    texts, gold = list(questions["question"]), [list(a["text"]) for a in questions["answers"]]

    read_k = max(max(INTEGRATED_K), k)
    searched = index.search(texts, max(*RECALL_K, read_k))  # once: recall, then the passages read
    recall = recall_at(answer_in_passages(searched[0], index, gold), range(1, max(RECALL_K) + 1))
    reads = read_passages(reader, index, texts, read_k, searched=searched)
    exact, f1 = answer_scores(reads, gold)
    integrated = {kk: integrated_scores(reads, exact, f1, kk, weight) for kk in sorted({*INTEGRATED_K, k})}
    isolated = isolated_scores(cfg, questions)
    latency = latency_ms(reader, index, texts[: cfg.retrieve.latency_questions], k, weight)

    metrics = {
        "questions": len(texts),
        "passages": index.meta["passages"],
        "documents": index.meta["documents"],
        "chosen": {"k": k, "weight": weight, "tune_questions": chosen["tune_questions"], "tune_f1": chosen["tune_f1"]},
        "recall": {f"at_{kk}": recall[kk] for kk in RECALL_K},
        "integrated": {f"at_{kk}": integrated[kk] for kk in INTEGRATED_K},
        "integrated_chosen": integrated[k],
        "isolated": isolated,
        "integrated_share_of_isolated": integrated[k]["f1"] / isolated["f1"] if isolated["f1"] else 0.0,
        "latency_ms": latency,
    }
    write_json(OPEN_METRICS_FILE, metrics)
    write_csv(RECALL_PLOT_FILE, [{"k": kk, "recall": recall[kk]} for kk in sorted(recall)])
    write_csv(OPEN_F1_PLOT_FILE, [{"k": kk, "f1": integrated[kk]["f1"]} for kk in sorted(integrated)])
    log_open(cfg, metrics)
    return metrics


def load_inputs(cfg: PipelineConfig) -> tuple[PassageIndex, LoadedModel, TokenizeConfig]:
    """The index and the trained reader, checked against each other and params.yaml."""
    require_output(TRAINED_DIR, "config.json", "trained model")
    require_output(PREDICTIONS_DIR, PREDICTIONS_FILE, "predictions")
    require_output(RAW_DIR, "dataset_dict.json", "saved dataset")
    require_output(RETRIEVAL_FILE, None, "choice of k and weight")
    index = PassageIndex.load(INDEX_DIR)
    check_model_windows(read_windows(TRAINED_DIR) or {}, cfg, TRAINED_DIR)
    loaded = LoadedModel.load(TRAINED_DIR, cfg.evaluate.precision)
    index.check_reader(loaded.tokenizer, cfg.tokenize, str(INDEX_DIR))
    return index, loaded, cfg.tokenize


def isolated_scores(cfg: PipelineConfig, questions) -> dict[str, float]:
    """EM and F1 reading each question's own paragraph: the evaluate stage's answers (predictions/)."""
    answers = read_json(PREDICTIONS_DIR / PREDICTIONS_FILE)
    missing = [i for i in questions["id"] if i not in answers]
    if missing:
        raise PipelineError(
            f"{PREDICTIONS_DIR / PREDICTIONS_FILE}: no answer for validation question {missing[0]!r}; "
            "run `dvc repro evaluate`"
        )
    references = [{"id": i, "answers": a} for i, a in zip(questions["id"], questions["answers"])]
    exact, f1 = question_scores(answers, references, cfg.data.version_2_with_negative)
    return {"exact_match": float(exact.mean()), "f1": float(f1.mean())}


def latency_ms(reader, index: PassageIndex, questions: list[str], k: int, weight: float) -> dict[str, float]:
    """Retrieval + reading, one question at a time (after one warm-up question)."""
    answer_open(reader, index, questions[:1], k, weight)
    times = []
    for question in questions:
        started = time.perf_counter()
        answer_open(reader, index, [question], k, weight)
        times.append(1000.0 * (time.perf_counter() - started))
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)), "questions": len(times)}


def log_open(cfg: PipelineConfig, metrics: dict[str, Any]) -> None:
    """open.* metrics, metrics/open.json and the index record on the training run."""
    run_file = TRAINED_DIR / tracking.RUN_FILE_NAME
    if not run_file.is_file():
        return
    client, _ = tracking.client_for(cfg.mlflow.experiment_name)
    run_id = read_json(run_file)["run_id"]
    if tracking.find_run(client, run_id) is None:
        print(f"note: MLflow run {run_id} is not in {tracking.tracking_uri()}; open-domain metrics not logged")
        return
    flat = {
        f"open.{name}": float(value)
        for name, value in tracking.flatten_dict(metrics).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    tracking.log_metrics(client, run_id, flat)
    client.log_artifact(run_id, str(OPEN_METRICS_FILE), "evaluation")
    client.log_artifact(run_id, str(INDEX_DIR / META_FILE), "evaluation/index")


@stage_entry_point
def main() -> None:
    cfg, _ = stage_config(__doc__)
    m = evaluate_open(cfg)
    chosen, at = m["chosen"], m["integrated_chosen"]
    print(
        f"open: recall@5 {m['recall']['at_5']:.3f}; k={chosen['k']} w={chosen['weight']}: "
        f"EM {at['exact_match']:.2f} F1 {at['f1']:.2f} (isolated F1 {m['isolated']['f1']:.2f}); "
        f"p50 {m['latency_ms']['p50']:.0f} ms, p95 {m['latency_ms']['p95']:.0f} ms per question"
    )


if __name__ == "__main__":
    main()
