"""Pinned models and their runtimes: ``ModelRegistry.builtin().runtime("digits-mlp").run(x)``."""

from omron_tee.models.onnx_runtime import (
    OnnxModel,
    SampleBank,
    load_samples,
    outputs_match,
    sample_input,
    session_options,
)
from omron_tee.models.registry import ModelRegistry, ModelSpec
from omron_tee.models.runtime import Runtime, load_runtime, register_runtime, runtimes

__all__ = [
    "ModelRegistry",
    "ModelSpec",
    "OnnxModel",
    "Runtime",
    "SampleBank",
    "load_runtime",
    "load_samples",
    "outputs_match",
    "register_runtime",
    "runtimes",
    "sample_input",
    "session_options",
]
