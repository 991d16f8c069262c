"""Answer a question from an exported model (models/export/), using only its files.

    python -m pipeline.predict --model models/export --question "..." --context "..."
    python -m pipeline.predict --model models/export --question "..." --context-file article.txt

Contexts longer than max_length are split into the same stride windows as in training;
the best span over all windows wins. Prints one JSON object: answer, score (start logit
+ end logit), start and end character offsets in the context.
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

    def answer(self, question: str, context: str, n_best: int = 20, max_answer_length: int = 30) -> dict[str, Any]:
        import numpy as np

        from pipeline.batching import FeatureTable, RaggedColumn
        from pipeline.config import TokenizeConfig
        from pipeline.inference import predict_logits
        from pipeline.postprocess import best_spans
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
        span = best_spans(["q"], [context], features["example_id"], features["offset_mapping"], starts, ends,
                          n_best, max_answer_length)["q"]
        if span is None:
            return {"answer": "", "score": None, "start": None, "end": None, "windows": n}
        return {"answer": span.text, "score": round(float(np.float32(span.score)), 4),
                "start": span.start_char, "end": span.end_char, "windows": n}


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
    args = parser.parse_args()
    if args.n_best < 1 or args.max_answer_length < 1:
        raise PipelineError("--n-best and --max-answer-length must be at least 1")
    context = args.context
    if args.context_file is not None:
        if not args.context_file.is_file():
            raise PipelineError(f"--context-file {args.context_file}: file not found")
        context = args.context_file.read_text(encoding="utf-8")
    result = ExportedQA(args.model).answer(args.question, context, args.n_best, args.max_answer_length)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
