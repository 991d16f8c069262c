"""The course recipe's training, timed: the reference both benchmarks measure ours against on
the same machine in the same run.

The Hugging Face course (chapter 7, question answering, TensorFlow) pads every feature to
384 tokens at tokenization, feeds them through `model.prepare_tf_dataset` with
`DefaultDataCollator`, batch 16, float32, `create_optimizer` (lr 2e-5, no warmup, weight decay
0.01); `prepare_tf_dataset` shuffles and so drops the last partial batch. Since every batch
has the same shape, its step time does not depend on which features are in it: a few hundred
features give its throughput, and its time for any number of features follows (`course_epoch_seconds`).
"""

from __future__ import annotations

import time

import numpy as np

from pipeline.qa.batching import FeatureTable
from pipeline.qa.modeling import load_qa_model

COURSE_MAX_LENGTH, COURSE_STRIDE, COURSE_BATCH = 384, 128, 16
COURSE_LEARNING_RATE = 2e-5


def measure_course_training(table: FeatureTable, checkpoint: str, n_features: int, seed: int = 0) -> dict:
    """Train the course's way for one pass over the first `n_features` features of `table` (a fresh
    model from `checkpoint`, float32) and time it: the first step (tracing included) apart from the
    steady steps after it. Needs at least two batches."""
    import tensorflow as tf
    from datasets import Dataset
    from transformers import DefaultDataCollator, create_optimizer

    n = min(n_features, len(table))
    steps = n // COURSE_BATCH  # prepare_tf_dataset(shuffle=True) drops the remainder
    if steps < 2:
        raise ValueError(
            f"measure_course_training: {n} features make {steps} full batch(es) of {COURSE_BATCH}; need 2 or more"
        )
    rows = np.arange(n)
    padded = table.batch(rows, COURSE_MAX_LENGTH)
    columns = {name: padded[name].tolist() for name in table.inputs}
    columns.update({name: values[:n].tolist() for name, values in table.labels.items()})
    dataset = Dataset.from_dict(columns)

    policy = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("float32")
    try:
        tf.keras.utils.set_random_seed(seed)
        model = load_qa_model(checkpoint)
        optimizer, _ = create_optimizer(
            init_lr=COURSE_LEARNING_RATE, num_train_steps=steps, num_warmup_steps=0, weight_decay_rate=0.01
        )
        model.compile(optimizer=optimizer)
        tf_dataset = model.prepare_tf_dataset(
            dataset, collate_fn=DefaultDataCollator(return_tensors="tf"), shuffle=True, batch_size=COURSE_BATCH
        )
        ends: list[float] = []

        class _Clock(tf.keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                ends.append(time.perf_counter())

        started = time.perf_counter()
        model.fit(tf_dataset, epochs=1, verbose=0, callbacks=[_Clock()])
        seconds = time.perf_counter() - started
    finally:
        tf.keras.mixed_precision.set_global_policy(policy)
    first = ends[0] - started
    steady_steps = len(ends) - 1
    steady = (ends[-1] - ends[0]) / steady_steps
    n = len(ends) * COURSE_BATCH  # the features trained
    return {
        "features": n,
        "steps": len(ends),
        "batch_size": COURSE_BATCH,
        "max_length": COURSE_MAX_LENGTH,
        "precision": "float32",
        "seconds": seconds,
        "features_per_second": n / seconds,
        "first_step_seconds": first,
        "steady_step_seconds": steady,
        "steady_features_per_second": COURSE_BATCH / steady,
    }


def course_epoch_seconds(n_features: int, measured: dict) -> float:
    """The course recipe's time for one epoch over `n_features` features on the machine that
    measured `measured` (measure_course_training): its first step (tracing) plus its steady
    step time for each further full batch of 16 (prepare_tf_dataset drops the remainder)."""
    steps = n_features // measured["batch_size"]
    if steps < 1:
        raise ValueError(f"course_epoch_seconds: {n_features} features make no full batch")
    return measured["first_step_seconds"] + (steps - 1) * measured["steady_step_seconds"]
