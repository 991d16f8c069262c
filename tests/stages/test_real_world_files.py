"""Real-world SQuAD-format files: integer ids, articles without a title, extra keys, answers a few
characters off (data.bad_records=repair), negative or non-integer answer_start, and the
train/validation overlap the download stage reports."""

from __future__ import annotations

import copy
import json

import pytest

from pipeline.download import run
from pipeline.qa.squad import build_dataset_dict, place_answer, read_examples, read_squad_json
from pipeline.runtime.errors import PipelineError
from pipeline.runtime.paths import OVERLAP_FILE_NAME, SUMMARY_FILE_NAME
from tests.helpers.project import SAMPLE_DIR, sample_data_config

CONTEXT = "The cat sat on the mat in 1999. Dogs barked at the cat."
CLEAN_QAS = [
    {"id": "q1", "question": "Who sat?", "answers": [{"text": "The cat", "answer_start": 0}]},
    {"id": "q2", "question": "When?", "answers": [{"text": "1999", "answer_start": 26}]},
    {
        "id": "q3",
        "question": "What barked?",
        "answers": [{"text": "Dogs", "answer_start": 32}, {"text": "Dogs barked", "answer_start": 32}],
    },
]


def write(path, qas, article_extra=None, context=CONTEXT):
    article = {"title": "T", "paragraphs": [{"context": context, "qas": qas}], **(article_extra or {})}
    path.write_text(json.dumps({"version": "1.1", "data": [article]}), encoding="utf-8")
    return path


def defective(patch):
    qas = copy.deepcopy(CLEAN_QAS)
    patch(qas)
    return qas


def answer(qas, i, j=0):
    return qas[i]["answers"][j]


# Each defect a real file has, repairable: the repaired records equal the clean ones.
REPAIRABLE = {
    "start one after": lambda q: answer(q, 1).update(answer_start=27),
    "start one before": lambda q: answer(q, 1).update(answer_start=25),
    "start four after": lambda q: answer(q, 2).update(answer_start=36),
    "leading space": lambda q: answer(q, 1).update(text=" 1999"),  # start kept at the 1
    "leading space, start two before": lambda q: answer(q, 1).update(text=" 1999", answer_start=24),
    "trailing space, start one after": lambda q: answer(q, 0).update(text="The cat ", answer_start=1),
    "trailing newline and tab": lambda q: answer(q, 2, 1).update(text="Dogs barked\n\t"),
    "whitespace and off by two": lambda q: answer(q, 1).update(text=" 1999 ", answer_start=28),
    "negative start near 0": lambda q: answer(q, 0).update(answer_start=-1),
}
# Not repairable: dropped and counted.
UNFIXABLE = {
    "text not in the context": lambda q: answer(q, 1).update(text="2001"),
    "text far from its start": lambda q: answer(q, 1).update(answer_start=5),
    "negative start far off": lambda q: answer(q, 1).update(answer_start=-180),
    "start not an integer": lambda q: answer(q, 1).update(answer_start="26"),
    "empty question": lambda q: q[1].update(question=" "),
}


def load(tmp_path, qas, policy, **kw):
    path = write(tmp_path / f"{policy}.json", qas, **kw)
    return build_dataset_dict(sample_data_config(train_file=str(path), validation_file=str(path), bad_records=policy))


@pytest.mark.parametrize("defect", sorted(REPAIRABLE))
def test_repair_restores_the_clean_records(tmp_path, defect, capsys):
    clean, _ = load(tmp_path, CLEAN_QAS, "error")
    repaired, summary = load(tmp_path, defective(REPAIRABLE[defect]), "repair")
    assert repaired["train"].to_list() == clean["train"].to_list()
    assert (summary["train"]["repaired"], summary["train"]["dropped"]) == (1, 0)
    assert "-> " in summary["train"]["repaired_examples"][0]
    assert "repaired 1 records (data.bad_records=repair)" in capsys.readouterr().out
    with pytest.raises(PipelineError, match=r"record id='q\d': .*data\.bad_records=repair"):
        load(tmp_path, defective(REPAIRABLE[defect]), "error")


@pytest.mark.parametrize("defect", sorted(UNFIXABLE))
def test_repair_drops_and_counts_what_it_cannot_fix(tmp_path, defect):
    dataset, summary = load(tmp_path, defective(UNFIXABLE[defect]), "repair")
    assert dataset["train"]["id"] == ["q1", "q3"]
    assert (summary["train"]["repaired"], summary["train"]["dropped"]) == (0, 1)
    assert summary["train"]["dropped_examples"][0].startswith(f"{tmp_path / 'repair.json'}: record id='q2': ")


def test_repair_reports_counts_and_examples_of_a_mixed_file(tmp_path):
    qas = defective(lambda q: (REPAIRABLE["leading space"](q), REPAIRABLE["trailing space, start one after"](q)))
    qas += [
        {"id": "q4", "question": "Where?", "answers": [{"text": "the moon", "answer_start": 3}]},
        {"id": "q5", "question": "Where?", "answers": [{"text": "mat ", "answer_start": 20}]},
        {"id": "q6", "question": "Where?", "answers": [{"text": "mat ", "answer_start": 19}]},
    ]
    dataset, summary = load(tmp_path, qas, "repair")
    assert dataset["train"]["id"] == ["q1", "q2", "q3", "q5", "q6"]
    assert dataset["train"][3]["answers"] == {"text": ["mat"], "answer_start": [19]}
    # a valid answer is left as it is, whitespace and all: only bad records are repaired
    assert dataset["train"][4]["answers"] == {"text": ["mat "], "answer_start": [19]}
    info = summary["train"]
    assert (info["repaired"], info["dropped"], info["examples"]) == (3, 1, 5)
    assert info["repaired_examples"][0].endswith("record id='q1': answer 'The cat ' at 1 -> 'The cat' at 0")
    assert "record id='q4': answer 'the moon' does not match context" in info["dropped_examples"][0]
    drop, drop_summary = load(tmp_path, qas, "drop")  # drop leaves the repairable records out too
    assert drop["train"]["id"] == ["q3", "q6"] and drop_summary["train"]["dropped"] == 4


def test_place_answer_prefers_the_stripped_text_and_the_nearest_occurrence():
    context = "ab cat cat ab"
    assert place_answer(context, "cat", 5) == ("cat", 3)  # 3 and 7 are both 2 off: the nearest, then the first
    assert place_answer(context, "cat", 6) == ("cat", 7)
    assert place_answer(context, " cat", 3) == ("cat", 3)  # without the whitespace first
    assert place_answer("ab  x", "  ", 0) == ("  ", 2)  # whitespace only: as given
    assert place_answer("cat and many more words", "cat", 5) == ("cat", 0)  # 5 characters off: within reach
    assert place_answer("cat and many more words", "cat", 6) is None  # 6 off: too far
    assert place_answer(context, "   ", 0) is None
    assert place_answer(context, "dog", 3) is None


def test_integer_ids_missing_titles_and_extra_keys_are_accepted(tmp_path):
    qas = [
        {
            "id": 101,
            "question": "Who sat?",
            "answers": [{"text": "The cat", "answer_start": 0, "extra": 1}],
            "difficulty": "easy",
        },
        {"id": "q2", "question": "When?", "answers": [{"text": "1999", "answer_start": 26}]},
    ]
    data = {
        "version": "1.1",
        "source": "other tool",
        "data": [
            {"paragraphs": [{"context": CONTEXT, "qas": qas, "document_id": 7}]},  # no title
            {
                "title": None,
                "paragraphs": [
                    {
                        "context": CONTEXT,
                        "qas": [
                            {"id": 102, "question": "What barked?", "answers": [{"text": "Dogs", "answer_start": 32}]}
                        ],
                    }
                ],
            },
        ],
    }
    path = tmp_path / "other.json"
    path.write_text(json.dumps(data))
    records = read_squad_json(path)
    assert [r["id"] for r in records] == ["101", "q2", "102"] and {r["title"] for r in records} == {""}
    dataset, summary = build_dataset_dict(sample_data_config(train_file=str(path), validation_file=str(path)))
    assert dataset["validation"]["id"] == ["101", "q2", "102"] and dataset["validation"]["title"] == ["", "", ""]
    examples, counts = read_examples(path, False)
    assert examples["id"] == ["101", "q2", "102"] and counts["dropped"] == counts["repaired"] == 0


@pytest.mark.parametrize(
    "start,message",
    [
        (-5, r"record id='q2': answer '1999' has a negative answer_start=-5"),
        (-180, r"record id='q2': answer '1999' has a negative answer_start=-180"),
        ("26", r"record id='q2': answer_start '26' is not an integer"),
        (26.0, r"record id='q2': answer_start 26\.0 is not an integer"),
        (True, r"record id='q2': answer_start True is not an integer"),
    ],
)
def test_negative_or_non_integer_answer_start_is_rejected_with_the_record_id(tmp_path, start, message):
    # context[-5:-1] is "1999": Python's negative slicing would accept answer_start=-5
    context = "The cat sat on the mat in 1999.1999x"
    qas = [
        {"id": "q1", "question": "Who sat?", "answers": [{"text": "The cat", "answer_start": 0}]},
        {"id": "q2", "question": "When?", "answers": [{"text": "1999", "answer_start": start}]},
    ]
    path = write(tmp_path / "neg.json", qas, context=context)
    with pytest.raises(PipelineError, match=message):
        build_dataset_dict(sample_data_config(train_file=str(path), validation_file=str(path)))
    with pytest.raises(PipelineError, match=message):
        read_examples(path, False)


def test_download_writes_the_overlap_and_warns_when_validation_occurs_in_train(tmp_path, capsys):
    train = write(tmp_path / "train.json", CLEAN_QAS)
    other = "Birds sang in the old oak tree at dawn."
    validation_qas = [
        {"id": "v1", "question": "who  SAT?", "answers": [{"text": "The cat", "answer_start": 0}]},
        {"id": "v2", "question": "Who sang?", "answers": [{"text": "Birds", "answer_start": 0}]},
    ]
    data = {
        "version": "1.1",
        "data": [
            {
                "title": "A",
                "paragraphs": [
                    {"context": CONTEXT, "qas": validation_qas[:1]},
                    {"context": other, "qas": validation_qas[1:]},
                ],
            }
        ],
    }
    validation = tmp_path / "validation.json"
    validation.write_text(json.dumps(data))
    out = tmp_path / "raw"
    summary = run(sample_data_config(train_file=str(train), validation_file=str(validation)), out)
    overlap = json.loads((out / OVERLAP_FILE_NAME).read_text())
    assert (
        overlap
        == summary["overlap"]
        == {
            "validation_contexts": 2,
            "validation_contexts_in_train": 1,
            "validation_questions": 2,
            "validation_questions_in_train": 1,  # case and spacing ignored
            "validation_questions_in_train_same_context": 1,
        }
    )
    assert "overlap" not in json.loads((out / SUMMARY_FILE_NAME).read_text())  # summary.json stays per split
    err = capsys.readouterr().err
    assert "warning: 1 of 2 validation contexts and 1 of 2 validation questions also occur in train" in err


def test_the_shipped_sample_has_no_overlap_and_no_warning(tmp_path, capsys):
    cfg = sample_data_config(max_train_samples=200, max_eval_samples=50)
    run(cfg, tmp_path / "raw")
    overlap = json.loads((tmp_path / "raw" / OVERLAP_FILE_NAME).read_text())
    assert overlap["validation_contexts_in_train"] == overlap["validation_questions_in_train"] == 0
    assert overlap["validation_questions"] == 50
    assert "warning" not in capsys.readouterr().err
    assert SAMPLE_DIR.is_dir()
