"""Local `evaluate` metric modules (loaded by path, so no Hugging Face hub access)."""

import importlib
from pathlib import Path
from types import ModuleType

METRICS_DIR = Path(__file__).resolve().parent


def load_metric(name: str):
    """evaluate.load() on the module shipped in pipeline/qa/metrics/<name>/."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


def metric_module(name: str) -> ModuleType:
    """The metric script loaded by load_metric, as a module: its own per-question functions
    (normalisation, exact match, F1), for scores per question that agree with the metric's."""
    return importlib.import_module(type(load_metric(name)).__module__)
