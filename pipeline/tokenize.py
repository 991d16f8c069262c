"""Stage 2, tokenize: data/raw/ -> data/tokenized/ (train and validation features).

    python -m pipeline.tokenize [--params params.yaml] [--num-proc N]

The course's preprocessing (pipeline.qa.features); features are stored unpadded. The train split
also gets data/negatives.json's no-answer examples (the negatives stage's retrieved passages
without the answer; none at retrieve.train_negatives=0), labelled with [CLS] as SQuAD v2.0's.
--num-proc only changes speed, never the bytes written, so it is not a DVC param.
data/tokenized/built_with.json records the tokenizer (name and content md5), the windows and
the md5 of data/raw and data/negatives.json, which train and evaluate check (pipeline.runtime.lineage).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline.qa.features import check_windows, tokenize_dataset_dict
from pipeline.qa.modeling import checkpoint_fingerprint, load_tokenizer
from pipeline.qa.squad import load_saved
from pipeline.runtime.config import PipelineConfig, stage_config
from pipeline.runtime.errors import PipelineError, stage_entry_point
from pipeline.runtime.files import atomic_output_dir, read_json, save_dataset_dict, write_json
from pipeline.runtime.lineage import BUILT_WITH_FILE_NAME, content_inputs, tokenized_inputs
from pipeline.runtime.paths import NEGATIVES_FILE, RAW_DIR, SUMMARY_FILE_NAME, TOKENIZED_DIR, require_output


def load_raw(raw_dir: Path = RAW_DIR):
    require_output(raw_dir, "dataset_dict.json", "saved dataset")
    return load_saved(raw_dir)


def load_negatives(path: Path, features):
    """data/negatives.json as a train-split Dataset (its records checked against the split's columns)."""
    from datasets import Dataset

    require_output(path, None, "retrieved negatives")
    records = read_json(path)
    if not isinstance(records, list):
        records = [records]
    for i, record in enumerate(records):
        answers = record.get("answers") if isinstance(record, dict) else None
        if set(record or ()) != set(features) or not isinstance(answers, dict) or answers.get("text"):
            raise PipelineError(
                f"{path}: record {i} is not a no-answer example with keys {', '.join(sorted(features))}; "
                "rebuild it with `dvc repro negatives`"
            )
    return Dataset.from_dict({name: [r[name] for r in records] for name in features}, features=features)


def run(
    cfg: PipelineConfig,
    raw_dir: Path = RAW_DIR,
    out_dir: Path = TOKENIZED_DIR,
    num_proc: int | None = None,
    negatives_file: Path = NEGATIVES_FILE,
) -> dict:
    from datasets import concatenate_datasets

    tokenizer = load_tokenizer(cfg.model.checkpoint)
    checkpoint_md5 = checkpoint_fingerprint(cfg.model.checkpoint)["md5"]
    raw = load_raw(raw_dir)
    negatives = load_negatives(negatives_file, raw["train"].features)
    read = content_inputs(raw_dir, negatives_file)
    capped = {}
    for split in list(raw):
        report = check_windows(
            raw[split]["id"],
            raw[split]["question"],
            raw[split]["context"],
            tokenizer,
            cfg.tokenize,
            cfg.tokenize.warn_windows,
            label=f"{raw_dir}/{split}: record id={{id!r}}",
        )
        if report.many:
            examples = ", ".join(f"id={i!r} ({n} windows)" for i, n in report.many[:3])
            print(
                f"warning: {raw_dir}/{split}: {len(report.many)} question(s) whose context gives more than "
                f"tokenize.warn_windows={cfg.tokenize.warn_windows} windows, e.g. {examples}; each window is a "
                "feature to train or predict (shorten such contexts, or raise tokenize.warn_windows)",
                file=sys.stderr,
            )
        cap = cfg.tokenize.max_windows
        over = [i for i, n in report.windows.items() if cap is not None and n > cap]
        if over:
            keep = set(report.windows) - set(over)
            raw[split] = raw[split].filter(
                lambda example_id: example_id in keep, input_columns="id", keep_in_memory=True
            )
            capped[split] = len(over)
            print(
                f"warning: {raw_dir}/{split}: dropped {len(over)} question(s) whose context gives more than "
                f"tokenize.max_windows={cap} windows, e.g. id={over[0]!r} ({report.windows[over[0]]} windows); "
                "null keeps every question",
                file=sys.stderr,
            )
    examples = {split: raw[split].num_rows for split in raw}
    if negatives.num_rows:
        raw["train"] = concatenate_datasets([raw["train"], negatives])
    tokenized = tokenize_dataset_dict(raw, tokenizer, cfg.tokenize, num_proc)
    summary = {
        split: {
            "examples": examples[split],
            "features": tokenized[split].num_rows,
            "dropped_over_max_windows": capped.get(split, 0),
            **({"negatives": negatives.num_rows} if split == "train" else {}),
        }
        for split in tokenized
    }
    raw_summary = raw_dir / SUMMARY_FILE_NAME
    if raw_summary.is_file():
        for split, info in read_json(raw_summary).items():
            summary.setdefault(split, {}).update(
                dropped=info.get("dropped", 0),
                source=info.get("source"),
                **{k: info[k] for k in ("revision", "fingerprint") if k in info},
            )
    with atomic_output_dir(out_dir) as tmp:
        save_dataset_dict(tokenized, tmp)
        write_json(tmp / SUMMARY_FILE_NAME, summary)
        write_json(tmp / BUILT_WITH_FILE_NAME, {**tokenized_inputs(cfg, checkpoint_md5), **read})
    return summary


@stage_entry_point
def main() -> None:
    cfg, args = stage_config(
        __doc__, lambda parser: parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    )
    summary = run(cfg, num_proc=args.num_proc)
    for split, info in summary.items():
        extra = f" + {info['negatives']} retrieved passages without the answer" if info.get("negatives") else ""
        print(f"{split}: {info['examples']} examples{extra} -> {info['features']} features")


if __name__ == "__main__":
    main()
