"""answer_questions (the MLflow model's and batch prediction's path) answers each question as
answer_question does one at a time, whatever the batching; check_questions refuses the rows
the model cannot answer, with one line naming the row and the fix."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.qa.predictions import InvalidQuestion, answer_question, answer_questions, check_questions
from pipeline.runtime.config import TokenizeConfig

WINDOWS = TokenizeConfig(max_length=64, stride=16)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LONG = (
    "The Amazon rainforest covers much of the Amazon basin. " * 8
    + "The Eiffel Tower was finished in 1889. "
    + "Most of the forest is in Brazil. " * 8
)
ROWS = [
    ("Where is the tower?", "The Eiffel Tower is in Paris. It was finished in 1889."),
    ("When was the Eiffel Tower finished?", LONG),
    ("Who wrote it?", "Victor Hugo wrote Les Miserables in 1862, in exile on Guernsey."),
    ("What covers the basin?", LONG[:300]),
]


def token_logits(batch):
    """Logits that depend only on each token's id and position (so not on batch composition or
    padding), without ties (which the top-n partition may break either way, as for any model)."""
    ids = batch["input_ids"].astype(np.float64)
    position = np.arange(ids.shape[1])[None, :]
    start = np.sin(ids * 0.37 + position * 0.013) * 3
    end = np.cos(ids * 0.11 + position * 0.029) * 3
    return start.astype(np.float32), end.astype(np.float32)


@pytest.mark.parametrize("version_2", [False, True], ids=["v1.1", "v2.0"])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_many_questions_are_answered_as_one_at_a_time(tokenizer, version_2, batch_size):
    one_by_one = [
        answer_question(token_logits, tokenizer, q, c, WINDOWS, INPUTS, 20, 30, version_2, 0.0) for q, c in ROWS
    ]
    together = answer_questions(
        token_logits,
        tokenizer,
        [q for q, _ in ROWS],
        [c for _, c in ROWS],
        WINDOWS,
        INPUTS,
        20,
        30,
        version_2,
        0.0,
        batch_size=batch_size,
    )
    assert together == one_by_one
    assert together[1]["windows"] > 1


@pytest.mark.parametrize(
    "question, context, message",
    [
        ("", "Some text.", "row 2: question is empty; ask a question"),
        ("  ", "Some text.", "row 2: question is empty; ask a question"),
        ("Who?", " ", "row 2: context is empty; give the text to answer from"),
        (5, "Some text.", "row 2: question must be a string, got int 5"),
        (None, "Some text.", "row 2: question must be a string, got null"),
        (float("nan"), "Some text.", "row 2: question must be a string, got null"),
        ("Who?", ["a"], "row 2: context must be a string, got list ['a']"),
        (
            "Who?",
            "x" * 101,
            "row 2: context has 101 characters, over the limit of 100; split it or raise max_context_chars",
        ),
    ],
)
def test_bad_rows_are_refused_with_one_line(tokenizer, question, context, message):
    with pytest.raises(InvalidQuestion) as err:
        check_questions(tokenizer, ["Fine?", question], ["Fine.", context], WINDOWS, max_context_chars=100, first_row=1)
    assert str(err.value) == message


def test_the_longest_question_that_fits_is_answered_and_one_token_more_is_refused(tokenizer):
    room = WINDOWS.max_length - WINDOWS.stride - tokenizer.num_special_tokens_to_add(pair=True) - 1
    fits = " ".join(["a"] * room)
    assert len(tokenizer(fits, add_special_tokens=False)["input_ids"]) == room
    check_questions(tokenizer, [fits], [LONG], WINDOWS)
    result = answer_questions(token_logits, tokenizer, [fits], [LONG], WINDOWS, INPUTS, 20, 30, False, 0.0)[0]
    assert result["windows"] > 1
    with pytest.raises(InvalidQuestion, match=rf"row 0: the question has {room + 1} tokens, .*at most {room} tokens"):
        check_questions(tokenizer, [fits + " a"], [LONG], WINDOWS)
