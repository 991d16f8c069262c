"""Stage negatives: data/raw's train split -> data/negatives.json: for each answerable train
question, its retrieve.train_negatives best-ranked train passages that do not hold the answer,
as no-answer examples the tokenize stage appends to the train split.

    python -m pipeline.negatives [--params params.yaml]

The passages and their ranking are retrieve-then-read's (pipeline.qa.retrieval): every distinct
train paragraph split into the reader's windows with model.checkpoint's tokenizer, ranked by BM25
with retrieve.k1 / b / stemmer, as tune_retrieval's pool. Trained on beside the gold paragraphs,
they teach the reader a low null score only where a passage answers, which is what retrieve-then-read
ranks passages by (docs/retrieval.md). At 0 (the default) the file is an empty list whatever the
BM25 settings, so changing those reruns this stage alone, not tokenize or train.
"""

from __future__ import annotations

import time

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.modeling import load_tokenizer
from pipeline.qa.retrieval import Bm25Settings, paragraph_index, retrieved_negatives
from pipeline.qa.squad import load_saved
from pipeline.runtime.config import PipelineConfig, stage_config
from pipeline.runtime.errors import stage_entry_point
from pipeline.runtime.files import write_json
from pipeline.runtime.paths import NEGATIVES_FILE, RAW_DIR, require_output


def mine_negatives(cfg: PipelineConfig, raw_dir=RAW_DIR) -> list[dict]:
    rt = cfg.retrieve
    if rt.train_negatives == 0:
        return []
    require_output(raw_dir, "dataset_dict.json", "saved dataset")
    train = load_saved(raw_dir)["train"]
    pool = paragraph_index(
        train, load_tokenizer(cfg.model.checkpoint), cfg.tokenize, Bm25Settings(rt.k1, rt.b, rt.stemmer), "train"
    )
    return retrieved_negatives(pool, train.to_list(), rt.train_negatives)


def run(cfg: PipelineConfig, raw_dir=RAW_DIR, out_file=NEGATIVES_FILE) -> list[dict]:
    started = time.perf_counter()
    negatives = mine_negatives(cfg, raw_dir)
    write_json(out_file, negatives)
    print(
        f"{len(negatives)} retrieved train passages without the answer (retrieve.train_negatives="
        f"{cfg.retrieve.train_negatives}) in {time.perf_counter() - started:.1f} s -> {out_file}"
    )
    return negatives


@stage_entry_point
def main() -> None:
    cfg, _ = stage_config(__doc__)
    run(cfg)


if __name__ == "__main__":
    main()
