"""A save_pretrained model directory made from the packaged model, as the train stage writes one."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.project import MINILM


def save_packaged_model(path: Path, seed: int = 42) -> Path:
    """The packaged encoder with an untrained QA head drawn with `seed` (the same model, and
    the same scores, every time): its answers are poor but real."""
    import tensorflow as tf

    from pipeline.qa.modeling import load_qa_model, load_tokenizer

    tf.keras.utils.set_random_seed(seed)
    load_qa_model(MINILM).save_pretrained(str(path))
    load_tokenizer(MINILM).save_pretrained(str(path))
    return path
