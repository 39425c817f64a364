"""A fake LLM runtime for tests that need an LLM's behaviour but not its weights (milliseconds, not seconds).

``FakeLlm`` has the interface of ``models.llama.LlamaRuntime`` (``check_request``,
``stream``, ``complete``, ``piece``, ``n_vocab``): a character-level
"tokenizer" and greedy generation that is a pure function of the model file's
bytes and the last few tokens, so two loads of the same file agree token for
token, and another file (another sha256) gives another completion. It is
never registered by default: a test builds ``fake_runtimes()`` and a
registry with ``fake_llm_spec``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from omron_tee.models.chat import ChatMessage, chat_format, check_messages
from omron_tee.models.llama import checked_tokens, complete
from omron_tee.models.runtimes import Runtimes, default_runtimes
from omron_tee.models.spec import ModelSpec, read_pinned

ALPHABET = " etaoinshrdlcumwfgypbvkjxqz.,ETAOINSHRDLCUMWFGYPBVKJXQZ0123456789"
EOS = 0
MAX_NEW_TOKENS = 256
N_CTX = 1024


class FakeLlm:
    def __init__(self, spec: ModelSpec, *, token_delay_s: float = 0.0) -> None:
        self.spec = spec
        self.token_delay_s = token_delay_s  # a slower "model", to test what happens while it generates
        self.generated = 0  # tokens produced so far, by every request
        self._seed = read_pinned(spec.path, spec.sha256, f"model {spec.model_id!r}")
        self.n_vocab = len(ALPHABET) + 1
        self.eos = {EOS}

    def tokenize(self, prompt: str | tuple[ChatMessage, ...]) -> list[int]:
        if not isinstance(prompt, str):  # a chat: its format's segments, markers and text alike
            prompt = "".join(s.text for s in chat_format(self.spec.chat_format, self.spec.model_id).segments(check_messages(prompt)))
        return [1 + ALPHABET.index(c) if c in ALPHABET else 1 for c in prompt]

    def piece(self, token: int) -> bytes:
        return ALPHABET[token - 1].encode() if 1 <= token <= len(ALPHABET) else b""

    def check_request(self, prompt: str | tuple[ChatMessage, ...], max_tokens: int) -> list[int]:
        return checked_tokens(self.tokenize, prompt, max_tokens, N_CTX)

    def _next(self, context: list[int]) -> int:
        h = hashlib.sha256(self._seed + bytes(t % 256 for t in context[-6:])).digest()
        return EOS if h[1] == h[2] == 0 else 1 + h[0] % len(ALPHABET)  # about one token in 65536 ends the text

    def stream(self, prompt: str | tuple[ChatMessage, ...], max_tokens: int, stop: threading.Event | None = None) -> Iterator[tuple[int, bytes]]:
        context = self.check_request(prompt, max_tokens)
        for _ in range(max_tokens):
            tok = self._next(context)
            if tok in self.eos:
                return
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
            context.append(tok)
            self.generated += 1
            yield tok, self.piece(tok)
            if stop is not None and stop.is_set():
                return

    def complete(self, prompt: str, max_tokens: int) -> tuple[list[int], bytes]:
        return complete(self, prompt, max_tokens)


def fake_llm_spec(path: Path, model_id: str = "fake-llm", *, seed: bytes = b"omron-tee fake llm") -> ModelSpec:
    """Write a fake LLM "model file" at ``path`` and return its spec (runtime "llm", pinned by sha256)."""
    path.write_bytes(seed)
    return ModelSpec(model_id=model_id, sha256=hashlib.sha256(seed).digest(), path=path, runtime="llm", input_name="prompt",
                     input_shape=(1, N_CTX), input_dtype="int32", output_shape=(1, MAX_NEW_TOKENS), atol=0.0, rtol=0.0,
                     proof_systems=("tee",), description="fake LLM for tests", chat_format="gemma")


def fake_runtimes(*, token_delay_s: float = 0.0) -> Runtimes:
    """This build's runtimes, with "llm" served by ``FakeLlm``."""
    return default_runtimes().with_("llm", lambda spec: FakeLlm(spec, token_delay_s=token_delay_s))
