"""train.freeze_embeddings / train.freeze_layers: the frozen part keeps the checkpoint's weights
through training and is saved with the rest; the layers above learn; a count the model does not
have is one error naming the key and the limit."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.qa.modeling import freeze_lower_layers
from pipeline.qa.training import build_training_model, make_dataset, steps_per_epoch
from pipeline.runtime.errors import PipelineError
from tests.helpers.project import float32_training_overrides
from tests.helpers.tiny_model import random_table, tiny_bert, tiny_config

FLOAT32 = float32_training_overrides("freeze_embeddings")  # each test sets its own


def weights_of(layer) -> dict[str, np.ndarray]:
    """The layer's weights by name without the model's instance prefix (a reloaded model has another)."""
    return {w.name.split("/", 1)[1]: w.numpy().copy() for w in layer.weights}


@pytest.mark.parametrize("embeddings,layers", [(True, 1), (False, 0)])
def test_frozen_layers_keep_the_checkpoints_weights_and_the_layers_above_learn(tmp_path, embeddings, layers):
    tiny_bert(dropout=0.0).save_pretrained(str(tmp_path / "checkpoint"))
    cfg = tiny_config(*FLOAT32, f"train.freeze_embeddings={str(embeddings).lower()}", f"train.freeze_layers={layers}")
    model, _, _ = build_training_model(cfg.train, str(tmp_path / "checkpoint"), total_steps=6)
    bert = model.bert
    parts = {
        "embeddings": bert.embeddings,
        "layer 0": bert.encoder.layer[0],
        "layer 1": bert.encoder.layer[1],
        "head": model.qa_outputs,
    }
    before = {part: weights_of(layer) for part, layer in parts.items()}
    table = random_table(24)
    model.fit(make_dataset(table, cfg), epochs=1, steps_per_epoch=steps_per_epoch(24, cfg.train.batch_size), verbose=0)

    frozen = {"embeddings"} if embeddings else set()
    frozen |= {f"layer {i}" for i in range(layers)}
    for part, old in before.items():
        new = weights_of(parts[part])
        changed = [name for name in old if not np.array_equal(old[name], new[name])]
        if part in frozen:
            assert changed == [], f"{part} is frozen but these weights moved: {changed}"
        else:
            assert changed, f"{part} is trained but no weight moved"
    trainable = {id(w) for w in model.trainable_weights}
    embeddings_trained = [id(w) in trainable for w in bert.embeddings.weights]
    assert embeddings_trained == [not embeddings] * len(bert.embeddings.weights)

    # the frozen weights are saved with the trained ones: the saved model is the whole model
    model.save_pretrained(str(tmp_path / "trained"))
    from pipeline.qa.modeling import load_qa_model

    reloaded = load_qa_model(str(tmp_path / "trained"))
    for part, layer in (("embeddings", reloaded.bert.embeddings), ("layer 0", reloaded.bert.encoder.layer[0])):
        saved = weights_of(layer)
        assert set(saved) == set(before[part])
        same = all(np.array_equal(saved[n], before[part][n]) for n in saved)
        assert same == (part in frozen), f"{part}: saved weights {'equal' if same else 'differ from'} the checkpoint's"


def test_freezing_returns_the_frozen_parameter_count_and_refuses_more_layers_than_the_model_has():
    model = tiny_bert()
    embeddings = sum(int(np.prod(w.shape)) for w in model.bert.embeddings.weights)
    layer = sum(int(np.prod(w.shape)) for w in model.bert.encoder.layer[0].weights)
    all_trainable = len(model.trainable_weights)
    assert freeze_lower_layers(model, embeddings=False, layers=0) == 0
    assert len(model.trainable_weights) == all_trainable
    assert freeze_lower_layers(model, embeddings=True, layers=1) == embeddings + layer
    assert len(model.trainable_weights) == all_trainable - len(model.bert.embeddings.weights) - len(
        model.bert.encoder.layer[0].weights
    )
    too_many = r"train\.freeze_layers=3: TFBertForQuestionAnswering has 2 transformer layers; use at most 2"
    with pytest.raises(PipelineError, match=too_many):
        freeze_lower_layers(tiny_bert(), embeddings=True, layers=3)


def test_an_architecture_without_bert_like_layers_is_refused_by_name():
    import tensorflow as tf

    plain = tf.keras.Sequential([tf.keras.layers.Dense(2)])
    with pytest.raises(PipelineError, match=r"Sequential has no embeddings and transformer layers.*freeze_layers: 0"):
        freeze_lower_layers(plain, embeddings=True, layers=0)
