"""The dtype policy a model is built with, for training and for inference: which precision a
machine runs fastest (`auto`), what to say when an asked precision is slow or unavailable, and a
block that builds a model under a policy (its QA head kept in float32)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (Linux /proc/cpuinfo), or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def cpu_has_bfloat16(flags: set[str] | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); without it TensorFlow
    emulates bfloat16 and mixed_bfloat16 trains slower than float32."""
    flags = cpu_flags() if flags is None else flags
    if flags is None:  # not Linux: cannot tell
        return True
    return bool(flags & {"avx512_bf16", "amx_bf16"})


# A GPU's float16 tensor cores start at compute capability 7.0 (Volta); below it float16 is slow.
MIN_FLOAT16_GPU_CAPABILITY = (7, 0)


def auto_precision(gpu_capability: tuple[int, int] | None, cpu_bf16: bool) -> str:
    """The fastest policy this machine runs without losing accuracy: mixed_float16 on a GPU with
    tensor cores (Keras' recommendation; the loss is scaled), mixed_bfloat16 on a CPU with
    AVX512-BF16/AMX (faster per training step: docs/benchmarks.md), else float32.
    gpu_capability: the first GPU's compute capability, None without a GPU."""
    if gpu_capability is not None:
        return "mixed_float16" if tuple(gpu_capability) >= MIN_FLOAT16_GPU_CAPABILITY else "float32"
    return "mixed_bfloat16" if cpu_bf16 else "float32"


def resolve_precision(
    precision: str,
    has_gpu: bool,
    gpu_capability: tuple[int, int] | None = None,
    cpu_bf16: bool | None = None,
    key: str = "train.precision",
) -> tuple[str, str | None]:
    """The Keras policy to build the model with, and a note for the log (naming the setting `key`)
    when it differs from the ask or is likely slow. `auto` picks by auto_precision (a GPU of unknown capability counts
    as one with tensor cores)."""
    cpu_bf16 = cpu_has_bfloat16() if cpu_bf16 is None else cpu_bf16
    if precision == "auto":
        capability = (gpu_capability or MIN_FLOAT16_GPU_CAPABILITY) if has_gpu else None
        policy = auto_precision(capability, cpu_bf16)
        where = (
            f"GPU (compute capability {capability[0]}.{capability[1]})"
            if capability
            else ("CPU with AVX512-BF16/AMX" if cpu_bf16 else "CPU without AVX512-BF16/AMX")
        )
        return policy, f"{key}=auto: {policy} on this {where}"
    if precision == "mixed_float16" and not has_gpu:
        return "float32", f"{key}=mixed_float16 needs a GPU (float16 is slow on CPUs); using float32"
    if precision == "mixed_bfloat16" and not has_gpu and not cpu_bf16:
        return precision, (
            f"{key}=mixed_bfloat16: this CPU has no AVX512-BF16/AMX, so bfloat16 is "
            f"emulated and likely slower than float32 ({key}=auto picks float32 here)"
        )
    return precision, None


def gpu_capability() -> tuple[int, int] | None:
    """The first visible GPU's compute capability (None without a GPU or when TF does not say)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    try:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
    except (ValueError, RuntimeError):
        capability = None
    return tuple(capability) if capability else None


@contextlib.contextmanager
def precision_policy(precision: str, has_gpu: bool | None = None, key: str = "train.precision"):
    """Build the model inside this block: the Keras policy is set before any layer is built
    (the course sets it after compile, which leaves the model in float32), and the global
    policy is restored afterwards, so a model loaded later in the same process (evaluation)
    gets float32. Built layers keep the policy they were built with; under mixed_float16,
    `compile` wraps the optimizer in a LossScaleOptimizer because the model's policy says so.
    has_gpu: None to look (tests force True to run the GPU path on a CPU). key: the setting the
    log's note names."""
    import tensorflow as tf

    if has_gpu is None:
        has_gpu = bool(tf.config.list_physical_devices("GPU"))
    policy, note = resolve_precision(precision, has_gpu, gpu_capability() if has_gpu else None, key=key)
    if note:
        print(f"note: {note}", file=sys.stderr)
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


def keep_head_in_float32(model) -> None:
    """Compute the QA head (and so the logits and the loss) in float32 under a mixed policy:
    a softmax over hundreds of positions from bfloat16 logits (8-bit mantissa) would blur
    the loss and tie the post-processing's span scores."""
    import tensorflow as tf

    head = getattr(model, "qa_outputs", None)
    if head is not None and head.compute_dtype != "float32":
        head._set_dtype_policy(tf.keras.mixed_precision.Policy("float32"))
