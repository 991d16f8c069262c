"""Answer questions with an exported model (models/export/) or a logged MLflow model.

One question:

    python -m pipeline.predict --model models/export --question "..." --context "..."
    python -m pipeline.predict --model models/export --question "..." --context-file article.txt

One question without a context, answered from a passage index (retrieve, then read: the top k
passages by BM25, read by the model; docs/retrieval.md):

    python -m pipeline.predict --model models/export --index models/index --question "..."
    python -m pipeline.predict --model models/export --corpus docs/ --question "..."   # a throwaway index
    python -m pipeline.predict --model models/export --question "..."   # the index the export carries

prints the answer, its score, the passage's retriever and reader scores, and its document's
doc_id and title, with start/end offsets in that document. k and the weight are the ones the
tune_retrieval stage chose (carried by the export), or --k / --weight.

Many (batch):

    python -m pipeline.predict --model models/export --input questions.jsonl --output answers.jsonl
    python -m pipeline.predict --model models:/squad-qa@champion --input dev-v1.1.json --output answers.jsonl

The answers come from the same code as the evaluate stage's (pipeline.qa.predictions):
contexts longer than the export's max_length are split into the same stride windows as in
training, and the best span over all windows wins. One question prints one JSON object:
answer, score (start logit + end logit), start and end character offsets in the context,
windows. A SQuAD v2.0 model (data.version_2_with_negative) answers "" when the null score
(CLS start + end, minimum over the windows) beats the best span by more than the threshold,
and adds null_odds.

--model is an export directory, or an MLflow model (models:/<name>@<alias>, models:/<name>/<version>,
runs:/..., or a local directory with an MLmodel file) logged by the export stage; models:/
URIs are looked up in $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.

--input is JSON Lines (one {"question": ..., "context": ..., "id": ...} per line; id optional,
the line number by default) or a SQuAD-format .json/.json.gz file. The model is loaded once;
questions are read and answered --chunk-size at a time (memory stays bounded), each chunk's
windows predicted in length-sorted batches, with a progress bar. --output gets one JSON
object per question, in input order: id, answer, score, start, end (and null_odds); it is
written whole or not at all. A bad question (empty, not a string, too long) stops the run
with one line naming it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.exported import ExportedQA
from pipeline.qa.int8 import ENGINES
from pipeline.qa.predictions import COURSE_MAX_ANSWER_LENGTH, COURSE_N_BEST, check_questions
from pipeline.qa.retrieval import DEFAULT_BM25, PassageIndex, read_choice, read_corpus
from pipeline.qa.squad import iter_questions
from pipeline.runtime import tracking
from pipeline.runtime.errors import PipelineError, stage_entry_point
from pipeline.runtime.paths import EXPORT_DIR

OUTPUT_FIELDS = ("answer", "score", "start", "end", "null_odds")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default=str(EXPORT_DIR),
        help=f"export directory ({EXPORT_DIR}) or MLflow model URI (models:/squad-qa@champion)",
    )
    parser.add_argument("--question", help="one question (with --context or --context-file, or from an index)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--context")
    group.add_argument("--context-file", type=Path)
    group.add_argument("--index", type=Path, help="a question without a context: search this passage index")
    group.add_argument(
        "--corpus",
        type=Path,
        help="a question without a context: index this directory of .txt/.md files (or SQuAD file)",
    )
    parser.add_argument("--k", type=int, default=None, help="passages read (default: the one the export carries)")
    parser.add_argument(
        "--weight", type=float, default=None, help="w of (1-w)*BM25 + w*reader (default: the one the export carries)"
    )
    parser.add_argument("--input", type=Path, help="many questions: .jsonl, or SQuAD-format .json/.json.gz")
    parser.add_argument("--output", type=Path, help="answers as JSON Lines (with --input)")
    parser.add_argument("--chunk-size", type=int, default=1000, help="questions read and answered at a time")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per model call")
    parser.add_argument("--max-questions", type=int, default=None, help="answer only the first N questions")
    parser.add_argument(
        "--n-best",
        type=int,
        default=None,
        help=f"start/end candidates per window (course: {COURSE_N_BEST}; an MLflow model: its own)",
    )
    parser.add_argument(
        "--max-answer-length",
        type=int,
        default=None,
        help=f"longest answer in tokens (course: {COURSE_MAX_ANSWER_LENGTH}; an MLflow model: its own)",
    )
    parser.add_argument(
        "--null-score-diff-threshold",
        type=float,
        default=None,
        help='SQuAD v2.0 models: answer "" when null score - best span score is above this '
        "(default: the export's evaluate.null_score_diff_threshold)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="an export's logits from float32 (TensorFlow) or int8 (OpenVINO; an export made with "
        "export.engine=int8) (default: the engine the export serves)",
    )
    args = parser.parse_args(argv)
    if args.input is None and args.question is None:
        parser.error("give --question with --context/--context-file, or --input with --output")
    if args.input is not None and (args.question is not None or args.output is None):
        parser.error("--input needs --output, and no --question")
    if (args.index or args.corpus or args.k or args.weight is not None) and args.input is not None:
        parser.error("--index, --corpus, --k and --weight answer one --question")
    if args.weight is not None and not 0.0 <= args.weight <= 1.0:
        parser.error("--weight must be in [0, 1]")
    for name in ("chunk_size", "batch_size", "max_questions", "n_best", "max_answer_length", "k"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def read_context(args: argparse.Namespace) -> str:
    """The context, checked before any model is loaded."""
    if not args.question.strip():
        raise PipelineError("--question is empty; ask a question")
    if args.context_file is None:
        context = args.context
    else:
        if not args.context_file.is_file():
            raise PipelineError(f"--context-file {args.context_file}: file not found")
        try:
            context = args.context_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise PipelineError(
                f"--context-file {args.context_file}: not UTF-8 text (byte {err.start}); "
                "convert it, e.g. iconv -t UTF-8"
            ) from None
    if not context.strip():
        raise PipelineError("--context is empty; give the text to answer from")
    return context


def is_mlflow_model(model: str) -> bool:
    path = Path(model)
    return (path / "MLmodel").is_file() or (":/" in model and not path.exists())


class Answerer:
    """The model, loaded once: answers a chunk of id/question/context records."""

    def __init__(self, model: str, args: argparse.Namespace) -> None:
        self.args = args
        self.pyfunc = None
        self.export: Optional[ExportedQA] = None
        if is_mlflow_model(model):
            if args.engine is not None:
                raise PipelineError(f"--engine applies to an export directory; {model} serves its own engine")
            import mlflow

            mlflow.set_tracking_uri(tracking.tracking_uri())
            try:
                self.pyfunc = mlflow.pyfunc.load_model(model)
            except Exception as err:  # MlflowException, OSError: the URI names nothing loadable
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise PipelineError(f"--model {model}: cannot load this MLflow model ({first[:300]})") from None
        else:
            self.export = ExportedQA(model, args.engine)

    def answer(self, records: list[dict], first_row: int = 0) -> list[dict[str, Any]]:
        questions = [r["question"] for r in records]
        contexts = [r["context"] for r in records]
        a = self.args
        if self.export is not None:
            check_questions(self.export.tokenizer, questions, contexts, self.export.windows, first_row=first_row)
            return self.export.answer_many(
                questions,
                contexts,
                a.n_best or COURSE_N_BEST,
                a.max_answer_length or COURSE_MAX_ANSWER_LENGTH,
                a.null_score_diff_threshold,
                batch_size=a.batch_size,
            )
        import pandas as pd
        from mlflow.exceptions import MlflowException

        qa_model = self.pyfunc.unwrap_python_model()
        if hasattr(qa_model, "qa"):  # ours (pipeline.mlflow_model.QAModel): rows numbered in the file
            check_questions(
                qa_model.qa.tokenizer,
                questions,
                contexts,
                qa_model.qa.windows,
                qa_model.max_context_chars,
                first_row=first_row,
            )
        params = {
            k: v
            for k, v in (
                ("n_best", a.n_best),
                ("max_answer_length", a.max_answer_length),
                ("null_score_diff_threshold", a.null_score_diff_threshold),
            )
            if v is not None
        }
        try:
            frame = self.pyfunc.predict(
                pd.DataFrame({"question": questions, "context": contexts}), params=params or None
            )
        except MlflowException as err:
            raise PipelineError(err.message.strip().splitlines()[-1]) from None
        return [{k: (None if _missing(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def chunks(records: Iterable[dict], size: int) -> Iterator[list[dict]]:
    iterator = iter(records)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def answer_file(
    answerer: Answerer,
    input_path: Path,
    output_path: Path,
    chunk_size: int,
    max_questions: Optional[int] = None,
    progress: bool = True,
) -> int:
    """Answer every question of input_path into output_path (JSON Lines, written whole or not
    at all); returns the number of questions."""
    total = None
    if progress:  # a first pass to size the bar: cheap next to answering
        total = sum(1 for _ in itertools.islice(iter_questions(input_path), max_questions))
    records = itertools.islice(iter_questions(input_path), max_questions)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(f".{output_path.name}.tmp-{os.getpid()}")
    done = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="question", desc="Answering", file=sys.stderr)
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for chunk in chunks(records, chunk_size):
                try:
                    results = answerer.answer(chunk, first_row=done)
                except PipelineError as err:
                    raise PipelineError(f"{input_path}: {err}") from None
                for record, result in zip(chunk, results):
                    row = {"id": record["id"], **{k: result[k] for k in OUTPUT_FIELDS if k in result}}
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                done += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        tmp.replace(output_path)
    finally:
        if bar is not None:
            bar.close()
        tmp.unlink(missing_ok=True)
    return done


def answer_from_index(args: argparse.Namespace) -> dict[str, Any]:
    """One question without a context: retrieve from --index / --corpus / the model's own index, then read."""
    if not args.question.strip():
        raise PipelineError("--question is empty; ask a question")
    if is_mlflow_model(args.model):
        if args.index or args.corpus or args.k or args.weight is not None:
            raise PipelineError(f"--model {args.model}: an MLflow model answers from the index it carries; drop them")
        return Answerer(args.model, args).answer([{"id": "q", "question": args.question, "context": None}])[0]
    qa = ExportedQA(args.model, args.engine)
    if args.corpus is not None:
        index = PassageIndex.build(read_corpus(args.corpus), qa.tokenizer, qa.windows, DEFAULT_BM25, str(args.corpus))
    else:
        index = qa.load_index(args.index)
    # the index's own choice (the export's index), else the one the export carries
    chosen = index.choice() or (read_choice(qa.index_dir) if qa.index_dir is not None else None)
    if chosen is None and (args.k is None or args.weight is None):
        raise PipelineError(
            f"--model {args.model} carries no chosen k and weight (the tune_retrieval stage's): give --k and --weight"
        )
    k = args.k if args.k is not None else chosen[0]
    weight = args.weight if args.weight is not None else chosen[1]
    check_questions(qa.tokenizer, [args.question], ["-"], qa.windows)
    return qa.answer_open(
        index,
        [args.question],
        k,
        weight,
        args.n_best or COURSE_N_BEST,
        args.max_answer_length or COURSE_MAX_ANSWER_LENGTH,
        args.batch_size,
    )[0]


@stage_entry_point
def main() -> None:
    args = parse_args()
    if args.input is not None:
        if not args.input.is_file():
            raise PipelineError(f"--input {args.input}: file not found")
        answerer = Answerer(args.model, args)
        count = answer_file(
            answerer, args.input, args.output, args.chunk_size, args.max_questions, progress=sys.stderr.isatty()
        )
        print(f"answered {count} questions into {args.output}")
        return
    if args.context is None and args.context_file is None:
        print(json.dumps(answer_from_index(args), ensure_ascii=False))
        return
    context = read_context(args)
    answerer = Answerer(args.model, args)
    if answerer.export is not None:  # the one-question form: answer_question, windows included
        result = answerer.export.answer(
            args.question,
            context,
            args.n_best or COURSE_N_BEST,
            args.max_answer_length or COURSE_MAX_ANSWER_LENGTH,
            args.null_score_diff_threshold,
        )
    else:
        result = answerer.answer([{"id": "q", "question": args.question, "context": context}])[0]
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
