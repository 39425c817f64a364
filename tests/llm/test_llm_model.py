"""GGUF models pinned by hash: the default, any file by path, the measurement, the pinned runtime."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.errors import ModelError
from omron_tee.llm.model import DEFAULT_MODEL_ID, DEFAULT_SHA256, RUNTIME, LlamaRuntime, default_spec, gguf_spec, llm_ids, load_llm, with_llm
from omron_tee.models import ModelRegistry, load_runtime, runtimes


def test_default_spec_is_pinned_and_registered(llm_registry) -> None:
    spec = llm_registry.get(DEFAULT_MODEL_ID)
    assert spec.sha256 == DEFAULT_SHA256 and spec.runtime == RUNTIME == "llm"
    assert RUNTIME in runtimes()
    assert llm_ids(llm_registry) == [DEFAULT_MODEL_ID]
    assert DEFAULT_MODEL_ID not in ModelRegistry.builtin()  # the shipped ONNX set is unchanged


def test_any_gguf_by_path_is_identified_by_its_hash(tmp_path, llm_runtime) -> None:
    link = tmp_path / "copy.gguf"
    link.symlink_to(default_spec().path)
    spec = gguf_spec(link)
    assert spec.model_id == f"sha256:{DEFAULT_SHA256.hex()}" and spec.sha256 == DEFAULT_SHA256
    named = gguf_spec(link, "my-llm")
    reg = ModelRegistry.builtin()
    with_llm(reg, [named])
    assert reg.get("my-llm").sha256 == DEFAULT_SHA256
    assert load_runtime(named) is llm_runtime  # one loaded copy per file in a process
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"ONNX not a gguf")
    with pytest.raises(ModelError, match="not a GGUF"):
        gguf_spec(bad)


def test_hash_mismatch_is_refused(tmp_path) -> None:
    link = tmp_path / "m.gguf"
    link.symlink_to(default_spec().path)
    spec = dataclasses.replace(gguf_spec(link, "m"), sha256=bytes(32))
    with pytest.raises(ModelError) as e:
        LlamaRuntime(spec)
    assert e.value.reason == "model-hash-mismatch"


def test_the_llm_hash_enters_the_measurement(llm_registry) -> None:
    onnx = [(s.model_id, s.sha256) for s in ModelRegistry.builtin().specs()]
    with_llm_m = trusted_app_measurement(onnx + [(DEFAULT_MODEL_ID, DEFAULT_SHA256)])
    other_llm = trusted_app_measurement(onnx + [(DEFAULT_MODEL_ID, bytes(32))])
    assert len({trusted_app_measurement(onnx), with_llm_m, other_llm}) == 3


def test_greedy_is_deterministic_and_bounded(llm_runtime) -> None:
    a = llm_runtime.complete("The Pythagorean theorem states that", 8)
    b = llm_runtime.complete("The Pythagorean theorem states that", 8)
    assert a == b and len(a[0]) == 8
    for prompt, n in (("", 4), ("x", 0), ("x", 10_000), ("x" * 9000, 4)):
        with pytest.raises(ModelError) as e:
            llm_runtime.check_request(prompt, n)
        assert e.value.reason == "bad-input"
    ids = np.asarray([llm_runtime.tokenize("The capital of France is")], dtype=np.int32)
    assert llm_runtime.run(ids).ravel().tolist()[:4] == llm_runtime.complete("The capital of France is", 4)[0]


def test_non_gguf_file_under_llm_runtime_is_a_model_error(tmp_path) -> None:
    f = tmp_path / "fake.gguf"
    f.write_bytes(b"GGUF" + bytes(64))
    spec = gguf_spec(f, "fake")
    with pytest.raises(ModelError) as e:
        load_llm(spec)
    assert e.value.reason == "model-load-failed"
