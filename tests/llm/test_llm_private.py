"""A third party's private, streamed, receipted completion through a validator that cannot read it."""

from __future__ import annotations

import asyncio
import json

from omron_tee.llm.client import PrivateCompletionClient, completion_receipt_json, verify_completion_file
from omron_tee.llm.requester import Completion, TokenChunk
from omron_tee.llm.stream import output_hash
from omron_tee.miner.trusted_app import DevFaults

from llmnet import MODEL, llm_net

PROMPT = "The capital of France is"
N = 10


def test_private_streamed_completion_end_to_end(tmp_path, llm_registry, llm_runtime) -> None:
    expected_tokens, expected_bytes = llm_runtime.complete(PROMPT, N)

    async def go():
        async with llm_net(tmp_path, llm_registry, {"honest": DevFaults()}) as net:
            c = PrivateCompletionClient(net.api_url, net.validator.hotkey, net.client_wallet, policy=net.policy, verifiers=net.verifiers)
            try:
                parts = [p async for p in c.stream(MODEL, PROMPT, max_tokens=N, model_hash=net.spec.sha256)]
            finally:
                await c.aclose()
            return net, parts

    net, parts = asyncio.run(go())
    chunks = [p for p in parts if isinstance(p, TokenChunk)]
    final = parts[-1]
    assert isinstance(final, Completion)
    # streamed token by token, numbered from 1, and the whole output matches the reference
    assert [ch.index for ch in chunks] == list(range(1, len(chunks) + 1))
    assert [t for ch in chunks for t in ch.tokens] == final.tokens == expected_tokens
    assert final.raw == expected_bytes and final.text == expected_bytes.decode()
    assert final.ttft_s is not None and final.ttft_s > 0
    assert final.miner_hotkey == net.miners["honest"].hotkey
    # the receipt covers the whole output, and its file checks offline
    assert final.receipt.output_hash == output_hash(expected_tokens, expected_bytes)
    doc = json.loads(json.dumps(completion_receipt_json(final)))
    assert verify_completion_file(doc, policy=net.policy, verifiers=net.verifiers).ok
    doc["completion"]["tokens"][-1] += 1
    check = verify_completion_file(doc, policy=net.policy, verifiers=net.verifiers)
    assert not check.ok and any("completion" in r for r in check.reasons)


def test_miner_down_other_answers(tmp_path, llm_registry, llm_runtime) -> None:
    """A miner that is down is left out; the completion comes from the one that answers."""

    async def go():
        async with llm_net(tmp_path, llm_registry, {"a": DevFaults(), "b": DevFaults()}) as net:
            # take miner "a" down after it was attested: its sealed copy fails, "b" answers
            c = PrivateCompletionClient(net.api_url, net.validator.hotkey, net.client_wallet, policy=net.policy, verifiers=net.verifiers)
            accepted = await c._attested(MODEL, 2)
            assert len(accepted) == 2
            server_a = net._servers[0][0]
            server_a.should_exit = True
            await net._servers[0][1]
            try:
                done = await c.complete(MODEL, PROMPT, max_tokens=4, model_hash=net.spec.sha256, candidates=2)
            finally:
                await c.aclose()
            return net, done

    net, done = asyncio.run(go())
    assert done.miner_hotkey == net.miners["b"].hotkey
    assert len(done.tokens) == 4
