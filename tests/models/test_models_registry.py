"""The model registry: the shipped manifest, hash pinning, models added by path."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from omron_tee.errors import ModelError
from omron_tee.models.registry import ModelRegistry
from omron_tee.models.spec import ModelSpec
from omron_tee.models.onnx import OnnxModel
from omron_tee.models.runtimes import Runtimes, default_runtimes
from omron_tee.models.samples import load_samples
from omron_tee.models.registry import ASSETS_DIR, MANIFEST_PATH

SHIPPED = {"digits-mlp", "diabetes-mlp", "breast-cancer-mlp"}


def _tiny_onnx(path: Path, *, n_in: int = 3, dynamic: bool = False, two_inputs: bool = False, seed: int = 1) -> Path:
    """A real 1-layer linear model (Gemm), written the way an operator's exporter would."""
    rng = np.random.default_rng(seed)
    batch: int | str = "N" if dynamic else 1
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_in])]
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"])]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2])],
        initializer=[
            numpy_helper.from_array(rng.standard_normal((n_in, 2)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.standard_normal(2).astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save_model(model, path)
    return path


@pytest.fixture
def assets_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "assets"
    shutil.copytree(ASSETS_DIR, dst)
    return dst


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


# --- the shipped models -----------------------------------------------------------


def test_builtin_lists_the_shipped_models() -> None:
    reg = ModelRegistry.builtin()
    assert set(reg.ids()) == SHIPPED
    assert reg.ids() == sorted(reg.ids())
    assert [s.model_id for s in reg.specs()] == reg.ids()
    assert len(reg) == 3 and "digits-mlp" in reg and "nope" not in reg


def test_manifest_hashes_match_the_files() -> None:
    manifest = json.loads(MANIFEST_PATH.read_text())
    for entry in manifest["models"]:
        model_bytes = (ASSETS_DIR / entry["file"]).read_bytes()
        assert hashlib.sha256(model_bytes).hexdigest() == entry["sha256"]
        assert len(model_bytes) == entry["size"]
        samples = (ASSETS_DIR / entry["samples"]["file"]).read_bytes()
        assert hashlib.sha256(samples).hexdigest() == entry["samples"]["sha256"]
    for spec in ModelRegistry.builtin().specs():
        assert hashlib.sha256(spec.path.read_bytes()).digest() == spec.sha256


def test_shipped_specs_describe_their_graphs() -> None:
    reg = ModelRegistry.builtin()
    digits = reg.get("digits-mlp")
    assert (digits.input_shape, digits.input_dtype, digits.output_shape) == ((1, 64), "float32", (1, 10))
    assert (digits.task, digits.runtime, digits.proof_systems) == ("classification", "onnx", ("tee",))
    assert reg.get("diabetes-mlp").output_shape == (1, 1)
    assert reg.get("breast-cancer-mlp").input_shape == (1, 30)
    for spec in reg.specs():
        assert spec.description and spec.atol > 0 and spec.rtol > 0
        graph = onnx.load_model(spec.path).graph
        # zk-friendly: only these simple ops, fixed batch of 1.
        assert {n.op_type for n in graph.node} <= {"Gemm", "Relu", "Softmax", "Sigmoid"}
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
        assert graph.input[0].name == spec.input_name and graph.output[0].name == spec.output_name


def test_unknown_id_names_the_known_ones() -> None:
    with pytest.raises(ModelError, match="unknown model 'gpt-5'; known models: breast-cancer-mlp, diabetes-mlp, digits-mlp") as e:
        ModelRegistry.builtin().get("gpt-5")
    assert e.value.reason == "unknown-model"


def test_builtin_returns_independent_registries(tmp_path: Path) -> None:
    a = ModelRegistry.builtin()
    a.add_file(_tiny_onnx(tmp_path / "t.onnx"), "tiny")
    assert "tiny" not in ModelRegistry.builtin()


# --- hash pinning --------------------------------------------------------------------


def test_tampered_model_file_is_refused(assets_copy: Path) -> None:
    _flip_byte(assets_copy / "digits-mlp.onnx")
    spec = ModelRegistry.from_manifest(assets_copy / "manifest.json").get("digits-mlp")
    with pytest.raises(ModelError, match=r"model 'digits-mlp': file .*digits-mlp.onnx has sha256 [0-9a-f]{64}, but the spec pins 76c3") as e:
        OnnxModel(spec)
    assert "modified or replaced" in str(e.value)
    assert e.value.reason == "model-hash-mismatch"


def test_missing_model_file_is_a_model_error(assets_copy: Path) -> None:
    (assets_copy / "diabetes-mlp.onnx").unlink()
    spec = ModelRegistry.from_manifest(assets_copy / "manifest.json").get("diabetes-mlp")
    with pytest.raises(ModelError, match="cannot read .*diabetes-mlp.onnx"):
        default_runtimes().load(spec)


def test_tampered_sample_bank_is_refused(assets_copy: Path) -> None:
    _flip_byte(assets_copy / "breast-cancer-mlp.samples.json", offset=40)
    spec = ModelRegistry.from_manifest(assets_copy / "manifest.json").get("breast-cancer-mlp")
    with pytest.raises(ModelError, match="samples of model 'breast-cancer-mlp': .* has sha256"):
        load_samples(spec)


def test_untampered_copy_loads(assets_copy: Path) -> None:
    reg = ModelRegistry.from_manifest(assets_copy / "manifest.json")
    assert reg.ids() == ModelRegistry.builtin().ids()
    assert OnnxModel(reg.get("digits-mlp")).spec.path.parent == assets_copy


# --- malformed manifests ----------------------------------------------------------------


def _write_manifest(assets: Path, mutate) -> Path:
    path = assets / "manifest.json"
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["models"][0].pop("sha256"), "manifest model 'digits-mlp': missing 'sha256'"),
        (lambda d: d["models"][0].update(sha256="abcd"), "sha256 must be 64 hex characters"),
        (lambda d: d["models"][0].update(file="../../etc/passwd"), "must be a plain file name"),
        (lambda d: d["models"][0]["input"].update(shape=[1, "64"]), "shape must be a list of integers"),
        (lambda d: d["models"][0]["input"].update(shape=[0, 64]), "input shape must be a non-empty tuple of positive integers"),
        (lambda d: d["models"][0]["input"].update(dtype="float16"), "input dtype 'float16' is not one of"),
        (lambda d: d["models"][0].update(proof_systems=["tee", "snark"]), "proof systems must be distinct values among tee, zk"),
        (lambda d: d["models"][0]["tolerance"].update(atol=-1), "atol must be a finite number >= 0"),
        (lambda d: d["models"][0].update(id="bad id!"), "model id must be"),
        (lambda d: d.update(schema=99), "schema 1"),
    ],
)
def test_malformed_manifest_is_a_clear_model_error(assets_copy: Path, mutate, message: str) -> None:
    path = _write_manifest(assets_copy, mutate)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace("[", r"\[")):
        ModelRegistry.from_manifest(path)


def test_manifest_allows_zk_proof_system(assets_copy: Path) -> None:
    path = _write_manifest(assets_copy, lambda d: d["models"][0].update(proof_systems=["tee", "zk"]))
    assert ModelRegistry.from_manifest(path).get("digits-mlp").proof_systems == ("tee", "zk")


def test_manifest_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="is not valid JSON"):
        ModelRegistry.from_manifest(tmp_path / "manifest.json")
    with pytest.raises(ModelError, match="cannot read model manifest"):
        ModelRegistry.from_manifest(tmp_path / "absent.json")


# --- adding a model by path ---------------------------------------------------------------


def test_add_file_identifies_the_model_by_its_hash(tmp_path: Path) -> None:
    path = _tiny_onnx(tmp_path / "tiny.onnx")
    digest = hashlib.sha256(path.read_bytes()).digest()
    reg = ModelRegistry.builtin()
    spec = reg.add_file(path)
    assert spec.model_id == f"sha256:{digest.hex()}" and spec.sha256 == digest
    assert (spec.input_name, spec.input_shape, spec.input_dtype) == ("x", (1, 3), "float32")
    assert (spec.output_name, spec.output_shape, spec.runtime) == ("y", (1, 2), "onnx")
    assert reg.get(spec.model_id) is spec and reg.by_sha256(digest) is spec
    assert reg.add_file(path) is spec  # idempotent

    x = np.array([[1.0, -2.0, 0.5]], dtype=np.float32)
    w = onnx.load_model(path).graph.initializer
    W, b = numpy_helper.to_array(w[0]), numpy_helper.to_array(w[1])
    np.testing.assert_allclose(reg.runtime(spec.model_id).run(x), x @ W + b, rtol=1e-6)


def test_add_file_with_id_and_options(tmp_path: Path) -> None:
    reg = ModelRegistry()
    spec = reg.add_file(_tiny_onnx(tmp_path / "t.onnx"), "tiny-linear", atol=0.5, rtol=0.0, proof_systems=("tee", "zk"), description="d", task="regression")
    assert (spec.model_id, spec.atol, spec.rtol, spec.proof_systems, spec.task) == ("tiny-linear", 0.5, 0.0, ("tee", "zk"), "regression")
    with pytest.raises(ModelError, match="model id 'tiny-linear' is already registered with sha256"):
        reg.add_file(_tiny_onnx(tmp_path / "other.onnx", seed=2), "tiny-linear")


def test_add_file_then_tamper_is_refused_at_load(tmp_path: Path) -> None:
    path = _tiny_onnx(tmp_path / "t.onnx")
    spec = ModelRegistry().add_file(path, "t")
    _tiny_onnx(path, seed=7)  # replaced after registration
    with pytest.raises(ModelError, match="model 't': file .* has sha256 .* but the spec pins"):
        OnnxModel(spec)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dynamic": True}, "has a dynamic dimension; export it with fixed shapes"),
        ({"two_inputs": True}, "exactly one input and one output, this one has 2 and 1"),
    ],
)
def test_add_file_refuses_unservable_graphs(tmp_path: Path, kwargs, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        ModelRegistry().add_file(_tiny_onnx(tmp_path / "bad.onnx", **kwargs))


def test_add_file_refuses_non_onnx_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    with pytest.raises(ModelError, match="is not a valid ONNX model"):
        ModelRegistry().add_file(junk)
    with pytest.raises(ModelError, match="cannot read model file"):
        ModelRegistry().add_file(tmp_path / "absent.onnx")


# --- specs and runtimes ------------------------------------------------------------------------


def test_spec_is_frozen_and_hashable() -> None:
    spec = ModelRegistry.builtin().get("digits-mlp")
    with pytest.raises(AttributeError):
        spec.atol = 1.0  # type: ignore[misc]
    assert hash(spec) == hash(ModelRegistry.builtin().get("digits-mlp"))
    assert spec.metric("test_accuracy") is not None and spec.metric("nope") is None


def test_unknown_runtime_is_a_clear_error() -> None:
    spec = ModelRegistry.builtin().get("digits-mlp")
    other = ModelSpec(**{**spec.__dict__, "runtime": "tflite"})
    with pytest.raises(ModelError, match="needs runtime 'tflite', which this build does not have; available runtimes: .*onnx") as e:
        default_runtimes().load(other)
    assert e.value.reason == "unknown-runtime"
    with pytest.raises(ModelError, match="has runtime 'tflite', not 'onnx'"):
        OnnxModel(other)


def test_runtimes_are_registered_explicitly() -> None:
    """No runtime registers itself on import: this build's are named in one place, and a registry
    runs a model with exactly the runtimes it was given."""
    assert default_runtimes().names() == ["llm", "onnx"]

    class Echo:
        def __init__(self, spec: ModelSpec) -> None:
            self.spec = spec

        def run(self, x: np.ndarray) -> np.ndarray:
            return x

    spec = ModelSpec(**{**ModelRegistry.builtin().get("digits-mlp").__dict__, "runtime": "echo"})
    runtimes = default_runtimes().with_("echo", Echo)
    assert runtimes.names() == ["echo", "llm", "onnx"] and default_runtimes().names() == ["llm", "onnx"]
    reg = ModelRegistry([spec], runtimes=runtimes)
    assert isinstance(reg.runtime(spec.model_id), Echo)
    with pytest.raises(ModelError) as e:
        ModelRegistry([spec]).runtime(spec.model_id)
    assert e.value.reason == "unknown-runtime"
    assert isinstance(Runtimes({"echo": Echo}).load(spec), Echo)


def test_registry_loads_each_runtime_once() -> None:
    reg = ModelRegistry.builtin()
    rt = reg.runtime("diabetes-mlp")
    assert isinstance(rt, OnnxModel) and reg.runtime("diabetes-mlp") is rt
    with pytest.raises(ModelError, match="unknown model"):
        reg.runtime("nope")
