"""tf.distribute: which strategy train.strategy gives, how the generator splits each global batch
across replicas and workers, and that N replicas train exactly as one device does on the same
global batches (MirroredStrategy over two logical CPUs, in a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.qa.batching import epoch_plan, make_train_generator
from pipeline.qa.training import MIRRORED, MULTI_WORKER, ONE_DEVICE, choose_strategy, read_tf_config, worker_position
from pipeline.runtime.errors import PipelineError
from pipeline.runtime.paths import PROJECT_ROOT
from tests.helpers.tiny_model import random_table


def cluster(n: int, index: int) -> dict:
    return {
        "cluster": {"worker": [f"127.0.0.1:{2000 + i}" for i in range(n)]},
        "task": {"type": "worker", "index": index},
    }


@pytest.mark.parametrize(
    "name,tf_config,gpus,kind",
    [
        ("auto", None, 0, ONE_DEVICE),
        ("auto", None, 1, ONE_DEVICE),
        ("auto", None, 4, MIRRORED),
        ("auto", cluster(2, 1), 0, MULTI_WORKER),
        ("auto", cluster(1, 0), 2, MIRRORED),
        ("mirrored", None, 0, MIRRORED),
        ("multi_worker", cluster(1, 0), 0, MULTI_WORKER),
    ],
)
def test_train_strategy_picks_the_strategy(name, tf_config, gpus, kind):
    assert choose_strategy(name, tf_config, gpus) == kind


def test_multi_worker_without_tf_config_says_how_to_start_workers():
    with pytest.raises(PipelineError, match="needs TF_CONFIG.*pipeline.launch --workers"):
        choose_strategy("multi_worker", None, 0)


def test_tf_config_is_read_and_bad_json_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster(3, 2)))
    assert worker_position(read_tf_config()) == (2, 3)
    monkeypatch.setenv(
        "TF_CONFIG", '{"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}}'
    )
    assert worker_position(read_tf_config()) == (0, 2)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(PipelineError, match="TF_CONFIG=.* is invalid"):
        read_tf_config()
    monkeypatch.delenv("TF_CONFIG")
    assert read_tf_config() is None and worker_position(None) == (0, 1)


@pytest.mark.parametrize("workers,local", [(2, 1), (1, 2), (2, 2)])
def test_workers_get_disjoint_equal_parts_of_every_global_batch_at_its_width(workers, local):
    table = random_table(21)  # batch 4: the last global batch has 1 feature
    replicas = workers * local
    plan = epoch_plan(table.lengths, 4, 5, 0, "bucketed")
    per_worker = [
        list(
            make_train_generator(
                table, 4, 5, "bucketed", 128, 8, num_replicas=replicas, replica_ids=range(w * local, (w + 1) * local)
            )()
        )
        for w in range(workers)
    ]
    assert all(len(elements) == len(plan) * local for elements in per_worker)  # every worker runs every step
    for step, indices in enumerate(plan):
        parts = [per_worker[w][step * local + r] for w in range(workers) for r in range(local)]
        sizes = {len(weights) for _, _, weights in parts}
        assert len(sizes) == 1  # equal parts
        widths = {inputs["input_ids"].shape[1] for inputs, _, _ in parts}
        assert widths == {min(-(-int(table.lengths[indices].max()) // 8) * 8, 128)}  # the global batch's width
        real = [
            (int(label), float(w))
            for inputs, labels, weights in parts
            for label, w in zip(inputs["start_positions"], weights)
            if w > 0
        ]
        assert sorted(s for s, _ in real) == sorted(table.labels["start_positions"][indices].tolist())
        # weighted means per replica, summed over replicas and divided by their number = the batch mean
        assert sum(float(weights.sum()) / len(weights) for _, _, weights in parts) / replicas == pytest.approx(1.0)


def test_the_generator_starts_at_the_saved_epoch_and_step_and_continues_with_the_next_epochs():
    table = random_table(21)
    whole = make_train_generator(table, 4, 5, "bucketed", 128, 8)
    epochs = [list(whole()) for _ in range(3)]
    resumed = make_train_generator(table, 4, 5, "bucketed", 128, 8, start_epoch=1, start_step=4)
    first, second = list(resumed()), list(resumed())
    labels = lambda batches: [b["start_positions"].tolist() for b in batches]  # noqa: E731
    assert labels(first) == labels(epochs[1][4:])
    assert labels(second) == labels(epochs[2])


def test_two_replicas_train_exactly_as_one_device_on_the_same_global_batches():
    """Same initial weights, same global batches (21 features, batch 4: the last global batch of
    one feature is split into a real part and a zero-weighted copy), no dropout: the weights
    after an epoch agree to float32 rounding, and so does every logged loss."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.mirrored_vs_one_device", "21"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, two = out["one"], out["two"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    for a, b in zip(one["initial"], two["initial"]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(one["weights"], two["weights"]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose([r["loss"] for r in two["steps"]], [r["loss"] for r in one["steps"]], rtol=1e-5)
    assert two["epochs"][0]["loss"] == pytest.approx(one["epochs"][0]["loss"], rel=1e-5)
