"""Proving one inference: witness (private input) -> proof (public output).

Runs inside the trusted app, so the input never leaves the enclave in the
clear: it goes to ezkl as a string, and the witness (which contains it)
lives only in a private memory-backed file for the few milliseconds proving
takes. Neither is ever logged; ezkl's error messages can quote the witness,
so they are not passed on.
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

from omron_tee.zk.circuits import Circuit, call, ezkl_module, input_json
from omron_tee.zk.errors import ZkError
from omron_tee.reasons import Reason

# Only these fields of ezkl's proof file are needed to verify; the rest repeats them.
PROOF_FIELDS = ("protocol", "instances", "proof", "split", "version")


def _private_dir() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


@dataclass(frozen=True)
class ZkProof:
    proof: bytes  # canonical JSON of ezkl's proof (public: instances are the outputs)
    output: np.ndarray  # the dequantised public output
    prove_s: float  # witness + proof
    witness_s: float = 0.0
    circuit_id: bytes = b""  # the circuit it was proven with (Circuit.circuit_id)


def compact_proof(raw: bytes) -> bytes:
    doc = json.loads(raw)
    return json.dumps({k: doc[k] for k in PROOF_FIELDS if k in doc}, separators=(",", ":"), sort_keys=True).encode()


class ZkProver:
    """Proves inferences of one circuit. One proof at a time: proving uses every core."""

    _lock = threading.Lock()

    def __init__(self, circuit: Circuit) -> None:
        for p in (circuit.compiled_path, circuit.pk_path, circuit.srs.path):
            if not p.is_file():
                raise ZkError(f"zk artifact {p} is missing: build the circuit of {circuit.model_id!r} first", reason=Reason.ZK_NOT_BUILT)
        self.circuit = circuit
        self.ezkl = ezkl_module()

    def prove(self, x: np.ndarray) -> ZkProof:
        c = self.circuit
        t0 = time.perf_counter()
        fd_w, witness = tempfile.mkstemp(prefix="omron-zk-", suffix=".w", dir=_private_dir())
        fd_p, proof_path = tempfile.mkstemp(prefix="omron-zk-", suffix=".p", dir=_private_dir())
        os.close(fd_w)
        os.close(fd_p)
        try:
            with self._lock:
                try:
                    w = call(self.ezkl.gen_witness, input_json(x), str(c.compiled_path), witness)
                    t_w = time.perf_counter() - t0
                    call(self.ezkl.prove, witness, str(c.compiled_path), str(c.pk_path), proof_path, srs_path=str(c.srs.path))
                except Exception as e:  # the message may quote the witness: name only the kind
                    raise ZkError(f"zk proving failed for {c.model_id!r} ({type(e).__name__})", reason=Reason.ZK_PROVE_FAILED) from None
            raw = Path(proof_path).read_bytes()
        finally:
            for p in (witness, proof_path):
                try:
                    os.unlink(p)
                except OSError:
                    pass
        output = c.dequantise([f for out in w["outputs"] for f in out])
        return ZkProof(proof=compact_proof(raw), output=output, prove_s=time.perf_counter() - t0, witness_s=t_w, circuit_id=c.circuit_id)


def tamper_proof(proof: bytes) -> bytes:
    """The proof with bytes of its body flipped (still well-formed JSON): for tests and demo faults."""
    doc = json.loads(proof)
    body = doc["proof"]
    for i in range(32, 64):  # the first commitment: no longer a valid curve point, or a different one
        body[i] ^= 0x5A
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
