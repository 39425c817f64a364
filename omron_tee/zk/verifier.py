"""Verifying a proof of inference and that it proves the claimed output.

The verifier uses its own circuit (built from the pinned model and the SRS
it trusts), never keys sent by the prover. It checks, in order:

1. the proof verifies against our verifying key (else ``zk-proof-invalid``);
2. for a circuit whose input is hashed or public, that the proof is about the
   requester's input (else ``zk-input-mismatch``);
3. its public outputs, dequantised with the circuit's output scale, equal the
   claimed output within the circuit's tolerance (else ``zk-output-mismatch``).

The proof's own "pretty" fields are ignored: only its instances are verified.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omron_tee.zk.circuits import Circuit, call, ezkl_module
from omron_tee.zk.errors import ZkError, ZkRefused
from omron_tee.reasons import Reason

MAX_PROOF_BYTES = 1 << 20


@dataclass(frozen=True)
class ZkVerdict:
    proven_output: np.ndarray
    verify_s: float


class ZkVerifier:
    _lock = threading.Lock()

    def __init__(self, circuit: Circuit) -> None:
        for p in (circuit.settings_path, circuit.vk_path, circuit.srs.path):
            if not p.is_file():
                raise ZkError(f"zk artifact {p} is missing: build the circuit of {circuit.model_id!r} first", reason=Reason.ZK_NOT_BUILT)
        self.circuit = circuit
        self.ezkl = ezkl_module()

    def verify(self, proof: bytes | None, claimed: np.ndarray, *, input: np.ndarray | None = None) -> ZkVerdict:
        """The proven output if ``proof`` verifies and proves ``claimed``; else ``ZkRefused`` naming why.

        ``input``: the requester's input; checked against the proof when the
        circuit makes it (or its hash) public."""
        t0 = time.perf_counter()
        c = self.circuit
        if not proof:
            raise ZkRefused("the answer carries no zk proof", reason=Reason.ZK_PROOF_INVALID)
        if len(proof) > MAX_PROOF_BYTES:
            raise ZkRefused(f"zk proof of {len(proof)} bytes exceeds {MAX_PROOF_BYTES}", reason=Reason.ZK_PROOF_INVALID)
        try:
            doc = json.loads(proof)
            flat = [str(f) for inst in doc["instances"] for f in inst]
            n_out = int(np.prod(c.output_shape))
            if len(flat) < n_out:
                raise ValueError
            prefix, felts = flat[:-n_out], flat[-n_out:]  # outputs are the last public instances
        except (ValueError, KeyError, TypeError, IndexError):
            raise ZkRefused("zk proof is malformed", reason=Reason.ZK_PROOF_INVALID) from None
        fd, path = tempfile.mkstemp(prefix="omron-zk-", suffix=".proof")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(proof)
            with self._lock:
                try:
                    ok = call(self.ezkl.verify, path, str(c.settings_path), str(c.vk_path), srs_path=str(c.srs.path))
                except Exception as e:  # ezkl raises for undecodable points, unsatisfied constraints, ...
                    raise ZkRefused(f"zk proof does not verify: {str(e)[:160]}", reason=Reason.ZK_PROOF_INVALID) from None
        finally:
            Path(path).unlink(missing_ok=True)
        if ok is not True:
            raise ZkRefused("zk proof does not verify", reason=Reason.ZK_PROOF_INVALID)
        try:
            proven = c.dequantise(felts)
        except (ZkError, ValueError, RuntimeError):
            raise ZkRefused("zk proof's public outputs do not fit the circuit", reason=Reason.ZK_PROOF_INVALID) from None
        if input is not None and c.input_visibility != "private":
            try:
                want = c.input_instances(input)
            except Exception:  # an input the circuit cannot represent is not the one proven
                want = None
            if prefix != want:
                raise ZkRefused("zk proof is not about the requester's input", reason=Reason.ZK_INPUT_MISMATCH)
        if not c.within_tolerance(proven, claimed):
            raise ZkRefused(
                f"zk proof's public output differs from the claimed output by more than {c.atol:.4g}",
                reason=Reason.ZK_OUTPUT_MISMATCH,
            )
        return ZkVerdict(proven_output=proven, verify_s=time.perf_counter() - t0)
