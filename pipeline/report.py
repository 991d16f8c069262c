"""What a user looks at first after `make repro`: the scores, the training, where the model went.

    python -m pipeline.report [--params params.yaml]

One short table (under 100 columns) from metrics/eval.json, metrics/train.json and the MLflow
registry; the full metrics stay in `dvc metrics show` (the slices in metrics/slices.json).
"""

from __future__ import annotations


from pipeline.runtime import registry, tracking
from pipeline.runtime.config import stage_config
from pipeline.runtime.errors import PipelineError, stage_entry_point
from pipeline.runtime.files import read_json
from pipeline.runtime.paths import EVAL_METRICS_FILE, TRAIN_METRICS_FILE

WIDTH = 100


def rows(evaluation: dict, training: dict, registered: str) -> list[tuple[str, str]]:
    """The table's (label, value) rows."""

    def score(key: str) -> str:
        low, high = evaluation[f"{key}_ci95_low"], evaluation[f"{key}_ci95_high"]
        return f"{evaluation[key]:.2f}  (95% interval {low:.2f}-{high:.2f})"

    return [
        ("exact match", score("exact_match")),
        ("F1", score("f1")),
        ("evaluated on", f"{evaluation['examples']} questions ({evaluation['features']} features)"),
        (
            "training",
            f"{training['train_seconds']:.0f} s, {training['epochs']} epoch(s), {training['steps']} steps, "
            f"final loss {training['loss']:.3f} ({training['precision_policy']})",
        ),
        ("registered as", registered),
    ]


def table(pairs: list[tuple[str, str]]) -> str:
    label_width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label:<{label_width}}  {value}"[:WIDTH] for label, value in pairs)


def registered_version(name: str) -> str:
    """`name version N (alias candidate)` for the latest export, or why there is none."""
    from mlflow.tracking import MlflowClient

    uri = tracking.tracking_uri()
    try:
        version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(name, registry.CANDIDATE)
    except Exception:  # no such model or alias yet
        return f"nothing registered as {name}@{registry.CANDIDATE} in {uri}"
    return f"{name} version {version.version} (models:/{name}@{registry.CANDIDATE}; `make serve ALIAS=candidate`)"


@stage_entry_point
def main() -> None:
    cfg, _ = stage_config(__doc__)
    for path in (EVAL_METRICS_FILE, TRAIN_METRICS_FILE):
        if not path.is_file():
            raise PipelineError(f"{path}: not found; run `dvc repro` first")
    print(
        table(
            rows(
                read_json(EVAL_METRICS_FILE),
                read_json(TRAIN_METRICS_FILE),
                registered_version(cfg.mlflow.registered_model_name),
            )
        )
    )


if __name__ == "__main__":
    main()
