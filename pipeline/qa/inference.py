"""Batched start/end logits for unpadded features, shared by evaluate and predict.

Features are sorted by length and padded per batch (pipeline.qa.batching), so memory and
compute follow the real lengths; outputs come back unpadded, in the original order.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.qa.batching import FeatureTable, prediction_batches
from pipeline.qa.modeling import fuse_elementwise, graph_function, load_qa_model
from pipeline.qa.precision import keep_head_in_float32, precision_policy

# (input dict of int32 [batch, width] arrays) -> (start_logits, end_logits), each [batch, width]
LogitsFn = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


def predict_logits(
    logits_fn: LogitsFn,
    table: FeatureTable,
    batch_size: int,
    max_length: int,
    padding: str = "bucketed",
    pad_to_multiple_of: int = 32,
    progress: bool = False,
    progress_label: str = "Predicting",
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    lengths = table.lengths
    starts: list[np.ndarray | None] = [None] * len(table)
    ends: list[np.ndarray | None] = [None] * len(table)
    plan = prediction_batches(lengths, batch_size, padding, max_length, pad_to_multiple_of)
    if progress:
        from tqdm.auto import tqdm

        plan = tqdm(plan, desc=progress_label, unit="batch")
    for indices, width in plan:
        start_logits, end_logits = logits_fn(table.batch(indices, width))
        start_logits = np.asarray(start_logits, dtype=np.float32)
        end_logits = np.asarray(end_logits, dtype=np.float32)
        for row, i in enumerate(indices):
            n = int(lengths[i])
            starts[i] = start_logits[row, :n].copy()
            ends[i] = end_logits[row, :n].copy()
    return starts, ends  # type: ignore[return-value]


def load_inference_model(checkpoint: str, precision: str = "float32", key: str = "evaluate.precision"):
    """A QA model to predict with. float32: as trained weights are saved and as the export serves
    them. A mixed policy (`auto` picks mixed_bfloat16 on a CPU with AVX512-BF16/AMX): the model
    is built under it with its QA head in float32 (logits stay float32) and its GELU/LayerNorm
    islands XLA-fused, which is what makes bfloat16 pay at inference (measured in
    docs/benchmarks.md)."""
    with precision_policy(precision, key=key) as policy:
        model = load_qa_model(checkpoint)
        keep_head_in_float32(model)
    if policy != "float32":
        fuse_elementwise(model)
    return model


def keras_logits_fn(model) -> LogitsFn:
    """Wrap an HF TF QA model; one traced graph serves all batch shapes."""
    import tensorflow as tf

    @graph_function(reduce_retracing=True)
    def forward(inputs):
        out = model(inputs, training=False)
        return tf.cast(out.start_logits, tf.float32), tf.cast(out.end_logits, tf.float32)

    accepted = set(model.input_signature) if hasattr(model, "input_signature") else None

    def run(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        inputs = {k: tf.constant(v) for k, v in batch.items() if accepted is None or k in accepted}
        start, end = forward(inputs)
        return start.numpy(), end.numpy()

    return run
