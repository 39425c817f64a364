"""Freshness in one round trip: a request sealed to a key attested earlier asks for evidence bound to its own
nonce, which the enclave returns with the answer; stale, replayed, missing or foreign evidence fails, named."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from omron_tee.attestation.binding import report_data_for
from omron_tee.errors import AttestationError
from omron_tee.exchange.requester import fresh_check, new_nonce, seal_request
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.protocol import InferRequest, SealedRequest
from omron_tee.reasons import Reason
from omron_tee.workloads import default_workloads
from omron_tee.workloads.tensor import sample_input

from test_exchange import attested, roundtrip

TENSOR = default_workloads().get("tensor")


def ask(sim, app, session, *, now=time.time, policy=None):
    spec = sim.registry.get("digits-mlp")
    x = sample_input(spec, np.random.default_rng(3))
    check = fresh_check(session, hotkey=sim.hotkey, policy=policy or sim.policy, registry=sim.verifiers, clock=now)
    request, reader = seal_request(session, TENSOR, spec, x, fresh=check)
    reader.feed(roundtrip(app, request))
    return reader.close(), reader, request


def test_each_request_on_a_reused_session_proves_its_freshness_in_the_answer(sim) -> None:
    app = sim.app()
    session = attested(sim, app)
    answers = [ask(sim, app, session) for _ in range(3)]
    for answer, reader, request in answers:
        assert reader.fresh_verdict is not None and reader.fresh_verdict.accepted
        assert reader.fresh_verdict.claims.report_data == report_data_for(reader.nonce, session.keys, sim.hotkey)
        answer.receipt.verify(session.keys.signing_public)
    assert len({r.nonce for _, r, _ in answers}) == 3  # one nonce, one piece of evidence, per request
    # Without the ask, nothing more travels (a request that does not ask gets no evidence).
    spec = sim.registry.get("digits-mlp")
    request, reader = seal_request(session, TENSOR, spec, sample_input(spec, np.random.default_rng(4)))
    reader.feed(roundtrip(app, request))
    assert reader.close() and reader.fresh_verdict is None


class Replaying(TrustedApp):
    """Answers with the evidence it gave at attestation time (an old nonce) instead of fresh evidence."""

    def __init__(self, *a, old=None, **kw):
        super().__init__(*a, **kw)
        self.old = old

    def fresh_evidence(self, nonce, keys):
        return self.old if self.old is not None else super().fresh_evidence(new_nonce(), keys)


def _app(sim, cls, **kw):
    return cls(sim.backend(), sim.registry, hotkey=sim.hotkey, workloads=default_workloads(), **kw)


def test_replayed_or_foreign_evidence_fails_as_a_report_data_mismatch(sim) -> None:
    app = _app(sim, Replaying)
    session = attested(sim, app)
    with pytest.raises(AttestationError) as foreign:  # evidence for some other nonce
        ask(sim, app, session)
    assert foreign.value.reason == Reason.REPORT_DATA_MISMATCH
    app.old = session.evidence  # the attestation's own evidence, replayed
    with pytest.raises(AttestationError) as replayed:
        ask(sim, app, session)
    assert replayed.value.reason == Reason.REPORT_DATA_MISMATCH


def test_stale_evidence_fails(sim) -> None:
    app = sim.app()
    session = attested(sim, app)
    later = lambda: time.time() + 10 * sim.policy.max_evidence_age_seconds  # noqa: E731 - the answer arrives long after the evidence was made
    with pytest.raises(AttestationError) as stale:
        ask(sim, app, session, now=later)
    assert stale.value.reason == Reason.STALE_EVIDENCE


def test_evidence_of_a_build_the_policy_no_longer_allows_fails(sim) -> None:
    app = sim.app()
    session = attested(sim, app)
    with pytest.raises(AttestationError) as refused:
        ask(sim, app, session, policy=sim.policy_with(measurements=frozenset()))
    assert refused.value.reason == Reason.MEASUREMENT_NOT_ALLOWED


class Silent(TrustedApp):
    async def answer(self, opened, **kw):
        if opened.request is not None:
            opened = type(opened)(**{**opened.__dict__, "request": SealedRequest(**{**opened.request.__dict__, "fresh": False})})
        async for f in super().answer(opened, **kw):
            yield f


def test_an_answer_without_the_evidence_asked_for_is_named(sim) -> None:
    app = _app(sim, Silent)
    session = attested(sim, app)
    with pytest.raises(AttestationError) as missing:
        ask(sim, app, session)
    assert missing.value.reason == Reason.EVIDENCE_MISSING


def test_the_ask_travels_sealed_and_malformed_asks_are_refused() -> None:
    from omron_tee.errors import ProtocolError

    base = dict(nonce=b"\1" * 32, model_id="m", workload="tensor", input={}, reply_secret=b"\2" * 32, evidence_hash=b"\3" * 32)
    import json

    for fresh in (True, False):
        d = json.loads(SealedRequest(**base, fresh=fresh).encode())
        assert SealedRequest.from_dict(d).fresh is fresh and (("fresh" in d) is fresh)
    d = json.loads(SealedRequest(**base, fresh=True).encode())
    d["fresh"] = "yes"
    with pytest.raises(ProtocolError):
        SealedRequest.from_dict(d)


def test_the_prober_uses_it_on_reused_sessions(sim) -> None:
    """The validator's prober, in process: one attestation, then every probe proves freshness in band."""
    from inprocess import InProcessClient
    from omron_tee.chain.base import Endpoint, Neuron
    from omron_tee.validator.prober import Prober

    app = sim.app()
    made = []
    real = app.fresh_evidence
    app.fresh_evidence = lambda nonce, keys: made.append(nonce) or real(nonce, keys)
    client = InProcessClient({"http://127.0.0.1:1": app})
    prober = Prober(client, policy=sim.policy, verifiers=sim.verifiers, models=sim.registry, reuse_sessions=True, fresh_in_band=True, seed=0)
    neuron = Neuron(1, sim.hotkey, "cold", 0.0, False, Endpoint("127.0.0.1", 1), 0.0, 0.0, 0.0, 0)
    results = [asyncio.run(prober.probe(neuron)) for _ in range(3)]
    assert all(r.outcome.ok for r in results), [r.message for r in results]
    assert len(made) == 2  # the first probe attested; the next two proved freshness with their answers
