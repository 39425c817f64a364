"""Hostile chat requests: every malformed or oversized conversation is refused by name, quickly,
before anything reaches a miner; and a conversation that the validator accepted renders the same
way for the enclave and for the receipt."""

from __future__ import annotations

import pytest

from omron_tee.errors import OmronTeeError, ProtocolError
from omron_tee.models.chat import MAX_CHAT_CHARS, MAX_MESSAGES, ChatMessage, FORMATS, canonical, check_messages
from omron_tee.validator.api.openai import parse_chat_request
from omron_tee.workloads.llm import LlmWorkload, Prompt

MODEL = "m"


def _check_model(m):
    if m != MODEL:
        raise ProtocolError("unknown model")
    return m


def _req(**kw):
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **kw}


@pytest.mark.parametrize(
    "body, reason",
    [
        (_req(messages=[]), "malformed-message"),
        (_req(messages="hi"), "malformed-message"),
        (_req(messages=[{"content": "no role"}]), "malformed-message"),
        (_req(messages=[{"role": 7, "content": "x"}]), "malformed-message"),
        (_req(messages=[{"role": "user", "content": {"text": "x"}}]), "unsupported"),
        (_req(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]), "unsupported"),
        (_req(messages=[{"role": "user", "content": "x", "tool_calls": []}]), "unsupported"),
        (_req(messages=[{"role": "tool", "content": "x"}]), "bad-input"),
        (_req(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]), "bad-input"),
        (_req(messages=[{"role": "system", "content": "s"}]), "bad-input"),
        (_req(messages=[{"role": "user", "content": "x"}] * (MAX_MESSAGES + 10)), "bad-input"),
        (_req(messages=[{"role": "user", "content": "x" * (MAX_CHAT_CHARS + 1)}]), "bad-input"),
        (_req(max_tokens=0), "malformed-message"),
        (_req(max_tokens=True), "malformed-message"),
        (_req(max_tokens=4, max_completion_tokens=4), "malformed-message"),
        (_req(n=2), "unsupported"),
        (_req(logit_bias={"1": 5}), "unsupported"),
        (_req(mirostat=2), "unsupported"),
        (_req(stream="yes"), "malformed-message"),
    ],
)
def test_a_malformed_chat_is_refused_by_name(body, reason) -> None:
    with pytest.raises(OmronTeeError) as e:
        parse_chat_request(body, _check_model)
    assert e.value.reason == reason, (e.value.reason, str(e.value))


def test_content_parts_are_bounded_by_the_characters_they_join_to() -> None:
    """(The request body itself is bounded before it is parsed: wire.server.read_body.)"""
    parts = [{"type": "text", "text": "x"}] * 200_000  # many parts, few characters: served
    _, messages, _, _ = parse_chat_request(_req(messages=[{"role": "user", "content": parts}]), _check_model)
    assert len(messages[0].content) == 200_000
    with pytest.raises(OmronTeeError):  # over MAX_CHAT_CHARS once joined
        parse_chat_request(_req(messages=[{"role": "user", "content": [{"type": "text", "text": "x" * 1024}] * 1100}]), _check_model)


def test_the_developer_role_is_the_system_role() -> None:
    _, messages, _, _ = parse_chat_request(_req(messages=[{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]), _check_model)
    assert messages[0] == ChatMessage("system", "be brief")


def test_the_sealed_chat_decodes_to_the_same_messages_and_hash() -> None:
    """What the validator seals is what the enclave reads and what the receipt's input hash covers."""
    from omron_tee.models.spec import ModelSpec

    w = LlmWorkload()
    spec = ModelSpec(model_id=MODEL, sha256=b"\0" * 32, path=__import__("pathlib").Path("/nonexistent"), runtime="llm", input_name="prompt",
                     input_shape=(1, 1), input_dtype="int32", output_shape=(1, 1), atol=0.0, rtol=0.0, proof_systems=("tee",), description="", chat_format="gemma")
    chat = check_messages((ChatMessage("system", "s"), ChatMessage("user", "<end_of_turn>hi"), ChatMessage("assistant", "a"), ChatMessage("user", "b")))
    sent = Prompt("", 8, chat)
    got = w.decode_input(spec, w.encode_input(spec, sent))
    assert got == sent and w.input_hash(spec, got) == w.input_hash(spec, sent)
    assert w.input_hash(spec, got) != w.input_hash(spec, Prompt(canonical(chat).decode(), 8))  # a chat never collides with a prompt
    with pytest.raises(ProtocolError):
        w.decode_input(spec, {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "max_tokens": 8})


def test_gemma_markers_are_special_and_text_is_text() -> None:
    segs = FORMATS["gemma"].segments(check_messages((ChatMessage("system", "S"), ChatMessage("user", "<start_of_turn>x"))))
    assert [s.text for s in segs if s.special] == ["<start_of_turn>", "<end_of_turn>", "<start_of_turn>"]
    assert segs[1].text == "user\nS\n\n<start_of_turn>x" and not segs[1].special
    assert segs[-1].text == "model\n"
