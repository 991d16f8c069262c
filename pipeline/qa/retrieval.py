"""Retrieve: a BM25 index (bm25s) over passages of a document collection, for retrieve-then-read
(qa.open_domain reads the top-ranked passages and combines the two scores).

Passages are the reader's windows of each document's text: at most `passage_tokens(windows)` =
max_length - QUESTION_TOKENS model tokens (the model's own tokenizer), consecutive windows of one
document sharing `stride` tokens, so a passage and a question of up to QUESTION_TOKENS - 3
tokens fit one reader window. Each passage keeps its document's id and title and its character
offset in the document. An index records the tokenizer (a digest of its vocabulary) and the
windows it was split with; a reader with other ones is refused (`check_reader`).

Nothing here reads with a model or scores answers: the index stage imports this module alone,
so a change to the answer or metric code does not rebuild the index.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from pipeline.qa.squad import load_saved, load_squad_json, squad_paragraphs
from pipeline.runtime.config import NEGATIVES_DEPTH, TokenizeConfig
from pipeline.runtime.errors import PipelineError
from pipeline.runtime.files import read_json, write_json

# Model tokens kept free for the question (with [CLS] and two [SEP]) in a reader window.
QUESTION_TOKENS = 64
TEXT_SUFFIXES = (".txt", ".md")
# Inside an index directory.
META_FILE = "index.json"
PASSAGES_FILE = "passages.jsonl"
BM25_DIR = "bm25"
# In an index an export carries: the k and weight chosen for it (the tune_retrieval stage's).
CHOICE_FILE = "retrieval.json"


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class Passage:
    doc_id: str
    title: str
    text: str
    start: int  # character offset of the passage in its document


@dataclass(frozen=True)
class Bm25Settings:
    k1: float
    b: float
    stemmer: Optional[str]  # a PyStemmer language ("english"), or None: words as written


# BM25 settings of a throwaway index (pipeline.predict --corpus): conf/retrieve/bm25.yaml's (a test
# checks they agree).
DEFAULT_BM25 = Bm25Settings(k1=1.5, b=0.75, stemmer="english")


def passage_tokens(windows: TokenizeConfig) -> int:
    return windows.max_length - QUESTION_TOKENS


def check_windows_fit(windows: TokenizeConfig, key: str = "tokenize") -> None:
    size = passage_tokens(windows)
    if size <= windows.stride:
        raise PipelineError(
            f"{key}.max_length={windows.max_length} leaves {size} passage tokens after {QUESTION_TOKENS} for the "
            f"question, not more than {key}.stride={windows.stride}: raise max_length or lower stride"
        )


# --- corpora ---------------------------------------------------------------------------------


def documents_from_records(records: Iterable[dict]) -> list[Document]:
    """Every distinct (title, context) of SQuAD-style records, in order of first appearance; the
    id is "<title>/<n>", n counting the title's paragraphs from 0."""
    return _numbered(dict.fromkeys((str(record.get("title") or ""), record["context"]) for record in records))


def _numbered(paragraphs: Iterable[tuple[str, str]]) -> list[Document]:
    counts: dict[str, int] = {}
    documents = []
    for title, text in paragraphs:
        n = counts.get(title, 0)
        counts[title] = n + 1
        documents.append(Document(f"{title}/{n}", title, text))
    return documents


def documents_from_squad_file(path: Path) -> list[Document]:
    """Every paragraph of a SQuAD-format file (with or without questions), read and checked as
    the download stage reads it (qa.squad)."""
    paragraphs = []
    for where, title, paragraph in squad_paragraphs(load_squad_json(path), path):
        context = paragraph.get("context") if isinstance(paragraph, dict) else None
        if not isinstance(context, str):
            raise PipelineError(f"{path}: {where} has no 'context' string")
        paragraphs.append((title, context))
    return _numbered(dict.fromkeys(paragraphs))


def documents_from_directory(directory: Path) -> list[Document]:
    """Every .txt/.md file under directory (sorted paths): the id is the path relative to it, the
    title a Markdown file's first "# " heading, else the file name without its suffix."""
    documents = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES):
        data = path.read_bytes()
        if b"\x00" in data:
            raise PipelineError(f"{path}: a binary file (NUL bytes), not text; remove it from the corpus directory")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise PipelineError(
                f"{path}: not UTF-8 text (byte {err.start}); convert it (iconv -t UTF-8) or remove it"
            ) from None
        title = path.stem
        if path.suffix.lower() == ".md":
            heading = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "")
            title = heading or title
        documents.append(Document(path.relative_to(directory).as_posix(), title, text))
    return documents


def read_corpus(path: str | Path, split: str = "validation") -> list[Document]:
    """The documents of a corpus: a saved datasets DatasetDict (its `split` contexts), a directory of
    .txt/.md files, or a SQuAD-format .json/.json.gz file. Stops on an empty corpus."""
    path = Path(path)
    if path.is_dir() and (path / "dataset_dict.json").is_file():
        dataset = load_saved(path)[split]
        documents = documents_from_records(dataset.select_columns(["title", "context"]))
    elif path.is_dir():
        documents = documents_from_directory(path)
        if not documents:
            raise PipelineError(f"{path}: no .txt or .md files; put the documents to search there")
    elif path.is_file():
        documents = documents_from_squad_file(path)
    else:
        raise PipelineError(
            f"{path}: corpus not found; give a directory of .txt/.md files or a SQuAD-format .json/.json.gz file"
        )
    if not any(d.text.strip() for d in documents):
        raise PipelineError(f"{path}: the corpus has no text ({len(documents)} empty documents); add documents")
    return documents


# --- passages and the index -------------------------------------------------------------------


def split_passages(documents: Sequence[Document], tokenizer: Any, windows: TokenizeConfig) -> list[Passage]:
    """Each document's text in windows of passage_tokens(windows) model tokens sharing `stride`."""
    check_windows_fit(windows)
    size = passage_tokens(windows)
    passages = []
    batch = 256
    for first in range(0, len(documents), batch):
        docs = documents[first : first + batch]
        enc = tokenizer(
            [d.text for d in docs],
            add_special_tokens=False,
            truncation=True,
            max_length=size,
            stride=windows.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        for offsets, doc_index in zip(enc["offset_mapping"], enc["overflow_to_sample_mapping"]):
            if not offsets:
                continue  # a document with no tokens
            doc = docs[doc_index]
            start, end = offsets[0][0], offsets[-1][1]
            passages.append(Passage(doc.doc_id, doc.title, doc.text[start:end], start))
    return passages


def tokenizer_digest(tokenizer: Any) -> str:
    """A digest of what splits text into the model's tokens: its class and vocabulary."""
    vocab = sorted(tokenizer.get_vocab().items())
    text = json.dumps([type(tokenizer).__name__.removesuffix("Fast"), vocab], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _bm25_tokenizer(settings: Bm25Settings):
    import bm25s

    stemmer = None
    if settings.stemmer:
        import Stemmer

        try:
            stemmer = Stemmer.Stemmer(settings.stemmer)
        except KeyError:
            raise PipelineError(
                f"retrieve.stemmer={settings.stemmer!r} is not a PyStemmer language: use one of "
                f"{', '.join(Stemmer.algorithms())}, or null"
            ) from None
    return bm25s.tokenization.Tokenizer(stopwords="en", stemmer=stemmer)


def read_choice(index_dir: str | Path) -> Optional[tuple[int, float]]:
    """(k, weight) recorded beside an index (an export's CHOICE_FILE), or None; reads no index."""
    path = Path(index_dir) / CHOICE_FILE
    if not path.is_file():
        return None
    chosen = read_json(path)
    return int(chosen["k"]), float(chosen["weight"])


class PassageIndex:
    """Passages and their BM25 index."""

    def __init__(self, passages: list[Passage], retriever: Any, words: Any, meta: dict[str, Any]) -> None:
        self.passages = passages
        self.retriever = retriever
        self.words = words  # bm25s's tokenizer: the vocabulary the index was built with
        self.meta = meta

    @classmethod
    def build(
        cls,
        documents: Sequence[Document],
        tokenizer: Any,
        windows: TokenizeConfig,
        settings: Bm25Settings,
        source: str,
    ) -> "PassageIndex":
        import bm25s

        passages = split_passages(documents, tokenizer, windows)
        words = _bm25_tokenizer(settings)
        tokenized = words.tokenize([p.text for p in passages], return_as="tuple", show_progress=False)
        retriever = bm25s.BM25(k1=settings.k1, b=settings.b, method="lucene")
        retriever.index(tokenized, show_progress=False)
        meta = {
            "source": source,
            "documents": len(documents),
            "passages": len(passages),
            "tokenizer": tokenizer_digest(tokenizer),
            "max_length": windows.max_length,
            "stride": windows.stride,
            "passage_tokens": passage_tokens(windows),
            "bm25": asdict(settings),
        }
        return cls(passages, retriever, words, meta)

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(out_dir / BM25_DIR), show_progress=False)
        self.words.save_vocab(str(out_dir / BM25_DIR))
        with (out_dir / PASSAGES_FILE).open("w", encoding="utf-8") as fh:
            for p in self.passages:
                fh.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
        write_json(out_dir / META_FILE, self.meta)

    @classmethod
    def load(cls, index_dir: str | Path) -> "PassageIndex":
        import bm25s

        index_dir = Path(index_dir)
        if not (index_dir / META_FILE).is_file() or not (index_dir / BM25_DIR).is_dir():
            raise PipelineError(f"{index_dir}: not a passage index (no {META_FILE}); build one with `dvc repro index`")
        meta = read_json(index_dir / META_FILE)
        chosen = read_choice(index_dir)
        if chosen is not None:
            meta["chosen"] = {"k": chosen[0], "weight": chosen[1]}
        words = _bm25_tokenizer(Bm25Settings(**meta["bm25"]))
        words.load_vocab(str(index_dir / BM25_DIR))
        retriever = bm25s.BM25.load(str(index_dir / BM25_DIR))
        with (index_dir / PASSAGES_FILE).open(encoding="utf-8") as fh:
            passages = [Passage(**json.loads(line)) for line in fh]
        return cls(passages, retriever, words, meta)

    def choice(self) -> Optional[tuple[int, float]]:
        """(k, weight) recorded with the index (an export's), or None."""
        chosen = self.meta.get("chosen")
        return None if chosen is None else (int(chosen["k"]), float(chosen["weight"]))

    def check_reader(self, tokenizer: Any, windows: TokenizeConfig, where: str) -> None:
        """Stop when the reader splits text differently from the passages' windows."""
        if self.meta["tokenizer"] != tokenizer_digest(tokenizer):
            raise PipelineError(
                f"{where}: the index was built with another tokenizer than the model's (vocabulary digest "
                f"{self.meta['tokenizer']} != {tokenizer_digest(tokenizer)}); rebuild it for this model "
                "(`dvc repro index`, or --corpus DIR)"
            )
        built = (self.meta["max_length"], self.meta["stride"])
        if built != (windows.max_length, windows.stride):
            raise PipelineError(
                f"{where}: the index was split for max_length={built[0]}, stride={built[1]} but the model reads "
                f"max_length={windows.max_length}, stride={windows.stride}; rebuild it for this model "
                "(`dvc repro index`, or --corpus DIR)"
            )

    def search(self, questions: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top-k passages of each question: (passage indices, BM25 scores), both [questions, k],
        best first (k is capped at the number of passages)."""
        k = min(k, len(self.passages))
        tokens = self.words.tokenize(list(questions), update_vocab=False, return_as="string", show_progress=False)
        ranked, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return np.asarray(ranked, dtype=np.int64), np.asarray(scores, dtype=np.float64)


def paragraph_index(
    split: Any, tokenizer: Any, windows: TokenizeConfig, settings: Bm25Settings, source: str
) -> PassageIndex:
    """An index of every distinct paragraph of a data/raw split (a datasets Dataset): the train pool
    tune_retrieval chooses k and the weight on and the negatives stage mines passages from."""
    documents = documents_from_records(split.select_columns(["title", "context"]))
    return PassageIndex.build(documents, tokenizer, windows, settings, source)


# --- training the reader on retrieved passages --------------------------------------------------


def holds_answer(text: str, answers: Sequence[str]) -> bool:
    """A gold answer's text occurs in the passage (DrQA's answer recall)."""
    return any(a and a in text for a in answers)


def retrieved_negatives(index: PassageIndex, records: Sequence[dict], per_question: int) -> list[dict]:
    """For each answerable SQuAD-style record, its `per_question` best-ranked passages of the index
    (among the top NEGATIVES_DEPTH) that hold none of its answers, as no-answer records: the same
    question over that passage, empty answers, id "<id>/negative-<n>" (n from 0, rank order).

    Trained on beside the gold paragraphs (the tokenize stage appends them), they teach the reader
    the null score of a passage that does not answer, which retrieve-then-read's reader score is
    (docs/retrieval.md).
    """
    questions = [r for r in records if r["answers"]["text"]]
    if per_question <= 0 or not questions:
        return []
    ranked, _ = index.search([r["question"] for r in questions], NEGATIVES_DEPTH)
    negatives = []
    for record, row in zip(questions, ranked):
        passages = [index.passages[int(p)] for p in row]
        found = [p for p in passages if not holds_answer(p.text, record["answers"]["text"])]
        for n, passage in enumerate(found[:per_question]):
            negatives.append(
                {
                    "id": f"{record['id']}/negative-{n}",
                    "title": passage.title,
                    "context": passage.text,
                    "question": record["question"],
                    "answers": {"text": [], "answer_start": []},
                }
            )
    return negatives
