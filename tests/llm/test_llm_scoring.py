"""Validators score LLM miners through the one prober: token-by-token comparison with their own reference, and speed."""

from __future__ import annotations

import asyncio


import numpy as np

from omron_tee.enclave.dev_faults import DevFaults
from omron_tee.validator.schedule import choose
from omron_tee.workloads import default_workloads
from omron_tee.workloads.llm import EXACT_PREFIX, judge_tokens as judge

from llmnet import MODEL, llm_net


def test_identical_completion_is_correct() -> None:
    ref = list(range(16))
    assert judge(ref, list(ref), 16).correct


def test_early_divergence_is_wrong() -> None:
    ref = list(range(16))
    got = ref[:3] + [999] + ref[4:]
    j = judge(ref, got, 16)
    assert not j.correct and j.common_prefix == 3 and "token 3" in j.reason


def test_late_divergence_is_tolerated_within_the_share() -> None:
    ref = list(range(100))
    assert judge(ref, ref[:95] + [7] * 5, 100).correct  # 95 % common prefix
    assert not judge(ref, ref[:85] + [7] * 15, 100).correct  # 85 %: too early
    short = list(range(5))
    assert judge(short, list(short), 16).correct  # a reference shorter than EXACT_PREFIX must match whole
    assert not judge(short, short[:4] + [9], 16).correct


def test_too_many_or_too_few_tokens() -> None:
    ref = list(range(16))
    assert not judge(ref, ref + [1], 16).correct
    assert not judge(ref, ref[: EXACT_PREFIX], 16).correct  # stopped early: the prefix covers only half


def test_wrong_completion_is_caught_and_scored_down(tmp_path, llm_registry) -> None:
    async def go():
        async with llm_net(tmp_path, llm_registry, {"honest": DevFaults(), "wrong": DevFaults(wrong_output=True)}, api=False) as net:
            results = {}
            for _ in range(2):
                for name, m in net.miners.items():
                    neuron = next(n for n in net.validator.miners() if n.hotkey == m.hotkey)
                    r = await net.validator.prober.probe(neuron, MODEL)
                    net.validator.record(r.outcome)
                    results.setdefault(name, []).append(r)
            return net, results, net.validator.scores.scores()

    net, results, scores = asyncio.run(go())
    for r in results["honest"]:
        assert r.outcome.ok and r.outcome.correct is True and r.outcome.latency_s > 0 and r.outcome.latency_class == "llm"
        assert "tokens match the reference" in r.message
    for r in results["wrong"]:
        assert not r.outcome.ok and r.outcome.reason == "wrong-output" and r.outcome.correct is False
        assert r.outcome.attestation_accepted is True
    assert scores[net.miners["honest"].hotkey] > 0.05  # two verified answers: 1 - (1 - ALPHA)**2 of the way up
    assert scores[net.miners["wrong"].hotkey] == 0.0
    rec = net.validator.scores.records[net.miners["wrong"].hotkey]
    assert rec.incorrect == 2 and rec.reasons == {"wrong-output": 2}
    assert len(net.validator.scores.records[net.miners["honest"].hotkey].llm_latencies) == 2  # compared with LLM latencies only


class _Offer:
    def __init__(self, models, zk=()):
        self.models = tuple(models)
        self._zk = set(zk)
        self.zk_circuits: dict[str, bytes] = {}  # AttestResponse's: no circuit ids named

    def offers(self, model_id, proof_system):
        return model_id in self.models and (proof_system == "tee" or model_id in self._zk)


def test_a_miner_is_never_probed_on_a_workload_it_does_not_offer() -> None:
    """Optional workloads (LLM, zk) go only to miners whose latest attestation offers them; tensors always."""
    w = default_workloads(zk_verifiers={"diabetes-mlp": object()})
    judged = {"tensor": ["digits-mlp", "diabetes-mlp"], "zk": ["diabetes-mlp"], "llm": [MODEL]}
    shares = {"llm": 1.0, "zk": 1.0}
    rng = np.random.default_rng(0)
    picks = {(choose(w, judged, _Offer(["digits-mlp", "diabetes-mlp"]), rng, shares)[0].name) for _ in range(50)}
    assert picks == {"tensor"}
    assert {choose(w, judged, None, rng, shares)[0].name for _ in range(20)} == {"tensor"}  # nothing known yet
    assert {choose(w, judged, _Offer([MODEL, "digits-mlp"]), rng, shares)[0].name for _ in range(20)} == {"llm"}
    assert {choose(w, judged, _Offer(["diabetes-mlp"], zk=["diabetes-mlp"]), rng, shares)[0].name for _ in range(20)} == {"zk"}
    half = [choose(w, judged, _Offer([MODEL]), rng, {"llm": 0.5})[0].name for _ in range(400)]
    assert 120 < half.count("llm") < 280  # its share, where offered


def test_an_unreachable_llm_miner_is_a_failure(tmp_path, llm_registry) -> None:
    async def go():
        async with llm_net(tmp_path, llm_registry, {"honest": DevFaults()}, api=False) as net:
            prober = net.validator.prober
            neuron = net.validator.miners()[0]
            first = await prober.probe(neuron, MODEL)
            server, task = net._servers[0]
            server.should_exit = True
            await task
            return first, await prober.probe(neuron, MODEL)

    first, down = asyncio.run(go())
    assert first.outcome.ok
    assert not down.outcome.ok and down.outcome.reason == "unreachable"
