"""Stage 5, export: models/trained/ -> models/export/ (SavedModel + HF model + inference settings).

    python -m pipeline.export [--params params.yaml]

models/export/
  saved_model/   TensorFlow SavedModel; signature `serving_default`:
                 input_ids, attention_mask, token_type_ids (int32 [batch, seq]) ->
                 start_logits, end_logits (float32 [batch, seq])
  hf/            save_pretrained model and tokenizer
  inference.json max_length and stride of the training windows, used by pipeline.predict

Post-processing knobs (n_best, max_answer_length) are options of pipeline.predict, so that
an evaluate-only change does not re-export the model.

Everything pipeline.predict needs is inside this directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.config import PipelineConfig, load_config
from pipeline.errors import PipelineError, stage_entry_point
from pipeline.io import atomic_output_dir, read_json, write_json

TRAINED_DIR = Path("models/trained")
EXPORT_DIR = Path("models/export")
SIGNATURE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
INFERENCE_FILE = "inference.json"


def serving_function(model):
    """A tf.function with a fixed signature; token_type_ids is accepted (and ignored) for
    models without segment embeddings, so every export has the same interface."""
    import tensorflow as tf

    takes_token_types = "token_type_ids" in getattr(model, "input_signature", {})
    spec = {name: tf.TensorSpec((None, None), tf.int32, name=name) for name in SIGNATURE_INPUTS}

    @tf.function(input_signature=[spec])
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


def export(cfg: PipelineConfig, trained_dir: Path = TRAINED_DIR, out_dir: Path = EXPORT_DIR) -> dict[str, Any]:
    import tensorflow as tf
    from transformers import AutoTokenizer, TFAutoModelForQuestionAnswering

    if not (trained_dir / "config.json").is_file():
        raise PipelineError(f"{trained_dir}: no trained model; run the train stage first")
    from pipeline import tracking

    tracking.check_server(tracking.tracking_uri())  # a down server stops us before any work
    tokenizer = AutoTokenizer.from_pretrained(str(trained_dir))
    model = TFAutoModelForQuestionAnswering.from_pretrained(str(trained_dir))
    settings = {
        "max_length": cfg.tokenize.max_length,
        "stride": cfg.tokenize.stride,
        "signature_inputs": list(SIGNATURE_INPUTS),
        "checkpoint": cfg.model.checkpoint,
        # SQuAD v2.0 models may answer "no answer"; pipeline.predict applies the same rule
        # as the evaluate stage.
        "version_2_with_negative": cfg.data.version_2_with_negative,
        "null_score_diff_threshold": cfg.evaluate.null_score_diff_threshold,
    }
    with atomic_output_dir(out_dir) as tmp:
        serve = serving_function(model)
        # A plain tf.Module keeps the SavedModel free of Keras-specific restore logic.
        module = tf.Module()
        module.model = model
        module.serve = serve
        tf.saved_model.save(module, str(tmp / "saved_model"), signatures={"serving_default": serve})
        model.save_pretrained(str(tmp / "hf"))
        tokenizer.save_pretrained(str(tmp / "hf"))
        write_json(tmp / INFERENCE_FILE, settings)
    run_file = trained_dir / "training_run.json"
    if run_file.is_file():
        _log_export(cfg, read_json(run_file)["run_id"], out_dir / INFERENCE_FILE)
    return settings


def _log_export(cfg: PipelineConfig, run_id: str, settings_file: Path) -> None:
    from pipeline import tracking

    client, _ = tracking.client_for(cfg.mlflow.experiment_name)
    if tracking.find_run(client, run_id) is None:
        print(f"note: MLflow run {run_id} is not in {tracking.tracking_uri()}; export not logged")
        return
    client.log_artifact(run_id, str(settings_file), "export")
    client.set_tag(run_id, "exported", "true")


@stage_entry_point
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = load_config(args.params)
    export(cfg)
    print(f"exported SavedModel and HF model to {EXPORT_DIR}/")


if __name__ == "__main__":
    main()
