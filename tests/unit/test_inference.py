"""evaluate.precision: predicting in float32 (what the export serves) or under a mixed policy
(bfloat16 backbone, float32 head and logits, GELU/LayerNorm fused), from the same weights."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.qa.inference import keras_logits_fn, load_inference_model
from pipeline.qa.precision import resolve_precision
from tests.conftest import MINILM


def _batch(width: int, rows: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(width)
    return {
        "input_ids": rng.integers(1000, 20000, (rows, width)).astype(np.int32),
        "attention_mask": np.ones((rows, width), np.int32),
        "token_type_ids": np.zeros((rows, width), np.int32),
    }


def test_float32_inference_is_the_plain_model():
    import tensorflow as tf

    model = load_inference_model(MINILM, "float32")
    assert {layer.compute_dtype for layer in model.submodules if isinstance(layer, tf.keras.layers.Layer)} == {
        "float32"
    }
    assert not any(getattr(layer, "_fused_elementwise", False) for layer in model.submodules)


def test_bfloat16_inference_keeps_float32_logits_close_to_float32(capsys):
    import tensorflow as tf

    reference = load_inference_model(MINILM, "float32")
    model = load_inference_model(MINILM, "mixed_bfloat16")
    model.set_weights(reference.get_weights())  # the QA head is freshly initialised at each load
    assert model.qa_outputs.compute_dtype == "float32"
    assert {
        layer.compute_dtype
        for layer in model.submodules
        if isinstance(layer, tf.keras.layers.Dense) and layer is not model.qa_outputs
    } == {"bfloat16"}
    assert sum(getattr(layer, "_fused_elementwise", False) for layer in model.submodules) == 13
    fast, exact = keras_logits_fn(model), keras_logits_fn(reference)
    for width in (40, 64):  # two batch widths: the fused islands compile per width
        (start, end), (start32, end32) = fast(_batch(width)), exact(_batch(width))
        assert start.dtype == np.float32 and start.shape == (3, width)
        np.testing.assert_allclose(start, start32, atol=0.1)
        np.testing.assert_allclose(end, end32, atol=0.1)
        assert np.abs(start - start32).max() > 0  # really computed in bfloat16


def test_auto_names_the_setting_and_picks_what_training_would(capsys):
    expected, _ = resolve_precision("auto", has_gpu=False, key="evaluate.precision")
    model = load_inference_model(MINILM, "auto")
    err = capsys.readouterr().err
    assert f"note: evaluate.precision=auto: {expected} on this CPU" in err
    assert model.layers[0].compute_dtype == ("bfloat16" if expected == "mixed_bfloat16" else "float32")


@pytest.mark.parametrize("key", ["train.precision", "evaluate.precision", "--precision"])
def test_precision_notes_name_the_setting_they_are_about(key):
    _, note = resolve_precision("mixed_float16", has_gpu=False, key=key)
    assert note.startswith(f"{key}=mixed_float16 needs a GPU")
