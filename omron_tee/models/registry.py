"""Which models exist, each a ``ModelSpec`` (``models.spec``) pinned by the sha256 of its file.

The shipped models come from ``assets/manifest.json``; operators can add any
ONNX file by path. ``ModelRegistry.runtime`` loads a model once (with the
registry's ``Runtimes``) and keeps it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Iterable

from omron_tee.errors import ModelError
from omron_tee.models.runtimes import Runtime, Runtimes, default_runtimes
from omron_tee.models.spec import ModelSpec, read_pinned, sha256_file
from omron_tee.reasons import Reason

__all__ = ["ASSETS_DIR", "MANIFEST_PATH", "ModelRegistry", "ModelSpec", "read_pinned", "sha256_file", "spec_from_manifest_entry"]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
MANIFEST_PATH = ASSETS_DIR / "manifest.json"
MANIFEST_SCHEMA = 1


# --- manifest ------------------------------------------------------------------


def _get(entry: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in entry:
        raise ModelError(f"{where}: missing '{key}'")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ModelError(f"{where}: '{key}' has the wrong type ({type(value).__name__})")
    return value


def _hex32(value: str, where: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ModelError(f"{where}: sha256 must be 64 hex characters")
    return raw


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise ModelError(f"{where}: shape must be a list of integers")
    return tuple(value)


def _file_in(base: Path, name: str, where: str) -> Path:
    # Manifest entries name files beside the manifest, never elsewhere.
    if not name or Path(name).name != name:
        raise ModelError(f"{where}: file {name!r} must be a plain file name in the manifest's folder")
    return base / name


def spec_from_manifest_entry(entry: Any, base: Path) -> ModelSpec:
    if not isinstance(entry, dict):
        raise ModelError("manifest: each model entry must be a JSON object")
    model_id = _get(entry, "id", str, "manifest model")
    where = f"manifest model {model_id!r}"
    inp = _get(entry, "input", dict, where)
    out = _get(entry, "output", dict, where)
    tol = _get(entry, "tolerance", dict, where)
    samples = entry.get("samples")
    samples_path = samples_sha = None
    if samples is not None:
        if not isinstance(samples, dict):
            raise ModelError(f"{where}: 'samples' must be an object")
        samples_path = _file_in(base, _get(samples, "file", str, f"{where} samples"), where)
        samples_sha = _hex32(_get(samples, "sha256", str, f"{where} samples"), f"{where} samples")
    metrics = entry.get("metrics", {})
    if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
        raise ModelError(f"{where}: 'metrics' must map names to numbers")
    proofs = _get(entry, "proof_systems", list, where)
    return ModelSpec(
        model_id=model_id,
        sha256=_hex32(_get(entry, "sha256", str, where), where),
        path=_file_in(base, _get(entry, "file", str, where), where),
        runtime=_get(entry, "runtime", str, where),
        input_name=_get(inp, "name", str, f"{where} input"),
        input_shape=_shape(_get(inp, "shape", list, f"{where} input"), f"{where} input"),
        input_dtype=_get(inp, "dtype", str, f"{where} input"),
        output_shape=_shape(_get(out, "shape", list, f"{where} output"), f"{where} output"),
        output_name=str(out.get("name", "")),
        atol=float(_get(tol, "atol", (int, float), f"{where} tolerance")),
        rtol=float(_get(tol, "rtol", (int, float), f"{where} tolerance")),
        proof_systems=tuple(str(p) for p in proofs),
        description=str(entry.get("description", "")),
        task=str(entry.get("task", "unspecified")),
        samples_path=samples_path,
        samples_sha256=samples_sha,
        metrics=tuple(sorted((str(k), float(v)) for k, v in metrics.items())),
    )


# --- ONNX inspection (for models added by path) ---------------------------------


def _onnx_io(data: bytes, path: Path) -> tuple[str, tuple[int, ...], str, str, tuple[int, ...]]:
    """The single input's name/shape/dtype and single output's name/shape of an ONNX file."""
    import onnx  # imported here: only add_file needs it

    from onnx import TensorProto

    dtypes = {
        TensorProto.FLOAT: "float32",
        TensorProto.DOUBLE: "float64",
        TensorProto.INT64: "int64",
        TensorProto.INT32: "int32",
        TensorProto.UINT8: "uint8",
    }
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # onnx raises DecodeError and others for non-ONNX bytes
        raise ModelError(f"{path} is not a valid ONNX model: {e}") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    outputs = list(model.graph.output)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{path}: the onnx runtime serves models with exactly one input and one output, this one has {len(inputs)} and {len(outputs)}")

    def static(value: Any, role: str) -> tuple[int, ...]:
        tt = value.type.tensor_type
        dims = []
        for d in tt.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                # Fixed shapes: the wire protocol, tolerances and zk circuits all need them.
                raise ModelError(f"{path}: {role} '{value.name}' has a dynamic dimension; export it with fixed shapes (e.g. batch 1)")
            dims.append(int(d.dim_value))
        if not dims:
            raise ModelError(f"{path}: {role} '{value.name}' has no declared shape")
        return tuple(dims)

    (inp,), (out,) = inputs, outputs
    in_type = inp.type.tensor_type.elem_type
    if in_type not in dtypes:
        raise ModelError(f"{path}: input '{inp.name}' has element type {TensorProto.DataType.Name(in_type)}; supported: {', '.join(dtypes.values())}")
    if out.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelError(f"{path}: output '{out.name}' must be float32, it is {TensorProto.DataType.Name(out.type.tensor_type.elem_type)}")
    return inp.name, static(inp, "input"), dtypes[in_type], out.name, static(out, "output")


# --- the registry -----------------------------------------------------------------


class ModelRegistry:
    """A set of model specs by id. ``builtin()`` holds the models shipped in the package."""

    def __init__(self, specs: Iterable[ModelSpec] = (), *, runtimes: Runtimes | None = None) -> None:
        self.runtimes = runtimes if runtimes is not None else default_runtimes()
        self._specs: dict[str, ModelSpec] = {}
        self._runtimes: dict[str, Runtime] = {}
        self._lock = threading.Lock()
        for spec in specs:
            self.add(spec)

    @classmethod
    def builtin(cls, *, runtimes: Runtimes | None = None) -> "ModelRegistry":
        return cls.from_manifest(MANIFEST_PATH, runtimes=runtimes)

    @classmethod
    def from_manifest(cls, path: Path | str, *, runtimes: Runtimes | None = None) -> "ModelRegistry":
        path = Path(path)
        try:
            doc = json.loads(path.read_bytes())
        except OSError as e:
            raise ModelError(f"cannot read model manifest {path}: {e.strerror or e}") from None
        except ValueError:
            raise ModelError(f"model manifest {path} is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("schema") != MANIFEST_SCHEMA or not isinstance(doc.get("models"), list):
            raise ModelError(f"model manifest {path} must be an object with schema {MANIFEST_SCHEMA} and a 'models' list")
        return cls((spec_from_manifest_entry(e, path.parent) for e in doc["models"]), runtimes=runtimes)

    def add(self, spec: ModelSpec) -> ModelSpec:
        known = self._specs.get(spec.model_id)
        if known is not None:
            if known == spec:
                return known
            raise ModelError(f"model id {spec.model_id!r} is already registered with sha256 {known.sha256_hex}")
        self._specs[spec.model_id] = spec
        return spec

    def add_file(
        self,
        path: Path | str,
        model_id: str | None = None,
        *,
        atol: float = 1e-4,
        rtol: float = 1e-4,
        proof_systems: tuple[str, ...] = ("tee",),
        description: str = "",
        task: str = "unspecified",
    ) -> ModelSpec:
        """Register any ONNX file; without ``model_id`` it is named ``sha256:<hex>``."""
        path = Path(path).resolve()
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"cannot read model file {path}: {e.strerror or e}") from None
        digest = hashlib.sha256(data).digest()
        in_name, in_shape, in_dtype, out_name, out_shape = _onnx_io(data, path)
        spec = ModelSpec(
            model_id=model_id if model_id is not None else f"sha256:{digest.hex()}",
            sha256=digest,
            path=path,
            runtime="onnx",
            input_name=in_name,
            input_shape=in_shape,
            input_dtype=in_dtype,
            output_shape=out_shape,
            output_name=out_name,
            atol=atol,
            rtol=rtol,
            proof_systems=tuple(proof_systems),
            description=description,
            task=task,
        )
        return self.add(spec)

    def get(self, model_id: str) -> ModelSpec:
        spec = self._specs.get(model_id)
        if spec is None:
            known = ", ".join(sorted(self._specs)) or "none"
            raise ModelError(f"unknown model {model_id!r}; known models: {known}", reason=Reason.UNKNOWN_MODEL)
        return spec

    def by_sha256(self, sha256: bytes) -> ModelSpec | None:
        return next((s for s in self._specs.values() if s.sha256 == sha256), None)

    def runtime(self, model_id: str) -> Runtime:
        """The loaded runtime of a model, loaded (and hash-checked) once and then reused."""
        with self._lock:  # one load per model even when requests arrive together
            rt = self._runtimes.get(model_id)
            if rt is None:
                rt = self._runtimes[model_id] = self.runtimes.load(self.get(model_id))
            return rt

    def ids(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[ModelSpec]:
        return [self._specs[i] for i in self.ids()]

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs

    def __len__(self) -> int:
        return len(self._specs)
