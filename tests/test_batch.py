"""Batches: several sealed requests in one signed request, each answered in its own sealed stream, and one
evidence bound to a hash of every request's own nonce. The miner plays the attacker here: replayed, stale,
missing or foreign evidence, answers swapped, dropped, added or altered, malformed batch frames."""

from __future__ import annotations

import asyncio
import json
import struct
import time

import numpy as np
import pytest

from omron_tee.attestation.binding import batch_nonce, report_data_for
from omron_tee.channel.stream import frame
from omron_tee.errors import AttestationError, ChannelError, OmronTeeError, ProtocolError
from omron_tee.exchange.requester import Answer, fresh_check, seal_batch
from omron_tee.protocol import BATCH_ANSWER, BATCH_EVIDENCE, BATCH_NO_EVIDENCE, MAX_BATCH, InferBatch, InferRequest
from omron_tee.reasons import Reason
from omron_tee.workloads import default_workloads
from omron_tee.workloads.tensor import sample_input

from inprocess import InProcessClient
from test_exchange import attested

TENSOR = default_workloads().get("tensor")


def _items(sim, n, seed=0):
    spec = sim.registry.get("digits-mlp")
    rng = np.random.default_rng(seed)
    return [(TENSOR, spec, sample_input(spec, rng)) for _ in range(n)]


def _frames(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        (n,) = struct.unpack_from(">I", data, at)
        out.append(data[at + 4:at + 4 + n])
        at += 4 + n
    return out


def _join(frames: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in frames)


def ask(sim, app, session, n=4, *, fresh=True, now=time.time, alter=None):
    check = fresh_check(session, hotkey=sim.hotkey, policy=sim.policy, registry=sim.verifiers, clock=now) if fresh else None
    batch, reader = seal_batch(session, _items(sim, n), fresh=check)
    data = asyncio.run(app.answer_batch(InferBatch.from_bytes(batch.to_bytes())))
    reader.feed(alter(data) if alter else data)
    return reader.close(), reader


def test_one_evidence_proves_every_request_of_the_batch_fresh(sim) -> None:
    app = sim.app()
    session = attested(sim, app)
    made = []
    real = app.backend.attest
    app.backend.attest = lambda rd: made.append(rd) or real(rd)
    results, reader = ask(sim, app, session, n=8)
    assert all(isinstance(r, Answer) for r in results), results
    nonces = [r.nonce for r in reader.readers]
    assert len(set(nonces)) == 8  # a fresh nonce per request
    assert made == [report_data_for(batch_nonce(nonces), session.keys, sim.hotkey)]  # one attestation for the batch
    assert reader.fresh_verdict is not None and reader.fresh_verdict.claims.report_data == made[0]
    for r, rd in zip(results, reader.readers):
        r.receipt.verify(session.keys.signing_public)
        assert r.receipt.binding.nonce == rd.nonce  # each answer's receipt covers its own request
        assert r.elapsed_s == results[0].elapsed_s  # each timed as the batch's time over its size
    # Without the ask, no evidence travels.
    plain, reader = ask(sim, app, session, n=2, fresh=False)
    assert all(isinstance(r, Answer) for r in plain) and reader.fresh_verdict is None and len(made) == 1


def _swap_trailer(data: bytes, trailer: bytes | None) -> bytes:
    frames = _frames(data)
    assert frames[-1][:1] == BATCH_EVIDENCE
    return _join(frames[:-1] + ([trailer] if trailer is not None else []))


def _all_refused(results, reason) -> None:
    assert all(isinstance(r, AttestationError) and r.reason == reason for r in results), results


def test_replayed_evidence_fails_every_request(sim) -> None:
    app = sim.app()
    session = attested(sim, app)
    old = BATCH_EVIDENCE + json.dumps(session.evidence.to_json()).encode()  # the attestation's own evidence
    results, _ = ask(sim, app, session, alter=lambda d: _swap_trailer(d, old))
    _all_refused(results, Reason.REPORT_DATA_MISMATCH)
    earlier = []
    ask(sim, app, session, alter=lambda d: earlier.append(_frames(d)[-1]) or d)  # an honest batch's evidence
    results, _ = ask(sim, app, session, alter=lambda d: _swap_trailer(d, earlier[0]))  # replayed on the next batch
    _all_refused(results, Reason.REPORT_DATA_MISMATCH)


def test_stale_missing_unreadable_or_withheld_evidence_is_named(sim) -> None:
    app = sim.app()
    session = attested(sim, app)
    later = lambda: time.time() + 10 * sim.policy.max_evidence_age_seconds  # noqa: E731
    _all_refused(ask(sim, app, session, now=later)[0], Reason.STALE_EVIDENCE)
    _all_refused(ask(sim, app, session, alter=lambda d: _swap_trailer(d, None))[0], Reason.EVIDENCE_MISSING)
    _all_refused(ask(sim, app, session, alter=lambda d: _swap_trailer(d, BATCH_EVIDENCE + b"[" * 5000))[0], Reason.EVIDENCE_MALFORMED)
    _all_refused(ask(sim, app, session, alter=lambda d: _swap_trailer(d, BATCH_EVIDENCE + b"{}"))[0], Reason.EVIDENCE_MALFORMED)
    _all_refused(ask(sim, app, session, alter=lambda d: _swap_trailer(d, b"Z{}"))[0], Reason.EVIDENCE_MALFORMED)
    withheld = BATCH_NO_EVIDENCE + b'{"error":{"reason":"tee-unavailable","message":"no"}}'
    _all_refused(ask(sim, app, session, alter=lambda d: _swap_trailer(d, withheld))[0], Reason.EVIDENCE_MISSING)


def test_the_tee_refusing_to_attest_is_named_for_the_batch(sim) -> None:
    app = sim.app()
    session = attested(sim, app)

    def refuse(rd):
        raise AttestationError("the TEE is busy", reason=Reason.EVIDENCE_MISSING)

    app.backend.attest = refuse
    _all_refused(ask(sim, app, session)[0], Reason.EVIDENCE_MISSING)


def test_swapped_dropped_added_or_altered_answers_never_pass(sim) -> None:
    app = sim.app()
    session = attested(sim, app)

    def swapped(d):
        f = _frames(d)
        return _join([f[1], f[0], *f[2:]])

    results, _ = ask(sim, app, session, alter=swapped)
    assert all(isinstance(r, OmronTeeError) for r in results[:2])  # another request's answer opens with neither's key
    assert all(isinstance(r, Answer) for r in results[2:])  # the rest, and the evidence (same nonces, same order), stand

    def dropped(d):
        f = _frames(d)
        return _join(f[:2] + f[3:])

    results, _ = ask(sim, app, session, alter=dropped)
    assert not any(isinstance(r, Answer) for r in results)
    assert isinstance(results[3], ChannelError) and results[3].reason == Reason.STREAM_MALFORMED  # the evidence in an answer's place
    results, _ = ask(sim, app, session, alter=lambda d: _join(_frames(d)[:2]))  # the answer cut short
    assert [r.reason for r in results[2:]] == [Reason.STREAM_TRUNCATED] * 2 and not any(isinstance(r, Answer) for r in results)

    with pytest.raises(ChannelError) as added:
        ask(sim, app, session, alter=lambda d: d + frame(b"more", BATCH_ANSWER))
    assert added.value.reason == Reason.STREAM_TAMPERED
    with pytest.raises(ChannelError):
        ask(sim, app, session, alter=lambda d: d + b"\0\0")  # trailing bytes

    def flipped(d):
        f = _frames(d)
        f[1] = f[1][:-3] + bytes([f[1][-3] ^ 1]) + f[1][-2:]
        return _join(f)

    results, _ = ask(sim, app, session, alter=flipped)
    assert isinstance(results[1], ChannelError) and all(isinstance(r, Answer) for r in results[:1] + results[2:])

    def not_an_answer(d):
        f = _frames(d)
        return _join([b"Q" + f[0][1:], *f[1:]])

    results, _ = ask(sim, app, session, alter=not_an_answer)
    assert isinstance(results[0], ChannelError) and results[0].reason == Reason.STREAM_MALFORMED
    assert not any(isinstance(r, Answer) for r in results)  # its nonce left out of the hash: the evidence no longer matches

    # Evidence where none was asked for: the batch's answer is not what was asked.
    with pytest.raises(ChannelError):
        ask(sim, app, session, fresh=False, alter=lambda d: d + frame(b"{}", BATCH_EVIDENCE))


def test_a_request_refused_in_the_clear_costs_only_itself(sim) -> None:
    app = sim.app()
    session = attested(sim, app)
    batch, reader = seal_batch(session, _items(sim, 3))
    requests = list(batch.requests)
    requests[1] = InferRequest(b"\7" * 16, requests[1].sealed)  # a key this enclave does not hold
    reader.feed(asyncio.run(app.answer_batch(InferBatch(tuple(requests)))))
    results = reader.close()
    assert isinstance(results[0], Answer) and isinstance(results[2], Answer)
    assert isinstance(results[1], OmronTeeError) and results[1].reason == Reason.UNKNOWN_KEY


def test_malformed_batch_frames_are_refused_named() -> None:
    req = InferRequest(b"\1" * 16, b"\2" * 64)
    good = InferBatch((req, req), fresh=True).to_bytes()
    assert InferBatch.from_bytes(good) == InferBatch((req, req), fresh=True)
    bad = [
        b"", b"OTIB", b"XXXX\x01\x00\x01", good[:-1], good + b"\0", good[:5] + b"\x02" + good[6:],  # flag 2
        good[:6] + b"\x00" + good[7:], good[:6] + bytes([MAX_BATCH + 1]) + good[7:],  # count 0, count too large
        good[:6] + b"\x03" + good[7:],  # more requests counted than present
        good[:7] + b"\xff\xff\xff\xff" + good[11:],  # a request longer than the frame
        InferBatch((req, InferRequest(b"\3" * 16, b"\2" * 64)), fresh=True).to_bytes(),  # a fresh batch over two keys
    ]
    for data in bad:
        with pytest.raises(ProtocolError):
            InferBatch.from_bytes(data)
    with pytest.raises(ValueError):
        InferBatch(()).to_bytes()
    with pytest.raises(ValueError):
        batch_nonce([])
    # The nonces' order is bound: the same nonces in another order give another batch nonce.
    a, b = b"\1" * 32, b"\2" * 32
    assert batch_nonce([a, b]) != batch_nonce([b, a]) != batch_nonce([a])


def test_the_prober_probes_in_batches(sim) -> None:
    """The validator's prober, in process: one attestation, then batches whose one evidence proves every probe fresh."""
    from omron_tee.chain.base import Endpoint, Neuron
    from omron_tee.validator.prober import Prober

    app = sim.app()
    made = []
    real = app.backend.attest
    app.backend.attest = lambda rd: made.append(rd) or real(rd)
    prober = Prober(InProcessClient({"http://127.0.0.1:1": app}), policy=sim.policy, verifiers=sim.verifiers, models=sim.registry,
                    model_ids=["digits-mlp"], reuse_sessions=True, fresh_in_band=True, seed=0)
    neuron = Neuron(1, sim.hotkey, "cold", 0.0, False, Endpoint("127.0.0.1", 1), 0.0, 0.0, 0.0, 0)
    first = asyncio.run(prober.probe_batch(neuron, 4))  # attests, then one batch
    second = asyncio.run(prober.probe_batch(neuron, 4))  # the session reused: the batch's own evidence
    assert all(r.outcome.ok for r in first + second), [r.message for r in first + second]
    assert len(first) == len(second) == 4 and len(made) == 2


def test_a_hostile_batch_answer_is_an_outcome_never_an_exception(sim) -> None:
    from omron_tee.chain.base import Endpoint, Neuron
    from omron_tee.validator.prober import Prober

    app = sim.app()
    for corrupt in (lambda d: d[:-1], lambda d: d + b"\0" * 9, lambda d: b"\xff" * 64, lambda d: b""):
        client = InProcessClient({"http://127.0.0.1:1": app}, corrupt_infer=corrupt)
        prober = Prober(client, policy=sim.policy, verifiers=sim.verifiers, models=sim.registry, model_ids=["digits-mlp"],
                        reuse_sessions=True, fresh_in_band=True, seed=0)
        neuron = Neuron(1, sim.hotkey, "cold", 0.0, False, Endpoint("127.0.0.1", 1), 0.0, 0.0, 0.0, 0)
        asyncio.run(prober.probe_batch(neuron, 2))
        results = asyncio.run(prober.probe_batch(neuron, 3))
        assert len(results) == 3 and not any(r.outcome.ok for r in results)
        assert all(r.outcome.reason != Reason.VALIDATOR_FAULT for r in results), [r.message for r in results]
