"""Batches of unpadded features: length-bucketed dynamic padding, or fixed max_length padding.

Features are stored unpadded (pipeline.qa.features). Training draws batches from
length-sorted chunks of a seeded permutation, so each batch holds features of similar
length and is padded only to its own longest one (rounded up to `pad_to_multiple_of`
to keep the number of distinct shapes, hence of traced graphs, small). Prediction sorts
all features by length and maps the outputs back to the original order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
LABELS = ("start_positions", "end_positions")
CHUNK_BATCHES = 50  # batches per sorted chunk: enough to bucket, small enough to stay random


@dataclass
class RaggedColumn:
    """A list-of-int column as one flat array plus row offsets (Arrow's own layout)."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_arrow(cls, chunked_array) -> "RaggedColumn":
        array = chunked_array.combine_chunks()
        # A sliced Arrow array keeps its parent's buffers; offsets are absolute into them.
        values = array.values.to_numpy(zero_copy_only=False)
        offsets = array.offsets.to_numpy(zero_copy_only=False)
        return cls(values.astype(np.int32, copy=False), offsets.astype(np.int64, copy=False))

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> "RaggedColumn":
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter((v for r in rows for v in r), dtype=np.int32, count=int(offsets[-1]))
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def padded(self, indices: Sequence[int], width: int, pad_value: int) -> np.ndarray:
        out = np.full((len(indices), width), pad_value, dtype=np.int32)
        for r, i in enumerate(indices):
            row = self.row(int(i))[:width]
            out[r, : len(row)] = row
        return out


@dataclass
class FeatureTable:
    """Model inputs (ragged) and optional labels of a tokenized split."""

    inputs: dict[str, RaggedColumn]
    labels: dict[str, np.ndarray]
    pad_token_id: int = 0

    @classmethod
    def from_dataset(cls, dataset, pad_token_id: int = 0) -> "FeatureTable":
        if dataset._indices is not None:  # select()/shuffle() views: materialise the rows
            dataset = dataset.flatten_indices()
        table = dataset.data  # pyarrow-backed; no per-row Python objects
        names = dataset.column_names
        inputs = {name: RaggedColumn.from_arrow(table.column(name)) for name in MODEL_INPUTS if name in names}
        labels = {name: table.column(name).to_numpy().astype(np.int32) for name in LABELS if name in names}
        return cls(inputs, labels, pad_token_id)

    def __len__(self) -> int:
        return len(self.inputs["input_ids"])

    @property
    def lengths(self) -> np.ndarray:
        return self.inputs["input_ids"].lengths

    def batch(self, indices: Sequence[int], width: int, with_labels: bool = False) -> dict[str, np.ndarray]:
        out = {
            name: column.padded(indices, width, self.pad_token_id if name == "input_ids" else 0)
            for name, column in self.inputs.items()
        }
        if with_labels:
            idx = np.asarray(indices)
            out.update({name: values[idx] for name, values in self.labels.items()})
        return out


def round_up(length: int, multiple: int) -> int:
    return int(-(-length // multiple) * multiple)


def bucketed_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Training batches for one epoch: a seeded permutation, sorted by length within
    chunks of CHUNK_BATCHES batches, then the batch order shuffled.

    Every feature appears exactly once; order differs per epoch and is reproducible.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    chunk = batch_size * CHUNK_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        batches.extend(idx[j : j + batch_size] for j in range(0, len(idx), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def shuffled_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Training batches for one epoch without bucketing (the course's shuffling)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[j : j + batch_size] for j in range(0, n, batch_size)]


def epoch_plan(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, padding: str) -> list[np.ndarray]:
    """The global batches (feature indices) of one training epoch, a function of seed and epoch only."""
    if padding == "bucketed":
        return bucketed_batches(lengths, batch_size, seed, epoch)
    return shuffled_batches(len(lengths), batch_size, seed, epoch)


def make_train_generator(
    table: FeatureTable,
    batch_size: int,
    seed: int,
    padding: str,
    max_length: int,
    pad_to_multiple_of: int,
    start_epoch: int = 0,
    start_step: int = 0,
    num_replicas: int = 1,
    replica_ids: Sequence[int] = (0,),
):
    """A generator function for tf.data: each call yields the next epoch's batches.

    The first call starts at epoch `start_epoch`, batch `start_step` (a run resumed from a
    backup sees exactly the batches the interrupted run had not trained on yet: each epoch's
    plan depends on seed and epoch only).

    `batch_size` is the global batch. With num_replicas > 1, every global batch is split into
    num_replicas equal parts (a batch whose size is not a multiple of num_replicas, an epoch's
    short last one, is padded with copies of its first feature weighted 0), all padded to the
    global batch's width (the same widths as on one replica), and the generator yields only the
    parts of `replica_ids` (this worker's replicas), one element per replica, as (inputs and
    labels, labels, sample weights). The weight of a real feature, part size * num_replicas /
    batch size, makes Keras' loss (each replica's weighted mean divided by num_replicas, summed
    over replicas) the mean loss over the global batch: the same gradient and the same logged
    loss as on one replica.
    """
    lengths = table.lengths
    position = {"epoch": start_epoch, "skip": start_step}

    def generate() -> Iterator:
        epoch, skip = position["epoch"], position["skip"]
        position["epoch"], position["skip"] = epoch + 1, 0
        for indices in epoch_plan(lengths, batch_size, seed, epoch, padding)[skip:]:
            if padding == "bucketed":
                width = min(round_up(int(lengths[indices].max()), pad_to_multiple_of), max_length)
            else:
                width = max_length
            if num_replicas == 1:
                yield table.batch(indices, width, with_labels=True)
                continue
            part_size = -(-len(indices) // num_replicas)
            padded = np.concatenate([indices, np.repeat(indices[:1], part_size * num_replicas - len(indices))])
            weights = np.zeros(len(padded), dtype=np.float32)
            weights[: len(indices)] = num_replicas * part_size / len(indices)
            for replica in replica_ids:
                part = slice(replica * part_size, (replica + 1) * part_size)
                batch = table.batch(padded[part], width, with_labels=True)
                labels = {name: batch[name] for name in table.labels}
                yield batch, labels, weights[part]

    return generate


def prediction_batches(
    lengths: np.ndarray, batch_size: int, padding: str, max_length: int, pad_to_multiple_of: int
) -> list[tuple[np.ndarray, int]]:
    """(feature indices, padded width) for prediction. Bucketed: sorted by length."""
    order = np.argsort(lengths, kind="stable") if padding == "bucketed" else np.arange(len(lengths))
    plan = []
    for j in range(0, len(order), batch_size):
        idx = order[j : j + batch_size]
        width = (
            min(round_up(int(lengths[idx].max()), pad_to_multiple_of), max_length)
            if padding == "bucketed"
            else max_length
        )
        plan.append((idx, width))
    return plan
