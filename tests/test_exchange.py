"""The requester's side of the one exchange (omron_tee.exchange.requester) against an in-process trusted app."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from omron_tee.channel.hpke import KemSuite
from omron_tee.enclave.dev_faults import DevFaults
from omron_tee.errors import ChannelError
from omron_tee.exchange.requester import check_attestation, new_nonce, seal_request
from omron_tee.miner import trusted_app as trusted_app_module
from omron_tee.protocol import AttestRequest, AttestResponse, InferRequest, SealedRequest
from omron_tee.workloads import default_workloads
from omron_tee.workloads.tensor import Tensor, outputs_match, sample_input

TENSOR = default_workloads().get("tensor")


def attested(sim, app, kem=KemSuite.X25519):
    nonce = new_nonce()
    resp = AttestResponse.from_json(app.attest(AttestRequest(nonce, kem.value)).to_json())
    return check_attestation(resp, hotkey=sim.hotkey, nonce=nonce, policy=sim.policy, registry=sim.verifiers, kem=kem)


def roundtrip(app, request: InferRequest) -> bytes:
    """The request through its JSON wire encoding, as the HTTP layer sends it; the answer's bytes."""
    req = InferRequest.from_json(request.to_json())
    return asyncio.run(app.answer_whole(app.open(req)))


def seal(session, spec, x, **kw):
    return seal_request(session, TENSOR, spec, x, **kw)


def open_answer(reader, data: bytes):
    reader.feed(data)
    return reader.close()


@pytest.mark.parametrize("kem", list(KemSuite), ids=lambda k: k.name)
def test_happy_path_every_model(sim, registry, kem) -> None:
    app = sim.app()
    session = attested(sim, app, kem)
    rng = np.random.default_rng(0)
    sizes = set()
    for spec in registry.specs():
        x = sample_input(spec, rng)
        request, pending = seal(session, spec, x)
        response = roundtrip(app, request)
        sizes.add((len(request.sealed), len(response)))
        result = open_answer(pending, response)
        expected = registry.runtime(spec.model_id).run(x)
        assert result.result.output.shape == expected.shape
        np.testing.assert_allclose(result.result.output, expected, rtol=1e-6, atol=1e-6)
        r = result.receipt
        r.verify(session.keys.signing_public)
        assert r.nonce == pending.nonce and r.input_hash == pending.input_hash
        assert r.model_hash == spec.sha256
        assert r.input_hash == Tensor.from_array(x).digest()
        assert r.output_hash == Tensor.from_array(result.result.output).digest()
        assert r.evidence_hash == session.evidence_hash
        # The input never travels in the clear.
        assert x.tobytes() not in request.sealed
    # Answers of every model have one size (classifier and regressors alike); with the default
    # suite so do the requests.
    assert len({r for _, r in sizes}) == 1
    if kem is KemSuite.X25519:
        assert len(sizes) == 1


def test_reused_session_many_requests(sim, registry) -> None:
    app = sim.app()
    session = attested(sim, app)
    spec = registry.get("digits-mlp")
    rng = np.random.default_rng(1)
    nonces = set()
    for _ in range(5):
        x = sample_input(spec, rng)
        request, pending = seal(session, spec, x)
        res = open_answer(pending, roundtrip(app, request))
        nonces.add(res.receipt.nonce)
        assert outputs_match(spec, registry.runtime(spec.model_id).run(x), res.result.output)
    assert len(nonces) == 5


def test_wrong_output_is_detected(sim, registry) -> None:
    """A miner returning wrong outputs signs a valid receipt, but recomputation catches it."""
    honest, wrong = sim.app(), sim.app(faults=DevFaults(wrong_output=True))
    rng = np.random.default_rng(2)
    for spec in registry.specs():
        x = sample_input(spec, rng)
        expected = registry.runtime(spec.model_id).run(x)
        for app, should_match in ((honest, True), (wrong, False)):
            session = attested(sim, app)
            request, pending = seal(session, spec, x)
            res = open_answer(pending, roundtrip(app, request))
            assert outputs_match(spec, expected, res.result.output) is should_match, spec.model_id


@pytest.mark.parametrize("field,word", [("input_hash", "input hash"), ("nonce", "nonce"), ("model_hash", "model hash"), ("evidence_hash", "evidence hash"), ("output_hash", "output hash")])
def test_receipt_mismatch_is_bad_receipt(sim, registry, monkeypatch, field, word) -> None:
    """An enclave (or a man in the middle with its key) whose receipt misstates one field."""
    real = trusted_app_module.issue_receipt
    monkeypatch.setattr(trusted_app_module, "issue_receipt", lambda b, sign, **kw: real(dataclasses.replace(b, **{field: bytes(32)}), sign, **kw))
    app = sim.app()
    session = attested(sim, app)
    spec = registry.get("diabetes-mlp")
    request, pending = seal(session, spec, sample_input(spec, np.random.default_rng(3)))
    with pytest.raises(ChannelError) as e:
        open_answer(pending, roundtrip(app, request))
    assert e.value.reason == "bad-receipt"
    assert word in str(e.value)


def test_receipt_signed_by_another_key_is_bad(sim, registry, monkeypatch) -> None:
    app = sim.app()
    session = attested(sim, app)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = Ed25519PrivateKey.generate()
    for keys in app._keys.values():
        monkeypatch.setattr(keys, "sign", other.sign)
    spec = registry.get("digits-mlp")
    request, pending = seal(session, spec, sample_input(spec, np.random.default_rng(4)))
    with pytest.raises(ChannelError) as e:
        open_answer(pending, roundtrip(app, request))
    assert e.value.reason == "bad-receipt"


def test_wrong_model_hash_expected_is_bad_receipt(sim, registry) -> None:
    app = sim.app()
    session = attested(sim, app)
    spec = registry.get("digits-mlp")
    # The requester expects another model than the one it names (a miner serving a look-alike).
    request, pending = seal(session, spec, sample_input(spec, np.random.default_rng(5)))
    pending.spec = dataclasses.replace(spec, sha256=registry.get("diabetes-mlp").sha256)
    with pytest.raises(ChannelError) as e:
        open_answer(pending, roundtrip(app, request))
    assert e.value.reason == "bad-receipt"


def test_enclave_restart_unknown_key(sim, registry) -> None:
    app = sim.app()
    session = attested(sim, app)
    restarted = sim.app()
    spec = registry.get("digits-mlp")
    request, _ = seal(session, spec, sample_input(spec, np.random.default_rng(6)))
    with pytest.raises(ChannelError) as e:
        restarted.open(request)
    assert e.value.reason == "unknown-key"
    # Attesting again gives a session that works.
    s2 = attested(sim, restarted)
    request, pending = seal(s2, spec, sample_input(spec, np.random.default_rng(6)))
    open_answer(pending, roundtrip(restarted, request))


def test_tampered_request_is_refused_by_enclave(sim, registry) -> None:
    app = sim.app()
    session = attested(sim, app)
    spec = registry.get("digits-mlp")
    request, _ = seal(session, spec, sample_input(spec, np.random.default_rng(7)))
    sealed = bytearray(request.sealed)
    sealed[len(sealed) // 2] ^= 0x40
    with pytest.raises(ChannelError) as e:
        app.open(InferRequest(request.key_id, bytes(sealed)))
    assert e.value.reason == "tampered-ciphertext"


def test_tampered_or_misdirected_response(sim, registry) -> None:
    app = sim.app()
    session = attested(sim, app)
    spec = registry.get("digits-mlp")
    rng = np.random.default_rng(8)
    req_a, pend_a = seal(session, spec, sample_input(spec, rng))
    req_b, pend_b = seal(session, spec, sample_input(spec, rng))
    resp_a = roundtrip(app, req_a)
    # The answer to another request (its stream key derived from another reply secret) does not open.
    with pytest.raises(ChannelError) as e:
        open_answer(pend_b, resp_a)
    assert e.value.reason == "stream-tampered"
    bad = bytearray(resp_a)
    bad[-5] ^= 1
    _, pend_a2 = seal(session, spec, sample_input(spec, rng), nonce=pend_a.nonce)
    pend_a2._reply_secret = pend_a._reply_secret
    with pytest.raises(ChannelError) as e:
        open_answer(pend_a2, bytes(bad))
    assert e.value.reason == "stream-tampered"
    open_answer(pend_a, resp_a)  # the untouched one opens


def test_a_replayed_request_is_answered_under_a_new_key_each_time(sim, registry) -> None:
    """An operator replaying one sealed request to its enclave gets answers under different stream keys (each
    answer draws its own response nonce), so no key and chunk number ever seal two plaintexts; splicing one
    answer's header onto another's chunks does not open."""
    from omron_tee.channel.stream import FrameReader

    app = sim.app()
    session = attested(sim, app)
    spec = registry.get("digits-mlp")
    request, reader = seal(session, spec, sample_input(spec, np.random.default_rng(3)))
    first, second = roundtrip(app, request), roundtrip(app, request)
    (h1, c1), (h2, c2) = FrameReader().feed(first), FrameReader().feed(second)
    assert h1 != h2 and len(h1) == len(h2) == 32
    assert c1[1:] != c2[1:]  # same chunk number, different key: unrelated ciphertexts
    spliced = first[:36] + second[36:]
    _, again = seal(session, spec, sample_input(spec, np.random.default_rng(3)), nonce=reader.nonce)
    again._reply_secret = reader._reply_secret
    with pytest.raises(ChannelError) as e:
        open_answer(again, spliced)
    assert e.value.reason == "stream-tampered"
    open_answer(reader, second)  # each answer, whole, is the requester's to accept once


@pytest.mark.parametrize(("header", "reason"), [
    (lambda h: bytes([h[0] ^ 1]) + h[1:], "stream-tampered"),  # another response nonce: another key
    (lambda h: h[:31], "stream-malformed"),
    (lambda h: h + b"\0", "stream-malformed"),
    (lambda h: b"", "stream-malformed"),
])
def test_an_altered_stream_header_is_named(sim, registry, header, reason) -> None:
    from omron_tee.channel.stream import FrameReader, frame

    app = sim.app()
    session = attested(sim, app)
    spec = registry.get("digits-mlp")
    request, reader = seal(session, spec, sample_input(spec, np.random.default_rng(4)))
    h, *chunks = FrameReader().feed(roundtrip(app, request))
    with pytest.raises(ChannelError) as e:
        open_answer(reader, frame(header(h)) + b"".join(frame(c) for c in chunks))
    assert e.value.reason == reason


def test_model_not_served_is_refused_inside_the_seal(sim, registry) -> None:
    app = sim.app(model_ids=["digits-mlp"])
    session = attested(sim, app)
    served = registry.get("digits-mlp")
    missing = registry.get("diabetes-mlp")
    rng = np.random.default_rng(9)
    request, pending = seal(session, missing, sample_input(missing, rng))
    refused = roundtrip(app, request)
    with pytest.raises(ChannelError) as e:
        open_answer(pending, refused)
    assert e.value.reason == "enclave-refused"
    assert "not served" in str(e.value)
    # The operator sees a refusal the same size as an answer: it cannot tell which was which.
    ok_req, _ = seal(session, served, sample_input(served, rng))
    assert len(roundtrip(app, ok_req)) == len(refused)


def test_bad_input_shape_is_refused_inside_the_seal(sim, registry) -> None:
    app = sim.app()
    session = attested(sim, app)
    spec = registry.get("digits-mlp")
    request, pending = seal(session, spec, np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(ChannelError) as e:
        open_answer(pending, roundtrip(app, request))
    assert e.value.reason == "enclave-refused"


def test_garbage_sealed_to_enclave_key(sim) -> None:
    """Valid HPKE to the enclave key, but the plaintext is not a payload: a clear refusal, not a crash."""
    from omron_tee.channel.hpke import request_info, seal
    from omron_tee.errors import ProtocolError

    app = sim.app()
    session = attested(sim, app)
    sealed = seal(session.kem, session.keys.hpke_public, b"{not json", request_info(session.key_id))
    with pytest.raises(ProtocolError):
        app.open(InferRequest(session.key_id, sealed))


def test_payload_encoding_roundtrip() -> None:
    import json

    x = Tensor.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    p = SealedRequest(new_nonce(), "m", "tensor", x.to_json(), b"k" * 32, b"e" * 32)
    assert SealedRequest.from_dict(json.loads(p.encode())) == p
    assert np.array_equal(Tensor.from_json(p.input).to_array(), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_candidate_nonces_are_distinct_per_miner_and_deterministic() -> None:
    from omron_tee.exchange.requester import candidate_nonce, new_nonce

    n = new_nonce()
    a, b = candidate_nonce(n, "5Alice"), candidate_nonce(n, "5Bob")
    assert a != b and len(a) == len(b) == 32
    assert candidate_nonce(n, "5Alice") == a  # the client re-derives what the validator sent
    assert candidate_nonce(new_nonce(), "5Alice") != a


def test_a_tensor_answer_is_a_stream_of_one_part(sim, registry) -> None:
    """The one answer format: header, then a final chunk holding the one part and the receipt; read a byte at a time."""
    from omron_tee.channel.stream import FrameReader

    app = sim.app()
    session = attested(sim, app)
    spec = registry.get("digits-mlp")
    x = sample_input(spec, np.random.default_rng(11))
    request, reader = seal(session, spec, x)
    data = roundtrip(app, request)
    assert len(FrameReader(8 << 20).feed(data)) == 2  # header + final chunk
    parts = []
    for i in range(len(data)):  # sans-I/O: any split of the bytes reads the same
        parts += reader.feed(data[i : i + 1])
    answer = reader.close()
    assert len(parts) == 1 and parts[0] is answer.result and answer.workload == "tensor"
    assert outputs_match(spec, registry.runtime(spec.model_id).run(x), answer.result.output)


def test_dev_faults_exist_only_around_a_simulated_enclave() -> None:
    """Every real backend runs the served model unchanged: only the simulated one takes (and applies) dev faults."""
    import inspect

    from omron_tee.enclave import select
    from omron_tee.enclave.base import EnclaveBackend
    from omron_tee.enclave.simulated import SimulatedBackend
    from omron_tee.workloads.base import Served

    backends = {cls for cls in vars(select).values() if inspect.isclass(cls) and issubclass(cls, EnclaveBackend) and cls is not EnclaveBackend}
    real = backends - {SimulatedBackend}
    assert real, "no real backend found to check"
    for cls in real:
        assert cls.instrument is EnclaveBackend.instrument, f"{cls.__name__} wraps the served model"
    served = Served(spec=None, runtime=object())  # type: ignore[arg-type]
    assert EnclaveBackend.instrument(None, served) is served  # type: ignore[arg-type]
    import ast

    names = {n.id for n in ast.walk(ast.parse(inspect.getsource(trusted_app_module))) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(ast.parse(inspect.getsource(trusted_app_module))) if isinstance(n, ast.Attribute)}
    assert not [n for n in names if "fault" in n.lower().replace("default", "")]  # the trusted app never branches on one
