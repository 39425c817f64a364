"""The sealed answer stream of an LLM completion, through the one exchange (fake LLM, milliseconds):
each chunk authenticated, numbered, the last one marked; the receipt covers the whole output."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from omron_tee.attestation.validate.policy import Policy, SimulatedPolicy
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.attestation.verify.simulated import SimulatedVerifier
from omron_tee.channel.hpke import KemSuite
from omron_tee.channel.stream import FrameReader, frame
from omron_tee.enclave.dev_faults import DevFaults
from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.enclave.simulated import SimulatedBackend, dev_public_key
from omron_tee.errors import ChannelError
from omron_tee.exchange.requester import check_attestation, new_nonce, seal_request
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.models.registry import ModelRegistry
from omron_tee.models.testing import fake_llm_spec, fake_runtimes
from omron_tee.protocol import AttestRequest
from omron_tee.workloads import llm as llm_workload
from omron_tee.workloads.llm import LlmWorkload, Prompt, TokenChunk, output_hash, prompt_hash

from llmnet import MODEL

PROMPT = "Water boils at a temperature of"
N = 8
HOTKEY = "5LlmStreamTestMinerHotkey000000000000000000000"
LLM = LlmWorkload()


class Env:
    def __init__(self, registry: ModelRegistry, *, faults: DevFaults = DevFaults()) -> None:
        d = Path(tempfile.mkdtemp())
        key = d / "dev.key"
        m = trusted_app_measurement([(MODEL, registry.get(MODEL).sha256)])
        self.policy = Policy(simulated=SimulatedPolicy(allow=True, trusted_keys=frozenset([dev_public_key(key)]), measurements=frozenset([m])))
        self.verifiers = VerifierRegistry([SimulatedVerifier([dev_public_key(key)])])
        self.app = TrustedApp(SimulatedBackend(key, m, faults=faults), registry, [MODEL], hotkey=HOTKEY)
        self.spec = registry.get(MODEL)

    def session(self, kem=KemSuite.X25519):
        n = new_nonce()
        return check_attestation(self.app.attest(AttestRequest(n, kem.value)), hotkey=HOTKEY, nonce=n, policy=self.policy, registry=self.verifiers, kem=kem)

    def frames(self, prompt=PROMPT, n=N, kem=KemSuite.X25519):
        """The enclave's frames for one sealed request, and the reader that opens them."""
        request, reader = seal_request(self.session(kem), LLM, self.spec, Prompt(prompt, n))

        async def collect():
            return [f async for f in self.app.answer(self.app.open(request))]

        return asyncio.run(collect()), reader


@pytest.fixture(scope="module")
def env(llm_registry):
    return Env(llm_registry)


def read(reader, frames, *, pieces=False):
    data = b"".join(frames)
    parts = []
    if pieces:  # arrive in odd-sized pieces, as over a network
        for i in range(0, len(data), 7):
            parts += reader.feed(data[i : i + 7])
    else:
        parts = reader.feed(data)
    answer = reader.close()
    return answer, parts


@pytest.mark.parametrize("kem", list(KemSuite))
def test_stream_roundtrip_and_receipt_covers_whole_output(env, llm_runtime, kem) -> None:
    frames, reader = env.frames(kem=kem)
    assert len(frames) == 1 + N + 1  # header, one chunk per token, final
    a, parts = read(reader, frames, pieces=True)
    toks, raw = llm_runtime.complete(PROMPT, N)
    assert list(a.result.tokens) == toks and a.result.raw == raw
    assert [p.index for p in parts] == list(range(1, N + 1)) and all(isinstance(p, TokenChunk) for p in parts)
    assert a.receipt.output_hash == output_hash(toks, raw)
    assert a.receipt.input_hash == prompt_hash(MODEL, PROMPT, N)
    assert a.receipt.model_hash == env.spec.sha256
    a.receipt.verify(reader.session.keys.signing_public)
    # the output hash changes with any token, any byte, or the length
    assert output_hash(toks[:-1], raw) != a.receipt.output_hash
    assert output_hash(toks, raw + b" ") != a.receipt.output_hash


def test_chunk_sizes_hide_token_lengths(env) -> None:
    frames, _ = env.frames()
    assert len({len(f) for f in frames[1:-1]}) == 1  # every token chunk is padded to the same bucket


@pytest.mark.parametrize("where", [1, 3, N, N + 1])
def test_tampered_chunk_is_detected(env, where) -> None:
    frames, reader = env.frames()
    f = bytearray(frames[where])
    f[-3] ^= 0x01
    frames[where] = bytes(f)
    with pytest.raises(ChannelError) as e:
        read(reader, frames)
    assert e.value.reason == "stream-tampered"


def test_flipped_final_flag_is_detected(env) -> None:
    frames, reader = env.frames()
    f = bytearray(frames[3])
    f[4] = 1  # claim "final" on a middle chunk
    frames[3] = bytes(f)
    with pytest.raises(ChannelError, match="does not authenticate"):
        read(reader, frames)


def test_reordered_chunks_are_detected(env) -> None:
    frames, reader = env.frames()
    frames[2], frames[3] = frames[3], frames[2]
    with pytest.raises(ChannelError) as e:
        read(reader, frames)
    assert e.value.reason == "stream-tampered"


@pytest.mark.parametrize("change", ["drop-middle", "repeat", "after-final"])
def test_dropped_repeated_or_extra_chunks_are_detected(env, change) -> None:
    frames, reader = env.frames()
    if change == "drop-middle":
        del frames[4]
    elif change == "repeat":
        frames.insert(4, frames[3])
    else:
        frames.append(frames[-2])
    with pytest.raises(ChannelError) as e:
        read(reader, frames)
    assert e.value.reason == "stream-tampered"


@pytest.mark.parametrize("keep", [0, 1, 4, N + 1])
def test_truncated_stream_is_detected(env, keep) -> None:
    frames, reader = env.frames()
    with pytest.raises(ChannelError) as e:
        read(reader, frames[:keep])
    assert e.value.reason == "stream-truncated"


def test_truncated_mid_frame_is_detected(env) -> None:
    frames, reader = env.frames()
    reader.feed(b"".join(frames)[:-5])
    with pytest.raises(ChannelError) as e:
        reader.close()
    assert e.value.reason == "stream-truncated"


def test_chunks_of_another_stream_do_not_open(env) -> None:
    frames_a, reader_a = env.frames()
    frames_b, _ = env.frames()
    with pytest.raises(ChannelError):
        read(reader_a, frames_b)  # another request's answer: another reply secret, another stream key
    _, reader_a2 = env.frames()
    frames_a2, reader_a2 = env.frames()
    with pytest.raises(ChannelError) as e:
        read(reader_a2, [frames_a2[0]] + frames_b[1:])  # chunks under another stream key
    assert e.value.reason == "stream-tampered"


def test_receipt_over_less_than_the_output_is_refused(llm_registry, monkeypatch) -> None:
    real = llm_workload.output_hash
    monkeypatch.setattr(llm_workload, "output_hash", lambda toks, text: real(toks[:-1], text))
    env = Env(llm_registry)
    frames, reader = env.frames()
    monkeypatch.setattr(llm_workload, "output_hash", real)  # the requester computes it honestly
    with pytest.raises(ChannelError) as e:
        read(reader, frames)
    assert e.value.reason == "bad-receipt" and "output hash" in str(e.value)


def test_wrong_model_hash_expected_is_refused(env) -> None:
    import dataclasses

    frames, reader = env.frames()
    reader.spec = dataclasses.replace(reader.spec, sha256=bytes(32))
    with pytest.raises(ChannelError, match="model hash"):
        reader.feed(b"".join(frames))


def test_enclave_refusals_arrive_sealed(env) -> None:
    frames, reader = env.frames(n=10_000)  # more tokens than the runtime allows
    with pytest.raises(ChannelError) as e:
        read(reader, frames)
    assert e.value.reason == "enclave-refused" and "max_tokens" in str(e.value)
    assert len(frames) == 2  # header and final chunk: nothing was generated


def test_tampered_request_is_refused_before_streaming(env) -> None:
    request, _ = seal_request(env.session(), LLM, env.spec, Prompt(PROMPT, N))
    bad = type(request)(request.key_id, request.sealed[:-1] + bytes([request.sealed[-1] ^ 1]))
    with pytest.raises(ChannelError) as e:
        env.app.open(bad)
    assert e.value.reason == "tampered-ciphertext"


def test_wrong_output_fault_changes_the_completion_but_signs_it(llm_registry, llm_runtime) -> None:
    faulty = Env(llm_registry, faults=DevFaults(wrong_output=True))
    frames, reader = faulty.frames()
    a, _ = read(reader, frames)
    toks, _ = llm_runtime.complete(PROMPT, N)
    assert list(a.result.tokens[:2]) == toks[:2] and list(a.result.tokens) != toks  # a valid receipt over a wrong completion


def test_frame_reader_limits() -> None:
    with pytest.raises(ChannelError):
        FrameReader().feed((1 << 24).to_bytes(4, "big"))
    assert FrameReader().feed(frame(b"ab") + frame(b"") + frame(b"c")[:3]) == [b"ab", b""]
    assert LLM.decode_input(None, LLM.encode_input(None, Prompt("héllo", 5))) == Prompt("héllo", 5)  # type: ignore[arg-type]


def test_requester_gone_stops_generation(tmp_path) -> None:
    reg = ModelRegistry(runtimes=fake_runtimes(token_delay_s=0.01))
    reg.add(fake_llm_spec(tmp_path / "slow-fake.bin", MODEL))
    env = Env(reg)
    request, _ = seal_request(env.session(), LLM, env.spec, Prompt(PROMPT, 200))

    async def go():
        gen = env.app.answer(env.app.open(request))
        got = [await gen.__anext__() for _ in range(3)]  # header and two chunks, then the client hangs up
        await gen.aclose()
        return got

    assert len(asyncio.run(go())) == 3
    runtime = reg.runtime(MODEL)
    stopped_at = runtime.generated
    assert stopped_at < 200  # the generating thread stopped at the next token, not at the 200th
    import time

    time.sleep(0.05)
    assert runtime.generated == stopped_at
