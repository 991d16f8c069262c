"""Stage 1, download: SQuAD-format data (hub or local JSON) -> validated DatasetDict in data/raw/.

    python -m pipeline.download [--params params.yaml] [--out data/raw]

Bad records follow data.bad_records (error | drop | repair); summary.json counts per split
the examples kept, repaired and dropped (with the first few of each). overlap.json counts the
validation contexts and questions that also occur in train (a warning when any do); the
evaluate stage logs it to MLflow beside the scores it may inflate.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.qa.squad import build_dataset_dict, split_overlap
from pipeline.runtime.config import DataConfig, stage_config
from pipeline.runtime.errors import stage_entry_point
from pipeline.runtime.files import atomic_output_dir, save_dataset_dict, write_json
from pipeline.runtime.paths import OVERLAP_FILE_NAME, RAW_DIR, SUMMARY_FILE_NAME


def run(cfg: DataConfig, out_dir: Path = RAW_DIR) -> dict:
    dataset, summary = build_dataset_dict(cfg)
    overlap = split_overlap(dataset["train"], dataset["validation"])
    with atomic_output_dir(out_dir) as tmp:
        save_dataset_dict(dataset, tmp)
        write_json(tmp / SUMMARY_FILE_NAME, summary)
        write_json(tmp / OVERLAP_FILE_NAME, overlap)
    if overlap["validation_contexts_in_train"] or overlap["validation_questions_in_train"]:
        print(
            f"warning: {overlap['validation_contexts_in_train']} of {overlap['validation_contexts']} validation "
            f"contexts and {overlap['validation_questions_in_train']} of {overlap['validation_questions']} validation "
            f"questions also occur in train ({overlap['validation_questions_in_train_same_context']} with the same "
            f"context): validation scores may be inflated (see {out_dir / OVERLAP_FILE_NAME})",
            file=sys.stderr,
        )
    return {**summary, "overlap": overlap}


@stage_entry_point
def main() -> None:
    cfg, args = stage_config(__doc__, lambda parser: parser.add_argument("--out", type=Path, default=RAW_DIR))
    summary = run(cfg.data, args.out)
    for split in ("train", "validation"):
        info = summary[split]
        print(
            f"{split}: {info['examples']} examples from {info['source']} "
            f"(repaired {info['repaired']}, dropped {info['dropped']})"
        )


if __name__ == "__main__":
    main()
