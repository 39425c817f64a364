"""The OpenAI-compatible ``POST /v1/completions`` and ``POST /v1/chat/completions``: the validator itself
is the requester, so it reads the prompt.

An adapter from the OpenAI completions shape to the LLM workload over the one
exchange: the validator attests LLM miners (fresh nonce each), seals the
prompt to the first that passes and answers, checks the stream and the
receipt like any requester, and re-emits the text (server-sent events with
``"stream": true``). Chat messages are rendered by the model's pinned chat format
(``models.chat``) inside the enclave, so the receipt covers the messages themselves; a model
without one serves completions only. The response's ``omron_tee`` field carries a receipt
file (``exchange.receipt_file``) that ``omron-tee receipt verify`` checks
offline. Use it when the validator is yours or trusted; otherwise use the
private relay (``/v1/attest`` + ``/v1/infer``), where it reads nothing.

Authentication: btauth/1 (signed for the validator's hotkey), or ``Authorization:
Bearer KEY`` with a key listed in ``OMRON_TEE_API_KEYS`` (comma-separated) or given
to ``build_api``; rate-limited like the rest of the API.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from omron_tee.errors import AuthError, MinerError, ModelError, OmronTeeError, ProtocolError
from omron_tee.exchange import transport
from omron_tee.exchange.receipt_file import ReceiptFile
from omron_tee.transparency.records import receipt_digest
from omron_tee.exchange.requester import AnswerReader, AttestedSession, seal_request
from omron_tee.models.llama import MAX_NEW_TOKENS
from omron_tee.protocol import dumps, field_of, loads
from omron_tee.reasons import Reason
from omron_tee.validator.schedule import candidates
from omron_tee.validator.scoring import Outcome
from omron_tee.wire.auth import RequestVerifier
from omron_tee.wire.client import ByteStream, SignedClient
from omron_tee.wire.server import error_response, json_response, read_body
from omron_tee.models.chat import MAX_MESSAGES, ChatMessage, chat_format, check_messages
from omron_tee.workloads.llm import Prompt, TokenChunk

log = logging.getLogger("omron_tee.validator.api")

DEFAULT_MAX_TOKENS = 16
CANDIDATES = 3


def bearer_keys(keys: list[str]) -> set[bytes]:
    return {hashlib.sha256(k.strip().encode()).digest() for k in keys if k.strip()}


async def authenticate(request: Request, body: bytes, verifier: RequestVerifier, key_digests: set[bytes], *, allow_bearer: bool) -> str:
    """The caller: ``key:<digest prefix>`` for a bearer key, else the btauth/1 hotkey; a refusal says which to use."""
    auth = request.headers.get("authorization", "")
    if allow_bearer and auth.lower().startswith("bearer "):
        if not key_digests:
            raise AuthError("this validator has no API keys (its operator lists them in OMRON_TEE_API_KEYS); "
                            "sign the request with btauth/1 instead", reason=Reason.BAD_API_KEY)
        digest = hashlib.sha256(auth[7:].strip().encode()).digest()
        if not any(hmac.compare_digest(digest, d) for d in key_digests):
            raise AuthError("unknown API key", reason=Reason.BAD_API_KEY)
        return "key:" + digest.hex()[:16]
    if allow_bearer and not any(h.lower().startswith("x-bittensor-") for h in request.headers):
        raise AuthError("no credentials: send 'Authorization: Bearer KEY' (a key from the validator's operator) "
                        "or sign the request with btauth/1 (bittensor.http_auth)", reason=Reason.UNAUTHORIZED)
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return verifier.verify(request.headers, body, method=request.method, path=path)


# Parameters a greedy, pinned completion can honour only at their neutral values: any other value is
# refused by name (never silently ignored), so a client never gets other output than it asked for.
NEUTRAL = {
    "temperature": (0, 0.0, None), "top_p": (1, 1.0, None), "n": (1, None), "best_of": (1, None), "echo": (False, None),
    "logprobs": (None, False, 0), "stop": (None, "", []), "suffix": (None, ""), "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None), "logit_bias": (None, {}),
}
# Accepted and without effect: greedy decoding needs no seed; usage is always in the last event.
IGNORED = frozenset({"seed", "user", "stream_options"})
KNOWN = frozenset({"model", "prompt", "max_tokens", "stream"}) | frozenset(NEUTRAL) | IGNORED


def check_parameters(data: dict[str, Any], known: frozenset[str] = KNOWN, neutral_values: dict[str, tuple] = NEUTRAL) -> None:
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise ProtocolError(f"unsupported parameter(s): {', '.join(str(k)[:32] for k in unknown[:8])}", reason=Reason.UNSUPPORTED)
    for name, neutral in neutral_values.items():
        if name in data and not any(type(data[name]) is type(v) and data[name] == v for v in neutral if v is not None) and data[name] is not None:
            if name == "temperature":
                raise ProtocolError("only greedy decoding is served (temperature 0): outputs must be reproducible to be verified", reason=Reason.UNSUPPORTED)
            raise ProtocolError(f"{name} is served only at its neutral value (greedy, pinned decoding): {json.dumps(data[name])[:40]}",
                                reason=Reason.UNSUPPORTED)


def parse_request(data: Any, check_model: Callable[[Any], str]) -> tuple[str, str, int, bool]:
    if not isinstance(data, dict):
        raise ProtocolError("request body must be a JSON object")
    model = check_model(field_of(data, "model", "completion request"))
    prompt = field_of(data, "prompt", "completion request")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise ProtocolError("prompt must be one non-empty string")
    max_tokens = data.get("max_tokens", DEFAULT_MAX_TOKENS)
    if type(max_tokens) is not int or not 1 <= max_tokens <= MAX_NEW_TOKENS:
        raise ProtocolError(f"max_tokens must be an integer from 1 to {MAX_NEW_TOKENS}")
    check_parameters(data)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise ProtocolError("stream must be true or false")
    return model, prompt, max_tokens, stream


# Chat's own parameters, served only at their neutral values (no tools, plain text out).
CHAT_NEUTRAL = {k: v for k, v in NEUTRAL.items() if k not in ("echo", "best_of", "suffix")} | {
    "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None, "none"),
    "parallel_tool_calls": (None, False, True), "top_logprobs": (None, 0), "modalities": (None, ["text"]),
}
CHAT_KNOWN = (frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "stream", "response_format"})
              | frozenset(CHAT_NEUTRAL) | IGNORED | frozenset({"store", "metadata"}))


def _content(value: Any, i: int) -> str:
    """A message's content: a string, or OpenAI's list of text parts (anything else is refused by name)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    raise ProtocolError(f"message {i + 1}: only text content is served (a string, or parts of type 'text')", reason=Reason.UNSUPPORTED)


def parse_chat_request(data: Any, check_model: Callable[[Any], str]) -> tuple[str, tuple[ChatMessage, ...], int, bool]:
    if not isinstance(data, dict):
        raise ProtocolError("request body must be a JSON object")
    model = check_model(field_of(data, "model", "chat request"))
    raw = field_of(data, "messages", "chat request")
    if not isinstance(raw, list) or not raw:
        raise ProtocolError("messages must be a non-empty list")
    msgs = []
    for i, m in enumerate(raw[:MAX_MESSAGES + 1]):  # one past the bound, so check_messages names it
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ProtocolError(f"message {i + 1} needs a role")
        role = {"developer": "system"}.get(m["role"], m["role"])  # OpenAI's newer name for the system role
        extra = sorted(k for k in m if k not in ("role", "content", "name"))
        if extra:
            raise ProtocolError(f"message {i + 1}: unsupported field(s) {', '.join(str(k)[:24] for k in extra[:4])} (no tools here)", reason=Reason.UNSUPPORTED)
        msgs.append(ChatMessage(role[:16], _content(m.get("content"), i)))
    try:
        messages = check_messages(msgs)
    except ModelError as e:
        raise ProtocolError(str(e), reason=Reason.BAD_INPUT) from None
    if "max_tokens" in data and "max_completion_tokens" in data:
        raise ProtocolError("give max_tokens or max_completion_tokens, not both")
    max_tokens = data.get("max_completion_tokens", data.get("max_tokens", DEFAULT_MAX_TOKENS))
    if type(max_tokens) is not int or not 1 <= max_tokens <= MAX_NEW_TOKENS:
        raise ProtocolError(f"max_tokens must be an integer from 1 to {MAX_NEW_TOKENS}")
    fmt = data.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise ProtocolError("response_format is served only as {\"type\": \"text\"}", reason=Reason.UNSUPPORTED)
    check_parameters(data, CHAT_KNOWN, CHAT_NEUTRAL)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise ProtocolError("stream must be true or false")
    return model, messages, max_tokens, stream


def openai_error(e: OmronTeeError, *, status: int | None = None) -> Response:
    status = status or error_response(e).status_code
    return Response(content=dumps({"error": {"message": str(e), "type": e.reason, "code": e.reason}}), status_code=status, media_type="application/json")


class Completions:
    """``POST /v1/completions`` over the validator's prober (attestation, policy) and its relay client.

    The exchange and the stream are the same for chat (``ChatCompletions``); a subclass says how a
    request is read and how the answer is shaped (``parse``, ``whole``, ``chunk``, ``opening``)."""

    id_prefix = "cmpl-"
    what = "completion"

    def __init__(self, validator: Any, client: SignedClient, verifier: RequestVerifier, limiter: Any, key_digests: set[bytes]) -> None:
        self.validator = validator
        self.prober = validator.prober
        self.client = client
        self.verifier = verifier
        self.limiter = limiter
        self.key_digests = key_digests
        self.workload = self.prober.workloads.get("llm")

    def llm_models(self) -> list[str]:
        return list(self.prober.judged.get(self.workload.name, ()))

    def check_model(self, model: Any) -> str:
        model = str(model)[:128]
        if model not in self.llm_models():
            raise ModelError(f"unknown LLM {model!r}; offered: {', '.join(self.llm_models()) or 'none'}", reason=Reason.UNKNOWN_MODEL)
        return model

    # --- the shape of this endpoint -----------------------------------------------

    def parse(self, data: Any) -> tuple[str, Prompt, bool]:
        model, prompt, max_tokens, stream = parse_request(data, self.check_model)
        return model, Prompt(prompt, max_tokens), stream

    def whole(self, cid: str, model: str, answer: Any) -> dict[str, Any]:
        return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
                "choices": [{"text": answer.result.text, "index": 0, "logprobs": None, "finish_reason": answer.result.finish_reason}]}

    def chunk(self, head: dict[str, Any], text: str, finish: str | None) -> dict[str, Any]:
        return {**head, "object": "text_completion", "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    def opening(self, head: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    # --- the exchange ---------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        try:
            body = await read_body(request)
            caller = await authenticate(request, body, self.verifier, self.key_digests, allow_bearer=True)
            self.limiter.take(caller)
            model, prompt, stream = self.parse(loads(body, "request body"))
            started = await self._start(model, prompt)
        except OmronTeeError as e:
            return openai_error(e)
        cid = self.id_prefix + uuid.uuid4().hex[:24]
        log.info("%s for %s via uid %d (validator-visible path)", self.what, caller[:12], started.neuron.uid)
        if stream:
            return StreamingResponse(self._sse(started, cid, model), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store", "X-Omron-Miner": started.neuron.hotkey})
        try:
            async for data in started.body:
                started.reader.feed(data)
            answer = started.finish()
        except OmronTeeError as e:
            started.record(False, e.reason)
            return openai_error(e)
        finally:
            await started.close()
        started.record(True, Reason.OK)
        return json_response({**self.whole(cid, model, answer), "usage": _usage(answer), "omron_tee": started.provenance(answer)})

    async def _start(self, model: str, prompt: Prompt) -> "_Started":
        """Attest LLM miners (fresh nonce each), seal the prompt to the first that passes and answers."""
        reasons = []
        spec = self.prober.models.get(model)
        for neuron in candidates(await self.validator.current_miners(), self.validator.scores.scores(), self.prober.offers, model, CANDIDATES):
            known = neuron.hotkey in self.prober.offers and model in self.prober.offers[neuron.hotkey].models
            try:
                session, _, nonce = await self.prober.session(neuron)
                if model not in self.prober.offers[neuron.hotkey].models:
                    continue  # not an LLM miner: nothing to hold against it
                request, reader = seal_request(session, self.workload, spec, prompt, nonce=nonce)
                stack = contextlib.AsyncExitStack()
                assert neuron.endpoint is not None
                try:
                    body = await stack.enter_async_context(transport.infer(self.client, neuron.endpoint.url, request, receiver=neuron.hotkey,
                                                                           timeout=self.prober.timeouts[self.workload.latency_class],
                                                                           max_bytes=self.workload.max_stream))
                except BaseException:
                    await stack.aclose()
                    raise
                return _Started(self, neuron, session, reader, body, stack)
            except OmronTeeError as e:
                reasons.append(f"uid {neuron.uid}: {e.reason}")
                if known:  # only a known LLM miner is counted on an LLM request
                    self.validator.record(Outcome(neuron.hotkey, neuron.uid, False, e.reason, None, None, None, kind="relay"))
        raise MinerError("no attested miner serving this model answered" + (f" ({'; '.join(reasons)})" if reasons else ""), reason=Reason.ALL_MINERS_FAILED)

    async def _sse(self, started: "_Started", cid: str, model: str) -> AsyncIterator[bytes]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        head = {"id": cid, "created": int(time.time()), "model": model}

        def event(obj: Any) -> bytes:
            return b"data: " + dumps(obj) + b"\n\n"

        for first in self.opening(head):
            yield event(first)
        try:
            async for data in started.body:
                for part in started.reader.feed(data):
                    assert isinstance(part, TokenChunk)
                    text = decoder.decode(part.data)
                    if text:
                        yield event(self.chunk(head, text, None))
            answer = started.finish()
        except OmronTeeError as e:
            started.record(False, e.reason)
            yield event({"error": {"message": str(e), "type": e.reason, "code": e.reason}})
            yield b"data: [DONE]\n\n"
            return
        finally:
            await started.close()
        started.record(True, Reason.OK)
        last = self.chunk(head, decoder.decode(b"", final=True), answer.result.finish_reason)
        yield event({**last, "usage": _usage(answer), "omron_tee": started.provenance(answer)})
        yield b"data: [DONE]\n\n"


class ChatCompletions(Completions):
    """``POST /v1/chat/completions``: the same exchange, the messages rendered in the enclave by the model's chat format."""

    id_prefix = "chatcmpl-"
    what = "chat completion"

    def check_chat_model(self, model: Any) -> str:
        model = self.check_model(model)
        chat_format(self.prober.models.get(model).chat_format, model)  # a named refusal for a completions-only model
        return model

    def parse(self, data: Any) -> tuple[str, Prompt, bool]:
        model, messages, max_tokens, stream = parse_chat_request(data, self.check_chat_model)
        return model, Prompt("", max_tokens, messages), stream

    def whole(self, cid: str, model: str, answer: Any) -> dict[str, Any]:
        return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.result.text}, "logprobs": None,
                             "finish_reason": answer.result.finish_reason}]}

    def chunk(self, head: dict[str, Any], text: str, finish: str | None) -> dict[str, Any]:
        return {**head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": text} if text else {}, "logprobs": None, "finish_reason": finish}]}

    def opening(self, head: dict[str, Any]) -> list[dict[str, Any]]:
        return [{**head, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]}]


class _Started:
    def __init__(self, owner: Completions, neuron: Any, session: AttestedSession, reader: AnswerReader, body: ByteStream, stack: Any) -> None:
        self.owner, self.neuron, self.session, self.reader, self.body, self._stack = owner, neuron, session, reader, body, stack

    def finish(self) -> Any:
        answer = self.reader.close()
        answer.miner_hotkey = self.neuron.hotkey
        return answer

    async def close(self) -> None:
        await self._stack.aclose()

    def record(self, ok: bool, reason: str) -> None:
        self.owner.validator.record(Outcome(self.neuron.hotkey, self.neuron.uid, ok, reason, None, True, None, kind="relay"))

    def provenance(self, answer: Any) -> dict[str, Any]:
        """Who answered, and the receipt file the validator checked (the client may keep and re-check it)."""
        file = ReceiptFile.of(answer, self.owner.prober.workloads)
        receipt = file.receipt.to_json()
        # Logged in the audit log: after the next commitment, GET /v1/receipts/{entry}/proof proves it is there.
        entry = self.owner.validator.log_receipt(receipt_digest(receipt), self.neuron.hotkey, file.receipt.model_hash)
        return {"miner_hotkey": self.neuron.hotkey, "miner_uid": self.neuron.uid, "checked_by": "validator",
                "ttft_ms": round(answer.ttft_s * 1000, 1) if answer.ttft_s is not None else None, "receipt_file": file.to_json(),
                "receipt_entry": entry}


def _usage(answer: Any) -> dict[str, int]:
    p = answer.result.prompt_tokens
    n = len(answer.result.tokens)
    return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}
