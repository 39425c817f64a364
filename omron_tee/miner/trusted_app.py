"""The trusted app: the part of a miner that runs inside the enclave, the same for every workload.

It holds the channel keys (generated here, never exported), answers
attestation requests with evidence binding those keys to the requester's
nonce and to this miner's hotkey, and answers sealed requests: open, hand the
input to the workload that runs the model, seal each part of the answer into
the stream, then sign the receipt. The miner's operator only ever handles
ciphertext.

Nothing here logs an input or an output, and nothing here misbehaves on
purpose: development faults wrap the runtimes from outside
(``enclave.simulated.DevFaults``, simulated enclaves only).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from omron_tee.attestation.binding import batch_nonce, report_data_for
from omron_tee.channel.hpke import KemSuite, key_id, request_info
from omron_tee.channel.receipt import Binding
from omron_tee.channel.receipt import issue as issue_receipt
from omron_tee.channel.stream import ChunkSealer, frame, seal_header
from omron_tee.enclave.base import EnclaveBackend
from omron_tee.enclave.keys import EnclaveKeys
from omron_tee.errors import LIBRARY_DECODE_ERRORS, AuthError, ChannelError, ModelError, OmronTeeError, ProtocolError
from omron_tee.models.registry import ModelRegistry
from omron_tee.protocol import (BATCH_ANSWER, BATCH_EVIDENCE, BATCH_NO_EVIDENCE, BATCH_REFUSED, AttestRequest, AttestResponse, InferBatch, InferRequest,
                                ReplyRoute, SealedRequest, decode_sealed)
from omron_tee.reasons import Reason
from omron_tee.workloads import default_workloads
from omron_tee.workloads.base import Produced, Served, Workload, Workloads

log = logging.getLogger("omron_tee.miner")


@dataclass(frozen=True)
class Opened:
    """A sealed request, opened: its stream's header drawn and its stream key derived."""

    header: bytes
    stream_key: bytes
    route: ReplyRoute
    keys: EnclaveKeys
    request: SealedRequest | None  # None: refused for ``refusal``, inside the sealed stream
    workload: Workload | None = None
    value: Any = None
    input_hash: bytes = b""
    refusal: str | None = None

    @property
    def streamed(self) -> bool:
        """Whether the answer's parts are worth sending as they come (else the miner sends it whole)."""
        return self.workload is not None and self.workload.streamed


class TrustedApp:
    def __init__(
        self,
        backend: EnclaveBackend,
        registry: ModelRegistry,
        model_ids: list[str] | None = None,
        *,
        hotkey: str,
        workloads: Workloads | None = None,
        provers: Mapping[str, Any] | None = None,
    ) -> None:
        if not hotkey:
            raise ValueError("the trusted app serves one miner hotkey, learnt at start")
        self.hotkey = hotkey
        self.backend = backend
        self.registry = registry
        self.workloads = workloads if workloads is not None else default_workloads()
        ids = model_ids if model_ids else registry.ids()
        self.specs = {m: registry.get(m) for m in ids}
        provers = provers or {}
        # What the enclave serves, each model wrapped by the backend (only a simulated one changes anything).
        self.served = {
            m: backend.instrument(Served(spec, registry.runtime(m), provers.get(m) if "zk" in spec.proof_systems else None))
            for m, spec in self.specs.items()
        }
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
        return {m: ("tee", "zk") if s.prover is not None else ("tee",) for m, s in self.served.items()}

    @property
    def zk_circuits(self) -> dict[str, bytes]:
        return {m: s.prover.circuit.circuit_id for m, s in self.served.items() if s.prover is not None}

    def attest(self, request: AttestRequest) -> AttestResponse:
        if request.hotkey and request.hotkey != self.hotkey:
            # Another miner relaying our enclave: evidence for its hotkey would never verify,
            # and evidence for ours would not help it, so say no in the clear.
            raise AuthError("this enclave attests only for the hotkey it serves", reason=Reason.HOTKEY_MISMATCH)
        keys = self._keys_for(KemSuite.parse(request.kem))
        evidence = self.backend.attest(report_data_for(request.nonce, keys.public, self.hotkey))
        return AttestResponse(evidence=evidence, keys=keys.public, models=self.models, proof_systems=self.proof_systems,
                              zk_circuits=self.zk_circuits)

    def fresh_evidence(self, nonce: bytes, keys: EnclaveKeys) -> Any:
        """Evidence binding a request's own nonce, the keys it was sealed to and this hotkey: the
        request's proof of freshness, returned with its answer (one round trip)."""
        return self.backend.attest(report_data_for(nonce, keys.public, self.hotkey))

    def keys(self, key_id_: bytes) -> EnclaveKeys:
        """The channel keys a sealed request names, or ``unknown-key`` (the enclave restarted since)."""
        keys = self._by_key_id.get(key_id_)
        if keys is None:
            raise ChannelError("this enclave holds no such key (it restarted?): attest again", reason=Reason.UNKNOWN_KEY)
        return keys

    def open(self, request: InferRequest) -> Opened:
        """Open a sealed request. Errors here are answered in the clear (``ChannelError``/``ProtocolError``);
        from the header on, every refusal travels inside the sealed stream, so that the operator
        cannot tell a spot check's error from a user's."""
        keys = self.keys(request.key_id)
        plaintext = keys.hpke.open(request.sealed, request_info(request.key_id), view=True)
        try:
            fields = decode_sealed(plaintext, "sealed request")
            route = ReplyRoute.from_dict(fields)
        except ProtocolError:
            # No reply secret to seal with: say nothing of what was inside, not even a tensor's shape.
            raise ProtocolError("the sealed request is not a well-formed request") from None
        stream_key, header = seal_header(route.reply_secret, route.nonce)
        try:
            sealed = SealedRequest.from_dict(fields, route=route)
            spec = self.specs.get(sealed.model_id)
            if spec is None:
                raise ModelError(f"model {sealed.model_id!r} is not served here (serving: {', '.join(self.specs)})", reason=Reason.UNKNOWN_MODEL)
            workload = self.workloads.get(sealed.workload)
            if not workload.serves(spec):
                raise ModelError(f"model {spec.model_id!r} does not run as {workload.name!r}", reason=Reason.UNSUPPORTED)
            value, input_hash = workload.accept_input(spec, sealed.input)
        except (OmronTeeError, *LIBRARY_DECODE_ERRORS) as e:
            reason = e.reason if isinstance(e, OmronTeeError) else Reason.MALFORMED_MESSAGE
            return Opened(header, stream_key, route, keys, None, refusal=f"{reason}: {e}")
        return Opened(header, stream_key, route, keys, sealed, workload, value, input_hash)

    async def answer(self, opened: Opened, *, batched: bool = False) -> AsyncIterator[bytes]:
        """The sealed stream: the header, one chunk per part (a workload that does not stream: none),
        then the final chunk with the signed receipt (and, not streaming, the parts). A refusal
        is a final chunk too, padded like an answer's, so the operator cannot tell them apart."""
        yield opened.header
        sealer = ChunkSealer(opened.stream_key, opened.route.nonce)
        req, workload = opened.request, opened.workload
        if req is None or workload is None:
            yield sealer.seal({"n": 0, "error": opened.refusal}, final=True)
            return
        served = self.served[req.model_id]
        produced = Produced()
        parts = 0
        held: list[object] = []  # a workload that does not stream sends its parts in the final chunk
        error: str | None = None
        try:
            async for part in workload.produce(served, opened.value, produced):
                if workload.streamed:
                    yield sealer.seal({"p": part})
                else:
                    held.append(part)
                parts += 1
        except OmronTeeError as e:
            error = f"{e.reason}: {e}"
        except Exception as e:  # noqa: BLE001 - a runtime meeting input it rejects: refuse, sealed
            log.warning("sealed request refused inside the enclave: %s", type(e).__name__)
            error = f"{Reason.MALFORMED_REQUEST}: the model could not run this input ({type(e).__name__})"
        if error is not None:
            yield sealer.seal({"n": parts, "error": error}, final=True)
            return
        # The receipt names the evidence the requester says it verified: any evidence
        # binding this signing key is as good, since only this enclave holds it.
        binding = Binding(req.nonce, served.spec.sha256, opened.input_hash, produced.output_hash, req.evidence_hash)
        receipt = issue_receipt(binding, opened.keys.sign, issued_at_ms=int(time.time() * 1000))
        final: dict[str, object] = {"n": parts, "meta": produced.meta, "receipt": receipt.to_json()}
        if held:
            final["ps"] = held
        if req.fresh and not batched:  # in a batch, one evidence after every answer covers them all
            try:
                final["evidence"] = self.fresh_evidence(req.nonce, opened.keys).to_json()
            except OmronTeeError as e:  # the TEE would not attest now: a sealed, named refusal
                yield sealer.seal({"n": parts, "error": f"{e.reason}: {e}"}, final=True)
                return
        yield sealer.seal(final, final=True)

    async def answer_whole(self, opened: Opened, *, batched: bool = False) -> bytes:
        return b"".join([f async for f in self.answer(opened, batched=batched)])

    async def answer_batch(self, batch: InferBatch) -> bytes:
        """A batch's answer: each request's sealed stream, whole (or its refusal in the clear, as ``/infer``
        would refuse it), in order; then, for a fresh batch, one evidence bound to ``batch_nonce`` of the
        answered requests' nonces, the key they were sealed to and this hotkey. A workload that streams is
        refused inside its sealed stream: its parts are worth sending as they come, which a batch does not."""
        out: list[bytes] = []
        nonces: list[bytes] = []
        keys: EnclaveKeys | None = None
        for request in batch.requests:
            try:
                opened = self.open(request)
            except OmronTeeError as e:
                out.append(frame(_error_json(e.reason, str(e)), BATCH_REFUSED))
                continue
            if opened.streamed:
                opened = dataclasses.replace(opened, request=None, refusal=f"{Reason.UNSUPPORTED}: a workload that streams is not answered in a batch")
            out.append(frame(await self.answer_whole(opened, batched=True), BATCH_ANSWER))
            nonces.append(opened.route.nonce)
            keys = opened.keys
        if batch.fresh and keys is not None:
            try:
                evidence = self.backend.attest(report_data_for(batch_nonce(nonces), keys.public, self.hotkey))
                out.append(frame(json.dumps(evidence.to_json(), separators=(",", ":")).encode(), BATCH_EVIDENCE))
            except OmronTeeError as e:  # the TEE would not attest now: named, for every request of the batch
                out.append(frame(_error_json(e.reason, str(e)), BATCH_NO_EVIDENCE))
        return b"".join(out)


def _error_json(reason: str, message: str) -> bytes:
    """The same named refusal ``/infer`` answers in the clear (``wire.server``'s error body)."""
    return json.dumps({"error": {"reason": str(reason), "message": message[:300]}}, separators=(",", ":")).encode()
