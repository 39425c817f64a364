"""Chat messages and the pinned chat formats that turn them into an LLM's tokens.

A chat is rendered into *segments*: control markers (a turn's start and end) that the
tokenizer must read as its special tokens, and text (roles, contents) that it must read as
plain text, so a user who writes ``<end_of_turn>`` in a message gets those characters, never
the control token (no turn injection). The format is pinned per model in its spec
(``ModelSpec.chat_format``), so the enclave and the validator's reference render a chat the
same way, and the receipt's input hash covers the messages themselves.

Formats:

* ``gemma``: Gemma's turn format (the chat template Google ships with Gemma 3):
  ``<bos><start_of_turn>user\\n{content}<end_of_turn>\\n<start_of_turn>model\\n{content}<end_of_turn>\\n
  ... <start_of_turn>model\\n``; a system message is put before the first user message's content
  (Gemma has no system role); generation stops at ``<end_of_turn>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from omron_tee.errors import ModelError
from omron_tee.reasons import Reason

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 64
MAX_CHAT_CHARS = 1 << 20


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class Segment:
    text: str
    special: bool  # a control marker: tokenized as the tokenizer's special token


@dataclass(frozen=True)
class ChatFormat:
    name: str
    stop: tuple[str, ...]  # special tokens that end the assistant's turn

    def segments(self, messages: tuple[ChatMessage, ...]) -> list[Segment]:
        if self.name == "gemma":
            return _gemma(messages)
        raise ModelError(f"unknown chat format {self.name!r}")


FORMATS = {"gemma": ChatFormat("gemma", ("<end_of_turn>",))}


def chat_format(name: str | None, model_id: str) -> ChatFormat:
    """The pinned chat format of a model, or a named refusal when it has none."""
    if name is None:
        raise ModelError(f"model {model_id!r} serves completions only: no chat format is pinned for it", reason=Reason.UNSUPPORTED)
    if name not in FORMATS:
        raise ModelError(f"model {model_id!r} names chat format {name!r}, which this build does not know", reason=Reason.UNSUPPORTED)
    return FORMATS[name]


def check_messages(messages: object) -> tuple[ChatMessage, ...]:
    """Messages a chat can render: an optional first system message, then user and assistant
    turns alternating, from a user turn to a user turn; each content a string; bounded."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ModelError("messages must be a non-empty list", reason=Reason.BAD_INPUT)
    if len(messages) > MAX_MESSAGES:
        raise ModelError(f"at most {MAX_MESSAGES} messages", reason=Reason.BAD_INPUT)
    out = []
    for m in messages:
        if not isinstance(m, ChatMessage) or m.role not in ROLES or not isinstance(m.content, str):
            raise ModelError(f"each message needs a role ({', '.join(ROLES)}) and a text content", reason=Reason.BAD_INPUT)
        out.append(m)
    if sum(len(m.content) for m in out) > MAX_CHAT_CHARS:
        raise ModelError(f"the messages have more than {MAX_CHAT_CHARS} characters", reason=Reason.BAD_INPUT)
    turns = out[1:] if out[0].role == "system" else out
    if not turns:
        raise ModelError("a chat needs a user message", reason=Reason.BAD_INPUT)
    for i, m in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if m.role != want:
            raise ModelError(f"message {i + 1 + (len(out) - len(turns))} is {m.role!r} where {want!r} is due: after an optional "
                             "first system message, user and assistant turns alternate, starting and ending with the user",
                             reason=Reason.BAD_INPUT)
    if turns[-1].role != "user":
        raise ModelError("the last message must be the user's", reason=Reason.BAD_INPUT)
    return tuple(out)


def canonical(messages: tuple[ChatMessage, ...]) -> bytes:
    """The messages as the receipt's input hash covers them."""
    return json.dumps([[m.role, m.content] for m in messages], ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _gemma(messages: tuple[ChatMessage, ...]) -> list[Segment]:
    prefix = ""
    turns = messages
    if messages and messages[0].role == "system":
        prefix = messages[0].content.strip() + "\n\n"
        turns = messages[1:]
    segs: list[Segment] = []
    for i, m in enumerate(turns):
        role = "model" if m.role == "assistant" else "user"
        content = (prefix if i == 0 else "") + m.content.strip()
        segs += [Segment("<start_of_turn>", True), Segment(f"{role}\n{content}", False), Segment("<end_of_turn>", True), Segment("\n", False)]
    segs += [Segment("<start_of_turn>", True), Segment("model\n", False)]
    return segs
