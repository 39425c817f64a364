"""One benchmark exchange with one miner, for any workload, apart from any loop or server.

attest (fresh nonce, or a reused session) -> verify the evidence against the
policy -> pick the workload and model (``schedule.choose``) -> sample an
input and compute the validator's own reference -> seal the input to the
attested key -> feed the answer's bytes to the ``AnswerReader`` (order,
completeness, receipt) -> the workload judges the result (tolerance,
token-by-token, zk proof) and says which latency counts.

The result is an ``Outcome`` for scoring; nothing here raises for a miner's
fault, nothing here knows which workload it carries, and nothing here logs
an input or an output.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.validate.releases import ReleaseLog
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.chain.base import Neuron
from omron_tee.channel.hpke import KemSuite
from omron_tee.errors import AttestationError, MinerError, OmronTeeError
from omron_tee.exchange import transport
from omron_tee.exchange.requester import Answer, AttestedSession, check_attestation, fresh_check, new_nonce, seal_batch, seal_request
from omron_tee.models.registry import ModelRegistry
from omron_tee.protocol import AttestRequest, AttestResponse
from omron_tee.reasons import UNCHARGED_A_FEW_TIMES, Reason
from omron_tee.validator.identity import IdentityRegistry, identities_of
from omron_tee.validator.schedule import choose
from omron_tee.validator.scoring import Outcome
from omron_tee.wire.client import SignedClient
from omron_tee.workloads import default_workloads
from omron_tee.workloads.base import Workload, Workloads

log = logging.getLogger("omron_tee.validator")

MAX_UNCHARGED_FAULTS = 3
DEADLINE_SLACK_S = 0.5  # beyond a request's own deadline, before the probe gives up on it regardless


@dataclass(frozen=True)
class ProbeResult:
    outcome: Outcome
    model_id: str
    message: str  # human-readable detail for the log (never the input or the output)


def _unjudged(result: ProbeResult) -> bool:
    o = result.outcome
    return not o.ok and o.kind == "benchmark" and o.reason in UNCHARGED_A_FEW_TIMES


def _unavailable(result: ProbeResult, n: int) -> ProbeResult:
    """``result`` charged as unavailable (never a strike: the evidence was not judged): the ``n``-th in a row."""
    o = result.outcome
    return ProbeResult(replace(o, reason=Reason.UNJUDGED_TOO_OFTEN, attestation_accepted=None), result.model_id,
                       f"the validator could not judge this miner {n} times in a row ({o.reason}): counted as unavailable; last: {result.message}")


class Prober:
    def __init__(
        self,
        client: SignedClient,
        *,
        policy: Policy,
        verifiers: VerifierRegistry,
        models: ModelRegistry,
        workloads: Workloads | None = None,
        model_ids: list[str] | None = None,
        kem: KemSuite = KemSuite.X25519,
        timeout: float = 5.0,
        timeouts: Mapping[str, float] | None = None,
        shares: Mapping[str, float] | None = None,
        reuse_sessions: bool = False,
        session_ttl: float = 60.0,
        fresh_in_band: bool = False,
        seed: int | None = None,
    ) -> None:
        self.client = client
        self.policy = policy
        self.verifiers = verifiers
        self.models = models
        self.workloads = workloads = workloads if workloads is not None else default_workloads()
        ids = model_ids or models.ids()
        # workload -> the models this validator judges it on
        self.judged = {w.name: [m for m in ids if m in models and w.serves(models.get(m)) and w.judges(models.get(m))] for w in workloads}
        self.kem = kem
        self.timeout = timeout  # attestation, and any workload without its own
        self.timeouts = {w.latency_class: timeout for w in workloads} | dict(timeouts or {})
        self.shares = dict(shares or {})  # optional workload -> share of probes where offered
        self.reuse_sessions = reuse_sessions
        self.session_ttl = session_ttl
        # With reused sessions: each request still proves freshness, by evidence for its own nonce in the answer.
        self.fresh_in_band = fresh_in_band
        self.rng = np.random.default_rng(seed)
        self._sessions: dict[str, AttestedSession] = {}
        self.offers: dict[str, AttestResponse] = {}  # what each miner's latest attestation offered
        self._faults: dict[str, int] = {}  # hotkey -> validator faults in a row while probing it
        self.identities = IdentityRegistry()  # which hotkey each enclave key and machine backs
        # The chain's published releases, for a policy that requires them (validator.releases)
        self.releases: Callable[[], ReleaseLog | None] = lambda: None

    @property
    def model_ids(self) -> list[str]:
        """Every model this validator judges, on any workload."""
        return sorted({m for ms in self.judged.values() for m in ms})

    def forget(self, hotkey: str) -> None:
        self._sessions.pop(hotkey, None)

    async def attest(self, neuron: Neuron, nonce: bytes) -> tuple[AttestResponse, float]:
        assert neuron.endpoint is not None
        response, rtt = await transport.attest(self.client, neuron.endpoint.url, AttestRequest(nonce, self.kem.value, neuron.hotkey),
                                               receiver=neuron.hotkey, timeout=self.timeout)
        self.offers[neuron.hotkey] = response
        return response, rtt

    def verify_attestation(self, neuron: Neuron, response: AttestResponse, nonce: bytes) -> AttestedSession:
        """The session if ``response`` attests ``neuron`` for ``nonce`` and its enclave backs no other hotkey."""
        session = check_attestation(response, nonce=nonce, hotkey=neuron.hotkey, policy=self.policy, registry=self.verifiers, kem=self.kem, ttl=self.session_ttl,
                                    releases=self.releases())
        conflict = self.identities.claim(neuron.hotkey, identities_of(session.keys, session.verdict.claims))
        if conflict is not None:
            raise AttestationError(conflict, reason=Reason.ENCLAVE_SHARED)
        return session

    async def session(self, neuron: Neuron) -> tuple[AttestedSession, float, bytes]:
        """An attested session (reused while fresh, if configured), the attestation's round trip (0 when
        reused) and the nonce for the next request; ``AttestationError`` or ``MinerError`` if none."""
        session = self._sessions.get(neuron.hotkey) if self.reuse_sessions else None
        if session is not None and session.fresh(time.time()):
            return session, 0.0, new_nonce()
        nonce = new_nonce()
        response, rtt = await self.attest(neuron, nonce)
        try:
            session = self.verify_attestation(neuron, response, nonce)
        except AttestationError:
            self.forget(neuron.hotkey)
            raise
        self._sessions[neuron.hotkey] = session
        return session, rtt, nonce

    def pick(self, neuron: Neuron, model_id: str | None = None, workload: str | None = None) -> tuple[Workload, str]:
        if workload is not None:
            w = self.workloads.get(workload)
            models = [m for m in self.judged.get(w.name, ()) if model_id in (None, m)]
            if not models:
                raise ValueError(f"this validator judges no model {model_id or ''} as {workload!r}")
            return w, str(self.rng.choice(sorted(models)))
        picked = choose(self.workloads, self.judged, self.offers.get(neuron.hotkey), self.rng, self.shares, model_id=model_id)
        if picked is None:
            raise ValueError("this validator judges no model: nothing to probe")
        return picked

    async def probe(self, neuron: Neuron, model_id: str | None = None, workload: str | None = None) -> ProbeResult:
        """One benchmark exchange, its workload and model picked by ``schedule.choose`` unless given.

        Never raises for anything the miner sends, and the miner's part of it never takes longer
        than its deadlines (the attestation's timeout, then the workload's, each with a little
        slack), however the miner behaves; the validator's own reference is not the miner's time.
        """
        label = model_id or "?"
        try:
            result = await self._probe(neuron, model_id, workload)
        except ValueError:
            raise  # a configuration of ours that judges nothing: not a probe's outcome
        except Exception as e:  # noqa: BLE001 - a bug of ours met by a miner's bytes: see validator_fault
            return self.validator_fault(neuron, label, e)
        if _unjudged(result):
            return self.uncharged(neuron, result)
        self.no_fault(neuron.hotkey)
        return result

    def uncharged(self, neuron: Neuron, result: ProbeResult) -> ProbeResult:
        """A probe the validator could not judge for want of collateral (``reasons.UNCHARGED_A_FEW_TIMES``): not
        charged the first times in a row, as a validator fault is not, then unavailable. Evidence can bring it
        about at will (a chip its maker's service has never heard of, a new one each probe): without the limit a
        miner could hold its score by never being judged again."""
        n = self._faults.get(neuron.hotkey, 0) + 1
        self._faults[neuron.hotkey] = n
        return result if n < MAX_UNCHARGED_FAULTS else _unavailable(result, n)

    def validator_fault(self, neuron: Neuron, model_id: str, error: Exception, *, latency_class: str = "tee") -> ProbeResult:
        """An unexpected error in our own code. Not the miner's fault the first times (never charge an
        honest miner for our bug), but a miner that keeps triggering one is charged, so no miner can
        hold its weight by steering every probe into a validator bug."""
        n = self._faults.get(neuron.hotkey, 0) + 1
        self._faults[neuron.hotkey] = n
        log.error("validator fault while probing uid %d (%d in a row): %s", neuron.uid, n, type(error).__name__)
        if n >= MAX_UNCHARGED_FAULTS:
            outcome = Outcome(neuron.hotkey, neuron.uid, False, Reason.INTERNAL_ERROR, None, None, None, latency_class=latency_class)
            return ProbeResult(outcome, model_id, f"probing this miner failed in the validator {n} times in a row ({type(error).__name__})")
        outcome = Outcome(neuron.hotkey, neuron.uid, False, Reason.VALIDATOR_FAULT, None, None, None, kind="validator-fault", latency_class=latency_class)
        return ProbeResult(outcome, model_id, f"validator fault ({type(error).__name__}), not charged to the miner")

    def no_fault(self, hotkey: str) -> None:
        """A probe of ``hotkey`` ended without a fault of ours: its count starts again."""
        self._faults.pop(hotkey, None)

    async def _probe(self, neuron: Neuron, model_id: str | None, workload_name: str | None) -> ProbeResult:
        label = model_id or "?"
        opened = await self._session_or_failure(neuron, label)
        if isinstance(opened, ProbeResult):
            return opened
        session, attest_s, nonce = opened
        w, mid = self.pick(neuron, model_id, workload_name)
        if w.optional and not w.offered(self.offers[neuron.hotkey], mid):
            reason, message = w.unoffered(self.offers[neuron.hotkey], mid)
            return self._fail(neuron, mid, reason, message, True, latency_class=w.latency_class)
        spec = self.models.get(mid)
        value = w.sample(spec, self.rng)
        expected = await w.reference(self.models.runtime(mid), spec, value)  # before the miner is timed
        fresh = None
        if self.fresh_in_band and nonce != session.attest_nonce:  # a reused session: freshness comes with the answer
            fresh = self._fresh_check(neuron, session)
        request, reader = seal_request(session, w, spec, value, nonce=nonce, fresh=fresh)
        timeout = self.timeouts[w.latency_class]
        try:
            async with asyncio.timeout(timeout + DEADLINE_SLACK_S):
                answer = await transport.answer(self.client, neuron.endpoint.url, request, reader, receiver=neuron.hotkey, timeout=timeout)
        except TimeoutError:
            return self._fail(neuron, mid, Reason.TIMEOUT, f"the answer took longer than its {timeout + DEADLINE_SLACK_S:.1f} s deadline", True,
                              latency_class=w.latency_class)
        except OmronTeeError as e:
            return self._answer_failed(neuron, mid, w, e)
        return self._judged(neuron, w, mid, value, expected, answer, attest_s)

    async def _session_or_failure(self, neuron: Neuron, label: str) -> tuple[AttestedSession, float, bytes] | ProbeResult:
        """``session``'s answer within the attestation's deadline, or the failed probe's result."""
        if neuron.endpoint is None:
            return self._fail(neuron, label, Reason.NOT_SERVING, "miner has no endpoint on chain", None)
        deadline = self.timeout + DEADLINE_SLACK_S
        try:
            async with asyncio.timeout(deadline):
                return await self.session(neuron)
        except TimeoutError:
            return self._fail(neuron, label, Reason.TIMEOUT, f"the attestation took longer than its {deadline:.1f} s deadline", None)
        except AttestationError as e:
            return self._fail(neuron, label, e.reason, f"attestation rejected: {e}", False)
        except OmronTeeError as e:
            if not isinstance(e, MinerError):
                self.forget(neuron.hotkey)
            return self._fail(neuron, label, e.reason, str(e), None)

    def _fresh_check(self, neuron: Neuron, session: AttestedSession):
        return fresh_check(session, hotkey=neuron.hotkey, policy=self.policy, registry=self.verifiers, releases=self.releases())

    def _answer_failed(self, neuron: Neuron, mid: str, w: Workload, e: OmronTeeError) -> ProbeResult:
        """The failed probe for an answer that did not verify (its evidence, its stream, or its transport)."""
        if isinstance(e, AttestationError):  # the answer's own evidence (fresh in band) was refused
            self.forget(neuron.hotkey)
            return self._fail(neuron, mid, e.reason, f"attestation rejected: {e}", False, latency_class=w.latency_class)
        if not isinstance(e, MinerError) or e.reason == Reason.UNKNOWN_KEY:
            self.forget(neuron.hotkey)
        return self._fail(neuron, mid, e.reason, str(e), True, latency_class=w.latency_class)

    def _judged(self, neuron: Neuron, w: Workload, mid: str, value: object, expected: object, answer: Answer, attest_s: float) -> ProbeResult:
        spec = self.models.get(mid)
        j = w.judge(spec, value, expected, answer.result)
        if j.correct is not True:
            return self._fail(neuron, mid, j.reason, j.detail, True, correct=j.correct, latency_class=w.latency_class)
        latency = w.latency(answer, attest_s)
        outcome = Outcome(neuron.hotkey, neuron.uid, True, Reason.OK, latency, True, True, latency_class=w.latency_class)
        return ProbeResult(outcome, mid, f"{w.name}: {j.detail}, verified in {latency * 1000:.1f} ms")

    async def probe_batch(self, neuron: Neuron, count: int) -> list[ProbeResult]:
        """``count`` benchmark exchanges with one miner, their workloads and models picked as ``probe`` picks
        them; those of one latency class that do not stream go in one batch (``protocol.InferBatch``: one signed
        request, and with ``fresh_in_band`` one evidence proving every request's freshness), the rest one by one.

        Each result is timed as its batch's time over the batch's size (the miner answers them in turn), so
        a miner is judged on the batch size this validator sends every miner alike. Never raises for anything
        the miner sends; a batch's deadline is its workloads' deadline for each of its requests."""
        try:
            results = await self._probe_batch(neuron, count)
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - as in probe: a bug of ours met by a miner's bytes
            return [self.validator_fault(neuron, "?", e)] * count
        # A batch counts once toward the limit on probes the validator could not judge, as one probe does.
        unjudged = [r for r in results if _unjudged(r)]
        if not unjudged:
            if results:
                self.no_fault(neuron.hotkey)
            return results
        if self.uncharged(neuron, unjudged[0]) is unjudged[0]:
            return results
        n = self._faults[neuron.hotkey]
        return [_unavailable(r, n) if _unjudged(r) else r for r in results]

    async def _probe_batch(self, neuron: Neuron, count: int) -> list[ProbeResult]:
        opened = await self._session_or_failure(neuron, "?")
        if isinstance(opened, ProbeResult):
            return [opened] * count
        session, attest_s, _ = opened
        results: list[ProbeResult] = []
        alone: list[tuple[Workload, str]] = []
        classes: dict[str, list[tuple[Workload, str]]] = {}
        for _ in range(count):
            w, mid = self.pick(neuron)
            if w.optional and not w.offered(self.offers[neuron.hotkey], mid):
                reason, message = w.unoffered(self.offers[neuron.hotkey], mid)
                results.append(self._fail(neuron, mid, reason, message, True, latency_class=w.latency_class))
            elif w.streamed:
                alone.append((w, mid))
            else:
                classes.setdefault(w.latency_class, []).append((w, mid))
        # A freshly attested session proves this probe's freshness already; a reused one, with fresh_in_band, by the batch's evidence.
        fresh = self._fresh_check(neuron, session) if self.fresh_in_band and attest_s == 0.0 else None
        done = await asyncio.gather(*(self._batch(neuron, session, items, attest_s, fresh) for items in classes.values()),
                                    *(self._probe(neuron, mid, w.name) for w, mid in alone))
        for d in done:
            results.extend(d if isinstance(d, list) else [d])
        return results

    async def _batch(self, neuron: Neuron, session: AttestedSession, picked: list[tuple[Workload, str]], attest_s: float,
                     fresh) -> list[ProbeResult]:
        assert neuron.endpoint is not None
        items = [(w, self.models.get(mid), w.sample(self.models.get(mid), self.rng)) for w, mid in picked]
        expected = [await w.reference(self.models.runtime(spec.model_id), spec, value) for w, spec, value in items]  # before the miner is timed
        batch, reader = seal_batch(session, items, fresh=fresh)
        w0 = picked[0][0]
        timeout = self.timeouts[w0.latency_class] * len(items)
        try:
            async with asyncio.timeout(timeout + DEADLINE_SLACK_S):
                answers = await transport.answer_batch(self.client, neuron.endpoint.url, batch, reader, receiver=neuron.hotkey, timeout=timeout)
        except TimeoutError:
            return [self._fail(neuron, mid, Reason.TIMEOUT, f"the batch took longer than its {timeout + DEADLINE_SLACK_S:.1f} s deadline", True,
                               latency_class=w.latency_class) for w, mid in picked]
        except OmronTeeError as e:
            return [self._answer_failed(neuron, mid, w, e) for w, mid in picked]
        per_attest = attest_s / len(items)
        return [self._answer_failed(neuron, mid, w, a) if isinstance(a, OmronTeeError) else self._judged(neuron, w, mid, value, exp, a, per_attest)
                for (w, mid), (_, _, value), exp, a in zip(picked, items, expected, answers)]

    def _fail(self, neuron: Neuron, model_id: str, reason: str, message: str, attested: bool | None, *, correct: bool | None = None,
              latency_class: str = "tee") -> ProbeResult:
        outcome = Outcome(neuron.hotkey, neuron.uid, False, reason, None, attested, correct, latency_class=latency_class)
        return ProbeResult(outcome, model_id, message)
