"""Serving benchmark: the MLflow model's batch predict vs transformers' QA pipeline, and the
served model over HTTP.

    make bench-serving        # or: python benchmarks/serving.py [--model models/export] [--max-questions 2000]

Same machine, same exported model (an export directory: models/export after `dvc repro`),
the first N SQuAD v1.1 dev questions from ../shared/data/squad-v1.1/. Prints a table and
writes JSON to benchmarks/results/serving-*.json.

| figure | what a user would use instead | ours |
|---|---|---|
| questions/s, batch (and F1 of both) | transformers' QA `pipeline`, same model and windows | pyfunc `predict()` |
| single-question latency p50/p95 over HTTP | - | `mlflow models serve`, N sequential requests |
| throughput with 4 concurrent clients | - | the same server; errors counted |

transformers' TF pipelines take `batch_size` but run the inputs one by one (their batching
iterator is PyTorch-only in 4.57); that is what a TensorFlow user gets from it.

An export made with export.engine=int8 is measured twice, side by side: the MLflow model on its
float32 engine (the SavedModel, TensorFlow) and on its int8 engine (OpenVINO), each batch and HTTP.

The MLflow model is saved with pipeline.mlflow_model's arguments (the export stage's), into
a temporary directory, and served from there: no tracking store is touched. Ratios are the
figures that count; absolute times are noisy on a shared 2-core box.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from machine import describe_machine  # noqa: E402
from pipeline import mlflow_model  # noqa: E402
from pipeline.qa.metrics import load_metric  # noqa: E402
from pipeline.qa.predictions import COURSE_MAX_ANSWER_LENGTH, COURSE_N_BEST  # noqa: E402
from pipeline.qa.serving import HF_DIR, INT8_DIR, read_settings  # noqa: E402
from pipeline.qa.squad import read_squad_json, validate_records  # noqa: E402

# What each figure times of the pipeline's own code: figure -> (the function that runs it, the
# production functions it times). Not a stage's function but the export stage's product: the
# MLflow model it logs, built here with the export's own mlflow_model.model_kwargs, whose pyfunc
# predict MLflow calls (in-process for the batch figure, behind `mlflow models serve` for HTTP).
# tests/stages/test_benchmarks_time_production_code.py checks the export stage creates that model
# class and that each function loads or serves it.
TIMED_PRODUCTION_CODE = {
    "batch": ("bench_pyfunc", ("pipeline.mlflow_model.QAModel.predict",)),
    "http": ("bench_http", ("pipeline.mlflow_model.QAModel.predict",)),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_questions(dev_file: Path, n: int) -> list[dict]:
    records = validate_records(read_squad_json(dev_file), str(dev_file), "error", False).kept
    return records[:n]


def f1_of(records: list[dict], answers: list[str]) -> dict:
    return load_metric("squad").compute(
        predictions=[{"id": r["id"], "prediction_text": a} for r, a in zip(records, answers)],
        references=[{"id": r["id"], "answers": r["answers"]} for r in records],
    )


def save_model(export_dir: Path, out_dir: Path, batch_size: int, engine: str) -> Path:
    import mlflow

    path = out_dir / "model"
    kwargs = mlflow_model.model_kwargs(
        export_dir,
        out_dir / "scratch",
        mlflow_model.pip_requirements(engine=engine),
        COURSE_N_BEST,
        COURSE_MAX_ANSWER_LENGTH,
        batch_size,
        1_000_000,
        engine,
    )
    mlflow.pyfunc.save_model(str(path), **kwargs)
    return path


def bench_pyfunc(model_path: Path, records: list[dict]) -> dict:
    import mlflow
    import pandas as pd

    model = mlflow.pyfunc.load_model(str(model_path))
    frame = pd.DataFrame({"question": [r["question"] for r in records], "context": [r["context"] for r in records]})
    model.predict(frame.head(8))  # warm-up: graph tracing, first allocations
    started = time.perf_counter()
    out = model.predict(frame)
    seconds = time.perf_counter() - started
    answers = list(out["answer"])
    result = {"seconds": seconds, "questions_per_second": len(records) / seconds, **f1_of(records, answers)}
    log(f"pyfunc batch: {result['questions_per_second']:.1f} questions/s, F1 {result['f1']:.2f}")
    return result


def bench_transformers(export_dir: Path, records: list[dict], batch_size: int) -> dict:
    from transformers import AutoTokenizer, TFAutoModelForQuestionAnswering, pipeline as hf_pipeline

    settings = read_settings(export_dir)
    hf = str(export_dir / HF_DIR)
    qa = hf_pipeline(
        "question-answering",
        model=TFAutoModelForQuestionAnswering.from_pretrained(hf),
        tokenizer=AutoTokenizer.from_pretrained(hf),
        framework="tf",
        dtype=None,
    )  # "auto" needs torch
    kwargs = dict(
        max_seq_len=settings["max_length"],
        doc_stride=settings["stride"],
        max_answer_len=COURSE_MAX_ANSWER_LENGTH,
        batch_size=batch_size,
    )
    qa(question=[r["question"] for r in records[:8]], context=[r["context"] for r in records[:8]], **kwargs)
    started = time.perf_counter()
    out = qa(question=[r["question"] for r in records], context=[r["context"] for r in records], **kwargs)
    seconds = time.perf_counter() - started
    out = out if isinstance(out, list) else [out]
    answers = [o["answer"] for o in out]
    result = {
        "seconds": seconds,
        "questions_per_second": len(records) / seconds,
        **f1_of(records, answers),
        "settings": {k: v for k, v in kwargs.items()},
        "note": "transformers 4.57 runs TF pipelines input by input; batch_size batches only on PyTorch",
    }
    log(f"transformers pipeline: {result['questions_per_second']:.1f} questions/s, F1 {result['f1']:.2f}")
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, record: dict, failures: list | None = None) -> tuple[int, float]:
    body = json.dumps({"dataframe_records": [{"question": record["question"], "context": record["context"]}]})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
        if failures is not None:
            failures.append(f"HTTP {err.code}: {err.read()[:300]!r}")
    except OSError as err:
        status = 0
        if failures is not None:
            failures.append(f"{type(err).__name__}: {err}")
    return status, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def bench_http(
    model_path: Path, records: list[dict], sequential: int, clients: int, concurrent: int, log_file: Path
) -> dict:
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with log_file.open("w") as log_fh:
        server = subprocess.Popen(
            [
                "mlflow",
                "models",
                "serve",
                "-m",
                str(model_path),
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"server did not start; see {log_file}")
                    time.sleep(1)
            post(port, records[0])  # warm-up
            latencies, errors = [], 0
            for i in range(sequential):
                status, seconds = post(port, records[i % len(records)])
                latencies.append(seconds)
                errors += status != 200
            sequential_result = {
                "requests": sequential,
                "errors": errors,
                "p50_ms": 1000 * percentile(latencies, 50),
                "p95_ms": 1000 * percentile(latencies, 95),
                "mean_ms": 1000 * statistics.mean(latencies),
            }
            log(
                f"HTTP sequential: p50 {sequential_result['p50_ms']:.0f} ms, p95 {sequential_result['p95_ms']:.0f} ms, "
                f"{errors} errors"
            )
            results: list[tuple[int, float]] = []
            failures: list[str] = []
            lock = threading.Lock()
            counter = iter(range(concurrent))

            def client() -> None:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    outcome = post(port, records[i % len(records)], failures)
                    with lock:
                        results.append(outcome)

            started = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - started
            concurrent_result = {
                "clients": clients,
                "requests": concurrent,
                "seconds": seconds,
                "requests_per_second": concurrent / seconds,
                "errors": sum(status != 200 for status, _ in results),
                "failures": failures[:10],
                "p50_ms": 1000 * percentile([s for _, s in results], 50),
                "p95_ms": 1000 * percentile([s for _, s in results], 95),
            }
            log(
                f"HTTP {clients} clients: {concurrent_result['requests_per_second']:.1f} requests/s, "
                f"{concurrent_result['errors']} errors"
            )
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # the CLI and its uvicorn worker
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
    return {"sequential": sequential_result, "concurrent": concurrent_result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models/export", help="an export directory")
    parser.add_argument("--squad-dir", type=Path, default=ROOT.parent / "shared/data/squad-v1.1")
    parser.add_argument("--max-questions", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64, help="windows per model call, both sides")
    parser.add_argument("--http-requests", type=int, default=200, help="sequential single-question requests")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--concurrent-requests", type=int, default=200, help="requests shared by the clients")
    args = parser.parse_args()
    if read_settings(args.model) is None:
        raise SystemExit(f"{args.model}: not an export; run `dvc repro` (or pass --model)")
    records = load_questions(args.squad_dir / "dev-v1.1.json.gz", args.max_questions)
    # Every engine the export has, side by side: float32, and int8 when it was made with export.engine=int8.
    engines = ["float32"] + (["int8"] if (args.model / INT8_DIR).is_dir() else [])
    log(f"{len(records)} dev questions, export {args.model}, engines {', '.join(engines)}")
    per_engine = {}
    with tempfile.TemporaryDirectory() as tmp:
        theirs = bench_transformers(args.model, records, args.batch_size)
        for engine in engines:
            model_path = save_model(args.model, Path(tmp) / engine, args.batch_size, engine)
            log(f"engine {engine}")
            per_engine[engine] = {
                "batch": bench_pyfunc(model_path, records),
                "http": bench_http(
                    model_path,
                    records,
                    args.http_requests,
                    args.clients,
                    args.concurrent_requests,
                    Path(tmp) / f"serve-{engine}.log",
                ),
            }
    ours, http = per_engine["float32"]["batch"], per_engine["float32"]["http"]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu": describe_machine()},
        "model": str(args.model),
        "settings": read_settings(args.model),
        "questions": len(records),
        "batch": {
            "pyfunc": ours,
            "transformers_pipeline": theirs,
            "speedup": ours["questions_per_second"] / theirs["questions_per_second"],
            "f1_difference": ours["f1"] - theirs["f1"],
        },
        "http": http,
        "engines": {
            engine: {
                **r,
                "speedup_over_transformers": r["batch"]["questions_per_second"] / theirs["questions_per_second"],
            }
            for engine, r in per_engine.items()
        },
    }
    out = ROOT / "benchmarks/results" / f"serving-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    b, h = result["batch"], http
    print(
        f"\n| figure | transformers pipeline | ours |\n|---|---|---|\n"
        f"| questions/s, batch ({len(records)} questions) | {theirs['questions_per_second']:.1f} "
        f"(F1 {theirs['f1']:.2f}) | {ours['questions_per_second']:.1f} (F1 {ours['f1']:.2f}): "
        f"{b['speedup']:.2f}x |\n"
        f"| HTTP latency, {h['sequential']['requests']} sequential requests | - | "
        f"p50 {h['sequential']['p50_ms']:.0f} ms, "
        f"p95 {h['sequential']['p95_ms']:.0f} ms ({h['sequential']['errors']} errors) |\n"
        f"| HTTP throughput, {h['concurrent']['clients']} clients | - | "
        f"{h['concurrent']['requests_per_second']:.1f} requests/s ({h['concurrent']['errors']} errors) |\n"
    )
    print("| engine | batch | HTTP, sequential | HTTP, concurrent |\n|---|---|---|---|")
    for engine, r in result["engines"].items():
        s, c = r["http"]["sequential"], r["http"]["concurrent"]
        print(
            f"| {engine} | {r['batch']['questions_per_second']:.1f} questions/s (F1 {r['batch']['f1']:.2f}), "
            f"{r['speedup_over_transformers']:.2f}x the transformers pipeline | HTTP p50 {s['p50_ms']:.0f} ms, "
            f"p95 {s['p95_ms']:.0f} ms | {c['requests_per_second']:.1f} requests/s |"
        )
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
