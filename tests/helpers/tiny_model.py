"""A tiny BERT QA model and a random feature table: the training path's logic (strategies,
resume, mixed precision, XLA) in seconds on a CPU."""

from __future__ import annotations

import numpy as np

from pipeline.qa.batching import FeatureTable, RaggedColumn
from tests.helpers.project import composed_config

VOCAB = 120


def tiny_bert(dropout: float = 0.1):
    """A 2-layer, 32-wide TFBertForQuestionAnswering, built (so its layers exist)."""
    from transformers import BertConfig, TFBertForQuestionAnswering

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    model = TFBertForQuestionAnswering(config)
    model(model.dummy_inputs)
    return model


def random_table(n: int, max_length: int = 128, seed: int = 0) -> FeatureTable:
    """n features of random lengths, ids and answer spans (inside each feature)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, max_length + 1, size=n)
    rows = [rng.integers(1, VOCAB, size=length).tolist() for length in lengths]
    starts = np.array([rng.integers(0, length) for length in lengths], dtype=np.int32)
    ends = np.minimum(starts + rng.integers(0, 4, size=n), lengths - 1).astype(np.int32)
    return FeatureTable(
        {
            "input_ids": RaggedColumn.from_lists(rows),
            "token_type_ids": RaggedColumn.from_lists([[0] * len(r) for r in rows]),
            "attention_mask": RaggedColumn.from_lists([[1] * len(r) for r in rows]),
        },
        {"start_positions": starts, "end_positions": ends},
    )


def tiny_config(*overrides: str):
    """conf/ composed with a tiny batch, max_length 128 and the given overrides."""
    return composed_config(
        "train.batch_size=4",
        "tokenize.max_length=128",
        "tokenize.stride=32",
        "train.learning_rate=1e-3",
        "train.warmup_ratio=0.0",
        *overrides,
    )
