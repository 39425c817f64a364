"""The LLM workload: a private completion from a pinned GGUF model, streamed one token per part.

Request input: the prompt (or chat messages, rendered by the model's pinned chat
format: ``models.chat``) and a token budget. Each part carries one token id
and its bytes; the final chunk says why generation stopped and how many
prompt tokens there were. The receipt's input hash covers the model id, the
budget and the prompt; its output hash every token id in order and the bytes
of the whole text.

What counts as correct (the validator's rule, see docs/LLM.md): validator and
miner both decode greedily with the pinned settings, so an honest miner
reproduces the validator's reference token for token. Two honest runs can
still part late (llama.cpp picks different kernels on different CPUs, and a
near-tie can flip), so a completion is correct when its first
``EXACT_PREFIX`` tokens equal the reference's, the common prefix covers at
least ``MIN_PREFIX_SHARE`` of the longer of the two, and it has no more
tokens than were asked for. Latency is the time to first token plus the mean
time per further token.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import struct
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from omron_tee.errors import ChannelError, OmronTeeError, ProtocolError
from omron_tee.models.chat import MAX_MESSAGES, ChatMessage, canonical, check_messages
from omron_tee.models.spec import ModelSpec
from omron_tee.protocol import b64, field_of, unb64
from omron_tee.reasons import Reason
from omron_tee.workloads.base import Collector, Json, Judgement, Produced, Served, Workload

PROMPT_TAG = b"omron-tee/llm-prompt/v1"
CHAT_TAG = b"omron-tee/llm-chat/v1"
OUTPUT_TAG = b"omron-tee/llm-output/v1"
MAX_TOKENS_FIELD = 1 << 16
MAX_PROMPT_CHARS = 1 << 20
EXACT_PREFIX = 8
MIN_PREFIX_SHARE = 0.9
BENCH_MAX_TOKENS = 16

BENCH_PROMPTS = (
    "The capital of France is",
    "Water boils at a temperature of",
    "The three primary colors are",
    "In computer science, a hash function is",
    "The largest planet in the solar system is",
    "Photosynthesis is the process by which",
    "A prime number is a number that",
    "The first person to walk on the moon was",
    "Bees are important to agriculture because",
    "The Pythagorean theorem states that",
    "An encryption key should be kept secret because",
    "The Great Wall of China was built to",
)


@dataclass(frozen=True)
class Prompt:
    text: str
    max_tokens: int
    messages: tuple[ChatMessage, ...] = ()  # a chat instead of a prompt (``text`` is then "")

    @property
    def query(self) -> str | tuple[ChatMessage, ...]:
        """What the runtime is given: the prompt, or the chat."""
        return self.messages or self.text


@dataclass(frozen=True)
class TokenChunk:
    index: int  # 1-based part number
    tokens: tuple[int, ...]
    data: bytes  # the bytes of these tokens (UTF-8, possibly a partial character)


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: tuple[int, ...]
    raw: bytes  # the exact bytes the receipt's output hash covers (``text`` is their UTF-8 decoding)
    finish_reason: str
    prompt_tokens: int = 0


def prompt_hash(model_id: str, prompt: str, max_tokens: int) -> bytes:
    mid = model_id.encode()
    return hashlib.sha256(PROMPT_TAG + struct.pack(">I", len(mid)) + mid + struct.pack(">I", max_tokens) + prompt.encode("utf-8")).digest()


def chat_hash(model_id: str, messages: tuple[ChatMessage, ...], max_tokens: int) -> bytes:
    mid = model_id.encode()
    return hashlib.sha256(CHAT_TAG + struct.pack(">I", len(mid)) + mid + struct.pack(">I", max_tokens) + canonical(messages)).digest()


def output_hash(tokens: list[int] | tuple[int, ...], text: bytes) -> bytes:
    ids = b"".join(struct.pack("<i", t) for t in tokens)
    return hashlib.sha256(OUTPUT_TAG + struct.pack(">I", len(tokens)) + ids + struct.pack(">I", len(text)) + text).digest()


@dataclass(frozen=True)
class LlmJudgement:
    correct: bool
    common_prefix: int
    reference_len: int
    got_len: int
    reason: str  # "ok", or why not


def common_prefix(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def judge_tokens(reference: list[int] | tuple[int, ...], got: list[int] | tuple[int, ...], max_tokens: int) -> LlmJudgement:
    cp = common_prefix(reference, got)
    longest = max(len(reference), len(got))
    if len(got) > max_tokens:
        return LlmJudgement(False, cp, len(reference), len(got), f"{len(got)} tokens returned, {max_tokens} asked for")
    need_exact = min(EXACT_PREFIX, len(reference))
    if cp < need_exact:
        return LlmJudgement(False, cp, len(reference), len(got), f"diverges from the reference at token {cp} (the first {need_exact} must match)")
    if cp < math.ceil(MIN_PREFIX_SHARE * longest):
        return LlmJudgement(False, cp, len(reference), len(got), f"common prefix {cp}/{longest} is under {MIN_PREFIX_SHARE:.0%}")
    return LlmJudgement(True, cp, len(reference), len(got), "ok")


class _CompletionCollector(Collector[Completion]):
    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.tokens: list[int] = []
        self._data: list[bytes] = []

    def part(self, data: Json) -> TokenChunk:
        try:
            toks = tuple(int(t) for t in field_of(data, "t", "stream chunk"))
            piece = unb64(data.get("b", ""), "stream chunk bytes")
        except (TypeError, ValueError, OmronTeeError):
            raise ChannelError("stream chunk has malformed tokens", reason=Reason.STREAM_MALFORMED) from None
        if not all(-(1 << 31) <= t < 1 << 31 for t in toks):
            raise ChannelError("stream chunk has a token id out of range", reason=Reason.STREAM_MALFORMED)
        if len(self.tokens) + len(toks) > self.max_tokens:
            # Bounded by what was asked for before the receipt at the end is checked: a stream
            # authenticates only as coming from whoever opened the request, not as a sound answer.
            raise ChannelError(f"the stream carries more than the {self.max_tokens} tokens asked for", reason=Reason.STREAM_MALFORMED)
        self.tokens.extend(toks)
        self._data.append(piece)
        return TokenChunk(len(self._data), toks, piece)

    def finish(self, meta: Json) -> tuple[Completion, bytes]:
        text = b"".join(self._data)
        meta = meta if isinstance(meta, dict) else {}
        finish, n_prompt = meta.get("finish", "length"), meta.get("n_prompt", 0)
        result = Completion(
            text=text.decode("utf-8", errors="replace"),
            tokens=tuple(self.tokens),
            raw=text,
            finish_reason=finish if finish in ("stop", "length") else "length",
            prompt_tokens=n_prompt if type(n_prompt) is int and 0 <= n_prompt < 1 << 20 else 0,
        )
        return result, output_hash(self.tokens, text)


async def _in_thread(runtime: Any, prompt: str | tuple[ChatMessage, ...], max_tokens: int) -> AsyncIterator[tuple[int, bytes]]:
    """Run the blocking generator in a thread, handing tokens to the event loop as they come."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    done = object()

    def post(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone: nobody is listening
            stop.set()

    def work() -> None:
        try:
            for item in runtime.stream(prompt, max_tokens, stop):
                post(item)
                if stop.is_set():
                    break
        except BaseException as e:  # handed to the consumer
            post(e)
        finally:
            post(done)

    thread = threading.Thread(target=work, name="llm-generate", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the requester went away (or the stream ended): stop generating
        if thread.is_alive():
            await asyncio.to_thread(thread.join, 10.0)  # at most one token's time: the model is free again after this


class LlmWorkload(Workload[Prompt, Completion]):
    name = "llm"
    latency_class = "llm"
    runtimes = ("llm",)
    optional = True
    streamed = True

    def __init__(self, *, prompts: tuple[str, ...] = BENCH_PROMPTS, max_tokens: int = BENCH_MAX_TOKENS) -> None:
        self.prompts = prompts
        self.bench_tokens = max_tokens
        self._references: dict[tuple[bytes, Any, int], tuple[int, ...]] = {}

    def encode_input(self, spec: ModelSpec, value: Prompt) -> Json:
        if value.messages:
            return {"messages": [{"role": m.role, "content": m.content} for m in value.messages], "max_tokens": value.max_tokens}
        return {"prompt": value.text, "max_tokens": value.max_tokens}

    def decode_input(self, spec: ModelSpec, data: Json) -> Prompt:
        if isinstance(data, dict) and "messages" in data:
            return self._decode_chat(data)
        prompt = field_of(data, "prompt", "completion request")
        max_tokens = field_of(data, "max_tokens", "completion request")
        if not isinstance(prompt, str) or type(max_tokens) is not int:
            raise ProtocolError("completion request has a malformed prompt or max_tokens")
        if not 1 <= max_tokens <= MAX_TOKENS_FIELD or len(prompt) > MAX_PROMPT_CHARS:
            # The runtime has tighter limits of its own; these keep the receipt's encoding in range.
            raise ProtocolError(f"max_tokens must be 1 to {MAX_TOKENS_FIELD} and the prompt at most {MAX_PROMPT_CHARS} characters", reason=Reason.BAD_INPUT)
        return Prompt(prompt, max_tokens)

    def _decode_chat(self, data: dict) -> Prompt:
        raw, max_tokens = data["messages"], field_of(data, "max_tokens", "chat request")
        if not isinstance(raw, list) or type(max_tokens) is not int or not 1 <= max_tokens <= MAX_TOKENS_FIELD:
            raise ProtocolError("chat request has malformed messages or max_tokens", reason=Reason.BAD_INPUT)
        msgs = []
        for m in raw[:MAX_MESSAGES + 1]:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ProtocolError("each chat message needs a role and a text content", reason=Reason.BAD_INPUT)
            msgs.append(ChatMessage(m["role"][:16], m["content"]))
        try:
            return Prompt("", max_tokens, check_messages(msgs))
        except OmronTeeError as e:
            raise ProtocolError(str(e), reason=Reason.BAD_INPUT) from None

    def input_hash(self, spec: ModelSpec, value: Prompt) -> bytes:
        if value.messages:
            return chat_hash(spec.model_id, value.messages, value.max_tokens)
        return prompt_hash(spec.model_id, value.text, value.max_tokens)

    async def produce(self, served: Served, value: Prompt, out: Produced) -> AsyncIterator[Json]:
        runtime = served.runtime
        out.meta["n_prompt"] = len(runtime.check_request(value.query, value.max_tokens))
        tokens: list[int] = []
        pieces: list[bytes] = []
        gen = _in_thread(runtime, value.query, value.max_tokens)
        try:
            async for tok, piece in gen:
                tokens.append(tok)
                pieces.append(piece)
                yield {"t": [tok], "b": b64(piece)}
        finally:
            await gen.aclose()  # the requester went away (or we are done): stop generating now
        out.output_hash = output_hash(tokens, b"".join(pieces))  # once, at the end: a refused stream carries no receipt
        out.meta["finish"] = "stop" if len(tokens) < value.max_tokens else "length"

    def collector(self, spec: ModelSpec, value: Prompt) -> Collector[Completion]:
        return _CompletionCollector(value.max_tokens)

    def result_json(self, result: Completion) -> Json:
        return {"tokens": list(result.tokens), "text_b64": b64(result.raw), "finish_reason": result.finish_reason}

    def output_hash_of(self, data: Json) -> bytes:
        tokens = field_of(data, "tokens", "completion")
        if not isinstance(tokens, list) or not all(type(t) is int for t in tokens):
            raise ProtocolError("completion tokens must be a list of integers")
        return output_hash(tokens, unb64(field_of(data, "text_b64", "completion"), "completion text"))

    def sample(self, spec: ModelSpec, rng: np.random.Generator) -> Prompt:
        return Prompt(self.prompts[int(rng.integers(0, len(self.prompts)))], self.bench_tokens)

    async def reference(self, runtime: Any, spec: ModelSpec, value: Prompt) -> Completion:
        # Greedy decoding is deterministic: one reference per prompt, computed once.
        key = (spec.sha256, value.query, value.max_tokens)
        if key not in self._references:
            toks, _ = await asyncio.to_thread(runtime.complete, value.query, value.max_tokens)
            self._references[key] = tuple(toks)
        return Completion("", self._references[key], b"", "length")

    def judge(self, spec: ModelSpec, value: Prompt, expected: Completion, got: Completion) -> Judgement:
        j = judge_tokens(expected.tokens, got.tokens, value.max_tokens)
        if not j.correct:
            return Judgement(False, Reason.WRONG_OUTPUT, f"completion differs from the validator's reference: {j.reason}")
        return Judgement(True, Reason.OK, f"{j.got_len} tokens match the reference ({j.common_prefix}/{j.reference_len})")

    def latency(self, answer: Any, attest_s: float) -> float:
        """Time to first token plus the mean time per further token (an answer's length is the model's, not the miner's)."""
        n = len(answer.result.tokens)
        ttft = answer.ttft_s if answer.ttft_s is not None else answer.elapsed_s
        return ttft + ((answer.elapsed_s - ttft) / (n - 1) if n > 1 else 0.0)

