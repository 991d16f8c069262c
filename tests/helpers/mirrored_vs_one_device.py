"""Run as a script (a fresh process: logical devices must be set before TensorFlow starts):
train the tiny dropout-free model on one device and on MirroredStrategy over two logical CPUs,
from the same initial weights on the same global batches, and print both as JSON."""

from __future__ import annotations

import json
import sys

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS)


def main() -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from pipeline.qa.callbacks import LossCurves
    from pipeline.qa.training import (
        MIRRORED,
        ONE_DEVICE,
        Placement,
        batch_rows,
        make_dataset,
        report_loss_sums,
        steps_per_epoch,
    )
    from tests.helpers.tiny_model import random_table, tiny_bert, tiny_config

    n_features = int(sys.argv[1])
    table = random_table(n_features)
    cfg = tiny_config("train.epochs=1", "train.log_every_steps=1")
    per_epoch = steps_per_epoch(n_features, cfg.train.batch_size)

    def run(placement):
        tf.keras.utils.set_random_seed(3)
        with placement.strategy.scope():
            model = tiny_bert(dropout=0.0)
            initial = [w.numpy() for w in model.weights]
            model.compile(optimizer=tf.keras.optimizers.SGD(0.2))
            report_loss_sums(model)
        replicas = placement.strategy.num_replicas_in_sync
        curves = LossCurves(0.2, per_epoch, 1, lambda m, s: None, False, batch_rows(table, cfg))
        model.fit(
            make_dataset(table, cfg, placement=placement),
            epochs=1,
            steps_per_epoch=per_epoch,
            callbacks=[curves],
            verbose=0,
        )
        return {
            "replicas": replicas,
            "initial": [w.ravel()[:50].tolist() for w in initial],
            "weights": [w.numpy().ravel().tolist() for w in model.weights],
            "steps": curves.steps,
            "epochs": curves.epochs,
        }

    one = run(Placement(tf.distribute.get_strategy(), ONE_DEVICE, 0, 1))
    two = run(Placement(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), MIRRORED, 0, 1))
    print(json.dumps({"one": one, "two": two}))


if __name__ == "__main__":
    main()
