"""The zk workload: a tensor model whose answer also carries an EZKL proof of the inference.

The input stays private in the proof; the output is its public instance. The
validator checks the proof with its own circuit (``omron_tee.zk.verifier``)
before it recomputes the output: a proof that does not verify is
``zk-proof-invalid``, one whose public outputs are not the claimed output is
``zk-output-mismatch``. Proving takes about a second of every core, so the
enclave proves in a thread and zk latencies are compared with zk latencies.
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

    def __init__(self, verifiers: Mapping[str, Any] | None = None) -> None:
        # model id -> omron_tee.zk.verifier.ZkVerifier (the validator's own circuit and SRS)
        self.verifiers = dict(verifiers or {})

    def serves(self, spec: ModelSpec) -> bool:
        return spec.runtime in self.runtimes and "zk" in spec.proof_systems

    unoffered_reason = Reason.ZK_UNSUPPORTED

    def offered(self, offer: Any, model_id: str) -> bool:
        return offer.offers(model_id, "zk")

    def judges(self, spec: ModelSpec) -> bool:
        return spec.model_id in self.verifiers

    async def produce(self, served: Served, value: np.ndarray, out: Produced) -> AsyncIterator[Json]:
        if served.prover is None:
            raise ModelError(f"model {served.spec.model_id!r} is not proven with zk here", reason=Reason.ZK_UNSUPPORTED)
        output = Tensor.from_array(await run_tensor(served.runtime, value))
        zp = await asyncio.to_thread(served.prover.prove, value)  # keep the server answering meanwhile
        out.output_hash = output.digest()
        yield {"output": output.to_json(), "proof": b64(zp.proof), "prove_ms": zp.prove_s * 1000.0}

    def judge(self, spec: ModelSpec, value: np.ndarray, expected: TensorResult, got: TensorResult) -> Judgement:
        verifier = self.verifiers.get(spec.model_id)
        if verifier is None:
            return Judgement(None, Reason.ZK_UNSUPPORTED, f"no zk verifier for {spec.model_id}")
        try:
            verifier.verify(got.proof, got.output, input=value)
        except OmronTeeError as e:
            return Judgement(False if e.reason == Reason.ZK_OUTPUT_MISMATCH else None, e.reason, str(e))
        j = super().judge(spec, value, expected, got)
        proving = f", proving {got.prove_ms:.0f} ms" if got.prove_ms is not None else ""
        return Judgement(j.correct, j.reason, f"proof verified, {j.detail}{proving}") if j.correct else j
