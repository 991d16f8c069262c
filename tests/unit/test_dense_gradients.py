"""The embedding tables' gradients reach Adam dense (one fused update instead of its sparse path's
separate passes over the table): the sparse path is never taken, and a step gives the weights the
sparse path gives (the same math; only the rounding of the tables' update may differ)."""

from __future__ import annotations

import numpy as np

from pipeline.qa.modeling import load_qa_model
from pipeline.qa.training import build_training_model, make_dataset
from tests.helpers.project import float32_training_overrides
from tests.helpers.tiny_model import random_table, tiny_bert, tiny_config


def weights(model) -> dict[str, np.ndarray]:
    return {w.name.split("/", 1)[1]: w.numpy() for w in model.weights}


def one_step(checkpoint: str, sparse: bool) -> dict[str, np.ndarray]:
    cfg = tiny_config(*float32_training_overrides(), "train.weight_decay=0.01")
    model, _, _ = build_training_model(cfg.train, checkpoint, total_steps=1)
    optimizer = model.optimizer
    if sparse:
        optimizer.gradient_transformers = []  # Keras's default: the gradients as the tape gives them
    else:

        def refuse(*args, **kwargs):
            raise AssertionError("an embedding gradient took Adam's sparse path")

        optimizer._resource_apply_sparse_duplicate_indices = refuse
    model.fit(make_dataset(random_table(cfg.train.batch_size), cfg), epochs=1, steps_per_epoch=1, verbose=0)
    return weights(model)


def test_embedding_gradients_are_applied_dense_with_the_sparse_paths_result(tmp_path):
    checkpoint = str(tmp_path / "checkpoint")
    tiny_bert(dropout=0.0).save_pretrained(checkpoint)
    before = weights(load_qa_model(checkpoint))
    dense, sparse = one_step(checkpoint, sparse=False), one_step(checkpoint, sparse=True)
    assert set(dense) == set(sparse) == set(before)
    tables = [name for name in dense if "embeddings/" in name and "LayerNorm" not in name]
    assert len(tables) == 3, tables  # word, position and token-type embeddings
    for name in dense:
        if name in tables:
            assert not np.array_equal(dense[name], before[name]), f"{name} did not train"
            np.testing.assert_allclose(dense[name], sparse[name], rtol=1e-6, atol=1e-9, err_msg=name)
        else:  # updated the same way on both sides, from the same gradients
            np.testing.assert_array_equal(dense[name], sparse[name], err_msg=name)
