"""The tensor workload: one pinned ONNX model, one input tensor, one output tensor (a stream of one part).

``sample_input`` (re-exported from ``models.samples``) is how it samples a benchmark input.

The validator samples a realistic input (a real held-out row plus noise),
recomputes the output with the same pinned runtime, and accepts the miner's
output within the model's tolerance.
"""

from __future__ import annotations

import hashlib
import inspect
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from omron_tee.errors import ChannelError, OmronTeeError, ProtocolError
from omron_tee.models.samples import sample_input
from omron_tee.models.spec import INPUT_DTYPES, ModelSpec
from omron_tee.protocol import b64, field_of, unb64, unhex_id
from omron_tee.reasons import Reason
from omron_tee.workloads.base import Collector, Json, Judgement, Produced, Served, Workload

MAX_TENSOR_BYTES = 4 * 1024 * 1024
MAX_PROOF_BYTES = 1024 * 1024  # a zk answer's proof (about 17 kB for the shipped circuit)


@dataclass(frozen=True)
class Tensor:
    """A dense array in a canonical little-endian encoding (what hashes cover)."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @classmethod
    def from_array(cls, array: np.ndarray) -> "Tensor":
        a = np.ascontiguousarray(array)
        if a.dtype.name not in INPUT_DTYPES:
            raise ProtocolError(f"unsupported tensor dtype {a.dtype.name}")
        return cls(a.dtype.name, tuple(int(d) for d in a.shape), a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())

    def to_array(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(self.shape)

    def digest(self) -> bytes:
        """sha-256 of the canonical form, ``u32 length || "dtype:shape" || data``, hashed in two pieces
        rather than built (a large tensor is not copied to be hashed)."""
        header = f"{self.dtype}:{','.join(map(str, self.shape))}".encode()
        h = hashlib.sha256(struct.pack(">I", len(header)) + header)
        h.update(self.data)
        return h.digest()

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape), "data": b64(self.data)}

    def to_wire(self) -> dict[str, Any]:
        """As ``to_json`` with the data as bytes: a binary attachment inside a seal (``protocol.encode_sealed``)."""
        return {"dtype": self.dtype, "shape": list(self.shape), "data": self.data}

    @classmethod
    def from_json(cls, data: Any) -> "Tensor":
        dtype = field_of(data, "dtype", "tensor")
        shape = field_of(data, "shape", "tensor")
        if not isinstance(dtype, str) or dtype not in INPUT_DTYPES:
            raise ProtocolError(f"unsupported tensor dtype {str(dtype)[:16]!r}; known: {', '.join(sorted(INPUT_DTYPES))}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(type(d) is int and 0 <= d <= 1 << 20 for d in shape):
            raise ProtocolError("tensor shape must be a list of at most 8 integers from 0 to 2^20")
        # Python integers, not np.prod: int64 products of large dimensions wrap around.
        expected = np.dtype(dtype).itemsize
        for d in shape:
            expected *= d
        if expected > MAX_TENSOR_BYTES:
            raise ProtocolError(f"tensor of shape {shape} exceeds {MAX_TENSOR_BYTES} bytes", reason=Reason.TOO_LARGE)
        raw = field_of(data, "data", "tensor")
        raw = raw if isinstance(raw, bytes) else unb64(raw, "tensor.data")  # an attachment, or base64 in JSON
        if len(raw) != expected:
            raise ProtocolError(f"tensor data has {len(raw)} bytes, shape {shape} of {dtype} needs {expected}")
        return cls(dtype, tuple(shape), raw)


@dataclass(frozen=True)
class TensorResult:
    output: np.ndarray
    proof: bytes | None = None  # zk: the EZKL proof, public instances are the outputs
    prove_ms: float | None = None  # zk: how long proving took inside the enclave
    circuit: bytes | None = None  # zk: the id of the circuit it was proven with (zk.circuits.Circuit.circuit_id)


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


async def run_tensor(runtime: Any, value: np.ndarray) -> np.ndarray:
    """One inference; a runtime may answer with an awaitable (one that runs elsewhere, or a simulated slow one)."""
    out = runtime.run(value)
    return await out if inspect.isawaitable(out) else out


class _TensorCollector(Collector[TensorResult]):
    def __init__(self) -> None:
        self._result: TensorResult | None = None
        self._digest = b""

    def part(self, data: Json) -> TensorResult:
        if self._result is not None:
            raise ChannelError("a tensor answer has one part", reason=Reason.STREAM_MALFORMED)
        try:
            out = Tensor.from_json(field_of(data, "output", "tensor answer"))
            proof = data.get("proof")
            proof_bytes = unb64(proof, "tensor answer proof") if proof is not None else None
            if proof_bytes is not None and len(proof_bytes) > MAX_PROOF_BYTES:
                raise ProtocolError(f"proof exceeds {MAX_PROOF_BYTES} bytes")
            circuit = data.get("circuit")
            circuit_id = unhex_id(circuit, "tensor answer circuit") if circuit is not None else None
        except OmronTeeError as e:
            raise ChannelError(f"malformed tensor answer: {e}", reason=Reason.MALFORMED_RESULT) from None
        prove_ms = data.get("prove_ms")
        self._digest = out.digest()
        self._result = TensorResult(
            out.to_array(), proof_bytes,
            float(prove_ms) if isinstance(prove_ms, (int, float)) and not isinstance(prove_ms, bool) else None,
            circuit_id,
        )
        return self._result

    def finish(self, meta: Json) -> tuple[TensorResult, bytes]:
        if self._result is None:
            raise ChannelError("the answer carries no output", reason=Reason.MALFORMED_RESULT)
        return self._result, self._digest


class TensorWorkload(Workload[np.ndarray, TensorResult]):
    name = "tensor"
    latency_class = "tee"
    runtimes = ("onnx",)
    max_frame = 8 * 1024 * 1024  # one part: the whole output tensor
    max_stream = 16 * 1024 * 1024

    def encode_input(self, spec: ModelSpec, value: np.ndarray) -> Json:
        return Tensor.from_array(value).to_wire()

    def decode_input(self, spec: ModelSpec, data: Json) -> np.ndarray:
        # The runtime checks dtype and shape against the spec (a named bad-input refusal).
        return Tensor.from_json(data).to_array()

    def input_hash(self, spec: ModelSpec, value: np.ndarray) -> bytes:
        return Tensor.from_array(value).digest()

    def prepare_input(self, spec: ModelSpec, value: np.ndarray) -> tuple[Json, bytes]:
        t = Tensor.from_array(value)  # one canonical encoding for the wire and the hash
        return t.to_wire(), t.digest()

    def accept_input(self, spec: ModelSpec, data: Json) -> tuple[np.ndarray, bytes]:
        t = Tensor.from_json(data)
        return t.to_array(), t.digest()

    async def produce(self, served: Served, value: np.ndarray, out: Produced) -> AsyncIterator[Json]:
        output = Tensor.from_array(await run_tensor(served.runtime, value))
        out.output_hash = output.digest()
        yield {"output": output.to_wire()}

    def collector(self, spec: ModelSpec, value: np.ndarray) -> Collector[TensorResult]:
        return _TensorCollector()

    def result_json(self, result: TensorResult) -> Json:
        return {"output": Tensor.from_array(result.output).to_json()}

    def output_hash_of(self, data: Json) -> bytes:
        return Tensor.from_json(field_of(data, "output", "result")).digest()

    def sample(self, spec: ModelSpec, rng: np.random.Generator) -> np.ndarray:
        return sample_input(spec, rng)

    async def reference(self, runtime: Any, spec: ModelSpec, value: np.ndarray) -> TensorResult:
        return TensorResult(runtime.run(value))

    def judge(self, spec: ModelSpec, value: np.ndarray, expected: TensorResult, got: TensorResult) -> Judgement:
        if not outputs_match(spec, expected.output, got.output):
            return Judgement(False, Reason.WRONG_OUTPUT, "output differs from the validator's recomputation")
        return Judgement(True, Reason.OK, "correct")

