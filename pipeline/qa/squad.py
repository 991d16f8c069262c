"""SQuAD-format records: read (local JSON or the Hugging Face hub), validate, repair, subset.

Records are flat dicts with the hub `squad` columns (id, title, context, question,
answers={"text": [...], "answer_start": [...]}) plus is_impossible for SQuAD v2.0.

Real-world files are read leniently where nothing is lost: integer ids become strings,
an article without a title gets "", keys this layout does not use are ignored. Bad
records follow a policy: "error" (stop at the first), "drop" (skip and count them) or
"repair" (move an answer whose text, or its text without surrounding whitespace, occurs
within REPAIR_WINDOW characters of its answer_start; drop what cannot be repaired).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from pipeline.runtime.config import DataConfig
from pipeline.runtime.errors import PipelineError

SPLITS = ("train", "validation")
COLUMNS = ("id", "title", "context", "question", "answers")
# "repair" looks for a misplaced answer's text this many characters either side of its span.
REPAIR_WINDOW = 5
REPORT_EXAMPLES = 3  # bad records quoted in a report


@dataclass
class ValidationReport:
    kept: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # dropped records: "<source>: record id=...: <problem>"
    repaired: list[str] = field(default_factory=list)  # repaired records: "<source>: record id=...: <what moved>"

    def counts(self, policy: str) -> dict[str, Any]:
        """How many records were repaired and dropped, with the first few of each."""
        return {
            "policy": policy,
            "repaired": len(self.repaired),
            "dropped": len(self.problems),
            "repaired_examples": self.repaired[:REPORT_EXAMPLES],
            "dropped_examples": self.problems[:REPORT_EXAMPLES],
        }


def _string_id(value: Any) -> Any:
    """Integer ids (some exporters write them) as strings; anything else unchanged, for validation."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def load_squad_json(path: str | Path) -> dict:
    """A SQuAD v1.1/v2.0 file (.json or .json.gz) as JSON, its top-level 'data' list checked."""
    path = Path(path)
    if path.is_dir():
        raise PipelineError(
            f"{path}: is a directory, not a SQuAD .json/.json.gz file; check data.train_file / data.validation_file"
        )
    if not path.is_file():
        raise PipelineError(f"{path}: data file not found; check data.train_file / data.validation_file")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            squad = json.load(fh)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PipelineError(f"{path}: not a readable SQuAD JSON file ({err})") from None
    if not isinstance(squad, dict) or not isinstance(squad.get("data"), list):
        raise PipelineError(f"{path}: no top-level 'data' list; expected the SQuAD v1.1/v2.0 layout")
    return squad


def squad_paragraphs(squad: dict, path: str | Path) -> Iterator[tuple[str, str, Any]]:
    """(where, title, paragraph) for every paragraph of load_squad_json's result, where being
    "data[a].paragraphs[p]" for messages; each article's 'paragraphs' list is checked."""
    for a, article in enumerate(squad["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise PipelineError(f"{path}: data[{a}] has no 'paragraphs' list")
        title = article.get("title")
        title = "" if title is None else str(title)  # articles without a title are common outside SQuAD
        for p, paragraph in enumerate(article["paragraphs"]):
            yield f"data[{a}].paragraphs[{p}]", title, paragraph


def read_squad_json(path: str | Path) -> list[dict]:
    """Flatten a SQuAD v1.1/v2.0 file (.json or .json.gz) into hub-style records.

    Records keep the hub `squad` columns; v2.0 unanswerable questions (`is_impossible`)
    get empty answer lists.
    """
    path = Path(path)
    records = []
    for where, title, paragraph in squad_paragraphs(load_squad_json(path), path):
        if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
            raise PipelineError(f"{path}: {where} has no 'qas' list")
        context = paragraph.get("context")
        for q, qa in enumerate(paragraph["qas"]):
            if not isinstance(qa, dict):
                raise PipelineError(f"{path}: {where}.qas[{q}] is not an object")
            answers = qa.get("answers")
            records.append(
                {
                    "id": _string_id(qa.get("id")),
                    "title": title,
                    "context": context,
                    "question": qa.get("question"),
                    "answers": answers
                    if not isinstance(answers, list)
                    else {
                        "text": [ans.get("text") if isinstance(ans, dict) else None for ans in answers],
                        "answer_start": [ans.get("answer_start") if isinstance(ans, dict) else None for ans in answers],
                    },
                    "is_impossible": bool(qa.get("is_impossible", False)),
                }
            )
    return records


def record_problem(record: dict, allow_impossible: bool) -> str | None:
    """Why a record is unusable, or None when it is fine."""
    for key in ("id", "context", "question", "answers"):
        if record.get(key) is None:
            return f"missing field '{key}'"
    if not isinstance(record["id"], str):
        return f"id {record['id']!r} is neither a string nor an integer"
    if not record["id"].strip():
        return "empty id"
    if not isinstance(record["question"], str) or not record["question"].strip():
        return "empty question"
    if not isinstance(record["context"], str) or not record["context"].strip():
        return "empty context"
    answers = record["answers"]
    if not isinstance(answers, dict) or "text" not in answers or "answer_start" not in answers:
        return "answers must have 'text' and 'answer_start'"
    texts, starts = answers["text"], answers["answer_start"]
    if len(texts) != len(starts):
        return "answers.text and answers.answer_start differ in length"
    if not texts and not (allow_impossible and record.get("is_impossible")):
        return "no answers (set data.version_2_with_negative=true for SQuAD v2.0 unanswerable questions)"
    context = record["context"]
    for text, start in zip(texts, starts):
        if not isinstance(text, str) or not text:
            return "empty answer text"
        if not isinstance(start, int) or isinstance(start, bool):
            return f"answer_start {start!r} is not an integer"
        if start < 0:
            return f"answer {text!r} has a negative answer_start={start}"
        if context[start : start + len(text)] != text:
            found = context[start : start + len(text)] if 0 <= start < len(context) else "<out of range>"
            return f"answer {text!r} does not match context at answer_start={start} (context has {found!r})"
    return None


def place_answer(context: str, text: str, start: int, window: int = REPAIR_WINDOW) -> Optional[tuple[str, int]]:
    """(text, start) of the answer nearest `start` within `window` characters either side of
    its span: the text without its surrounding whitespace (the usual defect), else the text as
    given; None if neither occurs there."""
    for candidate in dict.fromkeys((text.strip(), text)):
        if not candidate:
            continue
        low, high = max(0, start - window), min(len(context), start + len(text) + window)
        found, at = [], context.find(candidate, low)
        while 0 <= at and at + len(candidate) <= high:
            found.append(at)
            at = context.find(candidate, at + 1)
        if found:
            return candidate, min(found, key=lambda p: (abs(p - start), p))
    return None


def repair_record(record: dict) -> Optional[tuple[dict, list[str]]]:
    """The record with each misplaced answer moved (place_answer), and what moved; None when
    an answer cannot be placed, or nothing needed moving."""
    context, answers = record.get("context"), record.get("answers")
    if not isinstance(context, str) or not isinstance(answers, dict):
        return None
    texts, starts = answers.get("text"), answers.get("answer_start")
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        return None
    fixed_texts, fixed_starts, notes = [], [], []
    for text, start in zip(texts, starts):
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            return None
        if not (0 <= start and context[start : start + len(text)] == text):
            placed = place_answer(context, text, start)
            if placed is None:
                return None
            notes.append(f"answer {text!r} at {start} -> {placed[0]!r} at {placed[1]}")
            text, start = placed
        fixed_texts.append(text)
        fixed_starts.append(start)
    if not notes:
        return None
    return {**record, "answers": {**answers, "text": fixed_texts, "answer_start": fixed_starts}}, notes


def validate_records(records: Iterable[dict], source: str, policy: str, allow_impossible: bool) -> ValidationReport:
    """Keep the good records; by `policy` stop at ("error"), drop ("drop") or repair what it can
    and drop the rest ("repair") of the bad ones."""
    report = ValidationReport()
    seen: set[str] = set()
    for record in records:
        problem = record_problem(record, allow_impossible)
        repair_notes: list[str] = []
        if problem is not None and policy == "repair":
            repaired = repair_record(record)
            if repaired is not None and record_problem(repaired[0], allow_impossible) is None:
                (record, repair_notes), problem = repaired, None
        if problem is None and record["id"] in seen:
            problem = "duplicate id"
        if problem is not None:
            where = f"{source}: record id={record.get('id')!r}: {problem}"
            if policy == "error":
                raise PipelineError(
                    f"{where} (fix the record, or set data.bad_records=repair to move misplaced "
                    "answers and drop the rest, or data.bad_records=drop to skip bad records)"
                )
            report.problems.append(where)
            continue
        if repair_notes:
            report.repaired.append(f"{source}: record id={record['id']!r}: {'; '.join(repair_notes)}")
        seen.add(record["id"])
        report.kept.append(record)
    return report


def split_overlap(train: Mapping[str, Sequence[str]], validation: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """How much of the validation split also occurs in train (columns context and question):
    distinct contexts, questions (case and whitespace ignored), and questions asked again about
    the same context. Any of them inflates the validation score of a model trained on train."""

    def text(value: str) -> str:
        return " ".join(value.split())

    def question(value: str) -> str:
        return text(value).casefold()

    train_contexts = {text(c) for c in train["context"]}
    train_questions = {question(q) for q in train["question"]}
    train_pairs = {(text(c), question(q)) for c, q in zip(train["context"], train["question"])}
    contexts = {text(c) for c in validation["context"]}
    pairs = [(text(c), question(q)) for c, q in zip(validation["context"], validation["question"])]
    return {
        "validation_contexts": len(contexts),
        "validation_contexts_in_train": len(contexts & train_contexts),
        "validation_questions": len(pairs),
        "validation_questions_in_train": sum(q in train_questions for _, q in pairs),
        "validation_questions_in_train_same_context": sum(pair in train_pairs for pair in pairs),
    }


def load_hub_split(cfg: DataConfig, split: str) -> tuple[list[dict], dict[str, str]]:
    """The split's records, and what they are: the dataset's resolved revision (the hub commit, or
    the hash of a local dataset's files) and the split's fingerprint."""
    from datasets import load_dataset_builder

    try:
        builder = load_dataset_builder(cfg.name, cfg.config_name)
        builder.download_and_prepare()
        dataset = builder.as_dataset(split=split)
    except Exception as err:  # datasets raises many types for "not found / offline"
        raise PipelineError(
            f"data.name={cfg.name!r} split={split!r}: could not load from the Hugging Face hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "check the name and network access, or use data=squad_json with local files"
        ) from None
    missing = [c for c in COLUMNS if c not in dataset.column_names]
    if missing:
        raise PipelineError(
            f"data.name={cfg.name!r} split={split!r}: missing SQuAD columns {missing}; expected {list(COLUMNS)}"
        )
    records = dataset.select_columns(list(COLUMNS)).to_list()
    for record in records:
        # squad_v2 marks unanswerable questions by an empty answer list.
        record["is_impossible"] = len(record["answers"]["text"]) == 0
    return records, {"revision": str(builder.hash or ""), "fingerprint": dataset._fingerprint}


def load_split(cfg: DataConfig, split: str) -> tuple[list[dict], str, dict[str, str]]:
    """Records, their source (for messages) and what identifies a hub dataset ({} for files,
    which DVC hashes)."""
    if cfg.source == "hub":
        records, provenance = load_hub_split(cfg, split)
        return records, f"{cfg.name}[{split}]", provenance
    path = cfg.train_file if split == "train" else cfg.validation_file
    return read_squad_json(path), str(path), {}


def build_dataset_dict(cfg: DataConfig) -> tuple[Any, dict]:
    """Load, validate and subset both splits. Pure apart from reading the sources."""
    from datasets import Dataset, DatasetDict, Features, Sequence, Value

    features = Features(
        {
            "id": Value("string"),
            "title": Value("string"),
            "context": Value("string"),
            "question": Value("string"),
            "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")}),
        }
    )
    splits, summary = {}, {}
    for split in SPLITS:
        records, source, provenance = load_split(cfg, split)
        report = validate_records(records, source, cfg.bad_records, cfg.version_2_with_negative)
        if report.repaired:
            print(
                f"{source}: repaired {len(report.repaired)} records (data.bad_records=repair), "
                f"e.g. {report.repaired[0]}"
            )
        if report.problems:
            print(
                f"{source}: dropped {len(report.problems)} bad records (data.bad_records={cfg.bad_records}), "
                f"e.g. {report.problems[0]}"
            )
        kept = report.kept
        limit = cfg.max_train_samples if split == "train" else cfg.max_eval_samples
        if limit is not None:
            kept = kept[:limit]  # the first N: deterministic and keeps each paragraph's questions together
        if not kept:
            raise PipelineError(f"{source}: no valid records left for split '{split}'")
        rows = [{c: r[c] if c != "title" else (r.get("title") or "") for c in COLUMNS} for r in kept]
        splits[split] = Dataset.from_list(rows, features=features)
        counts = report.counts(cfg.bad_records)
        summary[split] = {
            "examples": len(kept),
            "dropped": len(report.problems),
            "source": source,
            "repaired": len(report.repaired),
            "repaired_examples": counts["repaired_examples"],
            "dropped_examples": counts["dropped_examples"],
            **provenance,
        }
    return DatasetDict(splits), summary


def load_saved(path: Path):
    """A saved DatasetDict (data/raw, data/tokenized) read into memory, so that filter() and map()
    write no cache file into its directory: another stage's output, which DVC would see change."""
    from datasets import load_from_disk

    return load_from_disk(str(path), keep_in_memory=True)


def answerable(dataset):
    """The rows of a SQuAD-style Dataset with at least one gold answer (SQuAD v2.0's unanswerable
    questions left out)."""
    return dataset.filter(lambda answers: len(answers["text"]) > 0, input_columns="answers")


def load_examples(path: Path, version_2_with_negative: bool, max_samples: Optional[int] = None) -> dict[str, list]:
    """id/question/context/answers columns of a SQuAD-format file, validated; the first max_samples.

    Every question is scored, so any bad record stops the run (a metric over a silently
    smaller set would not be the file's score).
    """
    return read_examples(path, version_2_with_negative, max_samples)[0]


def read_examples(
    path: Path, version_2_with_negative: bool, max_samples: Optional[int] = None, bad_records: str = "error"
) -> tuple[dict[str, list], dict[str, Any]]:
    """(id/question/context/answers columns of a SQuAD-format file, the bad-records counts).

    bad_records "error": any bad record stops the run (a metric over a silently smaller set
    would not be the file's score); "drop" and "repair" score what is left and say how many
    were repaired and dropped. max_samples: the first N valid questions.
    """
    records = read_squad_json(path)
    unanswerable = [r for r in records if r["is_impossible"]]
    if unanswerable and not version_2_with_negative:
        raise PipelineError(
            f"{path}: {len(unanswerable)} unanswerable (is_impossible) questions, e.g. id={unanswerable[0]['id']!r}; "
            "add --version-2-with-negative to evaluate SQuAD v2.0"
        )
    # "error" validates as "drop" only to count the bad records for the message.
    report = validate_records(
        records, str(path), "drop" if bad_records == "error" else bad_records, allow_impossible=version_2_with_negative
    )
    if report.problems and bad_records == "error":
        raise PipelineError(
            f"{report.problems[0]} ({len(report.problems)} bad record(s) in the file; every question is scored, "
            "so fix or remove them, or pass --bad-records repair (move misplaced answers, drop the rest) or drop)"
        )
    kept = report.kept[:max_samples] if max_samples else report.kept
    if not kept:
        raise PipelineError(f"{path}: no questions to evaluate")
    return (
        {column: [r[column] for r in kept] for column in ("id", "question", "context", "answers")},
        report.counts(bad_records),
    )


def write_squad_json(records: list[dict], path: Path) -> None:
    """Records (this module's layout) back into a SQuAD v1.1 JSON file, one paragraph each
    (gzip-compressed when the name ends in .gz, as read_squad_json reads it)."""
    data = [
        {
            "title": r["title"],
            "paragraphs": [
                {
                    "context": r["context"],
                    "qas": [
                        {
                            "id": r["id"],
                            "question": r["question"],
                            "answers": [
                                {"text": t, "answer_start": s}
                                for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])
                            ],
                        }
                    ],
                }
            ],
        }
        for r in records
    ]
    text = json.dumps({"version": "1.1", "data": data})
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        Path(path).write_text(text, encoding="utf-8")


def iter_questions(path: str | Path) -> Iterator[dict]:
    """id/question/context records to answer, one at a time: from JSON Lines (one object per
    line with question, context and optionally id; ids default to the line number) or from a
    SQuAD-format .json/.json.gz file (answers, if any, are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: input file not found")
    if path.name.endswith((".json", ".json.gz")):
        for record in read_squad_json(path):
            yield {"id": record["id"], "question": record["question"], "context": record["context"]}
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise PipelineError(
                    f"{path}:{number}: not a JSON object ({err.msg}); expected one "
                    '{"question": ..., "context": ...} per line'
                ) from None
            if not isinstance(record, dict):
                raise PipelineError(
                    f'{path}:{number}: not a JSON object; expected one {{"question": ..., "context": ...}} per line'
                )
            yield {
                "id": str(record.get("id", number)),
                "question": record.get("question"),
                "context": record.get("context"),
            }
