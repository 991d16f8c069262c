"""Rebuild the shipped SQuAD v1.1 sample from the full files.

The sample is cut deterministically so that anyone holding the full SQuAD v1.1
files can reproduce it byte for byte:

    python data/sample/make_sample.py ../shared/data/squad-v1.1

- train: the first paragraph of every train article (442 articles), so the
  sample covers every topic instead of the first few articles only;
- validation: the first two paragraphs of every dev article (48 articles).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cut(squad: dict, paragraphs_per_article: int) -> dict:
    return {
        "version": squad["version"],
        "data": [
            {"title": article["title"], "paragraphs": article["paragraphs"][:paragraphs_per_article]}
            for article in squad["data"]
        ],
    }


def write(squad: dict, path: Path) -> int:
    # mtime=0 keeps the gzip bytes reproducible.
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as fh:
        fh.write(json.dumps(squad).encode("utf-8"))
    return sum(len(p["qas"]) for a in squad["data"] for p in a["paragraphs"])


def main(source_dir: str) -> None:
    source = Path(source_dir)
    train = json.load(gzip.open(source / "train-v1.1.reconstructed.json.gz", "rt", encoding="utf-8"))
    dev = json.load(gzip.open(source / "dev-v1.1.json.gz", "rt", encoding="utf-8"))
    n_train = write(cut(train, 1), HERE / "train.json.gz")
    n_dev = write(cut(dev, 2), HERE / "validation.json.gz")
    print(f"train: {n_train} questions, validation: {n_dev} questions")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/squad-v1.1")
