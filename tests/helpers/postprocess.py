"""The production post-processing (pipeline.qa.postprocess) called with offsets as Python
lists, the shape hand-built test cases are easiest to write in."""

from __future__ import annotations

from pipeline.qa import postprocess
from pipeline.qa.postprocess import ContextOffsets
from tests.reference.course_loop import answer_texts  # noqa: F401  (re-exported: id -> text)


def best_spans(example_ids, contexts, feature_example_ids, offsets, starts, ends, n_best=20, max_answer_length=30):
    return postprocess.best_spans(
        example_ids,
        contexts,
        feature_example_ids,
        ContextOffsets.from_lists(offsets),
        starts,
        ends,
        n_best,
        max_answer_length,
    )


def postprocess_predictions(
    example_ids,
    contexts,
    feature_example_ids,
    offsets,
    starts,
    ends,
    n_best=20,
    max_answer_length=30,
    version_2_with_negative=False,
    null_score_diff_threshold=0.0,
):
    return postprocess.postprocess_predictions(
        example_ids,
        contexts,
        feature_example_ids,
        ContextOffsets.from_lists(offsets),
        starts,
        ends,
        n_best,
        max_answer_length,
        version_2_with_negative,
        null_score_diff_threshold,
    )
