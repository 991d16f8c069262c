"""Retrieve, then read, through the pipeline: the index, tune_retrieval and evaluate_open
(open/dvc.yaml) stages of the baseline project (metrics/open.json against the evaluate stage's own
answers), what reruns when the corpus or the reader changes, `pipeline.predict` without a context
(--index, --corpus, the export's own index), the served MLflow model answering a row without a
context, and bad corpora and indexes (one `error:` line, nothing half-written).

On the tiny checkpoint (plumbing, not quality: docs/retrieval.md has the figures of trained
models). Each test has its own copy of the session's baseline project.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers.project import (
    OPEN_PIPELINE,
    copy_project,
    executed_stages,
    failure_lines,
    git,
    run_cmd,
    set_params,
    stale_stages,
    tree_digest,
)
from tests.helpers.servers import free_port, make_serve, serving


def read_json(path: Path):
    return json.loads(path.read_text())


def last_json(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def baseline_copy(baseline_project, tmp_path_factory) -> Path:
    """A copy of the baseline project that the tests only read."""
    return copy_project(baseline_project, tmp_path_factory.mktemp("open") / "project") / "repo"


def test_the_baseline_indexes_the_validation_contexts_and_measures_open_answers(baseline_copy):
    from datasets import load_from_disk

    repo = baseline_copy
    validation = load_from_disk(str(repo / "data/raw"))["validation"]
    meta = read_json(repo / "models/index/index.json")
    assert meta["documents"] == len(set(zip(validation["title"], validation["context"])))
    assert (meta["max_length"], meta["stride"], meta["passage_tokens"]) == (128, 32, 64)
    passages = [json.loads(line) for line in (repo / "models/index/passages.jsonl").read_text().splitlines()]
    assert len(passages) == meta["passages"] >= meta["documents"]
    contexts = set(validation["context"])
    assert all(any(p["text"] in c for c in contexts) for p in passages)

    metrics = read_json(repo / "metrics/open.json")
    evaluation = read_json(repo / "metrics/eval.json")
    assert metrics["questions"] == validation.num_rows == 24
    # isolated = the evaluate stage's answers, scored on the same questions
    assert metrics["isolated"]["f1"] == pytest.approx(evaluation["f1"])
    assert metrics["isolated"]["exact_match"] == pytest.approx(evaluation["exact_match"])
    recall = [metrics["recall"][f"at_{k}"] for k in (1, 5, 10, 20)]
    assert recall == sorted(recall) and 0 < recall[0] and recall[-1] <= 1
    chosen = metrics["chosen"]
    assert chosen["k"] in (1, 3, 5) and 0 <= chosen["weight"] <= 1 and chosen["tune_questions"] == 48
    assert set(metrics["integrated"]) == {"at_1", "at_5", "at_10"}
    assert metrics["latency_ms"]["questions"] == 20 and metrics["latency_ms"]["p95"] >= metrics["latency_ms"]["p50"]
    assert [row.split(",")[0] for row in (repo / "plots/open/recall.csv").read_text().split()[1:]] == [
        str(k) for k in range(1, 21)
    ]
    # tune_retrieval's choice, made on the train questions; the export carries it with the index
    tuned = read_json(repo / "models/retrieval.json")
    assert (tuned["k"], tuned["weight"], tuned["tune_questions"]) == (chosen["k"], chosen["weight"], 48)
    # read in retrieve.tune_precision (auto: bfloat16 where this CPU has it), not evaluate.precision (float32)
    from pipeline.qa.precision import resolve_precision

    assert tuned["tune_precision_policy"] == resolve_precision("auto", has_gpu=False)[0]
    assert tree_digest(repo / "models/export/index/bm25") == tree_digest(repo / "models/index/bm25")
    assert read_json(repo / "models/export/index/retrieval.json") == {"k": chosen["k"], "weight": chosen["weight"]}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    run = client.get_run(read_json(repo / "models/trained/training_run.json")["run_id"])
    assert run.data.metrics["open.recall.at_5"] == pytest.approx(metrics["recall"]["at_5"])
    assert run.data.metrics["open.chosen.k"] == chosen["k"]


def test_a_corpus_edit_reruns_the_index_and_a_new_reader_does_not(project):
    """The caching rows: a corpus edit reruns index and evaluate_open (and the export that carries
    the index), a retrained reader reruns tune_retrieval and evaluate_open but not the index; and
    `dvc repro` runs no open/dvc.yaml stage."""
    corpus = project / "corpus"
    corpus.mkdir()
    (corpus / "etna.md").write_text("# Etna\n\nMount Etna is an active stratovolcano on the east coast of Sicily.\n")
    (corpus / "danube.txt").write_text("The Danube flows through Vienna, Budapest and Belgrade.\n")
    set_params(project, {"retrieve": {"corpus": "corpus"}})
    git(project, "add", "-A")
    assert executed_stages(run_cmd(["dvc", "repro", OPEN_PIPELINE], project)) == {"index", "evaluate_open"}
    assert read_json(project / "models/index/index.json")["documents"] == 2
    assert read_json(project / "metrics/open.json")["documents"] == 2
    assert stale_stages(project) == {"export"}
    assert executed_stages(run_cmd(["dvc", "repro"], project)) == {"export"}
    (corpus / "danube.txt").write_text("The Danube flows through Vienna, Budapest, Belgrade and Novi Sad.\n")
    assert executed_stages(run_cmd(["dvc", "repro"], project)) == {"index", "export"}
    assert stale_stages(project, OPEN_PIPELINE) == {"evaluate_open"}
    assert executed_stages(run_cmd(["dvc", "repro", OPEN_PIPELINE], project)) == {"evaluate_open"}
    index_before = tree_digest(project / "models/index")
    set_params(project, {"train": {"learning_rate": 0.0005}})  # a new reader, the same index
    assert executed_stages(run_cmd(["dvc", "repro", OPEN_PIPELINE], project)) == {
        "train",
        "evaluate",
        "tune_retrieval",
        "evaluate_open",
    }
    assert tree_digest(project / "models/index") == index_before
    assert stale_stages(project) == {"export"}


def test_predict_answers_a_question_without_a_context_from_an_index(baseline_copy, tmp_path):
    repo = baseline_copy
    passages = [json.loads(line) for line in (repo / "models/index/passages.jsonl").read_text().splitlines()]
    question = ["--question", "Which NFL team won Super Bowl 50?"]
    base = [sys.executable, "-m", "pipeline.predict", "--model", "models/export", *question]
    given = last_json(run_cmd([*base, "--index", "models/index"], repo))
    own = last_json(run_cmd(base, repo))  # the export's own copy of the index and its k and weight
    assert given == own
    assert set(given) >= {"answer", "score", "reader_score", "retriever_score", "doc_id", "title", "start", "end"}
    documents = {p["doc_id"]: p for p in passages}
    assert given["doc_id"] in documents and given["title"] == documents[given["doc_id"]]["title"]
    text = "".join(p["text"] for p in passages if p["doc_id"] == given["doc_id"])
    assert given["answer"] in text

    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "bridge.txt").write_text("The Golden Gate Bridge opened in 1937 in San Francisco.")
    (corpus / "tower.md").write_text("# Eiffel Tower\n\nThe Eiffel Tower in Paris was finished in 1889.")
    tower = last_json(
        run_cmd(
            [sys.executable, "-m", "pipeline.predict", "--model", "models/export", "--corpus", str(corpus)]
            + ["--question", "When was the Eiffel Tower in Paris finished?", "--k", "1", "--weight", "0.5"],
            repo,
        )
    )
    assert (tower["doc_id"], tower["title"], tower["passage_rank"]) == ("tower.md", "Eiffel Tower", 1)
    text = (corpus / "tower.md").read_text()
    assert text[tower["start"] : tower["end"]] == tower["answer"]  # offsets in the document


def test_bad_corpora_and_mismatched_indexes_stop_with_one_line_and_keep_the_index(project, tmp_path):
    before = tree_digest(project / "models/index")
    corpus = project / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("Fine text.")
    (corpus / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    set_params(project, {"retrieve": {"corpus": "corpus"}})
    cases = [
        ("image.txt", f"error: {corpus / 'image.txt'}: a binary file (NUL bytes), not text; remove it"),
        ("latin.txt", f"error: {corpus / 'latin.txt'}: not UTF-8 text (byte 3); convert it"),
    ]
    (corpus / "image.txt").unlink()
    for name, message in cases:
        content = b"\x89PNG\r\n\x1a\n\x00\x00" if name == "image.txt" else "caf\u00e9".encode("latin-1")
        (corpus / name).write_bytes(content)
        proc = run_cmd([sys.executable, "-m", "pipeline.index"], project, check=False)
        [line] = failure_lines(proc)
        assert line.startswith(message.replace(str(corpus), "corpus")), line
        (corpus / name).unlink()
    (corpus / "good.txt").write_text("   \n")
    [line] = failure_lines(run_cmd([sys.executable, "-m", "pipeline.index"], project, check=False))
    assert line == "error: corpus: the corpus has no text (1 empty documents); add documents"
    assert tree_digest(project / "models/index") == before

    # a k and weight chosen with other BM25 settings than the index's: the export refuses to carry them
    export_before = tree_digest(project / "models/export")
    chosen = read_json(project / "models/retrieval.json")
    (project / "models/retrieval.json").write_text(json.dumps({**chosen, "bm25": {**chosen["bm25"], "k1": 0.9}}))
    set_params(project, {"retrieve": {"corpus": "data/raw"}})
    [line] = failure_lines(run_cmd([sys.executable, "-m", "pipeline.export"], project, check=False))
    assert line.startswith("error: models/retrieval.json: k and weight were chosen with BM25 settings "), line
    assert line.endswith("; run `dvc repro index tune_retrieval`"), line
    assert tree_digest(project / "models/export") == export_before
    (project / "models/retrieval.json").write_text(json.dumps(chosen))

    # an index split with other windows than the model's
    set_params(project, {"retrieve": {"corpus": "data/raw"}, "tokenize": {"stride": 16}})
    run_cmd([sys.executable, "-m", "pipeline.index"], project)
    proc = run_cmd(
        [sys.executable, "-m", "pipeline.predict", "--model", "models/export", "--index", "models/index"]
        + ["--question", "Who?"],
        project,
        check=False,
    )
    assert failure_lines(proc) == [
        "error: models/index: the index was split for max_length=128, stride=16 but the model reads "
        "max_length=128, stride=32; rebuild it for this model (`dvc repro index`, or --corpus DIR)"
    ]
    proc = run_cmd([sys.executable, "-m", "pipeline.evaluate_open"], project, check=False)
    assert len(failure_lines(proc)) == 1


@pytest.mark.xdist_group("mlflow-models-serve-open")
def test_the_served_model_answers_a_row_without_a_context_from_its_index(baseline_copy, tmp_path):
    """`make serve` of the candidate: a row without a context is answered from the index the
    model carries, as `pipeline.predict` answers it; a row with one, as before."""
    repo = baseline_copy
    question = "Which NFL team won Super Bowl 50?"
    expected = last_json(
        run_cmd([sys.executable, "-m", "pipeline.predict", "--model", "models/export", "--question", question], repo)
    )
    port = free_port()
    cmd, env = make_serve(port)
    log_path = tmp_path / "serve.log"
    import urllib.request

    context = "The book was written by Ada Lovelace in 1843."
    with serving(cmd, f"http://127.0.0.1:{port}/ping", log_path, repo, env):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(
                {"dataframe_records": [{"question": question}, {"question": "Who wrote it?", "context": context}]}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            open_row, given_row = json.loads(response.read())["predictions"]
    assert (open_row["answer"], open_row["doc_id"], open_row["title"]) == (
        expected["answer"],
        expected["doc_id"],
        expected["title"],
    )
    assert open_row["score"] == pytest.approx(expected["score"])
    assert given_row.get("doc_id") is None or given_row["doc_id"] != given_row["doc_id"]  # null or NaN: no document
    assert given_row["answer"] in context
    assert "a question without a context is answered from" in log_path.read_text()
