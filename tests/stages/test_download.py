"""Download stage: SQuAD JSON parsing, record validation, bad-record policy, atomic output."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest

from pipeline.download import run
from pipeline.qa.squad import build_dataset_dict, read_squad_json
from pipeline.runtime.config import DataConfig
from pipeline.runtime.errors import PipelineError
from tests.helpers.project import SAMPLE_DIR, sample_data_config


def squad_file(
    tmp_path: Path, name: str, qas: list[dict], context: str = "The cat sat on the mat in 1999.", version: str = "1.1"
) -> Path:
    data = {"version": version, "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            json.dump(data, fh)
    else:
        path.write_text(json.dumps(data), encoding="utf-8")
    return path


GOOD_QAS = [
    {"id": "q1", "question": "Who sat?", "answers": [{"text": "The cat", "answer_start": 0}]},
    {"id": "q2", "question": "When? ", "answers": [{"text": "1999", "answer_start": 26}]},
]


def config(train: Path, validation: Path, **kw) -> DataConfig:
    return sample_data_config(train_file=str(train), validation_file=str(validation), **kw)


def test_shipped_sample_loads_with_hub_columns(sample_raw):
    assert sample_raw["train"].num_rows == 2596
    assert sample_raw["validation"].num_rows == 627
    assert sample_raw["train"].column_names == ["id", "title", "context", "question", "answers"]
    row = sample_raw["validation"][0]
    assert row["context"][row["answers"]["answer_start"][0] :].startswith(row["answers"]["text"][0])
    # dev questions keep all their reference answers
    assert max(len(a["text"]) for a in sample_raw["validation"]["answers"]) >= 3


def test_json_and_gzip_give_the_same_records(tmp_path):
    plain = squad_file(tmp_path, "a.json", GOOD_QAS)
    gz = squad_file(tmp_path, "a.json.gz", GOOD_QAS)
    assert read_squad_json(plain) == read_squad_json(gz)
    assert read_squad_json(plain)[0]["answers"] == {"text": ["The cat"], "answer_start": [0]}


def test_subsetting_takes_the_first_n_deterministically(tmp_path):
    train = squad_file(tmp_path, "t.json", GOOD_QAS)
    dataset, summary = build_dataset_dict(config(train, train, max_train_samples=1))
    assert dataset["train"]["id"] == ["q1"]
    assert dataset["validation"]["id"] == ["q1", "q2"]
    assert summary["train"]["examples"] == 1


def bad(qas_patch) -> list[dict]:
    qas = copy.deepcopy(GOOD_QAS)
    qas_patch(qas)
    return qas


MALFORMED_RECORDS = {
    "missing field": (bad(lambda q: q[1].pop("question")), r"record id='q2': missing field 'question'"),
    "empty question": (bad(lambda q: q[1].update(question="   ")), r"record id='q2': empty question"),
    "answer mismatch": (
        bad(lambda q: q[1]["answers"][0].update(answer_start=3)),
        r"record id='q2': answer '1999' does not match context at answer_start=3",
    ),
    "answer_start not int": (
        bad(lambda q: q[1]["answers"][0].update(answer_start="26")),
        r"record id='q2': answer_start '26'",
    ),
    "duplicate id": (bad(lambda q: q[1].update(id="q1")), r"record id='q1': duplicate id"),
    "no answers": (bad(lambda q: q[1].update(answers=[])), r"record id='q2': no answers"),
    "missing id": (bad(lambda q: q[1].pop("id")), r"record id=None: missing field 'id'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_RECORDS))
def test_malformed_record_stops_with_file_id_and_problem_and_writes_nothing(tmp_path, case):
    qas, message = MALFORMED_RECORDS[case]
    good = squad_file(tmp_path, "good.json", GOOD_QAS)
    broken = squad_file(tmp_path, "broken.json", qas)
    out = tmp_path / "raw"
    run(config(good, good), out)  # an earlier, good output
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(PipelineError, match=rf"broken\.json: {message}") as err:
        run(config(broken, good), out)
    assert "data.bad_records=drop" in str(err.value)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".raw")] == []  # no temp leftovers


def test_empty_context_is_reported(tmp_path):
    path = squad_file(tmp_path, "c.json", [{"id": "q", "question": "Q?", "answers": []}], context="")
    with pytest.raises(PipelineError, match=r"c\.json: record id='q': empty context"):
        build_dataset_dict(config(path, path))


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "data file not found"),
        (b"\x1f\x8b\x08garbage", "not a readable SQuAD JSON file"),
        (b'{"data": [', "not a readable SQuAD JSON file"),
        (b'{"version": "1.1"}', "no top-level 'data' list"),
        (b'{"data": [{"title": "x"}]}', r"data\[0\] has no 'paragraphs' list"),
    ],
)
def test_missing_or_garbled_file_is_named(tmp_path, content, message):
    good = squad_file(tmp_path, "good.json", GOOD_QAS)
    path = tmp_path / ("bad.json.gz" if content and content.startswith(b"\x1f\x8b") else "bad.json")
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "raw"
    with pytest.raises(PipelineError, match=rf"bad\.json(\.gz)?: {message}"):
        run(config(good, path), out)
    assert not out.exists()


def test_drop_policy_drops_and_counts(tmp_path, capsys):
    qas = bad(lambda q: q[1].update(question=""))
    path = squad_file(tmp_path, "d.json", qas)
    dataset, summary = build_dataset_dict(config(path, path, bad_records="drop"))
    assert dataset["train"]["id"] == ["q1"]
    assert summary["train"]["dropped"] == 1
    assert "dropped 1 bad records" in capsys.readouterr().out


def test_squad_v2_unanswerable_questions(tmp_path):
    qas = GOOD_QAS + [{"id": "q3", "question": "Who flew?", "answers": [], "is_impossible": True}]
    path = squad_file(tmp_path, "v2.json", qas, version="v2.0")
    with pytest.raises(PipelineError, match=r"record id='q3': no answers \(set data\.version_2_with_negative=true"):
        build_dataset_dict(config(path, path))
    dataset, _ = build_dataset_dict(config(path, path, version_2_with_negative=True))
    assert dataset["train"][2]["answers"] == {"text": [], "answer_start": []}


def test_output_is_byte_reproducible(tmp_path):
    cfg = sample_data_config(
        train_file=str(SAMPLE_DIR / "validation.json.gz"), max_train_samples=50, max_eval_samples=20
    )
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_a_hub_dataset_records_its_resolved_revision_and_fingerprint(tmp_path):
    """data.source=hub goes through datasets' builder (here on a local dataset folder, as the hub
    cannot be reached): data/raw's summary names the revision and fingerprint it was built from,
    and another revision of the files gives another one."""
    folder = tmp_path / "hub-like"
    folder.mkdir()
    records = read_squad_json(SAMPLE_DIR / "validation.json.gz")[:6]

    def write(rows):
        for split in ("train", "validation"):
            (folder / f"{split}.jsonl").write_text(
                "".join(
                    json.dumps({c: r[c] for c in ("id", "title", "context", "question", "answers")}) + "\n"
                    for r in rows
                )
            )

    write(records)
    cfg = sample_data_config(
        source="hub", name=str(folder), train_file="conf/data/squad.yaml", validation_file="conf/data/squad.yaml"
    )
    _, summary = build_dataset_dict(cfg)
    first = summary["validation"]
    assert first["examples"] == 6 and first["source"] == f"{folder}[validation]"
    assert len(first["revision"]) >= 16 and len(first["fingerprint"]) >= 16
    write(records[:5])
    _, summary = build_dataset_dict(cfg)
    assert summary["validation"]["examples"] == 5
    assert summary["validation"]["revision"] != first["revision"]
    assert summary["validation"]["fingerprint"] != first["fingerprint"]
