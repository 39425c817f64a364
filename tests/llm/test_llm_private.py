"""A third party's private, streamed, receipted completion through a validator that cannot read it (fake LLM)."""

from __future__ import annotations

import asyncio
import json

from omron_tee.client import PrivateClient
from omron_tee.enclave.dev_faults import DevFaults
from omron_tee.exchange.receipt_file import verify_receipt_file
from omron_tee.exchange.requester import Answer
from omron_tee.workloads.llm import TokenChunk, output_hash

from llmnet import MODEL, llm_net

PROMPT = "The capital of France is"
N = 10


def client(net) -> PrivateClient:
    return PrivateClient(net.api_url, net.validator.hotkey, net.client_wallet, policy=net.policy, verifiers=net.verifiers, models=net.registry)


def test_private_streamed_completion_end_to_end(tmp_path, llm_registry, llm_runtime) -> None:
    expected_tokens, expected_bytes = llm_runtime.complete(PROMPT, N)

    async def go():
        async with llm_net(tmp_path, llm_registry, {"honest": DevFaults()}) as net:
            c = client(net)
            try:
                parts = [p async for p in c.stream(MODEL, PROMPT, max_tokens=N)]
            finally:
                await c.aclose()
            return net, c, parts

    net, c, parts = asyncio.run(go())
    chunks = [p for p in parts if isinstance(p, TokenChunk)]
    final = parts[-1]
    assert isinstance(final, Answer) and final.workload == "llm"
    # streamed token by token, numbered from 1, and the whole output matches the reference
    assert [ch.index for ch in chunks] == list(range(1, len(chunks) + 1))
    assert [t for ch in chunks for t in ch.tokens] == list(final.result.tokens) == expected_tokens
    assert final.result.raw == expected_bytes and final.result.text == expected_bytes.decode()
    assert final.ttft_s is not None and final.ttft_s > 0
    assert final.miner_hotkey == net.miners["honest"].hotkey
    # the receipt covers the whole output, and its file checks offline (one format for every workload)
    assert final.receipt.output_hash == output_hash(expected_tokens, expected_bytes)
    doc = json.loads(json.dumps(c.receipt_file(final).to_json()))
    check = lambda d: verify_receipt_file(d, policy=net.policy, verifiers=net.verifiers, workloads=c.workloads, models=net.registry)  # noqa: E731
    assert check(doc).ok and check(doc).workload == "llm"
    doc["result"]["tokens"][-1] += 1
    bad = check(doc)
    assert not bad.ok and any("result" in r for r in bad.reasons)


def test_miner_down_other_answers(tmp_path, llm_registry, llm_runtime) -> None:
    """A miner that is down after it was attested is failed over; the completion comes from the one that answers."""

    async def go():
        async with llm_net(tmp_path, llm_registry, {"a": DevFaults(), "b": DevFaults()}) as net:
            c = client(net)
            server_a, task_a = net._servers[0]
            real = c._post

            async def attest_then_take_a_down(path, payload):
                out = await real(path, payload)
                server_a.should_exit = True
                await task_a
                return out

            c._post = attest_then_take_a_down  # type: ignore[method-assign]
            try:
                done = await c.complete(MODEL, PROMPT, max_tokens=4, candidates=2)
            finally:
                await c.aclose()
            return net, done

    net, done = asyncio.run(go())
    assert done.miner_hotkey == net.miners["b"].hotkey
    assert len(done.result.tokens) == 4
