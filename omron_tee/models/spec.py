"""A model's identity and contract: ``ModelSpec``, pinned by the sha256 of its file.

Everything a validator, miner or enclave needs to agree on a model: the exact
file (by hash), its input and output contract, and the tolerance within which
two runs count as the same answer. No registry, no runtime: both build on this.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

from omron_tee.errors import ModelError
from omron_tee.reasons import Reason

PROOF_SYSTEMS = ("tee", "zk")
# The dtypes the wire protocol can carry (omron_tee.protocol.Tensor).
INPUT_DTYPES = ("float32", "float64", "int64", "int32", "uint8")
TASKS = ("classification", "binary-classification", "regression", "unspecified")
# Ids travel in protocol messages and logs: keep them short and plain.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_MODEL_BYTES = 256 * 1024 * 1024


def sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def read_pinned(path: Path, sha256: bytes, what: str) -> bytes:
    """Read a file and check it against its pinned hash, so callers use exactly the bytes that were checked."""
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelError(f"{what}: file {path} is {size} bytes, more than the {MAX_MODEL_BYTES} allowed")
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{what}: cannot read {path}: {e.strerror or e}") from None
    got = hashlib.sha256(data).digest()
    if got != sha256:
        raise ModelError(
            f"{what}: file {path} has sha256 {got.hex()}, but the spec pins {sha256.hex()}; "
            "the file was modified or replaced - restore it or re-register it",
            reason=Reason.MODEL_HASH_MISMATCH,
        )
    return data


@dataclass(frozen=True)
class ModelSpec:
    """One model, identified by the sha256 of its file."""

    model_id: str
    sha256: bytes
    path: Path
    runtime: str
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    atol: float
    rtol: float
    proof_systems: tuple[str, ...]
    description: str
    output_name: str = ""  # empty: the model's only output
    task: str = "unspecified"
    # A bank of real inputs (and their targets) for benchmarks and checks; pinned like the model.
    samples_path: Path | None = None
    samples_sha256: bytes | None = None
    # Metrics the build measured on held-out data, e.g. (("test_accuracy", 0.97),).
    metrics: tuple[tuple[str, float], ...] = ()
    # LLMs: how chat messages become its tokens (``models.chat.FORMATS``); None: completions only.
    chat_format: str | None = None

    def __post_init__(self) -> None:
        what = f"model spec {self.model_id!r}"
        if not isinstance(self.model_id, str) or not _ID_RE.match(self.model_id):
            raise ModelError(f"{what}: model id must be 1-128 characters of letters, digits, '.', '_', ':' or '-', starting with a letter or digit")
        if not isinstance(self.sha256, bytes) or len(self.sha256) != 32:
            raise ModelError(f"{what}: sha256 must be 32 bytes")
        if not isinstance(self.runtime, str) or not self.runtime:
            raise ModelError(f"{what}: runtime must be a non-empty string")
        if not self.input_name:
            raise ModelError(f"{what}: input name must not be empty")
        for name, shape in (("input", self.input_shape), ("output", self.output_shape)):
            if not isinstance(shape, tuple) or not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
                raise ModelError(f"{what}: {name} shape must be a non-empty tuple of positive integers, got {shape!r}")
        if self.input_dtype not in INPUT_DTYPES:
            raise ModelError(f"{what}: input dtype {self.input_dtype!r} is not one of {', '.join(INPUT_DTYPES)}")
        for name, tol in (("atol", self.atol), ("rtol", self.rtol)):
            if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not math.isfinite(tol) or tol < 0:
                raise ModelError(f"{what}: {name} must be a finite number >= 0, got {tol!r}")
        if not self.proof_systems or any(p not in PROOF_SYSTEMS for p in self.proof_systems) or len(set(self.proof_systems)) != len(self.proof_systems):
            raise ModelError(f"{what}: proof systems must be distinct values among {', '.join(PROOF_SYSTEMS)}, got {list(self.proof_systems)}")
        if self.task not in TASKS:
            raise ModelError(f"{what}: task {self.task!r} is not one of {', '.join(TASKS)}")
        if (self.samples_path is None) != (self.samples_sha256 is None):
            raise ModelError(f"{what}: samples path and samples sha256 go together")
        if self.samples_sha256 is not None and len(self.samples_sha256) != 32:
            raise ModelError(f"{what}: samples sha256 must be 32 bytes")

    @property
    def sha256_hex(self) -> str:
        return self.sha256.hex()

    def metric(self, name: str) -> float | None:
        return dict(self.metrics).get(name)
