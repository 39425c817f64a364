"""Running pinned ONNX models reproducibly, and comparing their outputs.

A validator recomputes a miner's answer and compares the two with the
model's tolerance, so both sides must run the model the same way: the
session options below are pinned, not left to onnxruntime's defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from omron_tee.errors import ModelError
from omron_tee.models.spec import ModelSpec, read_pinned
from omron_tee.reasons import Reason

# Belt and braces beside ORT_DISABLE_TELEMETRY (omron_tee/__init__.py): no telemetry events.
ort.disable_telemetry_events()

# Basic optimisations only rewrite the graph without changing arithmetic
# (constant folding, dead nodes); extended/all fuse kernels, which can change
# float rounding and differs between onnxruntime versions.
GRAPH_OPTIMIZATION_LEVEL = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
PROVIDERS = ("CPUExecutionProvider",)
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
}
# How far a sampled benchmark input strays from its real bank row, in feature standard deviations.
SAMPLE_NOISE = 0.1


def session_options() -> ort.SessionOptions:
    """The pinned options every omron-tee ONNX session uses."""
    so = ort.SessionOptions()
    so.graph_optimization_level = GRAPH_OPTIMIZATION_LEVEL
    # One thread, one order of operations: reductions then sum in the same order every run.
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.use_deterministic_compute = True
    so.enable_profiling = False
    so.log_severity_level = 3  # errors only; onnxruntime never logs tensor values
    # Only plain ONNX: the bytes that were hashed are the model that runs.
    so.add_session_config_entry("session.load_model_format", "ONNX")
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class OnnxModel:
    """A hash-checked ONNX model loaded once into a pinned CPU session."""

    def __init__(self, spec: ModelSpec) -> None:
        if spec.runtime != "onnx":
            raise ModelError(f"model {spec.model_id!r} has runtime {spec.runtime!r}, not 'onnx'")
        self.spec = spec
        self._what = f"model {spec.model_id!r}"
        data = read_pinned(spec.path, spec.sha256, self._what)
        try:
            # From the checked bytes, not the path: the file cannot change in between.
            self._session = ort.InferenceSession(data, sess_options=session_options(), providers=list(PROVIDERS))
        except Exception as e:  # onnxruntime raises its own exception types for bad graphs
            raise ModelError(f"{self._what}: onnxruntime cannot load {spec.path}: {e}") from None
        self._check_io()
        self._dtype = np.dtype(spec.input_dtype)
        self._is_float = self._dtype.kind == "f"
        self._feed_name = spec.input_name
        self._fetch = [self._output_name]
        # A first run allocates buffers; do it now so requests do not pay for it, and check the output.
        out = self.run(np.zeros(spec.input_shape, dtype=self._dtype))
        if out.shape != spec.output_shape:
            raise ModelError(f"{self._what}: output has shape {list(out.shape)}, the spec says {list(spec.output_shape)}")

    def _check_io(self) -> None:
        spec = self.spec
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(f"{self._what}: expected one input, the graph has {len(inputs)}")
        inp = inputs[0]
        got = (inp.name, tuple(inp.shape), _ORT_DTYPES.get(inp.type, inp.type))
        want = (spec.input_name, spec.input_shape, spec.input_dtype)
        if got != want:
            raise ModelError(f"{self._what}: graph input is {got[0]!r} {list(got[1])} {got[2]}, the spec says {want[0]!r} {list(want[1])} {want[2]}")
        names = [o.name for o in outputs]
        if spec.output_name:
            if spec.output_name not in names:
                raise ModelError(f"{self._what}: graph has no output {spec.output_name!r} (it has {', '.join(names)})")
            self._output_name = spec.output_name
        elif len(names) == 1:
            self._output_name = names[0]
        else:
            raise ModelError(f"{self._what}: graph has {len(names)} outputs; the spec must name one")
        out = next(o for o in outputs if o.name == self._output_name)
        if out.type != "tensor(float)":
            raise ModelError(f"{self._what}: output {self._output_name!r} is {out.type}, must be tensor(float)")

    def run(self, x: np.ndarray) -> np.ndarray:
        """One inference. Raises ModelError for an input of the wrong type, dtype or shape."""
        if not isinstance(x, np.ndarray):
            raise ModelError(f"{self._what}: input must be a numpy array, got {type(x).__name__}", reason=Reason.BAD_INPUT)
        if x.dtype != self._dtype:
            raise ModelError(f"{self._what}: input dtype: expected {self.spec.input_dtype}, got {x.dtype}", reason=Reason.BAD_INPUT)
        if x.shape != self.spec.input_shape:
            raise ModelError(f"{self._what}: input shape: expected {list(self.spec.input_shape)}, got {list(x.shape)}", reason=Reason.BAD_INPUT)
        if self._is_float and not np.isfinite(x).all():
            raise ModelError(f"{self._what}: input contains NaN or infinity", reason=Reason.BAD_INPUT)
        try:
            out = self._session.run(self._fetch, {self._feed_name: np.ascontiguousarray(x)})[0]
        except Exception as e:
            raise ModelError(f"{self._what}: inference failed: {type(e).__name__}") from None
        return np.asarray(out, dtype=np.float32)


# --- comparing outputs -------------------------------------------------------------


def outputs_match(spec: ModelSpec, expected: np.ndarray, got: np.ndarray) -> bool:
    """Whether ``got`` is ``expected`` within the model's tolerance.

    ``expected`` is the reference (the validator's own run): the test is
    ``|got - expected| <= atol + rtol * |expected|`` elementwise. Both must
    have the spec's output shape; NaN or infinity never matches.
    """
    try:
        e = np.asarray(expected)
        g = np.asarray(got)
    except Exception:
        return False
    if e.shape != spec.output_shape or g.shape != spec.output_shape:
        return False
    if e.dtype.kind not in "fiu" or g.dtype.kind not in "fiu":
        return False
    e = e.astype(np.float64)
    g = g.astype(np.float64)
    if not (np.isfinite(e).all() and np.isfinite(g).all()):
        return False
    return bool(np.allclose(g, e, rtol=spec.rtol, atol=spec.atol, equal_nan=False))


# --- benchmark inputs ---------------------------------------------------------------


@dataclass(frozen=True)
class SampleBank:
    """Real held-out inputs of a model (one row per sample, flattened) with their targets."""

    inputs: np.ndarray  # float64 [n, features]
    targets: np.ndarray  # [n]: class labels or regression targets
    feature_min: np.ndarray
    feature_max: np.ndarray
    feature_std: np.ndarray
    split: str


@lru_cache(maxsize=64)
def _load_bank(path: Path, sha256: bytes, model_id: str, features: int) -> SampleBank:
    what = f"samples of model {model_id!r}"
    try:
        doc = json.loads(read_pinned(path, sha256, what))
        inputs = np.asarray(doc["inputs"], dtype=np.float64)
        bank = SampleBank(
            inputs=inputs,
            targets=np.asarray(doc["targets"], dtype=np.float64),
            feature_min=np.asarray(doc["feature_min"], dtype=np.float64),
            feature_max=np.asarray(doc["feature_max"], dtype=np.float64),
            feature_std=np.asarray(doc["feature_std"], dtype=np.float64),
            split=str(doc.get("split", "")),
        )
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{what}: {path} is not a valid sample bank") from None
    n = inputs.shape[0] if inputs.ndim == 2 else 0
    if n == 0 or inputs.shape[1] != features or bank.targets.shape != (n,) or any(
        a.shape != (features,) for a in (bank.feature_min, bank.feature_max, bank.feature_std)
    ):
        raise ModelError(f"{what}: {path} does not hold rows of {features} features with one target each")
    for a in (bank.inputs, bank.targets, bank.feature_min, bank.feature_max, bank.feature_std):
        a.setflags(write=False)  # shared through the cache
    return bank


def load_samples(spec: ModelSpec) -> SampleBank | None:
    """The model's bank of real inputs, hash-checked, or None if it has none."""
    if spec.samples_path is None or spec.samples_sha256 is None:
        return None
    return _load_bank(spec.samples_path, spec.samples_sha256, spec.model_id, int(np.prod(spec.input_shape)))


def sample_input(spec: ModelSpec, rng: np.random.Generator) -> np.ndarray:
    """A realistic, fresh input for benchmarks.

    With a sample bank: a random real row plus small noise (a tenth of each
    feature's spread), clipped to the feature's observed range, so inputs
    look like real data but are never exact repeats. Without one: standard
    normal floats, or 0/1 integers.
    """
    dtype = np.dtype(spec.input_dtype)
    bank = load_samples(spec)
    if bank is None:
        if dtype.kind == "f":
            return rng.standard_normal(spec.input_shape).astype(dtype)
        return rng.integers(0, 2, size=spec.input_shape).astype(dtype)
    row = bank.inputs[rng.integers(0, bank.inputs.shape[0])]
    x = row + rng.standard_normal(row.shape) * (SAMPLE_NOISE * bank.feature_std)
    x = np.clip(x, bank.feature_min, bank.feature_max)
    if dtype.kind != "f":
        x = np.rint(x)
    return x.reshape(spec.input_shape).astype(dtype)
