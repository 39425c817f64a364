"""Validators score LLM miners: token-by-token comparison with their own reference, and speed."""

from __future__ import annotations

import asyncio


from omron_tee.llm.scoring import EXACT_PREFIX, judge
from omron_tee.miner.trusted_app import DevFaults
from omron_tee.validator.llm_forward import LlmProber

from llmnet import llm_net


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


def test_wrong_completion_is_caught_and_scored_down(tmp_path, llm_registry, llm_runtime) -> None:
    async def go():
        async with llm_net(tmp_path, llm_registry, {"honest": DevFaults(), "wrong": DevFaults(wrong_output=True)}, api=False) as net:
            prober = LlmProber(net.validator, reference=llm_runtime, max_tokens=8, seed=1)
            results = {}
            for _ in range(2):
                for name, m in net.miners.items():
                    neuron = next(n for n in net.validator.miners() if n.hotkey == m.hotkey)
                    r = await prober.probe(neuron)
                    net.validator.record(r.outcome)
                    results.setdefault(name, []).append(r)
            return net, results, net.validator.scores.scores()

    net, results, scores = asyncio.run(go())
    for r in results["honest"]:
        assert r.outcome.ok and r.outcome.correct is True and r.outcome.latency_s > 0
        assert "tok/s" in r.message and "ttft" in r.message
    for r in results["wrong"]:
        assert not r.outcome.ok and r.outcome.reason == "wrong-output" and r.outcome.correct is False
        assert r.outcome.attestation_accepted is True
    assert scores[net.miners["honest"].hotkey] > 0.1
    assert scores[net.miners["wrong"].hotkey] == 0.0
    rec = net.validator.scores.records[net.miners["wrong"].hotkey]
    assert rec.incorrect == 2 and rec.reasons == {"wrong-output": 2}


def test_miner_without_the_llm_is_skipped_not_scored(tmp_path, llm_registry, llm_runtime) -> None:
    async def go():
        async with llm_net(tmp_path, llm_registry, {"honest": DevFaults()}, api=False) as net:
            prober = LlmProber(net.validator, reference=llm_runtime, max_tokens=4)
            neuron = net.validator.miners()[0]
            prober.state.served[neuron.hotkey] = ("digits-mlp",)  # as if its evidence listed no LLM
            return await prober.probe(neuron)

    assert asyncio.run(go()) is None


def test_unreachable_llm_miner_is_a_failure_unknown_one_is_skipped(tmp_path, llm_registry, llm_runtime) -> None:
    async def go():
        async with llm_net(tmp_path, llm_registry, {"honest": DevFaults()}, api=False) as net:
            prober = LlmProber(net.validator, reference=llm_runtime, max_tokens=4)
            neuron = net.validator.miners()[0]
            first = await prober.probe(neuron)  # now known to serve the LLM
            server, task = net._servers[0]
            server.should_exit = True
            await task
            down = await prober.probe(neuron)
            other = LlmProber(type(net.validator)(chain=net.chain, wallet=net.validator.wallet, prober=net.validator.prober,
                                                  scores=net.validator.scores), reference=llm_runtime, max_tokens=4)
            return first, down, await other.probe(neuron)

    first, down, unknown = asyncio.run(go())
    assert first.outcome.ok
    assert down is not None and not down.outcome.ok and down.outcome.reason == "unreachable"
    assert unknown is None  # never seen serving the LLM: its failures are for the tensor probes to score
