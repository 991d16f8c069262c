"""The MLflow model registry: every export is a new version of `mlflow.registered_model_name`,
aliased `candidate`; pipeline.promote moves `champion` to a better one.

A version is tagged with what it was built from (git commit, DVC experiment name, training
run) and, once its model has been evaluated, with that evaluation: exact_match, f1, the
digest of the evaluation data and the run holding it. The export and evaluate stages both
depend on train only, so either may run first: whichever runs second completes the tags
(the export copies the training run's latest evaluation; the evaluate stage tags the
versions registered from the training run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pipeline.runtime.errors import PipelineError

CANDIDATE = "candidate"
CHAMPION = "champion"
F1_TAG = "f1"
EM_TAG = "exact_match"
EVAL_DIGEST_TAG = "eval_data_digest"
EVAL_RUN_TAG = "eval_run_id"
TRAINING_RUN_TAG = "training_run_id"


def register(client: Any, model_uri: str, name: str, tags: dict[str, str]) -> Any:
    """A new version of `name` (created if new) from model_uri, tagged, aliased candidate."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    client.set_registered_model_alias(name, CANDIDATE, version.version)
    return version


def evaluation_tags(eval_run: Any) -> dict[str, str]:
    """exact_match, f1, the evaluation data's digest and the run, from an evaluation run
    ({} when it holds no evaluation)."""
    metrics, tags = eval_run.data.metrics, eval_run.data.tags
    if "f1" not in metrics:
        return {}
    out = {F1_TAG: repr(float(metrics["f1"])), EM_TAG: repr(float(metrics.get("exact_match", float("nan")))),
           EVAL_RUN_TAG: eval_run.info.run_id}
    if tags.get(EVAL_DIGEST_TAG):
        out[EVAL_DIGEST_TAG] = tags[EVAL_DIGEST_TAG]
    return out


def versions_of_run(client: Any, name: str, run_id: str) -> list[Any]:
    """The versions of `name` registered from models logged by run_id."""
    try:
        return list(client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"))
    except Exception:  # the registered model does not exist yet
        return []


def tag_versions(client: Any, name: str, run_id: str, tags: dict[str, str]) -> list[str]:
    """Set tags on every version of `name` registered from run_id; returns their numbers."""
    numbers = []
    for version in versions_of_run(client, name, run_id):
        for key, value in tags.items():
            client.set_model_version_tag(name, version.version, key, value)
        numbers.append(version.version)
    return numbers


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
    value = version.tags.get(F1_TAG)
    return float(value) if value not in (None, "") else None


def promote(client: Any, name: str, candidate: str = CANDIDATE, force: bool = False) -> Decision:
    """Move `champion` to version `candidate` (a number or an alias) only if its F1 beats the
    champion's on the same evaluation data (equal eval_data_digest tags); `force` moves it
    anyway (say, when the evaluation data changed), saying what it overrode."""
    new = _version(client, name, candidate)
    if new is None:
        raise PipelineError(f"registered model {name!r} has no version {candidate!r}; run the export stage "
                            "(`dvc repro`) to register one")
    new_f1 = _f1(new)
    champion = _version(client, name, CHAMPION)
    if force:
        if champion is not None and str(champion.version) == str(new.version):
            return Decision(False, f"not promoted: {name} version {new.version} is already the champion")
        decision = promote(client, name, new.version)
        if decision.promoted:
            return decision
        client.set_registered_model_alias(name, CHAMPION, new.version)
        return Decision(True, f"promoted (forced): {name} version {new.version} is now the champion; without --force: "
                              + decision.message)
    if new_f1 is None:
        return Decision(False, f"not promoted: {name} version {new.version} has no F1 yet (its model was not "
                               "evaluated); run `dvc repro` so the evaluate stage scores it", refused=True)
    if champion is None:
        client.set_registered_model_alias(name, CHAMPION, new.version)
        return Decision(True, f"promoted: {name} version {new.version} (F1 {new_f1:.2f}) is the first champion")
    if str(champion.version) == str(new.version):
        return Decision(False, f"not promoted: {name} version {new.version} is already the champion")
    old_f1 = _f1(champion)
    new_digest, old_digest = new.tags.get(EVAL_DIGEST_TAG), champion.tags.get(EVAL_DIGEST_TAG)
    if old_f1 is None or not new_digest or new_digest != old_digest:
        return Decision(False, f"not promoted: {name} version {new.version} was evaluated on other data than "
                               f"champion version {champion.version} (eval_data_digest {new_digest or 'none'} vs "
                               f"{old_digest or 'none'}); F1s are not comparable (--force overrides)", refused=True)
    if new_f1 <= old_f1:
        return Decision(False, f"not promoted: {name} version {new.version} F1 {new_f1:.2f} does not beat champion "
                               f"version {champion.version} F1 {old_f1:.2f} on the same evaluation data", refused=True)
    client.set_registered_model_alias(name, CHAMPION, new.version)
    return Decision(True, f"promoted: {name} version {new.version} F1 {new_f1:.2f} beats version "
                          f"{champion.version} F1 {old_f1:.2f}; it is now the champion")
