"""GGUF models pinned by hash: the default, any file by path, the measurement, the pinned runtime (the real llama.cpp)."""

from __future__ import annotations

import dataclasses

import pytest

from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.errors import ModelError
from omron_tee.models.llama import DEFAULT_MODEL_ID, DEFAULT_SHA256, LlamaRuntime, default_spec, gguf_spec, load_llm
from omron_tee.models.registry import ModelRegistry
from omron_tee.models.runtimes import default_runtimes
from omron_tee.workloads.llm import LlmWorkload


def test_default_spec_is_pinned_and_registered(real_llm_registry) -> None:
    spec = real_llm_registry.get(DEFAULT_MODEL_ID)
    assert spec.sha256 == DEFAULT_SHA256 and spec.runtime == "llm"
    assert "llm" in default_runtimes().names()
    assert [s.model_id for s in real_llm_registry.specs() if LlmWorkload().serves(s)] == [DEFAULT_MODEL_ID]
    assert DEFAULT_MODEL_ID not in ModelRegistry.builtin()  # the shipped ONNX set is unchanged


def test_any_gguf_by_path_is_identified_by_its_hash(tmp_path, real_llm_runtime) -> None:
    link = tmp_path / "copy.gguf"
    link.symlink_to(default_spec().path)
    spec = gguf_spec(link)
    assert spec.model_id == f"sha256:{DEFAULT_SHA256.hex()}" and spec.sha256 == DEFAULT_SHA256
    named = gguf_spec(link, "my-llm")
    reg = ModelRegistry.builtin()
    reg.add(named)
    assert reg.get("my-llm").sha256 == DEFAULT_SHA256
    assert default_runtimes().load(named) is real_llm_runtime  # one loaded copy per file in a process
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"ONNX not a gguf")
    with pytest.raises(ModelError, match="not a GGUF"):
        gguf_spec(bad)


def test_hash_mismatch_is_refused(tmp_path, real_llm_registry) -> None:
    link = tmp_path / "m.gguf"
    link.symlink_to(default_spec().path)
    spec = dataclasses.replace(gguf_spec(link, "m"), sha256=bytes(32))
    with pytest.raises(ModelError) as e:
        LlamaRuntime(spec)
    assert e.value.reason == "model-hash-mismatch"


def test_the_llm_hash_enters_the_measurement() -> None:
    onnx = [(s.model_id, s.sha256) for s in ModelRegistry.builtin().specs()]
    with_llm_m = trusted_app_measurement(onnx + [(DEFAULT_MODEL_ID, DEFAULT_SHA256)])
    other_llm = trusted_app_measurement(onnx + [(DEFAULT_MODEL_ID, bytes(32))])
    assert len({trusted_app_measurement(onnx), with_llm_m, other_llm}) == 3


def test_greedy_is_deterministic_and_bounded(real_llm_runtime) -> None:
    a = real_llm_runtime.complete("The Pythagorean theorem states that", 8)
    b = real_llm_runtime.complete("The Pythagorean theorem states that", 8)
    assert a == b and len(a[0]) == 8
    for prompt, n in (("", 4), ("x", 0), ("x", 10_000), ("x" * 9000, 4)):
        with pytest.raises(ModelError) as e:
            real_llm_runtime.check_request(prompt, n)
        assert e.value.reason == "bad-input"
    streamed = [t for t, _ in real_llm_runtime.stream("The capital of France is", 4)]
    assert streamed == real_llm_runtime.complete("The capital of France is", 4)[0]


def test_non_gguf_file_under_llm_runtime_is_a_model_error(tmp_path, real_llm_registry) -> None:
    f = tmp_path / "fake.gguf"
    f.write_bytes(b"GGUF" + bytes(64))
    spec = gguf_spec(f, "fake")
    with pytest.raises(ModelError) as e:
        load_llm(spec)
    assert e.value.reason == "model-load-failed"
