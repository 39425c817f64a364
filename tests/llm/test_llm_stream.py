"""The sealed stream: each chunk authenticated, numbered, the last one marked; the receipt covers the whole output."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest

from omron_tee.attestation.validate.policy import Policy, SimulatedPolicy
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.attestation.verify.simulated import SimulatedVerifier
from omron_tee.channel import KemSuite
from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.enclave.simulated import SimulatedBackend, dev_public_key
from omron_tee.errors import ChannelError
import omron_tee.llm.enclave as enclave_mod
from omron_tee.llm.enclave import LlmService
from omron_tee.llm.requester import StreamReader, seal_completion
from omron_tee.llm.stream import CompletionPayload, FrameReader, frame, output_hash, prompt_hash
from omron_tee.exchange import check_attestation, new_nonce
from omron_tee.miner.trusted_app import DevFaults, TrustedApp
from omron_tee.protocol import AttestRequest

from llmnet import MODEL

PROMPT = "Water boils at a temperature of"
N = 8
HOTKEY = "5LlmStreamTestMinerHotkey000000000000000000000"


@pytest.fixture(scope="module")
def env(llm_registry, llm_runtime):
    d = Path(tempfile.mkdtemp())
    key = d / "dev.key"
    m = trusted_app_measurement([(MODEL, llm_registry.get(MODEL).sha256)])
    policy = Policy(simulated=SimulatedPolicy(allow=True, trusted_keys=frozenset([dev_public_key(key)]), measurements=frozenset([m])))
    verifiers = VerifierRegistry([SimulatedVerifier([dev_public_key(key)])])
    app = TrustedApp(SimulatedBackend(key, m), llm_registry, [MODEL], hotkey=HOTKEY)
    return app, policy, verifiers, llm_registry.get(MODEL)


def session(env, kem=KemSuite.X25519):
    app, policy, verifiers, _ = env
    n = new_nonce()
    return check_attestation(app.attest(AttestRequest(n, kem.value)), hotkey=HOTKEY, nonce=n, policy=policy, registry=verifiers, kem=kem)


def frames_for(env, prompt=PROMPT, n=N, service=None, kem=KemSuite.X25519):
    """The enclave's frames for one sealed request, and what the requester keeps."""
    app, _, _, spec = env
    request, pending = seal_completion(session(env, kem), MODEL, prompt, n)
    svc = service or LlmService(app)

    async def collect():
        return [f async for f in svc.frames(svc.open(request))]

    return asyncio.run(collect()), pending


def read(env, pending, frames, *, pieces=False):
    r = StreamReader(pending, model_hash=env[3].sha256)
    data = b"".join(frames)
    if pieces:  # arrive in odd-sized pieces, as over a network
        for i in range(0, len(data), 7):
            r.feed(data[i : i + 7])
    else:
        r.feed(data)
    return r.close()


def body(f: bytes) -> bytes:
    return f[4:]


@pytest.mark.parametrize("kem", list(KemSuite))
def test_stream_roundtrip_and_receipt_covers_whole_output(env, llm_runtime, kem) -> None:
    frames, pending = frames_for(env, kem=kem)
    assert len(frames) == 1 + N + 1  # header, one chunk per token, final
    c = read(env, pending, frames, pieces=True)
    toks, raw = llm_runtime.complete(PROMPT, N)
    assert c.tokens == toks and c.raw == raw
    assert c.receipt.output_hash == output_hash(toks, raw)
    assert c.receipt.input_hash == prompt_hash(MODEL, PROMPT, N)
    assert c.receipt.model_hash == env[3].sha256
    c.receipt.verify(pending.session.keys.signing_public)
    # the output hash changes with any token, any byte, or the length
    assert output_hash(toks[:-1], raw) != c.receipt.output_hash
    assert output_hash(toks, raw + b" ") != c.receipt.output_hash


def test_chunk_sizes_hide_token_lengths(env) -> None:
    frames, _ = frames_for(env)
    sizes = {len(f) for f in frames[1:-1]}
    assert len(sizes) == 1  # every token chunk is padded to the same bucket


@pytest.mark.parametrize("where", [1, 3, N, N + 1])
def test_tampered_chunk_is_detected(env, where) -> None:
    frames, pending = frames_for(env)
    f = bytearray(frames[where])
    f[-3] ^= 0x01
    frames[where] = bytes(f)
    with pytest.raises(ChannelError) as e:
        read(env, pending, frames)
    assert e.value.reason == "stream-tampered"


def test_flipped_final_flag_is_detected(env) -> None:
    frames, pending = frames_for(env)
    f = bytearray(frames[3])
    f[4] = 1  # claim "final" on a middle chunk
    frames[3] = bytes(f)
    with pytest.raises(ChannelError, match="does not authenticate"):
        read(env, pending, frames)


def test_reordered_chunks_are_detected(env) -> None:
    frames, pending = frames_for(env)
    frames[2], frames[3] = frames[3], frames[2]
    with pytest.raises(ChannelError) as e:
        read(env, pending, frames)
    assert e.value.reason == "stream-tampered"


@pytest.mark.parametrize("change", ["drop-middle", "repeat", "after-final"])
def test_dropped_repeated_or_extra_chunks_are_detected(env, change) -> None:
    frames, pending = frames_for(env)
    if change == "drop-middle":
        del frames[4]
    elif change == "repeat":
        frames.insert(4, frames[3])
    else:
        frames.append(frames[-2])
    with pytest.raises(ChannelError) as e:
        read(env, pending, frames)
    assert e.value.reason == "stream-tampered"


@pytest.mark.parametrize("keep", [0, 1, 4, N + 1])
def test_truncated_stream_is_detected(env, keep) -> None:
    frames, pending = frames_for(env)
    with pytest.raises(ChannelError) as e:
        read(env, pending, frames[:keep])
    assert e.value.reason == "stream-truncated"


def test_truncated_mid_frame_is_detected(env) -> None:
    frames, pending = frames_for(env)
    data = b"".join(frames)[:-5]
    r = StreamReader(pending, model_hash=env[3].sha256)
    r.feed(data)
    with pytest.raises(ChannelError) as e:
        r.close()
    assert e.value.reason == "stream-truncated"


def test_chunks_of_another_stream_do_not_open(env) -> None:
    frames_a, pending_a = frames_for(env)
    frames_b, _ = frames_for(env)
    with pytest.raises(ChannelError):
        read(env, pending_a, frames_b)  # header sealed to another reply key
    with pytest.raises(ChannelError) as e:
        read(env, pending_a, [frames_a[0]] + frames_b[1:])  # chunks under another stream key
    assert e.value.reason == "stream-tampered"


def test_receipt_over_less_than_the_output_is_refused(env, monkeypatch) -> None:
    real = enclave_mod.output_hash
    monkeypatch.setattr(enclave_mod, "output_hash", lambda toks, text: real(toks[:-1], text))
    frames, pending = frames_for(env)
    with pytest.raises(ChannelError) as e:
        read(env, pending, frames)
    assert e.value.reason == "bad-receipt" and "output hash" in str(e.value)


def test_wrong_model_hash_expected_is_refused(env) -> None:
    frames, pending = frames_for(env)
    r = StreamReader(pending, model_hash=bytes(32))
    with pytest.raises(ChannelError, match="model hash"):
        r.feed(b"".join(frames))


def test_enclave_refusals_arrive_sealed(env) -> None:
    frames, pending = frames_for(env, n=10_000)  # more tokens than allowed
    with pytest.raises(ChannelError) as e:
        read(env, pending, frames)
    assert e.value.reason == "enclave-refused" and "max_tokens" in str(e.value)


def test_tampered_request_is_refused_before_streaming(env) -> None:
    app = env[0]
    request, _ = seal_completion(session(env), MODEL, PROMPT, N)
    bad = type(request)(request.key_id, request.sealed[:-1] + bytes([request.sealed[-1] ^ 1]))
    with pytest.raises(ChannelError) as e:
        LlmService(app).open(bad)
    assert e.value.reason == "tampered-ciphertext"


def test_wrong_output_fault_changes_the_completion_but_signs_it(env, llm_registry, llm_runtime) -> None:
    app, policy, verifiers, spec = env
    faulty = TrustedApp(app.backend, llm_registry, [MODEL], hotkey=HOTKEY, faults=DevFaults(wrong_output=True))
    n = new_nonce()
    s = check_attestation(faulty.attest(AttestRequest(n, KemSuite.X25519.value)), hotkey=HOTKEY, nonce=n, policy=policy, registry=verifiers)
    request, pending = seal_completion(s, MODEL, PROMPT, N)
    svc = LlmService(faulty)

    async def collect():
        return [f async for f in svc.frames(svc.open(request))]

    c = read(env, pending, asyncio.run(collect()))
    toks, _ = llm_runtime.complete(PROMPT, N)
    assert c.tokens[:2] == toks[:2] and c.tokens != toks  # a valid receipt over a wrong completion


def test_frame_reader_limits_and_payload_roundtrip() -> None:
    r = FrameReader()
    with pytest.raises(ChannelError):
        r.feed((1 << 24).to_bytes(4, "big"))
    assert FrameReader().feed(frame(b"ab") + frame(b"") + frame(b"c")[:3]) == [b"ab", b""]
    p = CompletionPayload(os.urandom(32), MODEL, "héllo", 5, KemSuite.X25519.value, b"k" * 32, b"e" * 32)
    assert CompletionPayload.decode(p.encode()) == p


def test_requester_gone_stops_generation(env, llm_runtime) -> None:
    app = env[0]
    request, _ = seal_completion(session(env), MODEL, PROMPT, 200)
    svc = LlmService(app)

    async def go():
        gen = svc.frames(svc.open(request))
        got = [await gen.__anext__() for _ in range(3)]  # header and two chunks, then the client hangs up
        await gen.aclose()
        return got

    assert len(asyncio.run(go())) == 3
    acquired = llm_runtime._lock.acquire(timeout=5)  # the generating thread stopped and let go of the model
    assert acquired
    llm_runtime._lock.release()
