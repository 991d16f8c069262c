"""The GPU path, run on a CPU (there is no GPU here): mixed_float16 forced on a tiny model
(policy set before the layers are built, the optimizer wrapped for loss scaling, the QA head,
logits and loss in float32, a few steps without NaN) and jit_compile (XLA) on the coarse batch
widths the config requires."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.qa.batching import epoch_plan, round_up
from pipeline.qa.precision import keep_head_in_float32, precision_policy
from pipeline.qa.training import make_dataset, report_loss_sums, resumable_dropout, steps_per_epoch
from pipeline.runtime.config import JIT_MAX_WIDTHS
from tests.helpers.tiny_model import random_table, tiny_bert, tiny_config


def fit_a_few_steps(model, cfg, n_features=22):
    table = random_table(n_features)
    steps = steps_per_epoch(n_features, cfg.train.batch_size)
    history = model.fit(make_dataset(table, cfg), epochs=1, steps_per_epoch=steps, verbose=0)
    return table, history


def test_mixed_float16_forced_on_a_cpu_trains_a_tiny_model_with_loss_scaling_and_a_float32_head():
    import tensorflow as tf
    from transformers import create_optimizer

    tf.keras.utils.set_random_seed(0)
    with precision_policy("mixed_float16", has_gpu=True) as policy, resumable_dropout():
        model = tiny_bert(dropout=0.1)  # built inside the block: every layer gets the policy
        keep_head_in_float32(model)
    assert policy == "mixed_float16"
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored for later models

    assert model.dtype_policy.name == "mixed_float16"
    assert model.bert.encoder.layer[0].compute_dtype == "float16"
    assert model.bert.embeddings.compute_dtype == "float16"
    assert model.qa_outputs.compute_dtype == "float32"
    assert all(w.dtype == tf.float32 for w in model.trainable_weights)  # float32 master weights

    optimizer, _ = create_optimizer(init_lr=1e-3, num_train_steps=6, num_warmup_steps=0, weight_decay_rate=0.01)
    model.compile(optimizer=optimizer)
    report_loss_sums(model)
    # the loss scale comes from the model's policy: compile wrapped the optimizer
    assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert model.optimizer.dynamic

    batch = {
        "input_ids": np.array([[2, 15, 27, 3, 40, 41, 42, 3]], np.int32),
        "attention_mask": np.ones((1, 8), np.int32),
        "start_positions": np.array([4], np.int32),
        "end_positions": np.array([6], np.int32),
    }
    out = model(batch, training=False)
    assert out.start_logits.dtype == tf.float32 and out.end_logits.dtype == tf.float32
    assert out.loss.dtype == tf.float32

    cfg = tiny_config("train.epochs=1")
    _, history = fit_a_few_steps(model, cfg)
    losses = history.history["loss"]
    assert len(losses) == 1 and np.isfinite(losses).all()
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)
    assert float(model.optimizer.loss_scale) > 0


def test_jit_compile_trains_a_few_steps_on_the_coarse_widths():
    import tensorflow as tf

    cfg = tiny_config("train.epochs=1", "train.jit_compile=true", "train.pad_to_multiple_of=64")
    table = random_table(22)
    widths = {
        min(round_up(int(table.lengths[b].max()), 64), 128)
        for b in epoch_plan(table.lengths, 4, cfg.train.seed, 0, "bucketed")
    }
    assert widths <= {64, 128} and len(widths) <= JIT_MAX_WIDTHS

    tf.keras.utils.set_random_seed(0)
    with resumable_dropout():
        model = tiny_bert(dropout=0.1)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), jit_compile=cfg.train.jit_compile)
    _, history = fit_a_few_steps(model, cfg)
    assert model._jit_compile is True
    assert np.isfinite(history.history["loss"]).all()
    # one trace of the step (shapes are (None, None)); XLA compiles per concrete width
    assert model.train_function.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("precision", ["mixed_float16", "float32"])
def test_without_a_gpu_mixed_float16_is_not_forced_unless_asked(precision):
    import tensorflow as tf

    with precision_policy(precision) as policy:  # has_gpu looked up: none here
        pass
    assert policy == "float32"
    assert tf.keras.mixed_precision.global_policy().name == "float32"
