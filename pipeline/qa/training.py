"""Training pieces for a TF question-answering model: the precision policy, the tf.data
pipeline over bucketed batches, the learning-rate warmup and a loss-curve callback.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from pipeline.qa.batching import FeatureTable, make_train_generator
from pipeline.runtime.config import PipelineConfig


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


def make_dataset(table: FeatureTable, cfg: PipelineConfig):
    import tensorflow as tf

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
