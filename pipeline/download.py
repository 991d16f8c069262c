"""Stage 1, download: SQuAD-format data (hub or local JSON) -> validated DatasetDict in data/raw/.

    python -m pipeline.download [--params params.yaml] [--out data/raw]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.qa.squad import build_dataset_dict
from pipeline.runtime.config import DataConfig, load_config
from pipeline.runtime.errors import stage_entry_point
from pipeline.runtime.files import atomic_output_dir, save_dataset_dict, write_json
from pipeline.runtime.paths import PARAMS_FILE, RAW_DIR, SUMMARY_FILE_NAME


def run(cfg: DataConfig, out_dir: Path = RAW_DIR) -> dict:
    dataset, summary = build_dataset_dict(cfg)
    with atomic_output_dir(out_dir) as tmp:
        save_dataset_dict(dataset, tmp)
        write_json(tmp / SUMMARY_FILE_NAME, summary)
    return summary


@stage_entry_point
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(PARAMS_FILE))
    parser.add_argument("--out", type=Path, default=RAW_DIR)
    args = parser.parse_args()
    cfg = load_config(args.params)
    summary = run(cfg.data, args.out)
    for split, info in summary.items():
        print(f"{split}: {info['examples']} examples from {info['source']} (dropped {info['dropped']})")


if __name__ == "__main__":
    main()
