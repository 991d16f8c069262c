"""A loaded model export (qa.serving's layout) that answers questions by the evaluate
stage's rule (qa.predictions.answer_question)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pipeline.qa.predictions import answer_question
from pipeline.qa.serving import HF_DIR, INFERENCE_FILE, SAVED_MODEL_DIR, read_settings
from pipeline.runtime.config import TokenizeConfig
from pipeline.runtime.errors import PipelineError


class ExportedQA:
    """A loaded export: tokenizer + SavedModel signature + inference settings."""

    def __init__(self, export_dir: str | Path) -> None:
        import tensorflow as tf
        from transformers import AutoTokenizer

        export_dir = Path(export_dir)
        self.settings = read_settings(export_dir)
        if self.settings is None or not (export_dir / SAVED_MODEL_DIR).is_dir():
            raise PipelineError(f"{export_dir}: not a model export (no {INFERENCE_FILE} or {SAVED_MODEL_DIR}/); "
                                "run `dvc repro export`")
        self.tokenizer = AutoTokenizer.from_pretrained(str(export_dir / HF_DIR))
        self.signature = tf.saved_model.load(str(export_dir / SAVED_MODEL_DIR)).signatures["serving_default"]

    def logits(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        import tensorflow as tf

        inputs = {name: tf.constant(batch[name], dtype=tf.int32) for name in self.settings["signature_inputs"]}
        out = self.signature(**inputs)
        return out["start_logits"].numpy(), out["end_logits"].numpy()

    def answer(self, question: str, context: str, n_best: int, max_answer_length: int,
               null_score_diff_threshold: Optional[float] = None) -> dict[str, Any]:
        """The evaluate stage's answer for this question (qa.predictions.answer_question); a SQuAD
        v2.0 export applies its recorded threshold unless one is given."""
        s = self.settings
        threshold = s.get("null_score_diff_threshold", 0.0) if null_score_diff_threshold is None \
            else null_score_diff_threshold
        return answer_question(
            self.logits, self.tokenizer, question, context,
            TokenizeConfig(max_length=s["max_length"], stride=s["stride"], warn_windows=None), tuple(s["signature_inputs"]),
            n_best, max_answer_length, bool(s.get("version_2_with_negative")), threshold,
        )
