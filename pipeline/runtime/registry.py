"""The MLflow model registry: every export is a new version of `mlflow.registered_model_name`,
aliased `candidate`; pipeline.promote moves `champion` to a better one.

A version is tagged with what it was built from (git commit, DVC experiment name, training
run), the answer settings it serves, and the evaluation of those answers: the export stage
depends on the evaluate stage's predictions/, so the scores are those of the same weights and
settings (exact_match, f1, the digest of the evaluation data, the run holding them). A
version whose evaluation used other settings (e.g. evaluate.precision=auto, while the export
serves float32) gets no scores, and promote refuses it. An int8 export (export.engine=int8)
scores its own answers on the same questions when it is made: its version carries those scores,
tagged engine=int8, with the float model's F1 and the share of answers both give alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from pipeline.runtime.errors import PipelineError

CANDIDATE = "candidate"
CHAMPION = "champion"
F1_TAG = "f1"
EM_TAG = "exact_match"
EVAL_DIGEST_TAG = "eval_data_digest"
EVAL_RUN_TAG = "eval_run_id"
ANSWER_SETTINGS_TAG = "answer_settings"  # what the version serves
EVAL_ANSWER_SETTINGS_TAG = "eval_answer_settings"  # what its scores were measured with
EVAL_NOTE_TAG = "eval_note"
TRAINING_RUN_TAG = "training_run_id"
ENGINE_TAG = "engine"  # what computes the logits it serves: float32 (TensorFlow) or int8 (OpenVINO)
FLOAT_F1_TAG = "float_f1"  # an int8 version: the F1 of the float model it was quantized from
AGREEMENT_TAG = "agreement_with_float"  # an int8 version: share of questions answered as the float model does


def register(client: Any, model_uri: str, name: str, tags: dict[str, str]) -> Any:
    """A new version of `name` (created if new) from model_uri, tagged, aliased candidate."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    client.set_registered_model_alias(name, CANDIDATE, version.version)
    return version


def settings_tag(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True)


def evaluation_tags(evaluation: dict[str, Any], served: dict[str, Any]) -> dict[str, str]:
    """The tags of a version serving `served` answer settings, from the evaluate stage's
    record (pipeline.runtime.lineage.EVALUATION_FILE_NAME): the scores only when they were
    measured with the settings the version serves, else a note saying what differs."""
    tags = {
        ENGINE_TAG: served["precision"],
        ANSWER_SETTINGS_TAG: settings_tag(served),
        EVAL_ANSWER_SETTINGS_TAG: settings_tag(evaluation["answer_settings"]),
        EVAL_DIGEST_TAG: evaluation["eval_data_digest"],
    }
    differ = {
        k: (evaluation["answer_settings"].get(k), v)
        for k, v in served.items()
        if evaluation["answer_settings"].get(k) != v
    }
    if differ:
        tags[EVAL_NOTE_TAG] = (
            "no scores: evaluated with "
            + ", ".join(f"{k}={a!r}" for k, (a, _) in differ.items())
            + " but serves "
            + ", ".join(f"{k}={b!r}" for k, (_, b) in differ.items())
        )
        return tags
    tags.update({F1_TAG: repr(float(evaluation["f1"])), EM_TAG: repr(float(evaluation["exact_match"]))})
    if "float" in evaluation:  # an int8 evaluation (pipeline.export.save_int8)
        tags.update(
            {
                FLOAT_F1_TAG: repr(float(evaluation["float"]["f1"])),
                AGREEMENT_TAG: repr(float(evaluation["agreement_with_float"])),
            }
        )
    return tags


@dataclass
class Decision:
    promoted: bool
    message: str
    refused: bool = False  # not promoted because it is not better (or not comparable)


def _version(client: Any, name: str, alias_or_number: str | int) -> Any:
    alias_or_number = str(alias_or_number)
    try:
        if alias_or_number.isdigit():
            return client.get_model_version(name, alias_or_number)
        return client.get_model_version_by_alias(name, alias_or_number)
    except Exception:
        return None


def _f1(version: Any) -> Optional[float]:
    """The F1 of the version's own answers: None when it has none, or when it was measured with
    other answer settings than the version serves (or a version registered before the settings
    were recorded)."""
    value, tags = version.tags.get(F1_TAG), version.tags
    if (
        value in (None, "")
        or not tags.get(ANSWER_SETTINGS_TAG)
        or tags.get(ANSWER_SETTINGS_TAG) != tags.get(EVAL_ANSWER_SETTINGS_TAG)
    ):
        return None
    return float(value)


def promote(client: Any, name: str, candidate: str = CANDIDATE, force: bool = False) -> Decision:
    """Move `champion` to version `candidate` (a number or an alias) only if its F1 beats the
    champion's on the same evaluation data (equal eval_data_digest tags), each F1 measured with
    the answer settings its version serves; `force` moves it anyway (say, when the evaluation
    data changed), saying what it overrode."""
    new = _version(client, name, candidate)
    if new is None:
        raise PipelineError(
            f"registered model {name!r} has no version {candidate!r}; run the export stage "
            "(`dvc repro`) to register one"
        )
    new_f1 = _f1(new)
    champion = _version(client, name, CHAMPION)
    if force:
        if champion is not None and str(champion.version) == str(new.version):
            return Decision(False, f"not promoted: {name} version {new.version} is already the champion")
        decision = promote(client, name, new.version)
        if decision.promoted:
            return decision
        client.set_registered_model_alias(name, CHAMPION, new.version)
        return Decision(
            True,
            f"promoted (forced): {name} version {new.version} is now the champion; without --force: "
            + decision.message,
        )
    if new_f1 is None:
        why = new.tags.get(EVAL_NOTE_TAG) or "its answers were not evaluated with the settings it serves"
        return Decision(
            False,
            f"not promoted: {name} version {new.version} has no F1 of its own answers ({why}); "
            "run `dvc repro` so the evaluate stage scores what the export serves",
            refused=True,
        )
    if champion is None:
        client.set_registered_model_alias(name, CHAMPION, new.version)
        return Decision(True, f"promoted: {name} version {new.version} (F1 {new_f1:.2f}) is the first champion")
    if str(champion.version) == str(new.version):
        return Decision(False, f"not promoted: {name} version {new.version} is already the champion")
    old_f1 = _f1(champion)
    new_digest, old_digest = new.tags.get(EVAL_DIGEST_TAG), champion.tags.get(EVAL_DIGEST_TAG)
    if old_f1 is None:
        return Decision(
            False,
            f"not promoted: champion version {champion.version} has no F1 of its own answers "
            "(registered before answer settings were recorded, or evaluated with other settings "
            "than it serves); F1s are not comparable (--force overrides)",
            refused=True,
        )
    if not new_digest or new_digest != old_digest:
        return Decision(
            False,
            f"not promoted: {name} version {new.version} was evaluated on other data than "
            f"champion version {champion.version} (eval_data_digest {new_digest or 'none'} vs "
            f"{old_digest or 'none'}); F1s are not comparable (--force overrides)",
            refused=True,
        )
    if new_f1 <= old_f1:
        return Decision(
            False,
            f"not promoted: {name} version {new.version} F1 {new_f1:.2f} does not beat champion "
            f"version {champion.version} F1 {old_f1:.2f} on the same evaluation data",
            refused=True,
        )
    client.set_registered_model_alias(name, CHAMPION, new.version)
    return Decision(
        True,
        f"promoted: {name} version {new.version} F1 {new_f1:.2f} beats version "
        f"{champion.version} F1 {old_f1:.2f}; it is now the champion",
    )
