"""int8 answers: an export's SavedModel quantized after training by OpenVINO's NNCF (int8 weights
and activations, ranges calibrated on train features) and run by OpenVINO on the CPU.

Only the logits come from here: the windows, n-best, maximum answer length and null rule are
qa.predictions', whatever the engine. Needs the int8 extra (`pip install -e '.[int8]'`: openvino,
nncf); nothing else in the pipeline imports them. Why OpenVINO and not ONNX Runtime:
docs/int8.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.qa.batching import FeatureTable
from pipeline.qa.inference import LogitsFn
from pipeline.runtime.config import EXPORT_ENGINES as ENGINES
from pipeline.runtime.errors import PipelineError

FLOAT32, INT8 = ENGINES
INT8_MODEL_FILE = "model.xml"  # OpenVINO IR; its weights are model.bin beside it
# Kept float (OpenVINO's default precision for the CPU: bfloat16 where it has AVX512-BF16/AMX): the
# QA head, whose outputs are the logits the answer rule compares; the attention matmuls of two
# activations; and each layer's FFN output projection, whose GELU inputs have the widest ranges.
# Chosen by agreement with the float model on the sample's validation questions (docs/int8.md).
# Names of TensorFlow BERT-family layers; a pattern another architecture lacks is skipped.
FLOAT_SCOPE = (
    ".*qa_outputs.*",
    ".*attention/self/MatMul.*",
    ".*layer_._[0-9]+/output/dense.*",
)


def require_int8_extra() -> None:
    """Stop with one line when the int8 extra is not installed (before any work that needs it)."""
    _openvino()


def _openvino() -> tuple[Any, Any]:
    try:
        import nncf
        import openvino
    except ImportError:
        raise PipelineError(
            "the int8 engine needs OpenVINO and NNCF, which the quick start does not install: "
            "run `pip install -e '.[int8]'` (or `make install-int8`)"
        ) from None
    return openvino, nncf


def calibration_inputs(table: FeatureTable, samples: int, inputs: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """The first `samples` features of a table, one per item at its own length (no padding: the
    ranges are those of real tokens)."""
    count = min(samples, len(table))
    return [{k: v for k, v in table.batch([i], int(table.lengths[i])).items() if k in inputs} for i in range(count)]


def quantize(saved_model_dir: Path, calibration: list[dict[str, np.ndarray]], out_dir: Path) -> Path:
    """Quantize a SavedModel (qa.serving's signature) to int8 with NNCF's post-training
    quantization for transformers (SmoothQuant, then per-channel weights and per-tensor
    activations calibrated on `calibration`), the matmuls FLOAT_SCOPE names kept float. Writes
    out_dir/model.xml."""
    if not calibration:
        raise PipelineError("int8 quantization needs calibration features; the train split has none")
    ov, nncf = _openvino()
    model = ov.convert_model(str(saved_model_dir))
    names = [port.get_any_name() for port in model.inputs]
    dataset = nncf.Dataset(calibration, lambda item: {name: item[name] for name in names})
    quantized = nncf.quantize(
        model,
        dataset,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(patterns=list(FLOAT_SCOPE), validate=False),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out_dir / INT8_MODEL_FILE), compress_to_fp16=False)
    return out_dir / INT8_MODEL_FILE


def int8_logits_fn(model_xml: Path) -> LogitsFn:
    """Batched logits from a quantized model (OpenVINO on the CPU; dynamic batch and width)."""
    if not Path(model_xml).is_file():
        raise PipelineError(
            f"{model_xml}: no int8 model; export with `-S export.engine=int8`, or use the float32 engine"
        )
    ov, _ = _openvino()
    compiled = ov.Core().compile_model(str(model_xml), "CPU")
    names = [port.get_any_name() for port in compiled.inputs]
    start, end = compiled.output("start_logits"), compiled.output("end_logits")
    request = compiled.create_infer_request()

    def run(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = request.infer({name: np.asarray(batch[name], dtype=np.int32) for name in names})
        return np.array(out[start]), np.array(out[end])  # the request reuses its buffers

    return run
