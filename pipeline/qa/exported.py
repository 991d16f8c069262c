"""A loaded model export (qa.serving's layout) that answers questions by the evaluate
stage's rule (qa.predictions.answer_question / answer_questions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from pipeline.qa.int8 import ENGINES, FLOAT32, INT8, INT8_MODEL_FILE, int8_logits_fn
from pipeline.qa.predictions import answer_question, answer_questions, passage_reader
from pipeline.qa.retrieval import PassageIndex
from pipeline.qa.open_domain import answer_open
from pipeline.qa.serving import HF_DIR, INDEX_DIR, INFERENCE_FILE, INT8_DIR, SAVED_MODEL_DIR, read_settings
from pipeline.runtime.config import TokenizeConfig
from pipeline.runtime.errors import PipelineError
from pipeline.runtime.files import read_json


class ExportedQA:
    """A loaded export: tokenizer + logits from one engine (the SavedModel's signature, or the
    int8 model) + inference settings. `engine` None: the one the export serves."""

    def __init__(self, export_dir: str | Path, engine: Optional[str] = None) -> None:
        export_dir = Path(export_dir)
        settings = read_settings(export_dir)
        if settings is None or not (export_dir / SAVED_MODEL_DIR).is_dir():
            raise PipelineError(
                f"{export_dir}: not a model export (no {INFERENCE_FILE} or {SAVED_MODEL_DIR}/); run `dvc repro export`"
            )
        self._load(export_dir / SAVED_MODEL_DIR, export_dir / HF_DIR, settings, export_dir / INT8_DIR, engine)
        self.index_dir = export_dir / INDEX_DIR if (export_dir / INDEX_DIR).is_dir() else None

    @classmethod
    def from_files(
        cls,
        saved_model_dir: str | Path,
        tokenizer_dir: str | Path,
        settings_file: str | Path,
        int8_dir: Optional[str | Path] = None,
        engine: Optional[str] = None,
        index_dir: Optional[str | Path] = None,
    ) -> "ExportedQA":
        """An export whose parts live apart (an MLflow model's artifacts)."""
        qa = cls.__new__(cls)
        qa._load(
            Path(saved_model_dir), Path(tokenizer_dir), read_json(settings_file), int8_dir and Path(int8_dir), engine
        )
        qa.index_dir = index_dir and Path(index_dir)
        return qa

    def _load(
        self,
        saved_model_dir: Path,
        tokenizer_dir: Path,
        settings: dict[str, Any],
        int8_dir: Optional[Path],
        engine: Optional[str],
    ) -> None:
        from transformers import AutoTokenizer

        self.settings = settings
        self.engine = engine or settings.get("engine", FLOAT32)
        if self.engine not in ENGINES:
            raise PipelineError(f"engine {self.engine!r} is unknown: use one of {', '.join(ENGINES)}")
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        if self.engine == INT8:
            self.logits = int8_logits_fn((int8_dir or saved_model_dir.parent / INT8_DIR) / INT8_MODEL_FILE)
        else:
            import tensorflow as tf

            self.signature = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
            self.logits = self._float32_logits

    @property
    def windows(self) -> TokenizeConfig:
        return TokenizeConfig(max_length=self.settings["max_length"], stride=self.settings["stride"], warn_windows=None)

    @property
    def version_2_with_negative(self) -> bool:
        return bool(self.settings.get("version_2_with_negative"))

    def threshold(self, null_score_diff_threshold: Optional[float] = None) -> float:
        """The SQuAD v2.0 null threshold: the given one, else the one recorded at export."""
        if null_score_diff_threshold is not None:
            return null_score_diff_threshold
        return self.settings.get("null_score_diff_threshold", 0.0)

    def _float32_logits(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        import tensorflow as tf

        inputs = {name: tf.constant(batch[name], dtype=tf.int32) for name in self.settings["signature_inputs"]}
        out = self.signature(**inputs)
        return out["start_logits"].numpy(), out["end_logits"].numpy()

    def answer(
        self,
        question: str,
        context: str,
        n_best: int,
        max_answer_length: int,
        null_score_diff_threshold: Optional[float] = None,
    ) -> dict[str, Any]:
        """The evaluate stage's answer for this question (qa.predictions.answer_question); a SQuAD
        v2.0 export applies its recorded threshold unless one is given."""
        return answer_question(
            self.logits,
            self.tokenizer,
            question,
            context,
            self.windows,
            tuple(self.settings["signature_inputs"]),
            n_best,
            max_answer_length,
            self.version_2_with_negative,
            self.threshold(null_score_diff_threshold),
        )

    def answer_many(
        self,
        questions: Sequence[str],
        contexts: Sequence[str],
        n_best: int,
        max_answer_length: int,
        null_score_diff_threshold: Optional[float] = None,
        batch_size: int = 32,
        progress: bool = False,
    ) -> list[dict[str, Any]]:
        """answer() for many questions: tokenized together, predicted in length-sorted batches
        (qa.predictions.answer_questions). The caller checks the inputs (qa.predictions.check_questions)."""
        return answer_questions(
            self.logits,
            self.tokenizer,
            questions,
            contexts,
            self.windows,
            tuple(self.settings["signature_inputs"]),
            n_best,
            max_answer_length,
            self.version_2_with_negative,
            self.threshold(null_score_diff_threshold),
            batch_size=batch_size,
            progress=progress,
        )

    def load_index(self, index_dir: Optional[str | Path] = None) -> PassageIndex:
        """A passage index (the export's own by default), checked to split text as this model reads it."""
        index_dir = index_dir or self.index_dir
        if index_dir is None:
            raise PipelineError(
                "this model carries no passage index: give one (--index models/index, or --corpus DIR) "
                "or a context with each question"
            )
        index = PassageIndex.load(index_dir)
        index.check_reader(self.tokenizer, self.windows, str(index_dir))
        return index

    def answer_open(
        self,
        index: PassageIndex,
        questions: Sequence[str],
        k: int,
        weight: float,
        n_best: int,
        max_answer_length: int,
        batch_size: int = 32,
    ) -> list[dict[str, Any]]:
        """Questions without a context: the top k passages of the index read by this model, the best
        answer by (1 - weight) * BM25 + weight * reader score (qa.open_domain.answer_open)."""
        reader = passage_reader(
            self.logits,
            self.tokenizer,
            self.windows,
            tuple(self.settings["signature_inputs"]),
            n_best,
            max_answer_length,
            batch_size,
        )
        return answer_open(reader, index, questions, k, weight)
