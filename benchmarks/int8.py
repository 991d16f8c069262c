"""int8 against float, side by side in one run: one trained model's answers to the first N dev
questions of real SQuAD v1.1, from TensorFlow in float32 (what a float32 export serves), from
TensorFlow in evaluate.precision=auto (bfloat16 on a CPU with AVX512-BF16/AMX) and from its int8
export (pipeline.qa.int8, made as the export stage makes it: the model's SavedModel export,
quantized with calibration on the first --calibration train features).

    make bench-int8 MODEL=models/trained     # or: python benchmarks/int8.py --model DIR [--questions N]

Prints a table (features/s and questions/s of answering, EM/F1, answers equal to float32's, the
ratios to the bfloat16 path) and writes JSON to benchmarks/results/int8-*.json with the machine.
The same tokenized features feed every engine; each is warmed up on 64 of them first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.answers import same_answer_share  # noqa: E402
from pipeline.qa.batching import FeatureTable  # noqa: E402
from pipeline.qa.features import tokenize_examples  # noqa: E402
from pipeline.qa.inference import keras_logits_fn, load_inference_model, predict_logits  # noqa: E402
from pipeline.qa.int8 import calibration_inputs, int8_logits_fn, quantize  # noqa: E402
from pipeline.qa.modeling import load_qa_model, load_tokenizer, read_windows  # noqa: E402
from pipeline.qa.predictions import predict_split, score  # noqa: E402
from pipeline.qa.serving import SAVED_MODEL_DIR, SIGNATURE_INPUTS, save_export  # noqa: E402
from pipeline.qa.squad import load_examples  # noqa: E402
from pipeline.runtime.compose import compose_params_text  # noqa: E402
from pipeline.runtime.config import TokenizeConfig, from_dict  # noqa: E402

from machine import describe_machine  # noqa: E402

ENGINES = ("float32", "auto", "int8")
# What each section times of the pipeline's own code (tests/stages/test_benchmarks_time_production_code.py).
TIMED_PRODUCTION_CODE = {
    "quantize": (
        "make_int8",
        (
            "pipeline.qa.serving.save_export",
            "pipeline.qa.int8.quantize",
            "pipeline.qa.int8.calibration_inputs",
            "pipeline.qa.batching.FeatureTable.from_dataset",
        ),
    ),
    "answering": (
        "bench_engine",
        ("pipeline.qa.predictions.predict_split", "pipeline.qa.inference.predict_logits"),
    ),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_int8(model_dir: Path, out_dir: Path, calibration_features, samples: int) -> tuple[Path, float]:
    """The model's export and its int8 model, as the export stage makes them; (model.xml, seconds)."""
    windows = read_windows(model_dir) or {}
    settings = {**{k: windows.get(k) for k in ("max_length", "stride", "checkpoint")}, "engine": "int8"}
    model, tokenizer = load_qa_model(str(model_dir)), load_tokenizer(str(model_dir))
    started = time.perf_counter()
    save_export(model, tokenizer, settings, out_dir)
    table = FeatureTable.from_dataset(calibration_features)
    model_xml = quantize(
        out_dir / SAVED_MODEL_DIR, calibration_inputs(table, samples, SIGNATURE_INPUTS), out_dir / "int8"
    )
    return model_xml, time.perf_counter() - started


def bench_engine(name: str, logits_fn, examples, features, evaluate_cfg) -> dict:
    warm = FeatureTable.from_dataset(features.select(range(min(64, features.num_rows))))
    predict_logits(logits_fn, warm, evaluate_cfg.batch_size, int(warm.lengths.max()))  # trace / compile
    started = time.perf_counter()
    predictions = predict_split(logits_fn, examples, features, evaluate_cfg, False, progress=False)
    seconds = time.perf_counter() - started
    metrics = score(predictions, examples, False, 0.0)
    result = {
        "seconds": seconds,
        "features_per_second": features.num_rows / seconds,
        "questions_per_second": len(examples["id"]) / seconds,
        "exact_match": metrics["exact_match"],
        "f1": metrics["f1"],
        "answers": predictions.answers,
    }
    log(f"{name}: {result['features_per_second']:.1f} features/s, F1 {result['f1']:.2f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a trained model (models/trained)")
    parser.add_argument("--squad-dir", type=Path, default=ROOT.parent / "shared/data/squad-v1.1")
    parser.add_argument("--questions", type=int, default=2000, help="the first N dev questions")
    parser.add_argument("--calibration", type=int, default=300, help="train features the int8 ranges come from")
    parser.add_argument("--keep-export", type=Path, metavar="DIR", help="keep the export with its int8 model here")
    args = parser.parse_args()
    cfg = from_dict(yaml.safe_load(compose_params_text()))
    windows = read_windows(args.model) or {}
    tokenize_cfg = TokenizeConfig(
        max_length=windows.get("max_length", 384), stride=windows.get("stride", 128), warn_windows=None
    )
    tokenizer = load_tokenizer(str(args.model))
    examples = load_examples(args.squad_dir / "dev-v1.1.json.gz", False, args.questions)
    features = tokenize_examples(examples, tokenizer, tokenize_cfg)
    train = load_examples(args.squad_dir / "train-v1.1.reconstructed.json.gz", False, args.calibration)
    calibration = tokenize_examples(train, tokenizer, tokenize_cfg)
    log(f"{len(examples['id'])} dev questions, {features.num_rows} features; model {args.model}")
    with tempfile.TemporaryDirectory() as tmp:
        model_xml, quantize_seconds = make_int8(args.model, Path(tmp), calibration, args.calibration)
        runs = {
            "float32": keras_logits_fn(load_inference_model(str(args.model), "float32")),
            "auto": keras_logits_fn(load_inference_model(str(args.model), "auto")),
            "int8": int8_logits_fn(model_xml),
        }
        results = {name: bench_engine(name, fn, examples, features, cfg.evaluate) for name, fn in runs.items()}
        if args.keep_export:  # e.g. for benchmarks/serving.py --model DIR
            shutil.copytree(tmp, args.keep_export, dirs_exist_ok=True)
    reference = results["float32"].pop("answers")
    for name in ("auto", "int8"):
        answers = results[name].pop("answers")
        results[name]["same_answer_as_float32"] = same_answer_share(answers, reference)
    ratio = results["int8"]["features_per_second"] / results["auto"]["features_per_second"]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "model": str(args.model),
        "questions": len(examples["id"]),
        "features": features.num_rows,
        "calibration_features": min(args.calibration, calibration.num_rows),
        "quantize_seconds": quantize_seconds,
        "engines": results,
        "int8_over_auto": ratio,
        "int8_over_float32": results["int8"]["features_per_second"] / results["float32"]["features_per_second"],
        "int8_f1_minus_float32": results["int8"]["f1"] - results["float32"]["f1"],
    }
    out = ROOT / "benchmarks/results" / f"int8-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['date']}, {result['machine']}; {result['questions']} questions, {result['features']} features")
    print("| engine | features/s | questions/s | EM | F1 | same answer as float32 |\n|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        same = r.get("same_answer_as_float32", 1.0)
        print(
            f"| {name} | {r['features_per_second']:.1f} | {r['questions_per_second']:.1f} | "
            f"{r['exact_match']:.2f} | {r['f1']:.2f} | {same:.1%} |"
        )
    print(
        f"int8 / bfloat16 path (auto): {ratio:.2f}x (target >= 2.0); int8 F1 - float32 F1: "
        f"{result['int8_f1_minus_float32']:+.2f} (target within 0.5); quantization {quantize_seconds:.0f} s; {out}"
    )


if __name__ == "__main__":
    main()
