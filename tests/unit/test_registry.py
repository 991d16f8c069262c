"""pipeline.runtime.registry: a version's tags carry the F1 of its own answers, or say why not."""

from __future__ import annotations

import json

from pipeline.runtime import registry

SERVED = {"evaluate.n_best": 20, "evaluate.max_answer_length": 30, "precision": "float32"}


def evaluation(**settings):
    return {"f1": 61.25, "exact_match": 50.0, "eval_data_digest": "ab.dir", "answer_settings": {**SERVED, **settings}}


def test_a_version_scored_with_the_settings_it_serves_gets_its_scores():
    tags = registry.evaluation_tags(evaluation(), SERVED)
    assert (tags["f1"], tags["exact_match"], tags["eval_data_digest"]) == ("61.25", "50.0", "ab.dir")
    assert json.loads(tags["answer_settings"]) == json.loads(tags["eval_answer_settings"]) == SERVED
    assert "eval_note" not in tags


def test_a_version_scored_in_another_precision_gets_no_scores_and_a_note_saying_what_differs():
    tags = registry.evaluation_tags(evaluation(precision="mixed_bfloat16"), SERVED)
    assert "f1" not in tags and "exact_match" not in tags
    assert tags["eval_note"] == "no scores: evaluated with precision='mixed_bfloat16' but serves precision='float32'"
    assert tags["eval_data_digest"] == "ab.dir"
