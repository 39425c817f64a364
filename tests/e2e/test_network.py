"""The validator against real miner processes on loopback: each miner's fault gets its named
reason, the honest miner earns, a killed miner is unreachable, and scores survive restarts."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from omron_tee.validator.core import ProbeEvent
from omron_tee.validator.reward import MIN_SAMPLES
from omron_tee.validator.scoring import ScoreBook


def test_each_miner_gets_its_reason(net, tmp_path) -> None:
    roles = ["honest", "slow", "wrong", "unapproved", "down"]
    by_hotkey = {net.miners[r].hotkey: r for r in roles}

    async def go():
        v = net.validator(tmp_path / "scores.sqlite")
        events: list[ProbeEvent] = []
        try:
            v.sync()
            miners = [n for n in v.miners() if n.hotkey in by_hotkey]
            assert {by_hotkey[n.hotkey] for n in miners} == set(roles)
            for _ in range(4):
                results = await asyncio.gather(*(v.prober.probe(n) for n in miners))
                for r in results:
                    old, new = v.record(r.outcome)
                    events.append(ProbeEvent(r, old, new))
                v.scores.flush()
            early = await v.set_weights()
            assert early.error == "no miner has earned weight yet", early  # fewer than MIN_SAMPLES verified answers
            honest = next(n for n in miners if by_hotkey[n.hotkey] == "honest")
            for _ in range(MIN_SAMPLES - 4):
                v.record((await v.prober.probe(honest)).outcome)
            weights = await v.set_weights()
        finally:
            await v.prober.client.aclose()
            v.scores.close()
        return v, events, weights

    t0 = time.monotonic()
    v, events, weights = asyncio.run(go())
    assert time.monotonic() - t0 < 20
    reasons: dict[str, set[str]] = {}
    for ev in events:
        reasons.setdefault(by_hotkey[ev.result.outcome.hotkey], set()).add(ev.result.outcome.reason)
    assert reasons == {
        "honest": {"ok"},
        "slow": {"timeout"},
        "wrong": {"wrong-output"},
        "unapproved": {"measurement-not-allowed"},
        "down": {"unreachable"},
    }
    recs = {by_hotkey[h]: r for h, r in v.scores.records.items() if h in by_hotkey}
    assert recs["honest"].correct == MIN_SAMPLES and recs["honest"].attestations_accepted == MIN_SAMPLES and recs["honest"].score > 0.3
    assert recs["wrong"].incorrect == 4 and recs["wrong"].attestations_accepted == 4 and recs["wrong"].score == 0
    assert recs["unapproved"].attestations_rejected == 4 and recs["unapproved"].correct == 0
    assert recs["slow"].attestations_accepted == 4 and recs["slow"].failures == 4  # attested, then too slow
    assert recs["down"].attestations_accepted == 0 and recs["down"].attestations_rejected == 0
    assert max(recs, key=lambda r: recs[r].score) == "honest"
    # Weights: only the honest miner earns.
    assert weights.error is None
    w = weights.weights.as_dict()
    assert w == {net.miners["honest"].uid: pytest.approx(1.0)}
    # No probe crashed anything, and each failure names its reason in the message we log.
    for ev in events:
        assert ev.result.message
        assert "Traceback" not in ev.result.message


def test_validator_step_over_whole_network(net, tmp_path) -> None:
    """Validator.step round-robins over every miner (live, faulty and down) without raising."""

    async def go():
        v = net.validator(tmp_path / "scores.sqlite")
        try:
            v.sync()
            n = len(v.miners())
            seen = set()
            for _ in range(2):
                for ev in await v.step(n):
                    seen.add(ev.result.outcome.hotkey)
        finally:
            await v.prober.client.aclose()
            v.scores.close()
        return v, seen

    v, seen = asyncio.run(go())
    assert {m.hotkey for m in net.miners.values()} <= seen
    honest = v.scores.records[net.miners["honest"].hotkey]
    assert honest.score == max(r.score for r in v.scores.records.values())


def test_reused_session_and_enclave_restart(net, tmp_path) -> None:
    """With session reuse, a re-attestation follows an 'unknown-key' answer; fresh keys work again."""
    from omron_tee.channel.hpke import KemSuite

    async def go():
        v = net.validator(tmp_path / "scores.sqlite", reuse_sessions=True, kem=KemSuite.MLKEM768_X25519)
        try:
            honest = net.neuron("honest")
            outs = [await v.prober.probe(honest) for _ in range(3)]
            assert honest.hotkey in v.prober._sessions
            # The session's key no longer exists in the enclave (as after a restart):
            s = v.prober._sessions[honest.hotkey]
            import dataclasses

            from omron_tee.attestation.binding import EnclavePublicKeys
            from omron_tee.channel.hpke import HpkeKeyPair

            ghost = HpkeKeyPair.generate(KemSuite.MLKEM768_X25519)
            v.prober._sessions[honest.hotkey] = dataclasses.replace(s, keys=EnclavePublicKeys(s.keys.kem, ghost.public_bytes, s.keys.signing_public))
            lost = await v.prober.probe(honest)
            again = await v.prober.probe(honest)
        finally:
            await v.prober.client.aclose()
            v.scores.close()
        return outs, lost, again

    outs, lost, again = asyncio.run(go())
    assert [o.outcome.reason for o in outs] == ["ok"] * 3
    assert lost.outcome.reason == "unknown-key"
    assert again.outcome.reason == "ok"


def test_miner_killed_mid_request_and_between_requests(net, tmp_path) -> None:
    crasher = net.miners["crasher"]

    async def go():
        v = net.validator(tmp_path / "scores.sqlite", timeout=net.crash_delay + 3.0)
        try:
            node = net.neuron("crasher")
            first = await v.prober.probe(node)  # alive: verified, just slow
            task = asyncio.create_task(v.prober.probe(node))
            await asyncio.sleep(net.crash_delay / 2)  # attested; the sealed request is in the enclave now
            crasher.kill()
            mid = await task
            after = await v.prober.probe(node)
            # The rest of the network is unaffected.
            other = await v.prober.probe(net.neuron("honest"))
            for p in (first, mid, after, other):
                v.record(p.outcome)
            v.scores.flush()
        finally:
            await v.prober.client.aclose()
            v.scores.close()
        return first, mid, after, other

    t0 = time.monotonic()
    first, mid, after, other = asyncio.run(go())
    assert first.outcome.reason == "ok"
    assert mid.outcome.reason == "unreachable", mid.message
    assert mid.outcome.attestation_accepted is True  # it died after attesting, before answering
    assert after.outcome.reason == "unreachable"
    assert other.outcome.reason == "ok"
    assert time.monotonic() - t0 < 10


def test_scorebook_reopened_keeps_scores(net, tmp_path) -> None:
    path = tmp_path / "scores.sqlite"

    async def go():
        v = net.validator(path)
        try:
            for _ in range(3):
                for n in (net.neuron("honest"), net.neuron("wrong")):
                    v.record((await v.prober.probe(n)).outcome)
            v.scores.flush()
        finally:
            await v.prober.client.aclose()
        return v

    v = asyncio.run(go())
    before = {h: (r.score, r.requests, dict(r.reasons), list(r.latencies)) for h, r in v.scores.records.items()}
    v.scores.close()
    again = ScoreBook(path)
    after = {h: (r.score, r.requests, dict(r.reasons), list(r.latencies)) for h, r in again.records.items()}
    again.close()
    assert after == before
    assert before[net.miners["honest"].hotkey][0] > 0


def _scores(path):
    if not path.exists():
        return {}
    db = sqlite3.connect(path, timeout=5)
    try:
        return {h: (s, rec) for h, s, rec in db.execute("SELECT hotkey, score, record FROM miners")}
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def test_validator_process_killed_and_restarted(net, tmp_path) -> None:
    """A real validator process, SIGKILLed once it has scores, restarts with them intact."""
    import json

    from omron_tee.config import create_wallet

    wallet = create_wallet("validator2", "default", net.wallet_path)
    net.chain.register(wallet, stake=500.0)
    data_dir = tmp_path / "vdata"
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        api_port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "omron_tee.validator", *net.chain_args(), *net.wallet_args("validator2"),
           "--validator.api_port", "0", "--validator.interval", "0.2", "--validator.timeout", str(net.probe_timeout),
           "--neuron.data_dir", str(data_dir), "--validator.policy", str(net.policy_file)]
    # The restarted process also serves its third-party API.
    cmd2 = [*cmd[: cmd.index("--validator.api_port") + 1], str(api_port), *cmd[cmd.index("--validator.api_port") + 2 :]]
    honest = net.miners["honest"].hotkey
    logs = [tmp_path / "v1.log", tmp_path / "v2.log"]

    def start(i):
        with open(logs[i], "wb") as out:
            return subprocess.Popen([cmd, cmd2][i], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def scores_file():
        files = list(data_dir.glob("scores-*.sqlite"))
        return files[0] if files else data_dir / "missing"

    def wait_for(pred, timeout, proc):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = pred()
            if v:
                return v
            assert proc.poll() is None, logs[0].read_text() + logs[1].read_text() if logs[1].exists() else logs[0].read_text()
            time.sleep(0.1)
        raise AssertionError("timed out: " + (logs[1].read_text() if logs[1].exists() else logs[0].read_text())[-3000:])

    faults = (("honest", "ok"), ("wrong", "wrong-output"), ("unapproved", "measurement-not-allowed"), ("slow", "timeout"), ("down", "unreachable"))

    def named(text: str) -> bool:
        return all(re.search(rf"uid {net.miners[role].uid}\s+\S+\s+{re.escape(reason)}\s", text) for role, reason in faults)

    p = start(0)
    try:
        # Scores saved, and every miner's fault named (the slow miner's after its whole deadline).
        wait_for(lambda: _scores(scores_file()).get(honest, (0, None))[0] > 0.15 and named(logs[0].read_text()), 40, p)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=5)
        saved = _scores(scores_file())
        assert saved[honest][0] > 0.15
        saved_requests = json.loads(saved[honest][1])["requests"]
        p = start(1)
        wait_for(lambda: re.search(r"(\d+) miners with scores restored", logs[1].read_text()), 30, p)
        restored = int(re.search(r"(\d+) miners with scores restored", logs[1].read_text()).group(1))
        assert restored == len(saved)
        # It carries on from where it was: the honest miner's request count continues.
        wait_for(lambda: json.loads(_scores(scores_file())[honest][1])["requests"] > saved_requests, 30, p)
        now = _scores(scores_file())
        # The score carries on from the saved one. (A young record is a running mean of its answers'
        # quality, so one slow answer right after the restart may move it by a fifth; it is not reset.)
        assert now[honest][0] > 0.15 and json.loads(now[honest][1])["streak"] > json.loads(saved[honest][1])["streak"]
        # A third party through the restarted validator's own API gets a verified answer.
        import httpx
        import numpy as np

        from omron_tee.client import PrivateClient
        from omron_tee.models.registry import ModelRegistry
        from omron_tee.workloads.tensor import sample_input
        from omron_tee.validator.neuron import build_verifiers

        url = f"http://127.0.0.1:{api_port}"

        def api_up():
            try:
                return httpx.get(url + "/v1/models", timeout=0.5, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(api_up, 20, p)
        spec = ModelRegistry.builtin().get("diabetes-mlp")
        x = sample_input(spec, np.random.default_rng(11))
        policy = net.policy()
        client = PrivateClient(url, wallet.hotkey.ss58_address, net.client_wallet, policy=policy, verifiers=build_verifiers(policy))
        result = client.infer_sync(spec.model_id, x, candidates=1)
        assert result.miner_hotkey == honest  # the best-scored miner, as restored
        np.testing.assert_allclose(result.result.output, ModelRegistry.builtin().runtime(spec.model_id).run(x), rtol=1e-6, atol=1e-6)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
    text = "".join(log.read_text() for log in logs)
    assert "Traceback" not in text, text[-3000:]
    # Every fault is named in the validator's log, per miner uid.
    for role, reason in faults:
        assert re.search(rf"uid {net.miners[role].uid}\s+\S+\s+{re.escape(reason)}\s", text), (role, reason, text[-3000:])


def test_a_second_miner_on_a_served_hotkey_is_refused_not_a_silent_takeover(net, tmp_path) -> None:
    """Starting another miner process with a hotkey a running miner already serves is a one-line error,
    and the chain keeps the first one's endpoint."""
    import subprocess
    import sys

    from omron_tee.devnet.processes import free_port

    port = free_port()
    honest = net.miners["honest"]
    before = net.chain.metagraph().by_hotkey(honest.hotkey).endpoint
    cmd = [sys.executable, "-m", "omron_tee.miner", *net.chain_args(), *net.wallet_args("miner-honest"),
           "--axon.port", str(port), "--enclave", "simulated", "--zk.off"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=net.dir)
    assert out.returncode == 2, (out.stdout[-2000:], out.stderr[-2000:])
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "already served by a running miner" in errors[0] and "Traceback" not in out.stderr
    assert net.chain.metagraph().by_hotkey(honest.hotkey).endpoint == before


def test_a_stall_of_the_validators_own_loop_is_never_charged_to_a_miner(net, tmp_path) -> None:
    """A blocking call on the validator's event loop (a metagraph read or a weight setting against a subtensor
    node takes seconds) once made the probes in flight look slow or time out, charged to their miners. Probing
    continuously, the loop is held for 1.5 s (past the probes' 0.6 s deadline) while a probe of the honest miner
    is in flight: that probe is counted as the validator's fault, never scored, and the honest miner's probes
    before and after are verified and scored as usual."""
    honest = net.miners["honest"].wallet.hotkey.ss58_address

    async def go():
        v = net.validator(tmp_path / "scores.sqlite")
        events: list = []
        v.on_event = lambda ev: events.append(ev) if isinstance(ev, ProbeEvent) else None
        real = v.prober.probe
        n = {"honest": 0}

        async def probe(neuron, *a, **kw):
            if neuron.hotkey != honest:
                return await real(neuron, *a, **kw)
            n["honest"] += 1
            if n["honest"] != 4:
                return await real(neuron, *a, **kw)
            inflight = asyncio.create_task(real(neuron, *a, **kw))
            await asyncio.sleep(0.002)  # the request is on its way
            time.sleep(1.5)  # what a blocking chain call does to every probe in flight
            return await inflight

        v.prober.probe = probe
        stop = asyncio.Event()
        task = asyncio.create_task(v.probe_continuously(stop, interval=0.05))
        t0 = time.monotonic()
        while n["honest"] < 10 and time.monotonic() - t0 < 20:
            await asyncio.sleep(0.05)
        stop.set()
        await task
        await v.prober.client.aclose()
        v.scores.close()
        return events

    events = asyncio.run(go())
    mine = [e for e in events if e.result.outcome.hotkey == honest]
    faults = [e for e in mine if e.result.outcome.kind == "validator-fault"]
    assert len(faults) >= 1 and "loop stalled" in faults[0].result.message, [e.result.message for e in mine]
    assert all(e.new_score == e.old_score for e in faults)  # counted, not scored
    scored = [e for e in mine if e.result.outcome.kind == "benchmark"]
    assert len(scored) >= 6 and all(e.result.outcome.ok for e in scored), [e.result.message for e in scored]
