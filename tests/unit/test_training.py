"""train.precision: the Keras policy is set before the model is built, the QA head and loss
stay float32 under a mixed policy, and later models in the process get float32 again."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.qa.training import keep_head_in_float32, precision_policy, resolve_precision
from tests.conftest import MINILM


def test_float16_without_a_gpu_falls_back_to_float32_and_says_so():
    policy, note = resolve_precision("mixed_float16", has_gpu=False)
    assert policy == "float32"
    assert "needs a GPU" in note


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_a_gpu_gets_the_policy_asked_for(precision):
    assert resolve_precision(precision, has_gpu=True) == (precision, None)


def test_bfloat16_on_a_cpu_without_native_support_warns(monkeypatch):
    import pipeline.qa.training as train_module

    monkeypatch.setattr(train_module, "cpu_has_bfloat16", lambda: False)
    policy, note = resolve_precision("mixed_bfloat16", has_gpu=False)
    assert policy == "mixed_bfloat16" and "emulated" in note
    monkeypatch.setattr(train_module, "cpu_has_bfloat16", lambda: True)
    assert resolve_precision("mixed_bfloat16", has_gpu=False) == ("mixed_bfloat16", None)


def test_mixed_bfloat16_model_computes_in_bfloat16_with_a_float32_head_and_loss():
    import tensorflow as tf

    from pipeline.qa.modeling import load_qa_model

    with precision_policy("mixed_bfloat16") as policy:
        model = load_qa_model(MINILM)
        keep_head_in_float32(model)
    assert policy == "mixed_bfloat16"
    # the global policy is back: a model loaded afterwards (evaluation) is float32
    assert tf.keras.mixed_precision.global_policy().name == "float32"

    encoder_layer = model.bert.encoder.layer[0]
    assert encoder_layer.compute_dtype == "bfloat16"
    assert all(w.dtype == tf.float32 for w in model.trainable_weights)  # float32 master weights
    batch = {
        "input_ids": np.array([[101, 2054, 2003, 102, 3000, 2003, 1999, 2605, 102]], np.int32),
        "attention_mask": np.ones((1, 9), np.int32),
        "start_positions": np.array([4], np.int32),
        "end_positions": np.array([7], np.int32),
    }
    out = model(batch, training=False)
    assert out.start_logits.dtype == tf.float32 and out.end_logits.dtype == tf.float32
    assert out.loss.dtype == tf.float32 and np.isfinite(out.loss.numpy()).all()
    # and the float32 head still takes bfloat16 hidden states: they agree with float32 to bf16 precision
    reference = load_qa_model(MINILM)
    reference.set_weights(model.get_weights())
    expected = reference(batch, training=False).start_logits.numpy()
    np.testing.assert_allclose(out.start_logits.numpy(), expected, atol=0.1)
