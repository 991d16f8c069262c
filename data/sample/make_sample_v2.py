"""Build the SQuAD v2.0-layout samples from the shipped v1.1 samples.

    python data/sample/make_sample_v2.py            # rewrites train-v2.json.gz, validation-v2.json.gz

SQuAD v2.0's unanswerable questions were written by crowdworkers to look answerable; we
cannot write such questions, so we borrow them: every paragraph keeps its own (answerable)
questions and gets NEGATIVES_PER_PARAGRAPH questions of the paragraph at the same position
in the article half-way along the list (another topic), marked `is_impossible: true` with no
answers. A borrowed question is skipped when one of its answers occurs in the new context
(case-insensitively), so the answer is not in the text. These negatives are easier than
SQuAD v2.0's; the sample exercises the v2.0 code paths, it does not measure v2.0 skill.

Deterministic (fixed choice, gzip mtime 0): the output is rebuilt byte for byte.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEGATIVES_PER_PARAGRAPH = 2
SOURCES = {"train-v2.json.gz": "train.json.gz", "validation-v2.json.gz": "validation.json.gz"}


def answer_occurs_in(qa: dict, context: str) -> bool:
    text = context.lower()
    return any(answer["text"].lower() in text for answer in qa["answers"])


def borrowed_negatives(donor_qas: list[dict], context: str) -> list[dict]:
    negatives = []
    for qa in donor_qas:
        if len(negatives) == NEGATIVES_PER_PARAGRAPH:
            break
        if answer_occurs_in(qa, context):
            continue
        negatives.append(
            {"id": f"{qa['id']}-unanswerable", "question": qa["question"], "answers": [], "is_impossible": True}
        )
    return negatives


def with_negatives(squad: dict) -> dict:
    """The v1.1 `squad` in the v2.0 layout, each paragraph followed by its borrowed negatives."""
    articles = squad["data"]
    out = []
    for a, article in enumerate(articles):
        donor = articles[(a + len(articles) // 2) % len(articles)]["paragraphs"]
        paragraphs = []
        for p, paragraph in enumerate(article["paragraphs"]):
            donor_qas = donor[min(p, len(donor) - 1)]["qas"]
            qas = [{**qa, "is_impossible": False} for qa in paragraph["qas"]]
            qas += borrowed_negatives(donor_qas, paragraph["context"])
            paragraphs.append({"context": paragraph["context"], "qas": qas})
        out.append({"title": article["title"], "paragraphs": paragraphs})
    return {"version": "v2.0", "data": out}


def write(squad: dict, path: Path) -> tuple[int, int]:
    # mtime=0 keeps the gzip bytes reproducible.
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as fh:
        fh.write(json.dumps(squad).encode("utf-8"))
    qas = [qa for a in squad["data"] for p in a["paragraphs"] for qa in p["qas"]]
    return len(qas), sum(qa["is_impossible"] for qa in qas)


def main(out_dir: str | Path = HERE) -> None:
    for target, source in SOURCES.items():
        with gzip.open(HERE / source, "rt", encoding="utf-8") as fh:
            squad = json.load(fh)
        total, impossible = write(with_negatives(squad), Path(out_dir) / target)
        print(f"{target}: {total} questions, {impossible} unanswerable")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE)
