"""Stage index: retrieve.corpus -> models/index/ (passages and their BM25 index), for retrieve-then-read.

    python -m pipeline.index [--params params.yaml]

The corpus (retrieve.corpus) is data/raw (every distinct context of the validation split, the
default), a directory of .txt/.md files, or a SQuAD-format .json/.json.gz file. Documents are
split into the reader's windows with model.checkpoint's tokenizer and tokenize.max_length /
stride (pipeline.qa.retrieval), and indexed by bm25s with retrieve.k1, b and stemmer.
models/index/index.json records the tokenizer and windows, so a model that reads text
differently is refused where the index is used. An empty corpus, a binary or non-UTF-8 file
stops the stage with one line, and an earlier index stays in place.
"""

from __future__ import annotations

import time

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.modeling import load_tokenizer
from pipeline.qa.retrieval import Bm25Settings, PassageIndex, read_corpus
from pipeline.runtime.config import PipelineConfig, stage_config
from pipeline.runtime.errors import stage_entry_point
from pipeline.runtime.files import atomic_output_dir
from pipeline.runtime.paths import INDEX_DIR


def build_index(cfg: PipelineConfig) -> PassageIndex:
    rt = cfg.retrieve
    started = time.perf_counter()
    documents = read_corpus(rt.corpus)
    tokenizer = load_tokenizer(cfg.model.checkpoint)
    index = PassageIndex.build(documents, tokenizer, cfg.tokenize, Bm25Settings(rt.k1, rt.b, rt.stemmer), rt.corpus)
    with atomic_output_dir(INDEX_DIR) as tmp:
        index.save(tmp)
    print(
        f"indexed {index.meta['passages']} passages of {index.meta['documents']} documents from {rt.corpus} "
        f"into {INDEX_DIR}/ in {time.perf_counter() - started:.1f} s"
    )
    return index


@stage_entry_point
def main() -> None:
    cfg, _ = stage_config(__doc__)
    build_index(cfg)


if __name__ == "__main__":
    main()
