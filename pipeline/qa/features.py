"""SQuAD examples -> model features (the course's preprocessing).

Questions stripped, `truncation="only_second"`, long contexts split into windows of
`max_length` tokens overlapping by `stride`. Training features carry the answer's token
positions (CLS for a window without the whole answer, and for SQuAD v2.0 unanswerable
questions); validation features carry `example_id` and offsets kept only for context
tokens. Features are unpadded; batches are padded at train/predict time (qa.batching).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from pipeline.runtime.config import TokenizeConfig
from pipeline.runtime.errors import PipelineError

# The tokenizer puts CLS first in every window: the label of "no answer in this window",
# and the logit post-processing scores "no answer" with (qa.answers).
CLS_INDEX = 0


def _encode(tokenizer: Any, examples: dict, cfg: TokenizeConfig) -> Any:
    questions = [q.strip() for q in examples["question"]]
    return tokenizer(
        questions,
        examples["context"],
        max_length=cfg.max_length,
        truncation="only_second",
        stride=cfg.stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


@dataclass
class WindowReport:
    """How the examples fit the windows: windows per example (estimated from token counts, as
    the tokenizer will split them) and the ones with many."""

    windows: dict[str, int]
    many: list[tuple[str, int]]  # (id, windows) over the warning threshold, most first


def check_windows(
    ids: Sequence[str],
    questions: Sequence[str],
    contexts: Sequence[str],
    tokenizer: Any,
    cfg: TokenizeConfig,
    warn_windows: Optional[int] = None,
    label: str = "record id={id!r}",
) -> WindowReport:
    """Stop, naming the record, when a question leaves no room for context beyond the stride
    (the tokenizer would panic or raise "Truncation error"); count each example's windows.

    A window holds the question, the special tokens and up to `room` context tokens; windows
    overlap by `stride` tokens, so room must exceed stride. The rule: a question may take at
    most max_length - specials - stride - 1 tokens; a longer one is rejected (shorten it, raise
    tokenize.max_length or lower tokenize.stride).
    """
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    question_lengths = [
        len(t) for t in tokenizer([q.strip() for q in questions], add_special_tokens=False)["input_ids"]
    ]
    unique_contexts = list(dict.fromkeys(contexts))
    context_tokens = dict(
        zip(unique_contexts, (len(t) for t in tokenizer(unique_contexts, add_special_tokens=False)["input_ids"]))
    )
    windows: dict[str, int] = {}
    for example_id, n_question, context in zip(ids, question_lengths, contexts):
        room = cfg.max_length - specials - n_question
        if room <= cfg.stride:
            limit = cfg.max_length - specials - cfg.stride - 1
            raise PipelineError(
                f"{label.format(id=example_id)}: the question has {n_question} tokens, "
                f"leaving {max(room, 0)} context tokens "
                f"per window, not more than tokenize.stride={cfg.stride} (questions may have at most {limit} tokens "
                f"with tokenize.max_length={cfg.max_length}); shorten the question, raise tokenize.max_length or "
                "lower tokenize.stride"
            )
        overflow = context_tokens[context] - room
        windows[example_id] = 1 if overflow <= 0 else 1 + -(-overflow // (room - cfg.stride))
    many = sorted(
        ((i, n) for i, n in windows.items() if warn_windows is not None and n > warn_windows), key=lambda item: -item[1]
    )
    return WindowReport(windows, many)


def _context_span(sequence_ids: list) -> tuple[int, int]:
    """First and last token index of the context (sequence id 1) in one feature."""
    start = sequence_ids.index(1)
    end = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
    return start, end


def prepare_train_features(examples: dict, tokenizer: Any, cfg: TokenizeConfig) -> dict:
    """Course preprocessing for training: one feature per window, with answer token positions.

    A window that does not fully contain the answer (or a v2.0 unanswerable question) is
    labelled with the CLS token at both ends.
    """
    inputs = _encode(tokenizer, examples, cfg)
    offset_mapping = inputs.pop("offset_mapping")
    sample_map = inputs.pop("overflow_to_sample_mapping")
    start_positions, end_positions = [], []
    for i, offsets in enumerate(offset_mapping):
        answer = examples["answers"][sample_map[i]]
        if not answer["text"]:
            start_positions.append(CLS_INDEX)
            end_positions.append(CLS_INDEX)
            continue
        start_char = answer["answer_start"][0]
        end_char = start_char + len(answer["text"][0])
        context_start, context_end = _context_span(inputs.sequence_ids(i))
        if offsets[context_start][0] > start_char or offsets[context_end][1] < end_char:
            start_positions.append(CLS_INDEX)
            end_positions.append(CLS_INDEX)
            continue
        idx = context_start
        while idx <= context_end and offsets[idx][0] <= start_char:
            idx += 1
        start_positions.append(idx - 1)
        idx = context_end
        while idx >= context_start and offsets[idx][1] >= end_char:
            idx -= 1
        end_positions.append(idx + 1)
    inputs["start_positions"] = start_positions
    inputs["end_positions"] = end_positions
    return dict(inputs)


def prepare_validation_features(examples: dict, tokenizer: Any, cfg: TokenizeConfig) -> dict:
    """Course preprocessing for evaluation: example_id per window, offsets kept only for context tokens."""
    inputs = _encode(tokenizer, examples, cfg)
    sample_map = inputs.pop("overflow_to_sample_mapping")
    example_ids, offset_mapping = [], []
    for i, offsets in enumerate(inputs["offset_mapping"]):
        example_ids.append(examples["id"][sample_map[i]])
        sequence_ids = inputs.sequence_ids(i)
        offset_mapping.append([list(o) if sequence_ids[k] == 1 else None for k, o in enumerate(offsets)])
    inputs["offset_mapping"] = offset_mapping
    inputs["example_id"] = example_ids
    return dict(inputs)


def tokenize_dataset_dict(raw: Any, tokenizer: Any, cfg: TokenizeConfig, num_proc: int | None = None) -> Any:
    from datasets import DatasetDict

    num_proc = num_proc if num_proc and num_proc > 1 else None
    common = dict(batched=True, num_proc=num_proc, keep_in_memory=True, load_from_cache_file=False)
    return DatasetDict(
        {
            "train": raw["train"].map(
                prepare_train_features,
                fn_kwargs={"tokenizer": tokenizer, "cfg": cfg},
                remove_columns=raw["train"].column_names,
                desc="Tokenizing train",
                **common,
            ),
            "validation": raw["validation"].map(
                prepare_validation_features,
                fn_kwargs={"tokenizer": tokenizer, "cfg": cfg},
                remove_columns=raw["validation"].column_names,
                desc="Tokenizing validation",
                **common,
            ),
        }
    )


def tokenize_examples(examples: dict[str, list], tokenizer: Any, cfg: TokenizeConfig) -> Any:
    """Validation features of id/question/context columns (a datasets.Dataset in memory: no cache files)."""
    from datasets import Dataset

    check_windows(examples["id"], examples["question"], examples["context"], tokenizer, cfg)

    raw = Dataset.from_dict({c: examples[c] for c in ("id", "question", "context")})
    return raw.map(
        prepare_validation_features,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "cfg": cfg},
        remove_columns=raw.column_names,
        keep_in_memory=True,
        load_from_cache_file=False,
        desc="Tokenizing",
    )
