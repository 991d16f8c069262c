"""Stage 3, train: data/tokenized/ -> models/trained/ (HF model + tokenizer), curves, MLflow run.

    python -m pipeline.train [--params params.yaml]

Writes
- models/trained/: save_pretrained output, the tokenizer, training_run.json (MLflow run id);
- metrics/train.json: final loss, wall time, throughput (DVC metrics);
- plots/train/steps.csv, plots/train/epochs.csv: training curves (DVC plots).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.config import PipelineConfig, flatten, load_config
from pipeline.errors import PipelineError, stage_entry_point
from pipeline.io import atomic_output_dir, read_json, write_json

TOKENIZED_DIR = Path("data/tokenized")
TRAINED_DIR = Path("models/trained")
METRICS_FILE = Path("metrics/train.json")
PLOTS_DIR = Path("plots/train")


TRAINING_CODE = ("pipeline/train.py", "pipeline/batching.py", "pipeline/modeling.py")


def training_inputs_hash(cfg: PipelineConfig, tokenized_dir: Path, code_files=TRAINING_CODE) -> str:
    """sha256 over everything the train stage depends on: its params, the tokenized train
    split and its code. Equal hashes mean equal training inputs, across runs and machines."""
    import hashlib
    import json
    from dataclasses import asdict

    digest = hashlib.sha256()
    params = {"model.checkpoint": cfg.model.checkpoint, "tokenize.max_length": cfg.tokenize.max_length,
              "train": asdict(cfg.train)}
    digest.update(json.dumps(params, sort_keys=True).encode())
    for path in sorted((tokenized_dir / "train").rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    for name in code_files:
        path = Path(name)
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def plot_loss(steps: list[dict], path: Path) -> None:
    """A PNG of the loss curve, for the MLflow run page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return int(round(total_steps * warmup_ratio))


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); without it TensorFlow
    emulates bfloat16 and mixed_bfloat16 trains slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: cannot tell
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, has_gpu: bool) -> tuple[str, str | None]:
    """The Keras policy to train with, and a note for the log when it differs from the ask
    or is likely slow."""
    if precision == "mixed_float16" and not has_gpu:
        return "float32", "train.precision=mixed_float16 needs a GPU (float16 is slow on CPUs); training in float32"
    if precision == "mixed_bfloat16" and not has_gpu and not cpu_has_bfloat16():
        return precision, ("train.precision=mixed_bfloat16: this CPU has no AVX512-BF16/AMX, so bfloat16 is "
                           "emulated and likely slower than float32")
    return precision, None


@contextlib.contextmanager
def precision_policy(precision: str):
    """Build the model inside this block: the Keras policy is set before any layer is built
    (the course sets it after compile, which leaves the model in float32), and the global
    policy is restored afterwards, so a model loaded later in the same process (evaluation)
    gets float32. Built layers keep the policy they were built with."""
    import tensorflow as tf

    policy, note = resolve_precision(precision, bool(tf.config.list_physical_devices("GPU")))
    if note:
        print(f"note: {note}", file=sys.stderr)
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


def keep_head_in_float32(model) -> None:
    """Compute the QA head (and so the logits and the loss) in float32 under a mixed policy:
    a softmax over hundreds of positions from bfloat16 logits (8-bit mantissa) would blur
    the loss and tie the post-processing's span scores."""
    import tensorflow as tf

    head = getattr(model, "qa_outputs", None)
    if head is not None and head.compute_dtype != "float32":
        head._set_dtype_policy(tf.keras.mixed_precision.Policy("float32"))


def make_dataset(table, cfg: PipelineConfig):
    import tensorflow as tf

    from pipeline.batching import make_train_generator

    signature = {n: tf.TensorSpec((None, None), tf.int32, name=n) for n in table.inputs}
    signature.update({n: tf.TensorSpec((None,), tf.int32, name=n) for n in table.labels})
    generator = make_train_generator(
        table, cfg.train.batch_size, cfg.train.seed, cfg.train.padding, cfg.tokenize.max_length,
        cfg.train.pad_to_multiple_of,
    )
    # Keras keeps one iterator across epochs when steps_per_epoch is set, so a one-pass
    # dataset runs dry after the first epoch (Keras then stops with only a warning).
    # repeat() calls the generator again for each pass, which plans the next epoch's batches;
    # a pass yields exactly steps_per_epoch batches, so passes and Keras epochs line up.
    return tf.data.Dataset.from_generator(generator, output_signature=signature).repeat().prefetch(2)


def make_curves_callback(schedule, steps_per_epoch: int, log_every: int, on_log, show_progress_lines: bool):
    """A Keras callback recording per-step and per-epoch loss (kept in memory, passed to
    `on_log` for MLflow, printed as progress lines when stdout is not a terminal)."""
    import tensorflow as tf

    class _Curves(tf.keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.steps: list[dict] = []
            self.epochs: list[dict] = []
            self._epoch = 0
            self._last_mean = 0.0
            self._last_batch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch, self._last_mean, self._last_batch = epoch, 0.0, 0

        def on_train_batch_end(self, batch, logs=None):
            n = batch + 1
            if n % log_every and n != steps_per_epoch:
                return
            # Keras reports the running mean over the epoch; the mean over the last
            # window of steps is recovered from two running means.
            mean = float(logs["loss"])
            window = (mean * n - self._last_mean * self._last_batch) / (n - self._last_batch)
            self._last_mean, self._last_batch = mean, n
            step = self._epoch * steps_per_epoch + n
            lr = float(schedule(step - 1)) if callable(schedule) else float(schedule)
            row = {"step": step, "loss": window, "learning_rate": lr}
            self.steps.append(row)
            on_log({"loss": window, "learning_rate": lr}, step)
            if show_progress_lines:
                print(f"epoch {self._epoch + 1} step {n}/{steps_per_epoch} loss {window:.4f} lr {lr:.2e}", flush=True)

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "loss": float(logs["loss"])}
            self.epochs.append(row)
            on_log({"epoch_loss": row["loss"]}, epoch + 1)

    return _Curves()


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["step"])
        writer.writeheader()
        writer.writerows(rows)


def train(cfg: PipelineConfig, tokenized_dir: Path = TOKENIZED_DIR, out_dir: Path = TRAINED_DIR,
          metrics_file: Path = METRICS_FILE, plots_dir: Path = PLOTS_DIR) -> dict[str, Any]:
    import tensorflow as tf
    from datasets import load_from_disk
    from transformers import create_optimizer

    from pipeline import tracking
    from pipeline.batching import FeatureTable
    from pipeline.modeling import load_qa_model, load_tokenizer

    if not (tokenized_dir / "dataset_dict.json").is_file():
        raise PipelineError(f"{tokenized_dir}: no tokenized data; run the tokenize stage first")
    tokenizer = load_tokenizer(cfg.model.checkpoint)
    train_split = load_from_disk(str(tokenized_dir))["train"]
    table = FeatureTable.from_dataset(train_split, pad_token_id=tokenizer.pad_token_id or 0)
    n_features = len(table)
    steps_per_epoch = math.ceil(n_features / cfg.train.batch_size)
    total_steps = steps_per_epoch * cfg.train.epochs

    # Open the MLflow run first: if the store is unreachable we stop before training,
    # instead of training for an hour and losing the record.
    data_summary = read_json(tokenized_dir / "summary.json") if (tokenized_dir / "summary.json").is_file() else {}
    params = flatten(cfg)
    for split, info in data_summary.items():
        params[f"data_size.{split}.examples"] = info.get("examples")
        params[f"data_size.{split}.features"] = info.get("features")
    tags = {"stage": "train", "training_inputs_hash": training_inputs_hash(cfg, tokenized_dir)}
    client, run_id = tracking.start_run(cfg.mlflow.experiment_name, "train", params, tags)
    print(f"MLflow run {run_id} in {tracking.tracking_uri()}")

    tf.keras.utils.set_random_seed(cfg.train.seed)
    with precision_policy(cfg.train.precision) as policy:
        model = load_qa_model(cfg.model.checkpoint)
        keep_head_in_float32(model)
    optimizer, schedule = create_optimizer(
        init_lr=cfg.train.learning_rate,
        num_train_steps=total_steps,
        num_warmup_steps=warmup_steps(total_steps, cfg.train.warmup_ratio),
        weight_decay_rate=cfg.train.weight_decay,
    )
    model.compile(optimizer=optimizer)  # no loss argument: the HF model computes its own QA loss

    interactive = sys.stdout.isatty()
    curves = make_curves_callback(
        schedule, steps_per_epoch, cfg.train.log_every_steps,
        on_log=lambda metrics, step: tracking.log_metrics(client, run_id, metrics, step),
        show_progress_lines=not interactive,
    )
    dataset = make_dataset(table, cfg)
    started = time.perf_counter()
    try:
        model.fit(dataset, epochs=cfg.train.epochs, steps_per_epoch=steps_per_epoch,
                  callbacks=[curves], verbose=1 if interactive else 0)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    seconds = time.perf_counter() - started

    summary = {
        "loss": curves.epochs[-1]["loss"],
        "epochs": cfg.train.epochs,
        "steps": total_steps,
        "train_features": n_features,
        "train_seconds": round(seconds, 2),
        "features_per_second": round(n_features * cfg.train.epochs / seconds, 3),
        "precision_policy": policy,
    }
    with atomic_output_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / tracking.RUN_FILE_NAME, {"run_id": run_id, "tracking_uri": tracking.tracking_uri()})
    write_json(metrics_file, summary)
    write_csv(plots_dir / "steps.csv", curves.steps)
    write_csv(plots_dir / "epochs.csv", curves.epochs)

    tracking.log_metrics(client, run_id, {k: v for k, v in summary.items() if isinstance(v, (int, float))},
                         step=total_steps)
    client.log_artifact(run_id, str(plots_dir / "steps.csv"), "plots")
    client.log_artifact(run_id, str(plots_dir / "epochs.csv"), "plots")
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "training_loss.png"
        plot_loss(curves.steps, png)
        client.log_artifact(run_id, str(png), "plots")
    params_file = Path("params.yaml")
    if params_file.is_file():
        client.log_artifact(run_id, str(params_file))
    client.set_terminated(run_id, status="FINISHED")
    return summary


@stage_entry_point
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = load_config(args.params)
    summary = train(cfg)
    print(
        f"trained {summary['epochs']} epoch(s), {summary['steps']} steps in {summary['train_seconds']} s "
        f"({summary['features_per_second']} features/s), final loss {summary['loss']:.4f}"
    )


if __name__ == "__main__":
    main()
