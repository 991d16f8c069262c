"""Answer a question from an exported model (models/export/), using only its files.

    python -m pipeline.predict --model models/export --question "..." --context "..."
    python -m pipeline.predict --model models/export --question "..." --context-file article.txt

The answer comes from the same code as the evaluate stage's (pipeline.qa.predictions):
contexts longer than the export's max_length are split into the same stride windows as in
training, and the best span over all windows wins. Prints one JSON object: answer, score
(start logit + end logit), start and end character offsets in the context, windows. A
SQuAD v2.0 model (data.version_2_with_negative) answers "" when the null score (CLS start
+ end, minimum over the windows) beats the best span by more than the threshold, and adds
null_odds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.predictions import COURSE_MAX_ANSWER_LENGTH, COURSE_N_BEST
from pipeline.qa.exported import ExportedQA
from pipeline.runtime.errors import PipelineError, stage_entry_point
from pipeline.runtime.paths import EXPORT_DIR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(EXPORT_DIR), help=f"export directory ({EXPORT_DIR})")
    parser.add_argument("--question", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--context")
    group.add_argument("--context-file", type=Path)
    parser.add_argument("--n-best", type=int, default=COURSE_N_BEST,
                        help=f"start/end candidates per window (course: {COURSE_N_BEST})")
    parser.add_argument("--max-answer-length", type=int, default=COURSE_MAX_ANSWER_LENGTH,
                        help=f"longest answer in tokens (course: {COURSE_MAX_ANSWER_LENGTH})")
    parser.add_argument("--null-score-diff-threshold", type=float, default=None,
                        help="SQuAD v2.0 models: answer \"\" when null score - best span score is above this "
                             "(default: the export's evaluate.null_score_diff_threshold)")
    return parser.parse_args(argv)


def read_context(args: argparse.Namespace) -> str:
    """The context, checked before any model is loaded."""
    if args.n_best < 1 or args.max_answer_length < 1:
        raise PipelineError("--n-best and --max-answer-length must be at least 1")
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
            raise PipelineError(f"--context-file {args.context_file}: not UTF-8 text (byte {err.start}); "
                                "convert it, e.g. iconv -t UTF-8") from None
    if not context.strip():
        raise PipelineError("--context is empty; give the text to answer from")
    return context


@stage_entry_point
def main() -> None:
    args = parse_args()
    context = read_context(args)
    result = ExportedQA(args.model).answer(args.question, context, args.n_best, args.max_answer_length,
                                           args.null_score_diff_threshold)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
