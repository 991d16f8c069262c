"""A model export: a TensorFlow SavedModel with a fixed serving signature, the HF model and
tokenizer, and the inference settings. (qa.exported loads one and answers questions with it.)

    <export>/
      saved_model/   signature `serving_default`: input_ids, attention_mask, token_type_ids
                     (int32 [batch, seq]) -> start_logits, end_logits (float32 [batch, seq])
      hf/            save_pretrained model and tokenizer
      int8/          (export.engine=int8) model.xml/.bin: the SavedModel quantized by qa.int8;
                     evaluation.json and predictions.json: its answers to the validation questions
      index/         (retrieve-then-read) the passage index (qa.retrieval) and retrieval.json: the
                     k and weight chosen on train questions
      inference.json the windows the model was trained on, for SQuAD v2.0 the null rule, and the
                     engine it serves (float32 or int8)

Everything needed to answer is inside the directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pipeline.qa.modeling import graph_function
from pipeline.runtime.files import read_json, write_json

SIGNATURE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
INFERENCE_FILE = "inference.json"
SAVED_MODEL_DIR = "saved_model"
HF_DIR = "hf"
INT8_DIR = "int8"
INDEX_DIR = "index"


def serving_function(model):
    """A tf.function with a fixed signature; token_type_ids is accepted (and ignored) for
    models without segment embeddings, so every export has the same interface."""
    import tensorflow as tf

    takes_token_types = "token_type_ids" in getattr(model, "input_signature", {})
    spec = {name: tf.TensorSpec((None, None), tf.int32, name=name) for name in SIGNATURE_INPUTS}

    @graph_function(input_signature=[spec])
    def serve(inputs):
        model_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        if takes_token_types:
            model_inputs["token_type_ids"] = inputs["token_type_ids"]
        out = model(model_inputs, training=False)
        return {
            "start_logits": tf.cast(out.start_logits, tf.float32),
            "end_logits": tf.cast(out.end_logits, tf.float32),
        }

    return serve


def save_export(model, tokenizer, settings: dict[str, Any], out_dir: Path) -> None:
    """Write the export layout into out_dir (an empty directory)."""
    import tensorflow as tf

    serve = serving_function(model)
    # A plain tf.Module holding the signature and the weights it reads: no Keras layer objects,
    # whose call functions tf.saved_model would trace and store too (seconds to save and to load,
    # for functions the signature does not use).
    module = tf.Module()
    module.weights = list(model.weights)
    module.serve = serve
    tf.saved_model.save(module, str(out_dir / SAVED_MODEL_DIR), signatures={"serving_default": serve})
    model.save_pretrained(str(out_dir / HF_DIR))
    tokenizer.save_pretrained(str(out_dir / HF_DIR))
    write_json(out_dir / INFERENCE_FILE, {**settings, "signature_inputs": list(SIGNATURE_INPUTS)})


def read_settings(export_dir: Path) -> Optional[dict[str, Any]]:
    """inference.json of an export, or None when the directory is not one."""
    path = Path(export_dir) / INFERENCE_FILE
    return read_json(path) if path.is_file() else None
