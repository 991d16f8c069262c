"""Tokenize stage: the course's labels decode back to the answers; validation offsets are masked."""

from __future__ import annotations

import pytest

from pipeline.runtime.config import TokenizeConfig
from pipeline.qa.features import CLS_INDEX, prepare_train_features, prepare_validation_features

CFG = TokenizeConfig(max_length=384, stride=128)


@pytest.fixture(scope="module")
def train_features(sample_raw, tokenizer):
    examples = sample_raw["train"][:]
    return examples, prepare_train_features(examples, tokenizer, CFG)


def test_every_answer_that_fits_its_window_decodes_back_to_the_answer_text(train_features, tokenizer):
    examples, features = train_features
    inputs = tokenizer(
        [q.strip() for q in examples["question"]],
        examples["context"],
        max_length=CFG.max_length,
        truncation="only_second",
        stride=CFG.stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    labelled = exact = 0
    for i, (start, end) in enumerate(zip(features["start_positions"], features["end_positions"])):
        example = inputs["overflow_to_sample_mapping"][i]
        answer = examples["answers"][example]
        context = examples["context"][example]
        offsets = inputs["offset_mapping"][i]
        sequence_ids = inputs.sequence_ids(i)
        answer_start = answer["answer_start"][0]
        answer_end = answer_start + len(answer["text"][0])
        context_tokens = [k for k, s in enumerate(sequence_ids) if s == 1]
        fits = offsets[context_tokens[0]][0] <= answer_start and offsets[context_tokens[-1]][1] >= answer_end
        if not fits:
            assert start == end == CLS_INDEX
            continue
        labelled += 1
        assert sequence_ids[start] == 1 and sequence_ids[end] == 1
        # the labels are the smallest token span covering the answer characters
        assert offsets[start][0] <= answer_start < offsets[start][1], examples["id"][example]
        assert offsets[end][0] < answer_end <= offsets[end][1], examples["id"][example]
        span = context[offsets[start][0] : offsets[end][1]]
        if span == answer["text"][0]:
            exact += 1
            # the tokens decode to the answer as well (lower-cased: the model is uncased)
            ids = features["input_ids"][i][start : end + 1]
            decoded = tokenizer.decode(ids).replace(" ", "")
            assert tokenizer.unk_token_id in ids or decoded == tokenizer.backend_tokenizer.normalizer.normalize_str(
                span
            ).replace(" ", "")
    assert labelled >= 0.97 * len(examples["id"])
    # answers that end inside a word piece ("evolution" in "evolutionary") are the only inexact ones
    assert exact >= 0.97 * labelled


def test_short_windows_split_long_contexts_and_label_cls_when_answer_is_outside(sample_raw, tokenizer):
    examples = sample_raw["train"][:50]
    features = prepare_train_features(examples, tokenizer, TokenizeConfig(max_length=64, stride=16))
    assert len(features["input_ids"]) > 3 * 50
    assert all(len(ids) <= 64 for ids in features["input_ids"])
    assert sum(s == CLS_INDEX for s in features["start_positions"]) > len(features["input_ids"]) // 2


def test_questions_are_stripped(tokenizer):
    examples = {
        "id": ["a"],
        "question": ["  Who?  "],
        "context": ["Bob."],
        "answers": [{"text": ["Bob"], "answer_start": [0]}],
    }
    stripped = dict(examples, question=["Who?"])
    assert (
        prepare_train_features(examples, tokenizer, CFG)["input_ids"]
        == prepare_train_features(stripped, tokenizer, CFG)["input_ids"]
    )


def test_validation_features_keep_example_ids_and_only_context_offsets(sample_raw, tokenizer):
    examples = sample_raw["validation"][:40]
    features = prepare_validation_features(examples, tokenizer, TokenizeConfig(max_length=128, stride=32))
    assert set(features["example_id"]) == set(examples["id"])
    assert len(features["example_id"]) > 40  # some contexts need several windows
    for ids, offsets in zip(features["input_ids"], features["offset_mapping"]):
        assert len(ids) == len(offsets)
        assert offsets[0] is None  # CLS
        sep = ids.index(tokenizer.sep_token_id)
        assert all(o is None for o in offsets[: sep + 1])  # question tokens are masked
        assert offsets[-1] is None  # final SEP
        assert any(o is not None for o in offsets)
