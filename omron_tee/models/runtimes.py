"""The runtime seam: which code runs a model, chosen by ``spec.runtime``, registered explicitly.

``default_runtimes()`` is what this build serves: "onnx" (``models.onnx``)
and "llm" (``models.llama``, llama.cpp, imported only when an LLM loads).
Tests build a ``Runtimes`` of their own (``models.testing.fake_runtimes``)
instead of patching: nothing registers itself as a side effect of import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from omron_tee.errors import ModelError
from omron_tee.models.spec import ModelSpec
from omron_tee.reasons import Reason


class Runtime(Protocol):
    """A loaded model. Tensor runtimes offer ``run``; LLM runtimes ``stream``/``complete`` (``workloads.llm``)."""

    spec: ModelSpec


Factory = Callable[[ModelSpec], Any]


class Runtimes:
    """Runtime name -> factory (``spec -> loaded model``)."""

    def __init__(self, factories: Mapping[str, Factory]) -> None:
        self._factories = dict(factories)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def with_(self, name: str, factory: Factory) -> "Runtimes":
        """A copy with ``name`` (re)bound to ``factory``."""
        return Runtimes({**self._factories, name: factory})

    def load(self, spec: ModelSpec) -> Any:
        """Load a model for inference (hash-checked). Loading is slow; keep the result."""
        factory = self._factories.get(spec.runtime)
        if factory is None:
            raise ModelError(
                f"model {spec.model_id!r} needs runtime {spec.runtime!r}, which this build does not have; "
                f"available runtimes: {', '.join(self.names())}",
                reason=Reason.UNKNOWN_RUNTIME,
            )
        return factory(spec)


def _onnx(spec: ModelSpec) -> Any:
    from omron_tee.models.onnx import OnnxModel  # onnxruntime: loaded with the first ONNX model

    return OnnxModel(spec)


def _llama(spec: ModelSpec) -> Any:
    from omron_tee.models.llama import load_llm  # llama.cpp: loaded with the first LLM

    return load_llm(spec)


def default_runtimes() -> Runtimes:
    return Runtimes({"onnx": _onnx, "llm": _llama})
