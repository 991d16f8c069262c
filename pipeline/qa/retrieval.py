"""Retrieve, then read: a BM25 index over passages (bm25s) and the reader's answers from the
top-ranked ones, combined with the retriever's scores (BERTserini's linear interpolation).

Passages are the reader's windows of each document's text: at most `passage_tokens(windows)` =
max_length - QUESTION_TOKENS model tokens (the model's own tokenizer), consecutive windows of one
document sharing `stride` tokens, so a passage and a question of up to QUESTION_TOKENS - 3
tokens fit one reader window. Each passage keeps its document's id and title and its character
offset in the document. An index records the tokenizer (a digest of its vocabulary) and the
windows it was split with; a reader with other ones is refused (`check_reader`).

Answering: the top max(k) passages of each question are read once by the reader
(qa.predictions.passage_reader: the evaluate stage's answer rule, every passage's best span
kept), then for each k the answer is the passage answer with the highest
(1 - weight) * bm25 score + weight * reader score, the reader score being the span's score minus
the passage's null score (start + end logit of [CLS]): a passage-level confidence the raw span
score lacks, since the reader never saw a passage without the answer in training (measured in
docs/retrieval.md). k and the weight are chosen on train questions (`choose_settings`), never on
the questions being scored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from pipeline.qa.analysis import question_scores
from pipeline.qa.squad import load_saved, load_squad_json, squad_paragraphs
from pipeline.runtime.config import TokenizeConfig
from pipeline.runtime.errors import PipelineError
from pipeline.runtime.files import read_json, write_json

# Model tokens kept free for the question (with [CLS] and two [SEP]) in a reader window.
QUESTION_TOKENS = 64
TEXT_SUFFIXES = (".txt", ".md")
# Inside an index directory.
META_FILE = "index.json"
PASSAGES_FILE = "passages.jsonl"
BM25_DIR = "bm25"
# In an index an export carries: the k and weight chosen for it (the evaluate_open stage's).
CHOICE_FILE = "retrieval.json"
# The reader: (questions, contexts) -> one answer dict per pair ("answer", "score", "start",
# "null_odds": null score minus the span's score).
Reader = Callable[[Sequence[str], Sequence[str]], list[dict[str, Any]]]


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
        if (index_dir / CHOICE_FILE).is_file():
            meta["chosen"] = read_json(index_dir / CHOICE_FILE)
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


# --- reading the retrieved passages -------------------------------------------------------------


@dataclass
class Reads:
    """The reader's answer in each retrieved passage: [questions, K] arrays, rank order."""

    passage: np.ndarray  # passage index
    bm25: np.ndarray  # BM25 score
    reader: np.ndarray  # the passage's best span score minus its null score; -inf without a span
    answers: list[list[dict[str, Any]]]  # the reader's answer dict per question and rank

    def choose(self, k: int, weight: float) -> np.ndarray:
        """Per question, the rank (< k) of the answer with the best combined score."""
        k = min(k, self.bm25.shape[1])
        combined = (1.0 - weight) * self.bm25[:, :k] + weight * self.reader[:, :k]
        return np.argmax(combined, axis=1)


def read_passages(reader: Reader, index: PassageIndex, questions: Sequence[str], k: int, batch: int = 512) -> Reads:
    """Retrieve the top k passages of every question and read each with the reader."""
    ranked, bm25 = index.search(questions, k)
    n, kk = ranked.shape
    answers: list[dict[str, Any]] = []
    pairs = [(q, int(p)) for q, row in zip(questions, ranked) for p in row]
    for first in range(0, len(pairs), batch):
        chunk = pairs[first : first + batch]
        answers.extend(reader([q for q, _ in chunk], [index.passages[p].text for _, p in chunk]))
    reader_scores = np.array(
        [-np.inf if a.get("score") is None or a.get("null_odds") is None else -a["null_odds"] for a in answers],
        dtype=np.float64,
    )
    rows = [answers[i * kk : (i + 1) * kk] for i in range(n)]
    return Reads(ranked, bm25, reader_scores.reshape(n, kk), rows)


def open_answer(index: PassageIndex, reads: Reads, question: int, rank: int) -> dict[str, Any]:
    """The answer of question `question` from its passage at `rank`: text, scores, where it is."""
    read = reads.answers[question][rank]
    passage = index.passages[int(reads.passage[question, rank])]
    offset = None if read.get("start") is None else passage.start + read["start"]
    return {
        "answer": read["answer"],
        "score": read.get("score"),
        "reader_score": None if read.get("null_odds") is None else round(-float(read["null_odds"]), 4),
        "retriever_score": round(float(reads.bm25[question, rank]), 4),
        "doc_id": passage.doc_id,
        "title": passage.title,
        "start": offset,
        "end": None if offset is None else offset + len(read["answer"]),
        "passage_rank": rank + 1,
    }


def answer_open(
    reader: Reader, index: PassageIndex, questions: Sequence[str], k: int, weight: float
) -> list[dict[str, Any]]:
    """Answer questions from the index: read the top k passages, keep the best combined answer."""
    reads = read_passages(reader, index, questions, k)
    best = reads.choose(k, weight)
    return [open_answer(index, reads, i, int(r)) for i, r in enumerate(best)]


# --- measuring ------------------------------------------------------------------------------


def answer_in_passages(ranked: np.ndarray, index: PassageIndex, gold: Sequence[Sequence[str]]) -> np.ndarray:
    """[questions, K] booleans: a gold answer's text occurs in the passage at that rank (DrQA's
    answer recall); `ranked` is PassageIndex.search's passage indices."""
    hits = np.zeros(ranked.shape, dtype=bool)
    for i, answers in enumerate(gold):
        for r, p in enumerate(ranked[i]):
            text = index.passages[int(p)].text
            hits[i, r] = any(a and a in text for a in answers)
    return hits


def recall_at(hits: np.ndarray, ks: Iterable[int]) -> dict[int, float]:
    return {k: float(hits[:, :k].any(axis=1).mean()) if len(hits) else 0.0 for k in ks}


def answer_scores(reads: Reads, gold: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """[questions, K] exact match and F1 (0-100) of the answer read at each rank, scored as the
    evaluate stage scores answers (qa.analysis.question_scores, SQuAD v1.1's rule)."""
    references = [{"id": str(i), "answers": {"text": list(answers)}} for i, answers in enumerate(gold)]
    exact, f1 = np.zeros(reads.passage.shape), np.zeros(reads.passage.shape)
    for r in range(reads.passage.shape[1]):
        answers = {str(i): row[r]["answer"] for i, row in enumerate(reads.answers)}
        exact[:, r], f1[:, r] = question_scores(answers, references, version_2_with_negative=False)
    return exact, f1


def integrated_scores(reads: Reads, exact: np.ndarray, f1: np.ndarray, k: int, weight: float) -> dict[str, float]:
    """EM and F1 end to end: each question answered from its top k passages."""
    best = reads.choose(k, weight)
    rows = np.arange(len(best))
    return {"exact_match": float(exact[rows, best].mean()), "f1": float(f1[rows, best].mean())}


def choose_settings(
    reads: Reads, f1: np.ndarray, ks: Sequence[int], weights: Sequence[float]
) -> tuple[int, float, float]:
    """The (k, weight) with the best mean F1 over these (train) questions, and that F1. Ties go to
    the smaller k (less to read per question), then the smaller weight."""
    best: Optional[tuple[float, int, float]] = None
    for k in sorted(ks):
        for weight in sorted(weights):
            score = float(f1[np.arange(len(f1)), reads.choose(k, weight)].mean())
            if best is None or score > best[0] + 1e-9:
                best = (score, k, weight)
    assert best is not None
    return best[1], best[2], best[0]


def weight_grid(steps: int) -> list[float]:
    """`steps` evenly spaced interpolation weights from 0 (BM25 alone) to 1 (the reader alone)."""
    return [round(float(w), 6) for w in np.linspace(0.0, 1.0, steps)]


def tune_on_questions(
    reader: Reader,
    pool: PassageIndex,
    questions: Sequence[str],
    gold: Sequence[Sequence[str]],
    ks: Sequence[int],
    weights: Sequence[float],
) -> tuple[int, float, float]:
    """choose_settings on these (train) questions answered from `pool`: each question's top max(ks)
    passages read once. Returns (k, weight, F1)."""
    reads = read_passages(reader, pool, questions, max(ks))
    _, f1 = answer_scores(reads, gold)
    return choose_settings(reads, f1, ks, weights)
