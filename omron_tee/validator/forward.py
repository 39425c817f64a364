"""One benchmark exchange with one miner, apart from any loop or server.

attest (fresh nonce) -> verify evidence against the policy -> seal a
benchmark input to the attested key -> open the answer, check the receipt
-> recompute the output locally and compare within the model's tolerance.
A zk probe (``proof_system="zk"``) also asks the enclave for an EZKL proof
and verifies it before the recomputation: a proof that does not verify is
``zk-proof-invalid``, one whose public outputs are not the claimed output is
``zk-output-mismatch``.
The result is an ``Outcome`` for scoring; nothing here raises for a miner's
fault, and nothing here logs an input or an output.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.chain.base import Neuron
from omron_tee.channel import KemSuite
from omron_tee.errors import AttestationError, MinerError, OmronTeeError
from omron_tee.exchange import AttestedSession, check_attestation, new_nonce, open_result, seal_request
from omron_tee.models import ModelRegistry, load_runtime, outputs_match, sample_input
from omron_tee.protocol import AttestRequest, AttestResponse, InferResponse
from omron_tee.validator.identity import IdentityRegistry, identities_of
from omron_tee.validator.scoring import Outcome
from omron_tee.wire.client import SignedClient
from omron_tee.reasons import Reason

log = logging.getLogger("omron_tee.validator")

MAX_UNCHARGED_FAULTS = 3
# Evidence with every attachment allowed is well under this; a reply past it is refused unread.
MAX_ATTEST_REPLY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ProbeResult:
    outcome: Outcome
    model_id: str
    message: str  # human-readable detail for the log (never the input or the output)
    verdict_reasons: tuple[str, ...] = ()


class Prober:
    def __init__(
        self,
        client: SignedClient,
        *,
        policy: Policy,
        verifiers: VerifierRegistry,
        models: ModelRegistry,
        model_ids: list[str] | None = None,
        kem: KemSuite = KemSuite.X25519,
        timeout: float = 5.0,
        reuse_sessions: bool = False,
        session_ttl: float = 60.0,
        seed: int | None = None,
        zk_verifiers: Mapping[str, Any] | None = None,
        zk_timeout: float = 60.0,
        zk_share: float = 0.0,
    ) -> None:
        self.client = client
        self.policy = policy
        self.verifiers = verifiers
        self.models = models
        self.model_ids = model_ids or [s.model_id for s in models.specs() if s.runtime == "onnx"]
        self.reference = {m: load_runtime(models.get(m)) for m in self.model_ids}
        self.kem = kem
        self.timeout = timeout
        self.reuse_sessions = reuse_sessions
        self.session_ttl = session_ttl
        self.rng = np.random.default_rng(seed)
        self._sessions: dict[str, AttestedSession] = {}
        # model id -> omron_tee.zk.verifier.ZkVerifier (built from our own circuit and SRS)
        self.zk_verifiers = dict(zk_verifiers or {})
        self.zk_timeout = max(timeout, zk_timeout)
        self.zk_share = zk_share  # share of unspecified probes sent as zk to miners that offer it
        self._offers: dict[str, AttestResponse] = {}  # what each miner last advertised
        self._faults: dict[str, int] = {}  # hotkey -> validator faults in a row while probing it
        self.identities = IdentityRegistry()  # which hotkey each enclave key and machine backs

    def forget(self, hotkey: str) -> None:
        self._sessions.pop(hotkey, None)

    async def attest(self, neuron: Neuron, nonce: bytes) -> tuple[AttestResponse, float]:
        assert neuron.endpoint is not None
        t0 = time.perf_counter()
        raw = await self.client.post(neuron.endpoint.url, "/attest", AttestRequest(nonce, self.kem.value, neuron.hotkey).to_json(), receiver=neuron.hotkey,
                                     timeout=self.timeout, max_bytes=MAX_ATTEST_REPLY_BYTES)
        return AttestResponse.from_json(raw), time.perf_counter() - t0

    def verify_attestation(self, neuron: Neuron, response: AttestResponse, nonce: bytes) -> AttestedSession:
        """The session if ``response`` attests ``neuron`` for ``nonce`` and its enclave backs no other hotkey."""
        session = check_attestation(response, nonce=nonce, hotkey=neuron.hotkey, policy=self.policy, registry=self.verifiers, kem=self.kem, ttl=self.session_ttl)
        conflict = self.identities.claim(neuron.hotkey, identities_of(session.keys, session.verdict.claims))
        if conflict is not None:
            raise AttestationError(conflict, reason=Reason.ENCLAVE_SHARED)
        return session

    def _pick_proof_system(self, neuron: Neuron, model_id: str | None) -> tuple[str, str | None]:
        """For a probe that names no proof system: zk for ``zk_share`` of them, if the miner offered zk when it last attested."""
        if self.zk_share <= 0 or not self.zk_verifiers:
            return "tee", model_id
        offer = self._offers.get(neuron.hotkey)
        if offer is None or self.rng.random() >= self.zk_share:
            return "tee", model_id
        offered = sorted(m for m in self.zk_verifiers if offer.offers(m, "zk") and model_id in (None, m))
        return ("zk", str(self.rng.choice(offered))) if offered else ("tee", model_id)

    async def probe(self, neuron: Neuron, model_id: str | None = None, proof_system: str | None = None) -> ProbeResult:
        """One benchmark exchange. ``proof_system`` None: "tee", or "zk" for a share of probes (``zk_share``).

        Never raises for anything the miner sends, and never takes longer than its
        deadline (both requests' timeouts and a little slack), however the miner behaves.
        """
        if proof_system is None:
            proof_system, model_id = self._pick_proof_system(neuron, model_id)
        zk = proof_system == "zk"
        if zk and not self.zk_verifiers:
            raise ValueError("a zk probe needs zk verifiers (omron_tee.zk.verifier.ZkVerifier per model)")
        model_id = model_id or str(self.rng.choice(sorted(self.zk_verifiers) if zk else self.model_ids))
        deadline = self.timeout + (self.zk_timeout if zk else self.timeout) + 1.0
        try:
            async with asyncio.timeout(deadline):
                result = await self._probe(neuron, model_id, proof_system)
        except TimeoutError:
            result = self._fail(neuron, model_id, Reason.TIMEOUT, f"the exchange took longer than its {deadline:.1f} s deadline", None, proof_system=proof_system)
        except Exception as e:  # noqa: BLE001 - a bug of ours met by a miner's bytes: see validator_fault
            return self.validator_fault(neuron, model_id, e, proof_system=proof_system)
        self.no_fault(neuron.hotkey)
        return result

    def validator_fault(self, neuron: Neuron, model_id: str, error: Exception, *, proof_system: str = "tee", workload: str = "tensor") -> ProbeResult:
        """An unexpected error in our own code (tensor, zk or LLM probe). Not the miner's fault the
        first times (never charge an honest miner for our bug), but a miner that keeps triggering
        one is charged, so no miner can hold its weight by steering every probe into a validator bug."""
        n = self._faults.get(neuron.hotkey, 0) + 1
        self._faults[neuron.hotkey] = n
        log.error("validator fault while probing uid %d (%d in a row): %s", neuron.uid, n, type(error).__name__)
        if n >= MAX_UNCHARGED_FAULTS:
            outcome = Outcome(neuron.hotkey, neuron.uid, False, Reason.INTERNAL_ERROR, None, None, None, proof_system=proof_system, workload=workload)
            return ProbeResult(outcome, model_id, f"probing this miner failed in the validator {n} times in a row ({type(error).__name__})")
        outcome = Outcome(neuron.hotkey, neuron.uid, False, Reason.VALIDATOR_FAULT, None, None, None, kind="validator-fault", proof_system=proof_system, workload=workload)
        return ProbeResult(outcome, model_id, f"validator fault ({type(error).__name__}), not charged to the miner")

    def no_fault(self, hotkey: str) -> None:
        """A probe of ``hotkey`` ended without a fault of ours: its count starts again."""
        self._faults.pop(hotkey, None)

    async def _probe(self, neuron: Neuron, model_id: str, proof_system: str) -> ProbeResult:
        zk = proof_system == "zk"
        spec = self.models.get(model_id)
        if neuron.endpoint is None:
            return self._fail(neuron, model_id, Reason.NOT_SERVING, "miner has no endpoint on chain", None)
        attested: bool | None = None
        rtt = 0.0
        try:
            session = self._sessions.get(neuron.hotkey) if self.reuse_sessions else None
            if session is None or not session.fresh(time.time()):
                nonce = new_nonce()
                response, rtt = await self.attest(neuron, nonce)
                try:
                    session = self.verify_attestation(neuron, response, nonce)
                except AttestationError as e:
                    self.forget(neuron.hotkey)
                    return self._fail(neuron, model_id, e.reason, f"attestation rejected: {e}", False)
                self._sessions[neuron.hotkey] = session
                self._offers[neuron.hotkey] = response
                request_nonce = nonce
            else:
                request_nonce = new_nonce()
            attested = True
            offer = self._offers.get(neuron.hotkey)
            if zk and (offer is None or not offer.offers(model_id, "zk")):
                return self._fail(neuron, model_id, Reason.ZK_UNSUPPORTED, f"miner does not offer zk proofs of {model_id}", True, proof_system=proof_system)
            x = sample_input(spec, self.rng)
            request, pending = seal_request(session, model_id, x, nonce=request_nonce, proof_system=proof_system)
            t0 = time.perf_counter()
            timeout = self.zk_timeout if zk else self.timeout
            raw = await self.client.post(neuron.endpoint.url, "/infer", request.to_json(), receiver=neuron.hotkey, timeout=timeout)
            rtt += time.perf_counter() - t0
            result = open_result(pending, InferResponse.from_json(raw), model_hash=spec.sha256)
        except MinerError as e:
            if e.reason == Reason.UNKNOWN_KEY:
                self.forget(neuron.hotkey)
            return self._fail(neuron, model_id, e.reason, str(e), attested, proof_system=proof_system)
        except OmronTeeError as e:
            self.forget(neuron.hotkey)
            return self._fail(neuron, model_id, e.reason, str(e), attested, proof_system=proof_system)
        prove_s = result.prove_ms / 1000.0 if result.prove_ms is not None else None
        if zk:
            verifier = self.zk_verifiers.get(model_id)
            try:
                if verifier is None:
                    raise OmronTeeError(f"no zk verifier for {model_id}", reason=Reason.ZK_UNSUPPORTED)
                verifier.verify(result.proof, result.output, input=x)
            except OmronTeeError as e:
                correct = False if e.reason == Reason.ZK_OUTPUT_MISMATCH else None
                return self._fail(neuron, model_id, e.reason, str(e), True, correct=correct, proof_system=proof_system)
        expected = self.reference[model_id].run(x)
        if not outputs_match(spec, expected, result.output):
            return self._fail(neuron, model_id, Reason.WRONG_OUTPUT, "output differs from the validator's recomputation", True, correct=False, proof_system=proof_system)
        outcome = Outcome(neuron.hotkey, neuron.uid, True, Reason.OK, rtt, True, True, proof_system=proof_system, prove_s=prove_s)
        what = f"proof verified, correct in {rtt * 1000:.1f} ms (proving {prove_s * 1000:.0f} ms)" if zk and prove_s is not None else f"verified and correct in {rtt * 1000:.1f} ms"
        return ProbeResult(outcome, model_id, what)

    def _fail(
        self, neuron: Neuron, model_id: str, reason: str, message: str, attested: bool | None, *, correct: bool | None = None, proof_system: str = "tee"
    ) -> ProbeResult:
        outcome = Outcome(neuron.hotkey, neuron.uid, False, reason, None, attested, correct, proof_system=proof_system)
        return ProbeResult(outcome, model_id, message)
