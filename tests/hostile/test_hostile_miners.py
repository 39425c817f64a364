"""The hostile-miner suite: every misbehaviour is named, penalised, bounded, and harms no one else.

Against real processes on loopback (tests/hostile/conftest.py): for each
hostile miner the validator's probe fails with the behaviour's named reason
and its score decays; the round ends within its deadline however the miner
stalls; the honest miners are verified and correct in the same rounds; the
validator process itself runs on through all of it. Throughput of honest
probing with and without the attackers is measured in
bench/bench_hostile.py, not timed here.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from omron_tee.devnet.hostile import EXPECTED_REASONS
from omron_tee.devnet.processes import free_port
from omron_tee.validator import reward
from omron_tee.validator.reward import Verdict
from omron_tee.validator.scoring import FAILURE_DECAY

SEEDED_SCORE = 0.5  # what each miner's score is before the rounds, so a penalty shows
ROUND_BOUND_S = 12.0  # far below what a trickler would take (1000 s), far above a probe's deadlines (2.5 s to attest, 2.5 s to answer)


def _rounds(net, tmp_path, rounds: int, **validator_kw):
    async def go():
        v = net.validator(tmp_path / "scores.sqlite", timeout=2.0, **validator_kw)  # a deadline of 2.5 s: room for a loaded 2-core machine, far below the 1000 s a trickler would take
        try:
            for m in net.members.values():
                rec = v.scores.record(m.hotkey, m.uid)
                rec.score, rec.streak = SEEDED_SCORE, reward.MIN_SAMPLES  # every miner starts as an earning one
            miners = v.miners()
            events, durations = [], []
            for _ in range(rounds):
                t0 = time.monotonic()
                events.extend(await v.step(len(miners)))
                durations.append(time.monotonic() - t0)
            return v, events, durations
        finally:
            await v.prober.client.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def outcome(hostile_net, tmp_path_factory):
    return _rounds(hostile_net, tmp_path_factory.mktemp("rounds"), rounds=2)


def test_every_hostile_miner_is_named_and_penalised(hostile_net, outcome) -> None:
    v, events, _ = outcome
    by_name: dict[str, list] = {}
    for ev in events:
        by_name.setdefault(hostile_net.by_hotkey(ev.result.outcome.hotkey).name, []).append(ev)
    assert set(by_name) == set(hostile_net.members), "every miner was probed"
    shared = {}
    for name, evs in by_name.items():
        m = hostile_net.members[name]
        reasons = [e.result.outcome.reason for e in evs]
        if m.behaviour == "honest":
            assert reasons == ["ok", "ok"], (name, [e.result.message for e in evs])
            assert evs[-1].new_score > SEEDED_SCORE * (1 - FAILURE_DECAY)
            continue
        if m.behaviour == "shared-enclave":
            shared[name] = reasons
            continue
        want = EXPECTED_REASONS[m.behaviour]
        assert reasons == [want, want], (name, reasons, [e.result.message for e in evs])
        assert all(not e.result.outcome.ok and e.result.outcome.kind == "benchmark" for e in evs)
        # Charged by the rule: a stall decays the score, evidence or answers that are wrong zero it.
        assert evs[0].old_score == pytest.approx(SEEDED_SCORE)
        verdicts = {e.result.outcome.verdict for e in evs}
        assert verdicts <= {Verdict.UNAVAILABLE, Verdict.STRIKE}, (name, verdicts)
        for e in evs:
            assert e.new_score == pytest.approx(reward.next_score(e.old_score, e.result.outcome.verdict)), name
        assert evs[-1].new_score <= SEEDED_SCORE * (1 - FAILURE_DECAY) ** 2, name
    # One enclave behind two hotkeys: whichever was probed first keeps it, the other is refused.
    assert sorted(map(tuple, shared.values())) == [("enclave-shared", "enclave-shared"), ("ok", "ok")], shared


BATCH = 3


@pytest.fixture(scope="module")
def batched(hostile_net, tmp_path_factory):
    """The same rounds, probing in batches on reused sessions, each batch's freshness proven by its one evidence."""
    return _rounds(hostile_net, tmp_path_factory.mktemp("batched"), rounds=2, batch=BATCH, reuse_sessions=True, fresh_in_band=True)


def test_every_hostile_miner_is_named_when_probed_in_batches(hostile_net, batched) -> None:
    _, events, durations = batched
    by_name: dict[str, list] = {}
    for ev in events:
        by_name.setdefault(hostile_net.by_hotkey(ev.result.outcome.hotkey).name, []).append(ev.result)
    assert set(by_name) == set(hostile_net.members)
    for name, results in by_name.items():
        behaviour = hostile_net.members[name].behaviour
        reasons = [r.outcome.reason for r in results]
        assert len(results) == 2 * BATCH, (name, reasons)
        if behaviour == "honest":
            assert set(reasons) == {"ok"}, (name, [r.message for r in results])
        elif behaviour != "shared-enclave":
            assert set(reasons) == {EXPECTED_REASONS[behaviour]}, (name, reasons, [r.message for r in results])
    assert max(durations) < ROUND_BOUND_S, durations


def test_no_miner_stalls_a_round(outcome) -> None:
    """The trickler sends a byte a second for 1000 s; the endless one never stops: the rounds end anyway."""
    _, _, durations = outcome
    assert len(durations) == 2 and max(durations) < ROUND_BOUND_S, durations


def test_failures_do_not_reach_the_honest_miners_scores_or_weights(hostile_net, outcome) -> None:
    v, _, _ = outcome
    ev = asyncio.run(v.set_weights())
    assert ev.error is None, ev.error
    w = ev.weights.as_dict()
    honest = [hostile_net.members[h].uid for h in ("honest-a", "honest-b")]
    others = [m.uid for m in hostile_net.members.values() if m.behaviour not in ("honest", "shared-enclave")]
    # Every hostile miner started at the honest miners' score; two rounds later it holds less weight than either.
    assert min(w.get(u, 0.0) for u in honest) > max(w.get(u, 0.0) for u in others), w


def test_the_validator_process_runs_on_among_hostile_miners(hostile_net, tmp_path) -> None:
    """The validator neuron itself, as operators run it, probing every hostile miner for several rounds."""
    cmd = [sys.executable, "-m", "omron_tee.validator", *hostile_net.chain_args(), *hostile_net.wallet_args("validator"),
           "--validator.timeout", "1.0", "--validator.interval", "0.2",
           "--validator.api_port", "0", "--neuron.data_dir", str(tmp_path / "data"), "--logging.debug"]
    log = tmp_path / "validator.log"
    with open(log, "wb") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    # The neuron's local policy has no SGX section, so the hostile miner's SGX quote is refused unread (unsupported-tee);
    # the in-process validators above accept SGX too, and name it bad-certificate.
    reasons = ("too-deep", "unsupported-tee", "too-large", "malformed-reply", "disconnected", "timeout", "report-data-mismatch", "enclave-shared")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(r in log.read_text() for r in reasons):
            assert p.poll() is None, "the validator process ended:\n" + log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(2.0)  # and a little longer among them
        assert p.poll() is None, "the validator process ended:\n" + log.read_text()[-3000:]
    finally:
        p.terminate()
        p.wait(timeout=15)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    for reason in reasons:
        assert reason in text, (reason, text[-3000:])


def test_a_relayed_request_keeps_the_clients_deadline_among_stalling_miners(hostile_net, tmp_path) -> None:
    """A relayed request with deadline_ms=2000 was once answered after 19 s (a trickling miner)."""
    from omron_tee.config import create_wallet
    from omron_tee.errors import MinerError
    from omron_tee.protocol import InferRequest
    from omron_tee.validator.api.routes import running_api
    from omron_tee.wire.auth import Signer
    from omron_tee.wire.client import SignedClient

    stallers = [hostile_net.members[n] for n in ("trickle", "endless", "oversized")]

    async def go():
        v = hostile_net.validator(tmp_path / "scores.sqlite", timeout=5.0)
        client = SignedClient(Signer(create_wallet("third-party", "default", tmp_path / "w")), timeout=30.0)
        junk = InferRequest(bytes(16), bytes(64)).to_json()
        body = {"model": "digits-mlp", "deadline_ms": 2000, "attempts": [{"hotkey": m.hotkey, "request": junk} for m in stallers]}
        try:
            async with running_api(v, port=free_port()) as url:
                t0 = time.monotonic()
                with pytest.raises(MinerError) as e:
                    await client.post(url, "/v1/infer", body, receiver=v.hotkey, timeout=30.0)
                return e.value.reason, str(e.value), time.monotonic() - t0
        finally:
            await client.aclose()
            await v.prober.client.aclose()

    reason, message, elapsed = asyncio.run(go())
    assert reason == "all-miners-failed", message
    assert elapsed < 6.0, elapsed  # the client's 2 s and the time to say so; 19 s before deadlines covered whole exchanges


def test_a_third_party_client_skips_a_hostile_candidate_and_gets_its_answer(hostile_net, tmp_path) -> None:
    """A flipped-certificate quote relayed through /v1/attest made the client's infer raise."""
    import numpy as np

    from omron_tee.client import PrivateClient
    from omron_tee.config import create_wallet
    from omron_tee.models.registry import ModelRegistry
    from omron_tee.workloads.tensor import sample_input
    from omron_tee.validator.api.routes import running_api

    m = hostile_net.members
    spec = ModelRegistry.builtin().get("digits-mlp")
    x = sample_input(spec, np.random.default_rng(1))

    async def go():
        v = hostile_net.validator(tmp_path / "scores.sqlite", timeout=2.0)
        for rank, name in enumerate(("bad-certificate", "deep-json", "relay", "honest-a")):  # the API offers the best-scored first
            v.scores.record(m[name].hotkey, m[name].uid).score = 1.0 - rank / 10
        try:
            async with running_api(v, port=free_port()) as url:
                client = PrivateClient(url, v.hotkey, create_wallet("tp", "default", tmp_path / "w"), policy=v.prober.policy, verifiers=v.prober.verifiers)
                try:
                    return await client.infer(spec.model_id, x, candidates=4), client.last_rejected
                finally:
                    await client.aclose()
        finally:
            await v.prober.client.aclose()

    result, last_rejected = asyncio.run(go())
    assert result.miner_hotkey == m["honest-a"].hotkey
    rejected = {r.hotkey: r.reason for r in last_rejected}
    assert rejected[m["bad-certificate"].hotkey] == "bad-certificate"
    assert rejected[m["relay"].hotkey] == "report-data-mismatch"
    assert rejected[m["deep-json"].hotkey] == "too-deep"


def test_the_miner_doctor_reaches_the_validators_verdict_on_every_hostile_miner(hostile_net, outcome) -> None:
    """Each miner's operator runs the doctor as its own hotkey: the appraisal it runs is the validator's,
    so it concludes what the validator concluded, for the same named reason. The one thing a single
    machine cannot see is another hotkey presenting its enclave (shared-enclave): only validators can."""
    from omron_tee.doctor import appraise_self
    from omron_tee.models.registry import ModelRegistry

    v, events, _ = outcome
    by_validator = {}
    for ev in events:
        o = ev.result.outcome
        by_validator.setdefault(hostile_net.by_hotkey(o.hotkey).name, set()).add((o.verdict.value, o.reason))
    mg = hostile_net.chain.metagraph()

    async def doctors():
        members = [m for m in hostile_net.members.values() if m.behaviour != "shared-enclave"]
        found = await asyncio.gather(*(appraise_self(m.wallet, mg.by_hotkey(m.hotkey), policy=v.prober.policy, models=ModelRegistry.builtin(),
                                                     releases=None, timeout=2.0) for m in members))
        return {m.name: (f.verdict, f.reason) for m, f in zip(members, found)}

    said = asyncio.run(doctors())
    assert len(said) == len(hostile_net.members) - 2
    for name, verdict in said.items():
        assert by_validator[name] == {verdict}, (name, verdict, by_validator[name])


def test_validators_tell_each_miner_its_named_verdict_in_a_signed_answer(hostile_net, outcome) -> None:
    """What the doctor cannot see alone (shared-enclave) it hears from the validator, signed; a forged answer is refused."""
    from omron_tee.chain.base import Endpoint
    from omron_tee.devnet.processes import free_port
    from omron_tee.doctor import ask_validator
    from omron_tee.validator.api.routes import running_api

    v, events, _ = outcome
    last = {}
    for ev in events:
        last[ev.result.outcome.hotkey] = ev.result.outcome.reason
    port = free_port()

    async def go():
        async with running_api(v, port=port):
            hostile_net.chain.serve(hostile_net.validator_wallet, Endpoint("127.0.0.1", port))
            v.sync()
            me = hostile_net.chain.metagraph().by_hotkey(v.hotkey)
            names = ["shared-1", "shared-2", "honest-a", *[n for n, m in hostile_net.members.items() if m.behaviour not in ("honest", "shared-enclave")][:3]]
            found = await asyncio.gather(*(ask_validator(hostile_net.members[n].wallet, me, timeout=3.0) for n in names))
            # An answer is signed for the miner that asked: it does not verify as anyone else's.
            from omron_tee.validator.api.verdicts import PATH
            from omron_tee.wire.auth import Signer
            from omron_tee.wire.client import SignedClient

            client = SignedClient(Signer(hostile_net.members["honest-a"].wallet), timeout=3.0)
            try:
                async with client.stream(me.endpoint.url, PATH, {}, receiver=me.hotkey) as body:
                    raw, headers = await body.read(), dict(body.headers)
            finally:
                await client.aclose()
            return dict(zip(names, found)), (raw, headers)

    found, (raw, headers) = asyncio.run(go())
    from bittensor import http_auth

    from omron_tee.validator.api.verdicts import RESPONSE_PATH

    assert http_auth.verify(headers, raw, method="POST", path=RESPONSE_PATH,
                            self_hotkey_ss58=hostile_net.members["honest-a"].hotkey).hotkey_ss58 == v.hotkey
    with pytest.raises(http_auth.AuthError):
        http_auth.verify(headers, raw, method="POST", path=RESPONSE_PATH, self_hotkey_ss58=hostile_net.members["honest-b"].hotkey)
    with pytest.raises(http_auth.AuthError):
        http_auth.verify(headers, raw.replace(b'"ok"', b'"no"'), method="POST", path=RESPONSE_PATH,
                         self_hotkey_ss58=hostile_net.members["honest-a"].hotkey)
    for name, f in found.items():
        assert f.signed and f.reason == last[hostile_net.members[name].hotkey], (name, f)
    assert sorted(found[n].reason for n in ("shared-1", "shared-2")) == ["enclave-shared", "ok"]
    assert found["honest-a"].verdict == "verified" and found["honest-a"].details["earning"] in (True, False)
