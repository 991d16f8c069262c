"""Training pieces for a TF question-answering model: the distribution strategy, the precision
policy, the tf.data pipeline over bucketed (and per-replica sharded) batches, the learning-rate
warmup (the Keras callbacks that train with these pieces: qa.callbacks).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.qa.batching import FeatureTable, epoch_plan, make_train_generator
from pipeline.qa.modeling import freeze_lower_layers, fuse_elementwise, load_qa_model
from pipeline.qa.precision import keep_head_in_float32, precision_policy
from pipeline.runtime.config import PipelineConfig, TrainConfig
from pipeline.runtime.errors import PipelineError

ONE_DEVICE, MIRRORED, MULTI_WORKER = "one_device", "mirrored", "multi_worker"


# --- where training runs: tf.distribute -------------------------------------------------


def read_tf_config() -> dict | None:
    """$TF_CONFIG (set by pipeline.launch or a cluster scheduler), parsed; None when unset."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        tf_config = json.loads(raw)
        workers = list(tf_config.get("cluster", {}).get("chief", [])) + list(tf_config["cluster"]["worker"])
        task = tf_config["task"]
        task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise PipelineError(
            f"TF_CONFIG={raw[:200]!r} is invalid ({type(err).__name__}: {err}): it must be JSON "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}; '
            "pipeline.launch writes it for local workers"
        ) from None
    if not workers:
        raise PipelineError(f"TF_CONFIG={raw[:200]!r} is invalid: its cluster names no worker")
    return tf_config


def worker_position(tf_config: dict | None) -> tuple[int, int]:
    """(this worker's index, number of workers); the chief (a `chief` task, else worker 0) is 0."""
    if not tf_config:
        return 0, 1
    cluster, task = tf_config["cluster"], tf_config["task"]
    chiefs = list(cluster.get("chief", []))
    count = len(chiefs) + len(cluster.get("worker", []))
    if task["type"] == "chief":
        return 0, count
    return len(chiefs) + int(task["index"]), count


def choose_strategy(name: str, tf_config: dict | None, num_gpus: int) -> str:
    """train.strategy -> the kind of tf.distribute strategy to create."""
    if name == "multi_worker":
        if tf_config is None:
            raise PipelineError(
                "train.strategy='multi_worker' needs TF_CONFIG (the cluster and this worker's task): start the "
                "workers with `python -m pipeline.launch --workers N -- python -m pipeline.train` on one "
                "machine, or let the cluster scheduler set it (docs/distributed.md)"
            )
        return MULTI_WORKER
    if name == "mirrored":
        return MIRRORED
    if tf_config is not None and worker_position(tf_config)[1] > 1:
        return MULTI_WORKER
    return MIRRORED if num_gpus > 1 else ONE_DEVICE


@dataclass
class Placement:
    strategy: Any
    kind: str
    worker_index: int
    num_workers: int

    @property
    def is_chief(self) -> bool:
        """Only the chief writes outputs and tracking records; every worker trains and saves."""
        return self.worker_index == 0

    def describe(self) -> str:
        replicas = self.strategy.num_replicas_in_sync
        where = f", worker {self.worker_index} of {self.num_workers}" if self.kind == MULTI_WORKER else ""
        return f"training on {replicas} replica(s) ({self.kind}{where})"


def make_strategy(name: str, deterministic: bool = False) -> Placement:
    """Create the tf.distribute strategy. Call this before any other TensorFlow work: a
    MultiWorkerMirroredStrategy must be created before the runtime starts."""
    import tensorflow as tf

    tf_config = read_tf_config()
    kind = choose_strategy(name, tf_config, len(tf.config.list_physical_devices("GPU")))
    if kind == MULTI_WORKER:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif kind == MIRRORED:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    if deterministic:
        # Deterministic kernels (and an error for ops that have none), for bit-reproducible GPU runs.
        tf.config.experimental.enable_op_determinism()
    index, count = worker_position(tf_config) if kind == MULTI_WORKER else (0, 1)
    return Placement(strategy, kind, index, count)


def workers_agree(placement: Placement, value: int) -> bool:
    """Whether every worker holds the same `value` (a collective: every worker must call it)."""
    import tensorflow as tf

    if placement.kind != MULTI_WORKER:
        return True
    strategy = placement.strategy
    local = tf.constant([float(value), float(value) ** 2], tf.float64)

    @tf.function
    def all_reduce():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(local)), axis=None)

    total = all_reduce()
    n = strategy.num_replicas_in_sync
    return bool(abs(n * float(total[1]) - float(total[0]) ** 2) < 0.5)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return int(round(total_steps * warmup_ratio))


def dropout_config(rate: float | None, attention_rate: float | None = None) -> dict[str, float]:
    """The model config overrides for train.dropout and train.attention_dropout (BERT-style names;
    load_qa_model refuses them for a model whose config does not have them). rate None: the
    checkpoint's own hidden rate; attention_rate None: the same as rate (so the checkpoint's
    when rate is None too)."""
    out = {}
    if rate is not None:
        out["hidden_dropout_prob"] = float(rate)
    attention = rate if attention_rate is None else attention_rate
    if attention is not None:
        out["attention_probs_dropout_prob"] = float(attention)
    return out


def build_training_model(train: TrainConfig, checkpoint: str, total_steps: int) -> tuple[Any, Any, str]:
    """The QA model compiled for training as the train stage trains it: built under the precision
    policy with resumable dropout at train.dropout / train.attention_dropout, its head in float32,
    GELU/LayerNorm fused when train.fuse_elementwise, the embeddings and lower layers frozen as
    train.freeze_embeddings / freeze_layers say, make_optimizer's AdamW. Call it inside the
    strategy's scope. Returns (model, learning-rate schedule, policy name)."""
    import tensorflow as tf

    with precision_policy(train.precision) as policy, resumable_dropout():
        model = load_qa_model(checkpoint, dropout_config(train.dropout, train.attention_dropout))
        # Build every layer now: a checkpoint with TF weights is loaded by building the weights
        # only, and its dropout layers would create their generators at the first training step,
        # after a resumed run restores their states (it would find none). Draws no random number.
        model(model.dummy_inputs, training=False)
        keep_head_in_float32(model)
    if train.fuse_elementwise:
        fuse_elementwise(model)
    freeze_lower_layers(model, train.freeze_embeddings, train.freeze_layers)
    optimizer, schedule = make_optimizer(
        train.learning_rate, total_steps, warmup_steps(total_steps, train.warmup_ratio), train.weight_decay
    )
    # no loss argument: the HF model computes its own QA loss; under mixed_float16 Keras
    # wraps the optimizer in a LossScaleOptimizer (the model's policy asks for it)
    model.compile(optimizer=optimizer, jit_compile=train.jit_compile)
    # Keras traces the step with autograph, which would re-parse the model's code (graph_function)
    model.train_step = tf.autograph.experimental.do_not_convert(model.train_step)
    return model, schedule, policy


def make_optimizer(learning_rate: float, total_steps: int, warmup: int, weight_decay: float) -> tuple[Any, Any]:
    """transformers' `create_optimizer` (AdamW, linear warmup then linear decay to 0) with the
    embedding tables' gradients applied dense (dense_gradients). Returns (optimizer, schedule)."""
    from transformers import create_optimizer

    optimizer, schedule = create_optimizer(
        init_lr=learning_rate, num_train_steps=total_steps, num_warmup_steps=warmup, weight_decay_rate=weight_decay
    )
    optimizer.gradient_transformers = [dense_gradients]
    return optimizer, schedule


def dense_gradients(grads_and_vars: list) -> list:
    """A Keras gradient transformer: the embedding tables' gradients (tf.IndexedSlices, one row per
    token of the batch) as dense tensors, so Adam updates those tables with its one fused kernel.
    Same math: Adam's sparse path also decays the moments and moves every row, in several separate
    passes over the table (measured in docs/benchmarks.md, 2026-12-05)."""
    import tensorflow as tf

    return [(tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g, v) for g, v in grads_and_vars]


@contextlib.contextmanager
def resumable_dropout():
    """Build the model inside this block: its dropout layers then draw from tf.random.Generator
    objects, whose state (a variable) a backup records and a resumed run restores, instead of
    legacy stateful random ops, whose hidden state a new process cannot restore (a resumed run
    would draw other dropout masks than the uninterrupted one)."""
    import tensorflow as tf

    experimental = tf.keras.backend.experimental
    was_enabled = experimental.is_tf_random_generator_enabled()
    experimental.enable_tf_random_generator()
    try:
        yield
    finally:
        if not was_enabled:
            experimental.disable_tf_random_generator()


def dropout_generators(model) -> list:
    """The tf.random.Generator of each dropout layer of `model`, in a fixed order. (tf-keras keeps
    them out of weights and checkpoints; the backup records their states itself.)"""
    import tensorflow as tf

    found = []
    for layer in model.submodules:
        generator = getattr(getattr(layer, "_random_generator", None), "_generator", None)
        if isinstance(generator, tf.random.Generator):
            found.append(generator)
    return found


def steps_per_epoch(n_features: int, batch_size: int) -> int:
    return -(-n_features // batch_size)


def batch_rows(table: FeatureTable, cfg: PipelineConfig) -> Callable[[int], np.ndarray]:
    """epoch -> the number of features in each global batch of that epoch (the loss weights)."""
    lengths = table.lengths

    def rows(epoch: int) -> np.ndarray:
        plan = epoch_plan(lengths, cfg.train.batch_size, cfg.train.seed, epoch, cfg.train.padding)
        return np.array([len(b) for b in plan], dtype=np.int64)

    return rows


def make_dataset(
    table: FeatureTable,
    cfg: PipelineConfig,
    start_epoch: int = 0,
    start_step: int = 0,
    placement: Placement | None = None,
):
    """The training input, starting at (start_epoch, start_step).

    On one device: a tf.data.Dataset of global batches. Under a strategy with several replicas
    (or workers): a distributed dataset whose input function builds, on each worker, a generator
    that yields only this worker's replicas' parts of every global batch (make_train_generator),
    so workers see disjoint shards of the same global batches and run the same number of steps.
    Nothing is sharded by tf.data (auto_shard_policy OFF: a generator has no files to shard)."""
    import tensorflow as tf

    inputs = {n: tf.TensorSpec((None, None), tf.int32, name=n) for n in table.inputs}
    labels = {n: tf.TensorSpec((None,), tf.int32, name=n) for n in table.labels}
    train = cfg.train

    def dataset(num_replicas: int, replica_ids: Sequence[int]):
        generator = make_train_generator(
            table,
            train.batch_size,
            train.seed,
            train.padding,
            cfg.tokenize.max_length,
            train.pad_to_multiple_of,
            start_epoch=start_epoch,
            start_step=start_step,
            num_replicas=num_replicas,
            replica_ids=replica_ids,
        )
        signature: Any = {**inputs, **labels}
        if num_replicas > 1:
            signature = (signature, labels, tf.TensorSpec((None,), tf.float32, name="sample_weight"))
        # Keras keeps one iterator across epochs when steps_per_epoch is set, so a one-pass
        # dataset runs dry after the first epoch (Keras then stops with only a warning).
        # repeat() calls the generator again for each pass, which plans the next epoch's batches;
        # a pass yields exactly the batches of one Keras epoch, so passes and epochs line up.
        return tf.data.Dataset.from_generator(generator, output_signature=signature).repeat()

    # Nothing here is autotuned (a fixed prefetch of 2), and tf.data's autotune thread can keep
    # the iterator's deletion at the end of `fit` waiting for it: measured up to ~50 s after the
    # last step (docs/benchmarks.md, "The stall was tf.data's autotune thread"). So autotune is off.
    options = tf.data.Options()
    options.autotune.enabled = False
    if placement is None or (placement.kind == ONE_DEVICE):
        return dataset(1, (0,)).prefetch(2).with_options(options)

    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF

    def dataset_fn(context):
        replicas = context.num_replicas_in_sync
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local
        return dataset(replicas, range(first, first + local)).with_options(options).prefetch(2)

    return placement.strategy.distribute_datasets_from_function(dataset_fn)


def report_loss_sums(model) -> None:
    """Add the running loss metric's total and count to every step's logs (`loss_total`,
    `loss_count`; call after compile). Their ratio is the running mean loss on any strategy,
    whereas Keras' own `loss` log under MultiWorkerMirroredStrategy is the *sum* of the workers'
    means (tf-keras' reduce_per_replica sums across workers), and a sum of totals and counts
    stays a total and a count."""
    import tensorflow as tf

    tracker = getattr(model.compiled_loss, "_total_loss_mean", None)  # tf-keras' loss Mean metric
    if tracker is None:
        return
    original = model.train_step

    def train_step(data):
        logs = original(data)
        return {**logs, "loss_total": tf.identity(tracker.total), "loss_count": tf.identity(tracker.count)}

    model.train_step = train_step
