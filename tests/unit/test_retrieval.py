"""pipeline.qa.retrieval: corpora, passages in the reader's windows, the BM25 index (bm25s) and its
record, and how read passages become one answer. A tiny corpus whose right passage is known;
the real tokenizer; the reader in the choice tests is a function whose scores are given."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.qa.retrieval import (
    DEFAULT_BM25,
    Bm25Settings,
    PassageIndex,
    documents_from_records,
    passage_tokens,
    read_corpus,
    retrieved_negatives,
    split_passages,
)
from pipeline.qa.open_domain import (
    Reads,
    answer_in_passages,
    answer_open,
    choose_settings,
    integrated_scores,
    recall_at,
    read_passages,
)
from pipeline.runtime.config import TokenizeConfig
from pipeline.runtime.errors import PipelineError
from tests.helpers.project import PROJECT_ROOT

WINDOWS = TokenizeConfig(max_length=128, stride=32, warn_windows=None)
DOCS = {
    "volcanoes.md": "# Volcanoes\n\nMount Etna is an active stratovolcano on the east coast of Sicily.",
    "rivers.txt": "The Danube flows through Vienna, Budapest and Belgrade before reaching the Black Sea.",
    "space/moon.txt": "Neil Armstrong was the first person to walk on the Moon, in July 1969.",
    "notes.csv": "ignored: not .txt or .md",
}
QUESTIONS = [
    ("Which volcano is on the east coast of Sicily?", "volcanoes.md", "Mount Etna"),
    ("Which city does the Danube flow through first?", "rivers.txt", "Vienna"),
    ("Who first walked on the Moon?", "space/moon.txt", "Neil Armstrong"),
]


def write_corpus(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return root


@pytest.fixture()
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus", DOCS)


def test_a_directory_corpus_is_its_text_files_with_ids_and_titles(corpus):
    documents = read_corpus(corpus)
    assert [(d.doc_id, d.title) for d in documents] == [
        ("rivers.txt", "rivers"),
        ("space/moon.txt", "moon"),
        ("volcanoes.md", "Volcanoes"),  # a Markdown file's first heading
    ]
    assert documents[1].text == DOCS["space/moon.txt"]


def test_squad_paragraphs_become_documents_once_each(tmp_path):
    records = [
        {"title": "A", "context": "first"},
        {"title": "A", "context": "first"},
        {"title": "A", "context": "second"},
        {"title": "B", "context": "third"},
    ]
    assert [(d.doc_id, d.text) for d in documents_from_records(records)] == [
        ("A/0", "first"),
        ("A/1", "second"),
        ("B/0", "third"),
    ]
    squad = {"data": [{"title": "T", "paragraphs": [{"context": "no questions here", "qas": []}]}]}
    path = tmp_path / "corpus.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(squad, fh)
    assert [(d.doc_id, d.title, d.text) for d in read_corpus(path)] == [("T/0", "T", "no questions here")]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.txt": b"fine", "b.txt": b"\x89PNG\x00\x01"}, "b.txt: a binary file (NUL bytes), not text"),
        ({"a.txt": "caf\u00e9".encode("latin-1")}, "a.txt: not UTF-8 text (byte 3)"),
        ({"a.csv": b"no text files"}, "no .txt or .md files"),
        ({"a.txt": b"  \n", "b.md": b""}, "the corpus has no text (2 empty documents)"),
    ],
)
def test_bad_corpora_stop_with_one_line_naming_the_file(tmp_path, files, message):
    corpus = write_corpus(tmp_path / "corpus", files)
    with pytest.raises(PipelineError, match="^" + str(corpus).replace("\\", "\\\\")) as err:
        read_corpus(corpus)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_passages_are_the_readers_windows_with_their_offsets(tokenizer):
    long_text = " ".join(f"Sentence {i} says the number {i}." for i in range(60))
    documents = documents_from_records([{"title": "Long", "context": long_text}])
    passages = split_passages(documents, tokenizer, WINDOWS)
    size = passage_tokens(WINDOWS)
    assert size == 64 and len(passages) > 3
    for passage in passages:
        assert long_text[passage.start : passage.start + len(passage.text)] == passage.text
        assert len(tokenizer(passage.text, add_special_tokens=False)["input_ids"]) <= size
    # consecutive windows share `stride` tokens: each starts before the previous one ends
    assert all(b.start < a.start + len(a.text) for a, b in zip(passages, passages[1:]))
    assert passages[-1].text.endswith("number 59.")


def test_the_index_finds_the_passage_with_the_answer_and_survives_a_round_trip(corpus, tokenizer, tmp_path):
    index = PassageIndex.build(read_corpus(corpus), tokenizer, WINDOWS, DEFAULT_BM25, str(corpus))
    questions = [q for q, _, _ in QUESTIONS]
    ranked, scores = index.search(questions, 2)
    assert [index.passages[r[0]].doc_id for r in ranked] == [doc for _, doc, _ in QUESTIONS]
    assert (scores[:, 0] > scores[:, 1]).all()
    hits = answer_in_passages(ranked, index, [[a] for _, _, a in QUESTIONS])
    assert recall_at(hits, [1, 2]) == {1: 1.0, 2: 1.0}

    index.save(tmp_path / "index")
    loaded = PassageIndex.load(tmp_path / "index")
    assert loaded.meta == index.meta and loaded.passages == index.passages
    reloaded_ranked, reloaded_scores = loaded.search(questions, 2)
    assert (reloaded_ranked == ranked).all() and np.allclose(reloaded_scores, scores)
    assert loaded.meta["bm25"] == {"k1": 1.5, "b": 0.75, "stemmer": "english"}
    # stemming: "walking" finds "walk"
    assert index.passages[index.search(["walking on the moon"], 1)[0][0, 0]].doc_id == "space/moon.txt"


def test_an_index_split_differently_from_the_reader_is_refused(corpus, tokenizer):
    from transformers import AutoTokenizer

    index = PassageIndex.build(read_corpus(corpus), tokenizer, WINDOWS, DEFAULT_BM25, "corpus")
    index.check_reader(tokenizer, WINDOWS, "idx")  # the same: no error
    other_windows = TokenizeConfig(max_length=128, stride=16, warn_windows=None)
    with pytest.raises(PipelineError, match=r"^idx: the index was split for max_length=128, stride=32 but"):
        index.check_reader(tokenizer, other_windows, "idx")
    other = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    other.add_tokens(["volcanology"])
    with pytest.raises(PipelineError, match=r"^idx: the index was built with another tokenizer than the model's"):
        index.check_reader(other, WINDOWS, "idx")


def test_negatives_are_the_best_ranked_passages_without_the_answer(corpus, tokenizer):
    index = PassageIndex.build(read_corpus(corpus), tokenizer, WINDOWS, DEFAULT_BM25, "corpus")
    question = "Which volcano is on the east coast of Sicily near the Danube?"
    ranked, _ = index.search([question], 3)
    order = [index.passages[int(p)].doc_id for p in ranked[0]]
    assert order[:2] == ["volcanoes.md", "rivers.txt"]  # the answer's passage first, then the Danube's
    records = [
        {
            "id": "q1",
            "title": "Volcanoes",
            "question": question,
            "context": "...",
            "answers": {"text": ["Mount Etna"], "answer_start": [0]},
        },
        {"id": "q2", "title": "", "question": "Who?", "context": "...", "answers": {"text": [], "answer_start": []}},
    ]
    one = retrieved_negatives(index, records, 1)
    assert one == [
        {
            "id": "q1/negative-0",
            "title": "rivers",
            "context": DOCS["rivers.txt"],
            "question": question,
            "answers": {"text": [], "answer_start": []},
        }
    ]  # an unanswerable question has none: every passage is one already
    two = retrieved_negatives(index, records, 2)
    assert [n["id"] for n in two] == ["q1/negative-0", "q1/negative-1"]
    assert [n["context"] for n in two] == [DOCS["rivers.txt"], DOCS["space/moon.txt"]]
    assert retrieved_negatives(index, records, 0) == []
    # an answer every passage holds leaves no negative
    everywhere = [{**records[0], "answers": {"text": ["the"], "answer_start": [0]}}]
    assert retrieved_negatives(index, everywhere, 3) == []


def test_a_stemmer_that_pystemmer_lacks_is_one_line(corpus, tokenizer):
    with pytest.raises(PipelineError, match=r"retrieve.stemmer='klingon' is not a PyStemmer language"):
        PassageIndex.build(read_corpus(corpus), tokenizer, WINDOWS, Bm25Settings(1.5, 0.75, "klingon"), "c")


def reads_of(bm25: list[list[float]], reader: list[list[float]], answers: list[list[str]]) -> Reads:
    shape = np.array(bm25).shape
    return Reads(
        passage=np.arange(shape[0] * shape[1]).reshape(shape),
        bm25=np.array(bm25, dtype=float),
        reader=np.array(reader, dtype=float),
        answers=[[{"answer": a} for a in row] for row in answers],
    )


def test_the_answer_is_the_best_interpolated_score_among_the_top_k():
    reads = reads_of([[10.0, 8.0, 1.0]], [[0.0, 5.0, 20.0]], [["a", "b", "c"]])
    assert reads.choose(1, 0.5)[0] == 0  # k=1: the top passage whatever the reader says
    assert reads.choose(2, 0.0)[0] == 0  # weight 0: BM25 alone
    assert reads.choose(2, 0.5)[0] == 1  # 0.5*10+0 < 0.5*8+0.5*5
    assert reads.choose(3, 0.5)[0] == 2
    assert reads.choose(3, 1.0)[0] == 2  # weight 1: the reader alone


def test_k_and_weight_are_chosen_by_f1_preferring_fewer_passages():
    # question 0 is right at rank 0, question 1 at rank 1 (found only with the reader's help)
    reads = reads_of([[10.0, 9.0], [10.0, 9.0]], [[5.0, 0.0], [0.0, 5.0]], [["x", "y"], ["x", "y"]])
    f1 = np.array([[100.0, 0.0], [0.0, 100.0]])
    exact = f1.copy()
    k, weight, best = choose_settings(reads, f1, [1, 2, 3], [0.0, 0.5, 1.0])
    assert (k, weight, best) == (2, 0.5, 100.0)
    assert integrated_scores(reads, exact, f1, 1, weight) == {"exact_match": 50.0, "f1": 50.0}
    # a tie everywhere: the smallest k and weight
    assert choose_settings(reads, np.full((2, 2), 50.0), [3, 1], [1.0, 0.0]) == (1, 0.0, 50.0)


def test_answer_open_reports_the_document_and_offsets_of_the_answer(corpus, tokenizer):
    index = PassageIndex.build(read_corpus(corpus), tokenizer, WINDOWS, DEFAULT_BM25, "corpus")

    def reader(questions, contexts):  # the span "Vienna" wherever it occurs, scored by position
        out = []
        for context in contexts:
            at = context.find("Vienna")
            out.append(
                {"answer": "Vienna", "score": 3.0, "start": at, "null_odds": -2.0}
                if at >= 0
                else {"answer": context[:4], "score": 1.0, "start": 0, "null_odds": 1.0}
            )
        return out

    [result] = answer_open(reader, index, ["Which city does the Danube flow through first?"], 3, 0.5)
    # reading from a search made beforehand (evaluate_open searches once) reads the same passages
    question = ["Which city does the Danube flow through first?"]
    fresh, reused = (
        read_passages(reader, index, question, 2),
        read_passages(reader, index, question, 2, searched=index.search(question, 3)),
    )
    assert fresh.passage.tolist() == reused.passage.tolist() and fresh.bm25.tolist() == reused.bm25.tolist()
    assert fresh.answers == reused.answers and fresh.passage.shape == (1, 2)
    assert result["answer"] == "Vienna" and result["doc_id"] == "rivers.txt" and result["title"] == "rivers"
    text = DOCS["rivers.txt"]
    assert text[result["start"] : result["end"]] == "Vienna"
    assert result["reader_score"] == 2.0 and result["passage_rank"] == 1


def test_answers_read_at_each_rank_are_scored_by_the_squad_rule():
    from pipeline.qa.open_domain import answer_scores

    reads = reads_of([[3.0, 2.0, 1.0]], [[0.0, 0.0, 0.0]], [["Mount Etna", "the Etna", "Vesuvius"]])
    exact, f1 = answer_scores(reads, [["Mount Etna", "Etna volcano"]])
    assert exact.tolist() == [[100.0, 0.0, 0.0]]
    assert f1[0, 0] == 100.0 and f1[0, 1] == pytest.approx(200 / 3) and f1[0, 2] == 0.0


def test_a_squad_corpus_file_without_a_context_names_the_paragraph(tmp_path):
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "ok"}, {"qas": []}]}]}))
    with pytest.raises(PipelineError, match=r"corpus.json: data\[0\]\.paragraphs\[1\] has no 'context' string$"):
        read_corpus(path)


def test_the_throwaway_index_uses_the_conf_defaults():
    conf = yaml.safe_load((PROJECT_ROOT / "conf/retrieve/bm25.yaml").read_text())
    assert Bm25Settings(conf["k1"], conf["b"], conf["stemmer"]) == DEFAULT_BM25
