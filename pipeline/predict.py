"""Answer a question from an exported model (models/export/), using only its files.

    python -m pipeline.predict --model models/export --question "..." --context "..."
    python -m pipeline.predict --model models/export --question "..." --context-file article.txt

Contexts longer than max_length are split into the same stride windows as in training;
the best span over all windows wins. Prints one JSON object: answer, score (start logit
+ end logit), start and end character offsets in the context. A SQuAD v2.0 model
(data.version_2_with_negative) answers "" when the null score (CLS start + end, minimum
over the windows) beats the best span by more than the threshold, and adds null_odds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.errors import PipelineError, stage_entry_point
from pipeline.io import read_json


class ExportedQA:
    """A loaded export: tokenizer + SavedModel signature + inference settings."""

    def __init__(self, export_dir: str | Path) -> None:
        import tensorflow as tf
        from transformers import AutoTokenizer

        from pipeline.export import INFERENCE_FILE

        export_dir = Path(export_dir)
        settings_file = export_dir / INFERENCE_FILE
        if not settings_file.is_file() or not (export_dir / "saved_model").is_dir():
            raise PipelineError(f"{export_dir}: not a model export (no {INFERENCE_FILE} or saved_model/); run `dvc repro export`")
        self.settings = read_json(settings_file)
        self.tokenizer = AutoTokenizer.from_pretrained(str(export_dir / "hf"))
        self.signature = tf.saved_model.load(str(export_dir / "saved_model")).signatures["serving_default"]

    def logits(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        import tensorflow as tf

        inputs = {name: tf.constant(batch[name], dtype=tf.int32) for name in self.settings["signature_inputs"]}
        out = self.signature(**inputs)
        return out["start_logits"].numpy(), out["end_logits"].numpy()

    def answer(self, question: str, context: str, n_best: int = 20, max_answer_length: int = 30,
               null_score_diff_threshold: float | None = None) -> dict[str, Any]:
        from pipeline.batching import FeatureTable, RaggedColumn
        from pipeline.config import TokenizeConfig
        from pipeline.inference import predict_logits
        from pipeline.tokenize import prepare_validation_features

        if not question.strip():
            raise PipelineError("--question is empty; ask a question")
        if not context.strip():
            raise PipelineError("--context is empty; give the text to answer from")
        s = self.settings
        features = prepare_validation_features(
            {"id": ["q"], "question": [question], "context": [context]},
            self.tokenizer,
            TokenizeConfig(max_length=s["max_length"], stride=s["stride"]),
        )
        n = len(features["input_ids"])
        columns = {
            name: RaggedColumn.from_lists(features[name] if name in features else [[0] * len(r) for r in features["input_ids"]])
            for name in s["signature_inputs"]
        }
        table = FeatureTable(columns, {}, self.tokenizer.pad_token_id or 0)
        starts, ends = predict_logits(self.logits, table, batch_size=16, max_length=s["max_length"])
        return self.answer_from_logits(context, features, starts, ends, n_best, max_answer_length,
                                       null_score_diff_threshold)

    def answer_from_logits(self, context: str, features: dict, starts, ends, n_best: int, max_answer_length: int,
                           null_score_diff_threshold: float | None = None) -> dict[str, Any]:
        """The best span over all windows; for a SQuAD v2.0 model, "" when the null score
        beats it by more than the threshold (the export's, unless given), as the evaluate stage."""
        import numpy as np

        from pipeline.postprocess import best_spans, null_span

        n = len(features["input_ids"])
        span = best_spans(["q"], [context], features["example_id"], features["offset_mapping"], starts, ends,
                          n_best, max_answer_length)["q"]
        result: dict[str, Any] = {"answer": "", "score": None, "start": None, "end": None, "windows": n}
        if span is not None:
            result.update(answer=span.text, score=round(float(np.float32(span.score)), 4),
                          start=span.start_char, end=span.end_char)
        if self.settings.get("version_2_with_negative"):
            threshold = self.settings.get("null_score_diff_threshold", 0.0) if null_score_diff_threshold is None \
                else null_score_diff_threshold
            null = null_span(list(range(n)), starts, ends)
            odds = null.score - span.score if span is not None else float("inf")
            result["null_odds"] = round(float(np.float32(odds)), 4) if span is not None else None
            if span is None or odds > threshold:
                result.update(answer="", score=None, start=None, end=None)
        return result


@stage_entry_point
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/export", help="export directory (models/export)")
    parser.add_argument("--question", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--context")
    group.add_argument("--context-file", type=Path)
    parser.add_argument("--n-best", type=int, default=20, help="start/end candidates per window (course: 20)")
    parser.add_argument("--max-answer-length", type=int, default=30, help="longest answer in tokens (course: 30)")
    parser.add_argument("--null-score-diff-threshold", type=float, default=None,
                        help="SQuAD v2.0 models: answer \"\" when null score - best span score is above this "
                             "(default: the export's evaluate.null_score_diff_threshold)")
    args = parser.parse_args()
    if args.n_best < 1 or args.max_answer_length < 1:
        raise PipelineError("--n-best and --max-answer-length must be at least 1")
    context = args.context
    if args.context_file is not None:
        if not args.context_file.is_file():
            raise PipelineError(f"--context-file {args.context_file}: file not found")
        context = args.context_file.read_text(encoding="utf-8")
    result = ExportedQA(args.model).answer(args.question, context, args.n_best, args.max_answer_length,
                                           args.null_score_diff_threshold)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
