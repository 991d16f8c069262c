"""Batching: bucketed batches cover every feature once, vary per epoch reproducibly; predictions map back."""

from __future__ import annotations

import numpy as np

from pipeline.qa.batching import FeatureTable, RaggedColumn, bucketed_batches, make_train_generator, prediction_batches
from pipeline.qa.inference import predict_logits
from tests.helpers.project import composed_config


def table(lengths) -> FeatureTable:
    rows = [list(range(1, n + 1)) for n in lengths]
    return FeatureTable(
        {
            "input_ids": RaggedColumn.from_lists(rows),
            "attention_mask": RaggedColumn.from_lists([[1] * n for n in lengths]),
        },
        {
            "start_positions": np.arange(len(lengths), dtype=np.int32),
            "end_positions": np.arange(len(lengths), dtype=np.int32),
        },
    )


LENGTHS = np.random.default_rng(0).integers(20, 384, size=1000)


def test_bucketed_epoch_covers_every_feature_once_and_is_reproducible():
    a = bucketed_batches(LENGTHS, 16, seed=1, epoch=0)
    assert sorted(np.concatenate(a).tolist()) == list(range(1000))
    assert all(len(b) <= 16 for b in a)
    b = bucketed_batches(LENGTHS, 16, seed=1, epoch=0)
    assert all((x == y).all() for x, y in zip(a, b))
    c = bucketed_batches(LENGTHS, 16, seed=1, epoch=1)
    assert [x.tolist() for x in a] != [x.tolist() for x in c]


def test_bucketing_cuts_padding():
    padded_bucketed = sum(len(b) * LENGTHS[b].max() for b in bucketed_batches(LENGTHS, 16, 1, 0))
    order = np.random.default_rng(1).permutation(1000)
    padded_random = sum(16 * LENGTHS[order[i : i + 16]].max() for i in range(0, 1000, 16))
    assert padded_bucketed < 0.7 * padded_random


def test_generator_pads_to_rounded_batch_max_and_keeps_labels_aligned():
    t = table([5, 40, 33, 7])
    gen = make_train_generator(t, batch_size=2, seed=0, padding="bucketed", max_length=64, pad_to_multiple_of=8)
    epoch1 = list(gen())
    for batch in epoch1:
        width = batch["input_ids"].shape[1]
        assert width % 8 == 0
        lengths = batch["attention_mask"].sum(axis=1)
        assert width == -(-lengths.max() // 8) * 8
        # label i belongs to feature i, whose ids are 1..len
        for row, label in enumerate(batch["start_positions"]):
            assert lengths[row] == [5, 40, 33, 7][label]
    epoch2 = list(gen())
    assert sum(len(b["start_positions"]) for b in epoch2) == 4
    fixed = list(make_train_generator(t, 2, 0, "max_length", 64, 8)())
    assert {b["input_ids"].shape[1] for b in fixed} == {64}


def test_prediction_logits_come_back_in_feature_order_and_unpadded():
    lengths = [9, 3, 17, 3, 12]
    t = table(lengths)
    seen_widths = []

    def fake_model(batch):
        seen_widths.append(batch["input_ids"].shape[1])
        ids = batch["input_ids"].astype(np.float32)
        return ids * 10, -ids

    starts, ends = predict_logits(fake_model, t, batch_size=2, max_length=32, pad_to_multiple_of=4)
    for i, n in enumerate(lengths):
        assert starts[i].tolist() == [10.0 * k for k in range(1, n + 1)]
        assert ends[i].tolist() == [-float(k) for k in range(1, n + 1)]
    assert seen_widths == [4, 12, 20]  # sorted by length: (3,3) (9,12) (17)


def test_prediction_plan_caps_width_at_max_length():
    plan = prediction_batches(np.array([380, 383]), 4, "bucketed", 384, 32)
    assert plan[0][1] == 384


def test_feature_table_of_a_selected_view_holds_the_selected_rows(sample_raw, tokenizer):
    from pipeline.runtime.config import TokenizeConfig
    from pipeline.qa.features import prepare_validation_features

    from datasets import Dataset

    feats = Dataset.from_dict(
        prepare_validation_features(sample_raw["validation"][:10], tokenizer, TokenizeConfig(128, 32))
    )
    view = feats.select([3, 0])
    table = FeatureTable.from_dataset(view)
    assert table.inputs["input_ids"].row(0).tolist() == view[0]["input_ids"]
    assert table.inputs["input_ids"].row(1).tolist() == view[1]["input_ids"]


def test_keras_fit_trains_every_epoch_on_that_epochs_batches():
    """Regression: a one-pass dataset ran dry after epoch 1 (Keras keeps its iterator when
    steps_per_epoch is set), so every multi-epoch run silently trained a single epoch."""
    import math

    import tensorflow as tf

    from pipeline.qa.training import make_dataset

    t = table([5, 40, 33, 7, 12, 64, 9, 18, 30, 3])
    cfg = composed_config("train.batch_size=4", "train.seed=3")
    steps = math.ceil(len(t) / cfg.train.batch_size)
    seen: list[list[int]] = []

    class Probe(tf.keras.Model):
        """Records the labels (= feature indices) of every batch it trains on."""

        def __init__(self):
            super().__init__()
            self.w = tf.Variable(1.0)

        def train_step(self, data):
            tf.py_function(lambda x: seen.append(x.numpy().tolist()) or 0, [data["start_positions"]], tf.int64)
            with tf.GradientTape() as tape:
                loss = self.w * tf.reduce_mean(tf.cast(data["input_ids"], tf.float32))
            self.optimizer.apply_gradients(zip(tape.gradient(loss, [self.w]), [self.w]))
            return {"loss": loss}

    model = Probe()
    model.compile(optimizer=tf.keras.optimizers.SGD(0.0), run_eagerly=True)
    history = model.fit(make_dataset(t, cfg), epochs=3, steps_per_epoch=steps, verbose=0)
    assert len(history.history["loss"]) == 3
    assert len(seen) == 3 * steps
    epochs = [sorted(sum(seen[e * steps : (e + 1) * steps], [])) for e in range(3)]
    assert all(e == list(range(len(t))) for e in epochs)  # each epoch: every feature exactly once
    plans = [[b.tolist() for b in bucketed_batches(t.lengths, 4, 3, e)] for e in range(3)]
    assert [seen[e * steps : (e + 1) * steps] for e in range(3)] == plans  # epoch e's own seeded order


def test_the_training_input_is_not_autotuned():
    """tf.data's autotune thread kept `fit` from returning for up to ~50 s after the last step
    (the iterator's deletion waits for it; docs/benchmarks.md). The input has nothing to tune (a
    fixed prefetch), so autotune is off, on one device and under a strategy."""
    import tensorflow as tf

    from pipeline.qa.training import Placement, make_dataset

    t = table([5, 40, 33, 7])
    cfg = composed_config("train.batch_size=2")
    assert make_dataset(t, cfg).options().autotune.enabled is False

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    seen = []
    original = strategy.distribute_datasets_from_function

    def record(dataset_fn, options=None):
        seen.append(dataset_fn(tf.distribute.InputContext(1, 0, 1)))
        return original(dataset_fn, options)

    strategy.distribute_datasets_from_function = record
    make_dataset(t, cfg, placement=Placement(strategy=strategy, kind="mirrored", num_workers=1, worker_index=0))
    assert seen and seen[0].options().autotune.enabled is False
    assert seen[0].options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF
