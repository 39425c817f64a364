"""The runtime seam: one interface for every kind of model.

``load_runtime`` picks the implementation from ``spec.runtime``. Only "onnx"
exists today; LLM and zk runtimes plug in here with ``register_runtime``.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from omron_tee.errors import ModelError
from omron_tee.models.spec import ModelSpec
from omron_tee.reasons import Reason


class Runtime(Protocol):
    spec: ModelSpec

    def run(self, x: np.ndarray) -> np.ndarray: ...


def _onnx(spec: ModelSpec) -> Runtime:
    from omron_tee.models.onnx_runtime import OnnxModel

    return OnnxModel(spec)


_FACTORIES: dict[str, Callable[[ModelSpec], Runtime]] = {"onnx": _onnx}


def register_runtime(name: str, factory: Callable[[ModelSpec], Runtime]) -> None:
    if name in _FACTORIES:
        raise ModelError(f"runtime {name!r} is already registered")
    _FACTORIES[name] = factory


def runtimes() -> list[str]:
    return sorted(_FACTORIES)


def load_runtime(spec: ModelSpec) -> Runtime:
    """Load a model for inference (hash-checked). Loading is slow; keep the result."""
    factory = _FACTORIES.get(spec.runtime)
    if factory is None:
        raise ModelError(
            f"model {spec.model_id!r} needs runtime {spec.runtime!r}, which this build does not have; "
            f"available runtimes: {', '.join(runtimes())}",
            reason=Reason.UNKNOWN_RUNTIME,
        )
    return factory(spec)
