"""Local `evaluate` metric modules (loaded by path, so no Hugging Face hub access)."""

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent


def load_metric(name: str):
    """evaluate.load() on the module shipped in pipeline/qa/metrics/<name>/."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))
