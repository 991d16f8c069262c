"""Typed pipeline configuration, read from params.yaml and validated when a stage starts.

params.yaml is the composition of conf/ (DVC writes it on `dvc exp run`); every stage
reads the same file through `load_config`, so a bad value stops the stage before it
touches any output.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.runtime.errors import PipelineError
from pipeline.runtime.paths import PARAMS_FILE

DEFAULT_PARAMS = str(PARAMS_FILE)
PRECISION_POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
BAD_RECORD_POLICIES = ("error", "drop", "repair")
EXPORT_ENGINES = ("float32", "int8")  # what an export can serve (pipeline.qa.int8)
MIN_BOOTSTRAP_SAMPLES = 100  # fewer resamples make a 95% percentile interval mostly noise
STRATEGIES = ("auto", "mirrored", "multi_worker")
# retrieve.train_negatives are taken from each train question's top NEGATIVES_DEPTH passages
# (pipeline.qa.retrieval.retrieved_negatives), so at most this many per question.
NEGATIVES_DEPTH = 10
# Under train.jit_compile, XLA compiles the step once per batch shape: bucketed padding must
# leave at most this many batch widths (tokenize.max_length / train.pad_to_multiple_of).
JIT_MAX_WIDTHS = 8


# Every field is required: conf/ holds the one set of defaults, composed into params.yaml, and
# describes each key once where its default lives (conf/config.yaml for tokenize, evaluate and
# mlflow; conf/data/sample.yaml, conf/model/minilm.yaml, conf/train/cpu.yaml for the groups).
# A key missing from params.yaml is an error naming it, never a silent value from here.


@dataclass
class DataConfig:
    source: str = MISSING
    name: Optional[str] = MISSING
    config_name: Optional[str] = MISSING
    train_file: str = MISSING
    validation_file: str = MISSING
    max_train_samples: Optional[int] = MISSING
    max_eval_samples: Optional[int] = MISSING
    bad_records: str = MISSING
    version_2_with_negative: bool = MISSING


@dataclass
class ModelConfig:
    checkpoint: str = MISSING


@dataclass
class TokenizeConfig:
    max_length: int = MISSING
    stride: int = MISSING
    warn_windows: Optional[int] = MISSING
    max_windows: Optional[int] = MISSING


@dataclass
class TrainConfig:
    learning_rate: float = MISSING
    warmup_ratio: float = MISSING
    weight_decay: float = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    precision: str = MISSING
    dropout: Optional[float] = MISSING
    attention_dropout: Optional[float] = MISSING
    padding: str = MISSING
    pad_to_multiple_of: int = MISSING
    log_every_steps: int = MISSING
    strategy: str = MISSING
    backup_every_steps: int = MISSING
    jit_compile: bool = MISSING
    fuse_elementwise: bool = MISSING
    freeze_embeddings: bool = MISSING
    freeze_layers: int = MISSING
    deterministic: bool = MISSING


@dataclass
class EvaluateConfig:
    n_best: int = MISSING
    max_answer_length: int = MISSING
    batch_size: int = MISSING
    null_score_diff_threshold: float = MISSING
    bootstrap_samples: int = MISSING
    bootstrap_seed: int = MISSING
    precision: str = MISSING


@dataclass
class ExportConfig:
    engine: str = MISSING
    calibration_samples: int = MISSING


@dataclass
class RetrieveConfig:
    corpus: str = MISSING
    k1: float = MISSING
    b: float = MISSING
    stemmer: Optional[str] = MISSING
    tune_questions: int = MISSING
    tune_precision: str = MISSING
    k_choices: list[int] = MISSING
    weight_steps: int = MISSING
    latency_questions: int = MISSING
    train_negatives: int = MISSING


@dataclass
class MlflowConfig:
    experiment_name: str = MISSING
    registered_model_name: str = MISSING
    max_context_chars: int = MISSING


@dataclass
class PipelineConfig:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    tokenize: TokenizeConfig = MISSING
    train: TrainConfig = MISSING
    evaluate: EvaluateConfig = MISSING
    export: ExportConfig = MISSING
    retrieve: RetrieveConfig = MISSING
    mlflow: MlflowConfig = MISSING


SECTIONS = tuple(f.name for f in fields(PipelineConfig))
MISSING_FIX = "run `make params` to compose params.yaml from conf/, or add the key"


def _require(condition: bool, key: str, value: Any, fix: str, source: str) -> None:
    if not condition:
        raise PipelineError(f"{source}: {key}={value!r} is invalid: {fix}")


def validate(cfg: PipelineConfig, source: str = DEFAULT_PARAMS) -> PipelineConfig:
    """Check the relations between values that types alone cannot express."""
    d, t, tr, ev = cfg.data, cfg.tokenize, cfg.train, cfg.evaluate
    _require(d.source in ("json", "hub"), "data.source", d.source, "use 'json' or 'hub'", source)
    if d.source == "hub":
        _require(bool(d.name), "data.name", d.name, "name a hub dataset, e.g. squad", source)
    else:
        for key in ("train_file", "validation_file"):
            value = getattr(d, key)
            _require(
                bool(value) and value != "???",
                f"data.{key}",
                value,
                f"set a SQuAD-format .json/.json.gz path, e.g. -S data.{key}=path/to/file.json",
                source,
            )
    _require(
        d.bad_records in BAD_RECORD_POLICIES,
        "data.bad_records",
        d.bad_records,
        f"use one of {', '.join(BAD_RECORD_POLICIES)}",
        source,
    )
    for key in ("max_train_samples", "max_eval_samples"):
        value = getattr(d, key)
        _require(value is None or value > 0, f"data.{key}", value, "use a positive count or null for all", source)
    _require(bool(cfg.model.checkpoint), "model.checkpoint", cfg.model.checkpoint, "name a checkpoint", source)
    _require(t.max_length >= 32, "tokenize.max_length", t.max_length, "use at least 32 tokens", source)
    _require(
        0 <= t.stride < t.max_length,
        "tokenize.stride",
        t.stride,
        f"stride must be >= 0 and less than tokenize.max_length ({t.max_length})",
        source,
    )
    _require(
        t.max_windows is None or t.max_windows >= 1,
        "tokenize.max_windows",
        t.max_windows,
        "use at least 1, or null to keep every question",
        source,
    )
    _require(
        t.warn_windows is None or t.warn_windows >= 1,
        "tokenize.warn_windows",
        t.warn_windows,
        "use at least 1, or null to never warn",
        source,
    )
    _require(tr.learning_rate > 0, "train.learning_rate", tr.learning_rate, "use a positive rate", source)
    _require(0 <= tr.warmup_ratio < 1, "train.warmup_ratio", tr.warmup_ratio, "use a value in [0, 1)", source)
    _require(tr.weight_decay >= 0, "train.weight_decay", tr.weight_decay, "use a value >= 0", source)
    _require(tr.epochs >= 1, "train.epochs", tr.epochs, "use at least 1 epoch", source)
    _require(tr.batch_size >= 1, "train.batch_size", tr.batch_size, "use at least 1", source)
    _require(
        tr.precision in PRECISION_POLICIES,
        "train.precision",
        tr.precision,
        f"use one of {', '.join(PRECISION_POLICIES)}",
        source,
    )
    _require(
        tr.padding in ("bucketed", "max_length"), "train.padding", tr.padding, "use 'bucketed' or 'max_length'", source
    )
    _require(tr.pad_to_multiple_of >= 1, "train.pad_to_multiple_of", tr.pad_to_multiple_of, "use at least 1", source)
    _require(
        tr.dropout is None
        or (isinstance(tr.dropout, (int, float)) and not isinstance(tr.dropout, bool) and 0 <= tr.dropout < 1),
        "train.dropout",
        tr.dropout,
        "use null (the checkpoint's rates) or a rate in [0, 1)",
        source,
    )
    _require(
        tr.attention_dropout is None
        or (
            isinstance(tr.attention_dropout, (int, float))
            and not isinstance(tr.attention_dropout, bool)
            and 0 <= tr.attention_dropout < 1
        ),
        "train.attention_dropout",
        tr.attention_dropout,
        "use null (the same as train.dropout) or a rate in [0, 1)",
        source,
    )
    _require(
        tr.freeze_layers >= 0,  # an int: the typed config refuses bools and floats
        "train.freeze_layers",
        tr.freeze_layers,
        "use 0 (train every transformer layer) or the number of lower layers to keep as the checkpoint has them",
        source,
    )
    _require(tr.log_every_steps >= 1, "train.log_every_steps", tr.log_every_steps, "use at least 1", source)
    _require(tr.strategy in STRATEGIES, "train.strategy", tr.strategy, f"use one of {', '.join(STRATEGIES)}", source)
    _require(
        tr.backup_every_steps >= 1,
        "train.backup_every_steps",
        tr.backup_every_steps,
        "use at least 1 (a backup every N training steps)",
        source,
    )
    if tr.jit_compile and tr.padding == "bucketed":
        widths = -(-t.max_length // tr.pad_to_multiple_of)
        least = -(-t.max_length // JIT_MAX_WIDTHS)
        _require(
            widths <= JIT_MAX_WIDTHS,
            "train.pad_to_multiple_of",
            tr.pad_to_multiple_of,
            f"with train.jit_compile=true XLA compiles once per batch width, and tokenize.max_length="
            f"{t.max_length} leaves {widths} widths; use at least {least} (at most {JIT_MAX_WIDTHS} widths) "
            "or train.padding=max_length",
            source,
        )
    _require(
        ev.precision in PRECISION_POLICIES,
        "evaluate.precision",
        ev.precision,
        f"use one of {', '.join(PRECISION_POLICIES)}",
        source,
    )
    _require(ev.n_best >= 1, "evaluate.n_best", ev.n_best, "use at least 1", source)
    _require(ev.max_answer_length >= 1, "evaluate.max_answer_length", ev.max_answer_length, "use at least 1", source)
    _require(ev.batch_size >= 1, "evaluate.batch_size", ev.batch_size, "use at least 1", source)
    _require(
        ev.bootstrap_samples >= MIN_BOOTSTRAP_SAMPLES,
        "evaluate.bootstrap_samples",
        ev.bootstrap_samples,
        f"use at least {MIN_BOOTSTRAP_SAMPLES} resamples (1000 is usual)",
        source,
    )
    _require(ev.bootstrap_seed >= 0, "evaluate.bootstrap_seed", ev.bootstrap_seed, "use a seed >= 0", source)
    ex = cfg.export
    _require(ex.engine in EXPORT_ENGINES, "export.engine", ex.engine, f"use one of {', '.join(EXPORT_ENGINES)}", source)
    _require(
        ex.calibration_samples >= 1,
        "export.calibration_samples",
        ex.calibration_samples,
        "use at least 1 train feature (300 is usual)",
        source,
    )
    rt = cfg.retrieve
    _require(
        bool(rt.corpus),
        "retrieve.corpus",
        rt.corpus,
        "name data/raw, a directory of .txt/.md files or a SQuAD-format file",
        source,
    )
    _require(
        rt.tune_precision in PRECISION_POLICIES,
        "retrieve.tune_precision",
        rt.tune_precision,
        f"use one of {', '.join(PRECISION_POLICIES)}",
        source,
    )
    _require(rt.k1 > 0, "retrieve.k1", rt.k1, "use a positive BM25 k1 (1.5 is usual)", source)
    _require(0 <= rt.b <= 1, "retrieve.b", rt.b, "use a BM25 b in [0, 1] (0.75 is usual)", source)
    _require(
        rt.tune_questions >= 1, "retrieve.tune_questions", rt.tune_questions, "use at least 1 train question", source
    )
    _require(
        bool(rt.k_choices) and all(k >= 1 for k in rt.k_choices),
        "retrieve.k_choices",
        rt.k_choices,
        "list passage counts of at least 1, e.g. [1, 3, 5, 10]",
        source,
    )
    _require(rt.weight_steps >= 2, "retrieve.weight_steps", rt.weight_steps, "use at least 2 (0 and 1)", source)
    _require(rt.latency_questions >= 1, "retrieve.latency_questions", rt.latency_questions, "use at least 1", source)
    _require(
        0 <= rt.train_negatives <= NEGATIVES_DEPTH,
        "retrieve.train_negatives",
        rt.train_negatives,
        f"use 0 (none) to {NEGATIVES_DEPTH} retrieved passages without the answer per train question",
        source,
    )
    _require(
        bool(cfg.mlflow.experiment_name),
        "mlflow.experiment_name",
        cfg.mlflow.experiment_name,
        "name an experiment",
        source,
    )
    _require(
        bool(cfg.mlflow.registered_model_name),
        "mlflow.registered_model_name",
        cfg.mlflow.registered_model_name,
        "name the registered model, e.g. squad-qa",
        source,
    )
    _require(
        cfg.mlflow.max_context_chars >= 1,
        "mlflow.max_context_chars",
        cfg.mlflow.max_context_chars,
        "use a positive number of characters",
        source,
    )
    return cfg


def _present(params: dict, dotted_key: str) -> bool:
    node: Any = params
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def from_dict(params: dict, source: str = DEFAULT_PARAMS) -> PipelineConfig:
    """Type-check a params mapping against the schema (every key required) and validate it."""
    missing = [name for name in SECTIONS if not isinstance(params.get(name), dict)]
    if missing:
        raise PipelineError(f"{source}: section '{missing[0]}' is missing; {MISSING_FIX}")
    schema = OmegaConf.structured(PipelineConfig)
    try:
        merged = OmegaConf.merge(schema, params)
        # "???" written in params.yaml (conf/data/squad_json.yaml's paths) is a value left for
        # the user to set: validate() names the key and how to set it. An absent key is not.
        absent = sorted(key for key in OmegaConf.missing_keys(merged) if not _present(params, key))
        if absent:
            raise PipelineError(f"{source}: {absent[0]} is missing; {MISSING_FIX}")
        unset = sorted(OmegaConf.missing_keys(merged))
        if unset:
            raise PipelineError(
                f"{source}: {unset[0]}='???' is not set: give it a value, e.g. `dvc exp run -S {unset[0]}=...`"
            )
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        msg = str(err).splitlines()[0]
        raise PipelineError(f"{source}: {key}: {msg}") from None
    return validate(cfg, source)  # type: ignore[arg-type]


def load_config(path: str | Path = DEFAULT_PARAMS) -> PipelineConfig:
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"{path}: is a directory, not a params file; pass --params params.yaml")
    if not path.is_file():
        raise PipelineError(f"{path}: params file not found; run from the repo root or compose it with `make params`")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PipelineError(f"{path}: cannot read it ({err.strerror}); check its permissions") from None
    except UnicodeDecodeError as err:
        raise PipelineError(f"{path}: not UTF-8 text (byte {err.start}); recompose it with `make params`") from None
    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PipelineError(
            f"{path}: not valid YAML{where}: {problem}; fix it or recompose it with `make params`"
        ) from None
    if not isinstance(params, dict):
        raise PipelineError(
            f"{path}: expected a mapping of sections (data, model, ...); recompose it with `make params`"
        )
    return from_dict(params, str(path))


def flatten(cfg: PipelineConfig) -> dict[str, Any]:
    """`train.learning_rate`-style keys, as logged to MLflow."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            out[prefix] = node

    walk("", OmegaConf.to_container(OmegaConf.structured(cfg)))
    return out


def stage_config(
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[PipelineConfig, argparse.Namespace]:
    """A stage's command line: its module docstring as help, `--params` (the composed config),
    and what `add_arguments` adds. Returns the loaded, validated config and the arguments."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="the composed config (default: %(default)s)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    return load_config(args.params), args
