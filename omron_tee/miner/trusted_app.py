"""The trusted app: the part of a miner that runs inside the enclave.

It holds the channel keys (generated here, never exported), answers
attestation requests with evidence binding those keys to the requester's
nonce, and runs sealed inference requests: open, run the model, seal the
result and a signed receipt back to the requester's reply key. The miner's
operator only ever handles ciphertext.

Nothing here logs an input or an output.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omron_tee.attestation.binding import report_data_for
from omron_tee.channel import KemSuite, Receipt, key_id, reply_info, request_info, seal
from omron_tee.enclave.base import EnclaveBackend
from omron_tee.enclave.keys import EnclaveKeys
from omron_tee.errors import AuthError, ChannelError, ModelError, OmronTeeError, ProtocolError
from omron_tee.models import ModelRegistry, load_runtime
from omron_tee.protocol import AttestRequest, AttestResponse, InferencePayload, InferenceResult, InferRequest, InferResponse, ReplyRoute, Tensor, loads
from omron_tee.reasons import Reason

log = logging.getLogger("omron_tee.miner")


@dataclass(frozen=True)
class DevFaults:
    """Deliberate misbehaviour for the local network's demo miners (simulated enclave only)."""

    delay_s: float = 0.0
    wrong_output: bool = False
    bad_proof: bool = False  # zk: corrupt the proof's bytes
    mismatched_proof: bool = False  # zk: prove another input than the one answered

    @property
    def any(self) -> bool:
        return self.delay_s > 0 or self.wrong_output or self.bad_proof or self.mismatched_proof


class TrustedApp:
    def __init__(
        self,
        backend: EnclaveBackend,
        registry: ModelRegistry,
        model_ids: list[str] | None = None,
        *,
        hotkey: str,
        faults: DevFaults = DevFaults(),
        provers: Mapping[str, Any] | None = None,
    ) -> None:
        if not hotkey:
            raise ValueError("the trusted app serves one miner hotkey, learnt at start")
        self.hotkey = hotkey
        self.backend = backend
        self.registry = registry
        ids = model_ids if model_ids else registry.ids()
        self.specs = {m: registry.get(m) for m in ids}
        self.runtimes = {m: load_runtime(spec) for m, spec in self.specs.items()}
        self.faults = faults
        # zk provers (omron_tee.zk.prover.ZkProver) of the served models that declare zk.
        self.provers = {m: p for m, p in (provers or {}).items() if m in self.specs and "zk" in self.specs[m].proof_systems}
        self._keys: dict[KemSuite, EnclaveKeys] = {}
        self._by_key_id: dict[bytes, EnclaveKeys] = {}
        for kem in KemSuite:
            self._keys_for(kem)

    def _keys_for(self, kem: KemSuite) -> EnclaveKeys:
        keys = self._keys.get(kem)
        if keys is None:
            keys = EnclaveKeys(kem)
            self._keys[kem] = keys
            self._by_key_id[key_id(keys.public.hpke_public)] = keys
        return keys

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.specs)

    @property
    def proof_systems(self) -> dict[str, tuple[str, ...]]:
        return {m: ("tee", "zk") if m in self.provers else ("tee",) for m in self.specs}

    def attest(self, request: AttestRequest) -> AttestResponse:
        if request.hotkey and request.hotkey != self.hotkey:
            # Another miner relaying our enclave: evidence for its hotkey would never verify,
            # and evidence for ours would not help it, so say no in the clear.
            raise AuthError("this enclave attests only for the hotkey it serves", reason=Reason.HOTKEY_MISMATCH)
        keys = self._keys_for(KemSuite.parse(request.kem))
        evidence = self.backend.attest(report_data_for(request.nonce, keys.public, self.hotkey))
        return AttestResponse(evidence=evidence, keys=keys.public, models=self.models, proof_systems=self.proof_systems)

    def keys(self, key_id_: bytes) -> EnclaveKeys:
        """The channel keys a sealed request names, or ``unknown-key`` (the enclave restarted since)."""
        keys = self._by_key_id.get(key_id_)
        if keys is None:
            raise ChannelError("this enclave holds no such key (it restarted?): attest again", reason=Reason.UNKNOWN_KEY)
        return keys

    async def infer(self, request: InferRequest) -> InferResponse:
        keys = self.keys(request.key_id)
        # From here on, failures are answered inside the sealed reply when we can, so
        # that the operator cannot tell a spot check's error from a user's.
        plaintext = keys.hpke.open(request.sealed, request_info(request.key_id))
        try:
            fields = loads(plaintext, "sealed request")
            route = ReplyRoute.from_dict(fields)
            reply_kem = KemSuite.parse(route.reply_kem)
        except (ProtocolError, ChannelError):
            # Answered in the clear (there is no reply key to seal to): say nothing of what
            # was inside, not even a tensor's shape.
            raise ProtocolError("the sealed request is not a well-formed request") from None
        result = await self._answer(fields, keys)
        if self.faults.delay_s:
            await asyncio.sleep(self.faults.delay_s)
        # An unusable reply key is a ChannelError (bad-key), refused in the clear.
        return InferResponse(sealed=seal(reply_kem, route.reply_public, result.encode(), reply_info(route.nonce)))

    async def _answer(self, fields: Any, keys: EnclaveKeys) -> InferenceResult:
        """The result, or a named refusal; either way sealed to the requester by the caller."""
        try:
            payload = InferencePayload.from_dict(fields)
            if payload.proof_system == "zk":
                # Proving takes about a second of every core: keep the server answering meanwhile.
                return await asyncio.to_thread(self._run, payload, keys)
            return self._run(payload, keys)
        except OmronTeeError as e:
            return InferenceResult(output=None, receipt=None, error=f"{e.reason}: {e}")
        except Exception as e:  # noqa: BLE001 - a runtime meeting input it rejects: refuse, sealed
            log.warning("sealed request refused inside the enclave: %s", type(e).__name__)
            return InferenceResult(output=None, receipt=None, error=f"malformed-request: the model could not run this input ({type(e).__name__})")

    def _run(self, payload: InferencePayload, keys: EnclaveKeys) -> InferenceResult:
        spec = self.specs.get(payload.model_id)
        if spec is None:
            raise ModelError(f"model {payload.model_id!r} is not served here (serving: {', '.join(self.specs)})")
        x = payload.input.to_array()
        output = self.runtimes[payload.model_id].run(x)
        proof = prove_ms = None
        if payload.proof_system == "zk":
            proof, prove_ms = self._prove(payload.model_id, x)
        if self.faults.wrong_output:
            output = output + 0.5  # off by far more than any model's tolerance
        out = Tensor.from_array(output)
        # The receipt names the evidence the requester says it verified: any evidence
        # binding this signing key is as good, since only this enclave holds it.
        receipt = Receipt(
            nonce=payload.nonce,
            model_hash=spec.sha256,
            input_hash=payload.input.digest(),
            output_hash=out.digest(),
            evidence_hash=payload.evidence_hash,
            issued_at_ms=int(time.time() * 1000),
        )
        signed = Receipt(**{**receipt.__dict__, "signature": keys.sign(receipt.signed_bytes())})
        return InferenceResult(output=out, receipt=signed, proof=proof, prove_ms=prove_ms)

    def _prove(self, model_id: str, x: Any) -> tuple[bytes, float]:
        """A zk proof of this inference: the input stays private in it, the output is public."""
        prover = self.provers.get(model_id)
        if prover is None:
            raise ModelError(f"model {model_id!r} is not proven with zk here", reason=Reason.ZK_UNSUPPORTED)
        if self.faults.mismatched_proof:
            x = x * 0.5  # a valid proof, but of another inference
        zp = prover.prove(x)
        proof = zp.proof
        if self.faults.bad_proof:
            from omron_tee.zk.prover import tamper_proof

            proof = tamper_proof(proof)
        return proof, zp.prove_s * 1000.0
