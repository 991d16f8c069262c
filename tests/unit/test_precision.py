"""train.precision: the Keras policy is set before the model is built, the QA head and loss
stay float32 under a mixed policy, and later models in the process get float32 again."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.qa.precision import keep_head_in_float32, precision_policy, resolve_precision
from tests.conftest import MINILM


def test_float16_without_a_gpu_falls_back_to_float32_and_says_so():
    policy, note = resolve_precision("mixed_float16", has_gpu=False)
    assert policy == "float32"
    assert "needs a GPU" in note


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_a_gpu_gets_the_policy_asked_for(precision):
    assert resolve_precision(precision, has_gpu=True) == (precision, None)


def test_bfloat16_on_a_cpu_without_native_support_warns(monkeypatch):
    import pipeline.qa.precision as precision_module

    monkeypatch.setattr(precision_module, "cpu_has_bfloat16", lambda: False)
    policy, note = resolve_precision("mixed_bfloat16", has_gpu=False)
    assert policy == "mixed_bfloat16" and "emulated" in note
    monkeypatch.setattr(precision_module, "cpu_has_bfloat16", lambda: True)
    assert resolve_precision("mixed_bfloat16", has_gpu=False) == ("mixed_bfloat16", None)


@pytest.mark.parametrize(
    "gpu, cpu_bf16, expected",
    [
        (None, True, "mixed_bfloat16"),  # AVX512-BF16 / AMX CPU
        (None, False, "float32"),  # a CPU that would emulate bfloat16
        ((8, 0), False, "mixed_float16"),  # tensor cores
        ((7, 0), True, "mixed_float16"),
        ((6, 1), False, "float32"),  # no tensor cores: float16 is slow
    ],
)
def test_auto_precision_picks_the_fastest_policy_the_hardware_supports(gpu, cpu_bf16, expected):
    from pipeline.qa.precision import auto_precision

    assert auto_precision(gpu, cpu_bf16) == expected
    policy, note = resolve_precision("auto", has_gpu=gpu is not None, gpu_capability=gpu, cpu_bf16=cpu_bf16)
    assert policy == expected and note.startswith(f"train.precision=auto: {expected} on this ")


def test_auto_precision_reads_this_cpus_flags():
    """On this machine: the flags of /proc/cpuinfo decide, and the policy is one Keras accepts."""
    import tensorflow as tf

    from pipeline.qa.precision import cpu_flags, cpu_has_bfloat16

    flags = cpu_flags()
    assert cpu_has_bfloat16({"sse2", "avx512_bf16"}) and cpu_has_bfloat16({"amx_bf16"})
    assert not cpu_has_bfloat16({"sse2", "avx512f"}) and not cpu_has_bfloat16(set())
    with precision_policy("auto", has_gpu=False) as policy:
        assert tf.keras.mixed_precision.global_policy().name == policy
    native = flags is None or bool(flags & {"avx512_bf16", "amx_bf16"})
    assert policy == ("mixed_bfloat16" if native else "float32")


def test_auto_is_a_valid_train_precision_and_a_typo_is_not():
    import yaml

    from pipeline.runtime.compose import compose_params_text
    from pipeline.runtime.config import from_dict
    from pipeline.runtime.errors import PipelineError

    assert from_dict(yaml.safe_load(compose_params_text(["train.precision=auto"]))).train.precision == "auto"
    with pytest.raises(PipelineError, match="train.precision.*auto"):
        from_dict(yaml.safe_load(compose_params_text(["train.precision=bf16"])))


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


def test_train_dropout_sets_every_dropout_layer_and_an_unknown_config_key_is_refused():
    import tensorflow as tf

    from pipeline.qa.modeling import load_qa_model
    from pipeline.qa.training import dropout_config
    from pipeline.runtime.errors import PipelineError

    def rates(model):
        return {layer.rate for layer in model.submodules if isinstance(layer, tf.keras.layers.Dropout)}

    assert dropout_config(None) == {}
    assert rates(load_qa_model(MINILM)) == {0.1}  # the checkpoint's own
    model = load_qa_model(MINILM, dropout_config(0.0))
    assert rates(model) == {0.0}  # hidden and attention dropout: Keras skips the random numbers at 0
    assert model.config.hidden_dropout_prob == model.config.attention_probs_dropout_prob == 0.0  # saved with it
    with pytest.raises(PipelineError, match="BertConfig has no 'dropout'.*leave that setting null"):
        load_qa_model(MINILM, {"dropout": 0.0})
    # train.attention_dropout alone: null follows train.dropout, a number overrides it
    assert dropout_config(0.1, 0.0) == {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.0}
    assert dropout_config(None, 0.0) == {"attention_probs_dropout_prob": 0.0}
    assert dropout_config(0.2, None) == {"hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.2}
    hidden_only = load_qa_model(MINILM, dropout_config(0.1, 0.0))
    attention = [
        layer.dropout.rate for layer in hidden_only.submodules if type(layer).__name__ == "TFBertSelfAttention"
    ]
    assert attention == [0.0] * 6
    assert rates(hidden_only) == {0.0, 0.1}


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_fuse_elementwise_keeps_the_math_and_the_gradients(precision):
    """XLA-compiled GELU and LayerNorm islands: same logits and gradients as the unfused model
    (to the precision's rounding), every layer changed once, and new batch widths still work."""
    import tensorflow as tf

    from pipeline.qa.modeling import fuse_elementwise, load_qa_model

    with precision_policy(precision):
        plain = load_qa_model(MINILM, {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
        fused = load_qa_model(MINILM, {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
        keep_head_in_float32(plain)
        keep_head_in_float32(fused)
    fused.set_weights(plain.get_weights())
    assert fuse_elementwise(fused) == 6 + 13  # 6 feed-forward activations, 13 LayerNorms (embeddings + 2 per layer)
    assert fuse_elementwise(fused) == 0  # a second call changes nothing: nothing is wrapped twice
    tol = 1e-4 if precision == "float32" else 0.15
    rng = np.random.default_rng(0)
    for width in (24, 40):
        batch = {
            "input_ids": tf.constant(rng.integers(1000, 20000, (2, width)), tf.int32),
            "attention_mask": tf.ones((2, width), tf.int32),
            "token_type_ids": tf.zeros((2, width), tf.int32),
        }
        grads = []
        for model in (plain, fused):
            with tf.GradientTape() as tape:
                out = model(batch, training=True)
                loss = tf.reduce_sum(out.start_logits * tf.linspace(-1.0, 1.0, width))
            grads.append((out.start_logits.numpy(), tape.gradient(loss, model.trainable_variables)))
        np.testing.assert_allclose(grads[1][0], grads[0][0], atol=tol)
        for a, b in zip(grads[0][1], grads[1][1]):
            a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
            np.testing.assert_allclose(b, a, atol=tol * max(1.0, float(np.abs(a).max())))


def test_a_checkpoint_with_tf_weights_has_its_dropout_generators_before_the_first_step(tmp_path):
    """A save_pretrained directory (TF weights: a hub BERT, a model trained here) is loaded by
    building its weights only; its dropout generators must exist when a resumed run restores
    their states, before any training step."""
    import tensorflow as tf

    from pipeline.qa.training import build_training_model, dropout_generators
    from tests.helpers.tiny_model import tiny_bert, tiny_config

    tiny_bert().save_pretrained(str(tmp_path))
    model, _, _ = build_training_model(tiny_config().train, str(tmp_path), total_steps=4)
    dropouts = [layer for layer in model.submodules if isinstance(layer, tf.keras.layers.Dropout)]
    assert len(dropouts) == 7  # embeddings, and per layer: attention probabilities, attention output, output
    assert len(dropout_generators(model)) == len(dropouts)
