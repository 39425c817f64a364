"""Running pinned ONNX models reproducibly (the "onnx" runtime).

A validator recomputes a miner's answer and compares the two with the
model's tolerance, so both sides must run the model the same way: the
session options below are pinned, not left to onnxruntime's defaults.
"""

from __future__ import annotations

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
