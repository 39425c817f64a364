"""The zk workload: a tensor model whose answer also carries an EZKL proof of the inference.

The input stays private in the proof; the output is its public instance. The
validator checks the proof with its own circuit (``omron_tee.zk.verifier``)
before it recomputes the output. Proving takes about a second of every core, so
the enclave proves in a thread and zk latencies are compared with zk latencies.

Circuits must agree: each proof carries the id of the circuit it was proven with
(``Circuit.circuit_id``: its compiled settings and verifying key), and so does the
miner's attestation. A miner whose circuit differs from the validator's own build is
not sent zk probes, and a proof from another circuit is ``circuit-mismatch``: no one's
fault, never charged (docs/SCORING.md). With the circuits agreeing, a proof that does
not verify is a forgery: ``zk-proof-invalid``, a strike. One whose public outputs are not
the claimed output is ``zk-output-mismatch``, also a strike.

``verify_fraction`` of the proofs are verified (default all): verifying costs the
validator a few milliseconds against the miner's second of proving, so there is little
to save; a lower fraction still catches a miner that forges proofs, since one forgery
found is a strike (score 0, and probation).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np

from omron_tee.errors import ModelError, OmronTeeError
from omron_tee.models.spec import ModelSpec
from omron_tee.protocol import b64
from omron_tee.reasons import Reason
from omron_tee.workloads.base import Json, Judgement, Produced, Served
from omron_tee.workloads.tensor import Tensor, TensorResult, TensorWorkload, run_tensor


class ZkWorkload(TensorWorkload):
    name = "zk"
    latency_class = "zk"
    optional = True

    def __init__(self, verifiers: Mapping[str, Any] | None = None, *, verify_fraction: float = 1.0, seed: int | None = None) -> None:
        # model id -> omron_tee.zk.verifier.ZkVerifier (the validator's own circuit and SRS)
        self.verifiers = dict(verifiers or {})
        if not 0.0 < verify_fraction <= 1.0:
            raise ValueError(f"verify_fraction {verify_fraction!r} must be in (0, 1]")
        self.verify_fraction = verify_fraction
        self._rng = np.random.default_rng(seed)

    def circuit_of(self, model_id: str) -> bytes | None:
        """The id of this validator's own circuit for ``model_id`` (None: no verifier)."""
        v = self.verifiers.get(model_id)
        return v.circuit.circuit_id if v is not None else None

    def serves(self, spec: ModelSpec) -> bool:
        return spec.runtime in self.runtimes and "zk" in spec.proof_systems

    unoffered_reason = Reason.ZK_UNSUPPORTED

    def offered(self, offer: Any, model_id: str) -> bool:
        return offer.offers(model_id, "zk") and not self._mismatched(offer, model_id)

    def _mismatched(self, offer: Any, model_id: str) -> bool:
        theirs = offer.zk_circuits.get(model_id)
        if theirs is None:  # a miner of an older release: its proofs say whether they match
            return False
        ours = self.circuit_of(model_id)
        return ours is not None and theirs != ours

    def unoffered(self, offer: Any, model_id: str) -> tuple[str, str]:
        if offer.offers(model_id, "zk") and self._mismatched(offer, model_id):
            return Reason.CIRCUIT_MISMATCH, mismatch_message(model_id, offer.zk_circuits[model_id], self.circuit_of(model_id))
        return super().unoffered(offer, model_id)

    def judges(self, spec: ModelSpec) -> bool:
        return spec.model_id in self.verifiers

    async def produce(self, served: Served, value: np.ndarray, out: Produced) -> AsyncIterator[Json]:
        if served.prover is None:
            raise ModelError(f"model {served.spec.model_id!r} is not proven with zk here", reason=Reason.ZK_UNSUPPORTED)
        output = Tensor.from_array(await run_tensor(served.runtime, value))
        zp = await asyncio.to_thread(served.prover.prove, value)  # keep the server answering meanwhile
        out.output_hash = output.digest()
        part = {"output": output.to_json(), "proof": b64(zp.proof), "prove_ms": zp.prove_s * 1000.0}
        if zp.circuit_id:
            part["circuit"] = zp.circuit_id.hex()
        yield part

    def judge(self, spec: ModelSpec, value: np.ndarray, expected: TensorResult, got: TensorResult) -> Judgement:
        verifier = self.verifiers.get(spec.model_id)
        if verifier is None:
            return Judgement(None, Reason.ZK_UNSUPPORTED, f"no zk verifier for {spec.model_id}")
        ours = verifier.circuit.circuit_id
        if got.circuit is not None and got.circuit != ours:
            return Judgement(None, Reason.CIRCUIT_MISMATCH, mismatch_message(spec.model_id, got.circuit, ours))
        checked = self.verify_fraction >= 1.0 or self._rng.random() < self.verify_fraction
        if checked:
            try:
                verifier.verify(got.proof, got.output, input=value)
            except OmronTeeError as e:
                # With the circuit named and ours, a proof that fails is forged or of another inference:
                # a strike. Without a circuit id (an older miner) it may be a mismatch: not a strike.
                strike = e.reason == Reason.ZK_OUTPUT_MISMATCH or (got.circuit is not None and e.reason in STRIKE_REASONS)
                return Judgement(False if strike else None, e.reason, str(e))
        j = super().judge(spec, value, expected, got)
        proving = f", proving {got.prove_ms:.0f} ms" if got.prove_ms is not None else ""
        done = "proof verified" if checked else "proof not sampled for verification"
        return Judgement(j.correct, j.reason, f"{done}, {j.detail}{proving}") if j.correct else j


STRIKE_REASONS = frozenset({Reason.ZK_PROOF_INVALID, Reason.ZK_INPUT_MISMATCH, Reason.ZK_OUTPUT_MISMATCH})


def mismatch_message(model_id: str, theirs: bytes, ours: bytes | None) -> str:
    return (f"the miner proves {model_id} with circuit {theirs.hex()[:16]}…, this validator verifies with "
            f"{(ours or b'').hex()[:16]}…: build both from the same model, ezkl version and SRS (docs/ZK.md); not charged")
