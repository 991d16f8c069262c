"""Hostile input, as a new user meets it: each case runs the real command in a small workspace
and must exit 1 with exactly one `error:` line naming the file/record/key and the fix, no
traceback, and the outputs already there unchanged."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.runtime.paths import NEGATIVES_FILE, RAW_DIR, TOKENIZED_DIR
from tests.helpers.project import composed_config, failure_lines, project_files, run_cmd, PROJECT_ROOT

TINY = ["data.max_train_samples=24", "data.max_eval_samples=8", "tokenize.max_length=128", "tokenize.stride=32"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """params.yaml on a tiny config, data/raw and data/tokenized built by the real stages."""
    root = tmp_path_factory.mktemp("hostile")
    for name in project_files():
        if name.startswith(("conf/", "data/sample/")) or name in ("params.yaml", "dvc.yaml"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, root / name)
    cfg = composed_config(*TINY)
    (root / "params.yaml").write_text(run_cmd([sys.executable, "-m", "pipeline.runtime.compose", *TINY], root).stdout)
    run_cmd([sys.executable, "-m", "pipeline.download"], root)
    run_cmd([sys.executable, "-m", "pipeline.negatives"], root)
    run_cmd([sys.executable, "-m", "pipeline.tokenize", "--num-proc", "1"], root)
    assert cfg.tokenize.max_length == 128
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for d in (RAW_DIR, TOKENIZED_DIR, NEGATIVES_FILE)
        for p in ([root / d] if (root / d).is_file() else sorted((root / d).rglob("*")))
        if p.is_file()
    }


def edit_params(root: Path, edit) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def long_question_train_file(root: Path) -> None:
    squad = json.load(gzip.open(root / "data/sample/train.json.gz", "rt", encoding="utf-8"))
    first = squad["data"][0]["paragraphs"][0]["qas"][0]
    first["question"] = "why " * 300
    with gzip.open(root / "data/sample/train.json.gz", "wt", encoding="utf-8") as fh:
        json.dump(squad, fh)
    return first["id"]


# (name, setup(root) -> None, command, substrings the one error line must hold)
CASES = [
    (
        "params.yaml missing section",
        lambda r: edit_params(r, lambda p: p.pop("train")),
        "tokenize",
        ["params.yaml: section 'train' is missing", "make params"],
    ),
    (
        "params.yaml missing key",
        lambda r: edit_params(r, lambda p: p["train"].pop("epochs")),
        "tokenize",
        ["params.yaml: train.epochs is missing", "make params"],
    ),
    (
        "params.yaml broken YAML",
        lambda r: (r / "params.yaml").write_text("data:\n  source: json\n bad: [\n"),
        "tokenize",
        ["params.yaml: not valid YAML at line 3", "make params"],
    ),
    (
        "params.yaml not UTF-8",
        lambda r: (r / "params.yaml").write_bytes(b"data: \xff\xfe\n"),
        "tokenize",
        ["params.yaml: not UTF-8 text", "make params"],
    ),
    (
        "stride leaves no room for a question",
        lambda r: edit_params(r, lambda p: p["tokenize"].update(stride=120)),
        "tokenize",
        ["record id=", "tokenize.stride=120", "shorten the question, raise tokenize.max_length"],
    ),
    (
        "checkpoint path not found",
        lambda r: edit_params(r, lambda p: p["model"].update(checkpoint="./no/such/model")),
        "tokenize",
        ["model.checkpoint='./no/such/model': local path not found"],
    ),
    (
        "unknown hub model offline fails at once",
        lambda r: edit_params(r, lambda p: p["model"].update(checkpoint="no-such-model-xyz")),
        "tokenize",
        ["model.checkpoint='no-such-model-xyz'", "HF_HUB_OFFLINE is set"],
    ),
    (
        "too many retrieved negatives",
        lambda r: edit_params(r, lambda p: p["retrieve"].update(train_negatives=11)),
        "negatives",
        ["params.yaml: retrieve.train_negatives=11 is invalid", "use 0 (none) to 10"],
    ),
    (
        "negatives file edited by hand",
        lambda r: (r / NEGATIVES_FILE).write_text('[{"id": "x", "question": "q?"}]'),
        "tokenize",
        ["data/negatives.json: record 0 is not a no-answer example", "dvc repro negatives"],
    ),
    (
        "negatives file missing",
        lambda r: (r / NEGATIVES_FILE).unlink(),
        "tokenize",
        ["data/negatives.json: no retrieved negatives; run `dvc repro negatives`"],
    ),
    (
        "no data/raw: the stage that makes it is named",
        lambda r: shutil.rmtree(r / RAW_DIR),
        "tokenize",
        ["data/raw: no saved dataset; run `dvc repro download`"],
    ),
    (
        "no data/tokenized",
        lambda r: shutil.rmtree(r / TOKENIZED_DIR),
        "train",
        ["data/tokenized: no tokenized data; run `dvc repro tokenize`"],
    ),
    (
        "no trained model",
        lambda r: None,
        "evaluate",
        ["models/trained: no trained model; run `dvc repro train`"],
    ),
    (
        "data file is a directory",
        lambda r: edit_params(r, lambda p: p["data"].update(train_file="data/sample")),
        "download",
        ["data/sample", "directory"],
    ),
]


@pytest.mark.parametrize("name,setup,stage,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_stops_with_one_clear_line_and_leaves_outputs(workspace, tmp_path, name, setup, stage, expected):
    root = tmp_path / "ws"
    shutil.copytree(workspace, root, symlinks=True)
    setup(root)
    before = snapshot(root)  # after the setup: it may edit an input (data/negatives.json)
    out = run_cmd(
        [sys.executable, "-m", f"pipeline.{stage}", *(["--num-proc", "1"] if stage == "tokenize" else [])],
        root,
        check=False,
        timeout=300,
    )
    errors = failure_lines(out)
    assert len(errors) == 1, out.stderr[-3000:]
    for part in expected:
        assert part in errors[0], errors[0]
    assert snapshot(root) == before


def test_a_question_too_long_for_the_windows_names_its_record(workspace, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(workspace, root, symlinks=True)
    record_id = long_question_train_file(root)
    run_cmd([sys.executable, "-m", "pipeline.download"], root)  # a valid record: download keeps it
    before = snapshot(root)
    out = run_cmd([sys.executable, "-m", "pipeline.tokenize", "--num-proc", "1"], root, check=False)
    errors = failure_lines(out)
    assert errors == [
        f"error: data/raw/train: record id={record_id!r}: the question has 300 tokens, leaving 0 context tokens per "
        "window, not more than tokenize.stride=32 (questions may have at most 92 tokens with tokenize.max_length=128); "
        "shorten the question, raise tokenize.max_length or lower tokenize.stride"
    ]
    assert snapshot(root) == before


def test_predict_checks_its_arguments_before_loading_anything(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait".encode("latin-1"))
    cases = {
        ("--question", " ", "--context", "text"): "error: --question is empty; ask a question",
        ("--question", "q?", "--context", "  "): "error: --context is empty; give the text to answer from",
        (
            "--question",
            "q?",
            "--context-file",
            str(tmp_path / "none.txt"),
        ): f"error: --context-file {tmp_path / 'none.txt'}: file not found",
        (
            "--question",
            "q?",
            "--context-file",
            str(bad),
        ): f"error: --context-file {bad}: not UTF-8 text (byte 3); convert it, e.g. iconv -t UTF-8",
    }
    for args, message in cases.items():
        out = run_cmd(
            [sys.executable, "-m", "pipeline.predict", "--model", str(tmp_path / "no-export"), *args],
            tmp_path,
            check=False,
        )
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert out.stderr.strip().splitlines() == [message]


def test_a_window_report_counts_windows_and_flags_long_contexts(tokenizer):
    from pipeline.qa.features import check_windows
    from pipeline.runtime.config import TokenizeConfig

    cfg = TokenizeConfig(max_length=64, stride=16, warn_windows=3)
    long_context = "The tower stands in Paris. " * 60
    report = check_windows(["a", "b"], ["Where?", "Where?"], ["Short context.", long_context], tokenizer, cfg, 3)
    assert report.windows["a"] == 1 and report.windows["b"] > 3
    assert report.many == [("b", report.windows["b"])]


def test_max_windows_drops_and_names_questions_with_too_long_contexts(workspace, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(workspace, root, symlinks=True)
    edit_params(root, lambda p: p["tokenize"].update(max_windows=1))
    out = run_cmd([sys.executable, "-m", "pipeline.tokenize", "--num-proc", "1"], root)
    summary = json.loads((root / TOKENIZED_DIR / "summary.json").read_text())
    dropped = summary["train"]["dropped_over_max_windows"]
    assert dropped > 0 and summary["train"]["examples"] == 24 - dropped
    assert summary["train"]["features"] == summary["train"]["examples"]  # one window each now
    assert (
        f"data/raw/train: dropped {dropped} question(s) whose context gives more than tokenize.max_windows=1"
        in out.stderr
    )


@pytest.mark.parametrize(
    "override,expected",
    [
        ("retrieve.bogus=1", "Could not override 'retrieve.bogus'"),
        ("train=nope", "Could not find 'train/nope' Available options in 'train': course cpu quality"),
        ("retrieve.train_negatives=20", "retrieve.train_negatives=20 is invalid"),
    ],
)
def test_a_bad_override_to_compose_is_one_line_and_leaves_params_yaml(workspace, tmp_path, override, expected):
    root = tmp_path / "ws"
    shutil.copytree(workspace, root, symlinks=True)
    before = (root / "params.yaml").read_bytes()
    out = run_cmd([sys.executable, "-m", "pipeline.runtime.compose", override], root, check=False)
    errors = failure_lines(out)
    assert out.returncode == 1 and len(errors) == 1 and expected in errors[0], out.stderr[-2000:]
    assert (root / "params.yaml").read_bytes() == before
