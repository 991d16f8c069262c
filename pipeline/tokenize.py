"""Stage 2, tokenize: data/raw/ -> data/tokenized/ (train and validation features).

The course's preprocessing: questions stripped, `truncation="only_second"`, long
contexts split into windows of `max_length` tokens overlapping by `stride`. Features are
stored unpadded; batches are padded at train/predict time (see pipeline.batching).

    python -m pipeline.tokenize [--params params.yaml] [--num-proc N]

--num-proc only changes speed, never the bytes written, so it is not a DVC param.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pipeline.config import TokenizeConfig, load_config
from pipeline.errors import PipelineError, stage_entry_point
from pipeline.io import atomic_output_dir, read_json, save_dataset_dict, write_json

RAW_DIR = Path("data/raw")
TOKENIZED_DIR = Path("data/tokenized")
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


def load_raw(raw_dir: Path = RAW_DIR) -> Any:
    from datasets import load_from_disk

    if not (raw_dir / "dataset_dict.json").is_file():
        raise PipelineError(f"{raw_dir}: no saved dataset; run the download stage first (dvc repro download)")
    # In memory: map() must not write cache files into the download stage's output.
    return load_from_disk(str(raw_dir), keep_in_memory=True)


def run(checkpoint: str, cfg: TokenizeConfig, raw_dir: Path = RAW_DIR, out_dir: Path = TOKENIZED_DIR,
        num_proc: int | None = None) -> dict:
    from pipeline.modeling import load_tokenizer

    tokenizer = load_tokenizer(checkpoint)
    raw = load_raw(raw_dir)
    tokenized = tokenize_dataset_dict(raw, tokenizer, cfg, num_proc)
    summary = {
        split: {"examples": raw[split].num_rows, "features": tokenized[split].num_rows} for split in tokenized
    }
    raw_summary = raw_dir / "summary.json"
    if raw_summary.is_file():
        for split, info in read_json(raw_summary).items():
            summary.setdefault(split, {}).update(dropped=info.get("dropped", 0), source=info.get("source"))
    with atomic_output_dir(out_dir) as tmp:
        save_dataset_dict(tokenized, tmp)
        write_json(tmp / "summary.json", summary)
    return summary


@stage_entry_point
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    cfg = load_config(args.params)
    summary = run(cfg.model.checkpoint, cfg.tokenize, num_proc=args.num_proc)
    for split, info in summary.items():
        print(f"{split}: {info['examples']} examples -> {info['features']} features")


if __name__ == "__main__":
    main()
