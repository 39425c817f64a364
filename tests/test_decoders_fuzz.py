"""Every decoder of bytes from the network, fuzzed: deep nesting, huge sizes, random mutations.

The rule: whatever arrives, a decoder returns a value or raises the project's
own ``OmronTeeError`` with a named reason; never ``RecursionError``,
``ValueError``, ``TypeError``, ``KeyError``, ``struct.error`` or anything else,
and never after building a value larger than its bound. Covered: the bounded
JSON decoder itself, every wire message (attest request/response, infer
request/response, the third-party API's requests and replies), every sealed payload
(inference request and result, completion request), receipts, receipt files
and evidence JSON. The binary evidence parsers are fuzzed in
tests/attestation/test_fuzz.py.
"""

from __future__ import annotations

import base64
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from omron_tee import untrusted
from omron_tee.attestation.evidence import Evidence
from omron_tee.channel.receipt import Receipt
from omron_tee.errors import OmronTeeError
from omron_tee.exchange.receipt_file import ReceiptFile, verify_receipt_file
from omron_tee.protocol import AttestRequest, AttestResponse, InferRequest, ReplyRoute, SealedRequest, loads
from omron_tee.protocol import CandidatesReply, CandidatesRequest, RelayReply, RelayRequest
from omron_tee.workloads import default_workloads
from omron_tee.workloads.llm import LlmWorkload
from omron_tee.workloads.tensor import Tensor, TensorWorkload

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
COUNT = {"examples": 0}  # how many inputs the decoders saw, for the closing note


def _b64(n: int) -> str:
    return base64.b64encode(os.urandom(n)).decode()


# Genuine-shaped messages: the mutations start from these, so they reach the deep fields.
SAMPLES = {
    "attest-request": {"v": 1, "nonce": _b64(32), "kem": "x25519-hkdf-sha256-aes256gcm", "hotkey": "5Miner"},
    "attest-response": {"evidence": {"tee_type": "simulated", "quote": _b64(226), "attached": [{"tee_type": "nvidia", "quote": _b64(300)}]},
                        "keys": {"kem": "x25519-hkdf-sha256-aes256gcm", "hpke_public": _b64(32), "signing_public": _b64(32)},
                        "models": ["digits-mlp"], "proof_systems": {"digits-mlp": ["tee", "zk"]}},
    "infer-request": {"v": 1, "key_id": _b64(16), "sealed": _b64(100)},
    "payload": {"v": 2, "nonce": _b64(32), "model": "digits-mlp", "workload": "tensor", "input": {"dtype": "float32", "shape": [1, 4], "data": _b64(16)},
                "reply_secret": _b64(32), "evidence_hash": _b64(32)},
    "tensor-part": {"output": {"dtype": "float32", "shape": [2], "data": _b64(8)}, "proof": _b64(10), "prove_ms": 1.0},
    "completion": {"prompt": "hi", "max_tokens": 8},
    "token-part": {"t": [17], "b": _b64(3)},
    "receipt": {"nonce": os.urandom(32).hex(), "model_hash": os.urandom(32).hex(), "input_hash": os.urandom(32).hex(),
                "output_hash": os.urandom(32).hex(), "evidence_hash": os.urandom(32).hex(), "issued_at_ms": 1, "signature": os.urandom(64).hex()},
    "relay": {"model": "digits-mlp", "deadline_ms": 1000, "attempts": [{"hotkey": "5Miner", "request": {"v": 1, "key_id": _b64(16), "sealed": _b64(50)}}]},
}

DECODERS = {
    "attest-request": AttestRequest.from_json,
    "attest-response": AttestResponse.from_json,
    "infer-request": InferRequest.from_json,
    "payload": lambda d: (ReplyRoute.from_dict(d), SealedRequest.from_dict(d)),
    "tensor-part": lambda d: TensorWorkload().collector(None, None).part(d),  # type: ignore[arg-type]
    "completion": lambda d: LlmWorkload().decode_input(None, d),  # type: ignore[arg-type]
    "token-part": lambda d: LlmWorkload().collector(None, LlmWorkload().decode_input(None, {"prompt": "p", "max_tokens": 8})).part(d),  # type: ignore[arg-type]
    "receipt": Receipt.from_json,
    "relay": lambda d: RelayRequest.from_json(d, default_deadline_ms=1000),
    "candidates-request": lambda d: CandidatesRequest.from_json(d, default_kem="x25519-hkdf-sha256-aes256gcm"),
    "candidates-reply": CandidatesReply.from_json,
    "relay-reply": lambda d: RelayReply.from_headers(d) if isinstance(d, dict) else None,
    "receipt-file": ReceiptFile.from_json,
    "evidence": Evidence.from_json,
    "tensor": Tensor.from_json,
}
SAMPLES["evidence"] = SAMPLES["attest-response"]["evidence"]
SAMPLES["candidates-request"] = {"model": "digits-mlp", "nonce": _b64(32), "kem": "x25519-hkdf-sha256-aes256gcm", "count": 3}
SAMPLES["candidates-reply"] = {"candidates": [{"hotkey": "5Miner", "uid": 1, "attest": SAMPLES["attest-response"]}], "failures": [{"hotkey": "5Other", "reason": "timeout"}]}
SAMPLES["relay-reply"] = {"x-omron-miner": "5Miner", "x-omron-tried": json.dumps([{"hotkey": "5Miner", "reason": "ok"}])}
SAMPLES["receipt-file"] = {"omron_tee_receipt": 2, "workload": "tensor", "model_id": "digits-mlp", "miner_hotkey": "5Miner", "receipt": SAMPLES["receipt"],
                           "evidence": SAMPLES["attest-response"]["evidence"], "keys": SAMPLES["attest-response"]["keys"], "attest_nonce": os.urandom(32).hex(),
                           "result": {"output": SAMPLES["tensor-part"]["output"]}}
SAMPLES["tensor"] = SAMPLES["payload"]["input"]


def _encoded(value) -> bytes:
    try:
        return json.dumps(value).encode()
    except RecursionError:  # too deep for the encoder: the same nesting, written out by hand
        return b"[" * 200_000 + b"]" * 200_000


def decode(name: str, value) -> None:
    COUNT["examples"] += 1
    try:
        DECODERS[name](value)
    except OmronTeeError as e:
        assert e.reason and isinstance(e.reason, str)


def nested(depth: int, leaf=0):
    v = leaf
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


JSONS = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=True) | st.text(max_size=20) | st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=30,
)


@st.composite
def mutated(draw, sample):
    """``sample`` with up to 4 of its fields replaced by arbitrary JSON, deleted, or nested deep."""
    doc = json.loads(json.dumps(sample))
    for _ in range(draw(st.integers(1, 4))):
        node, keys = doc, []
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            k = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
            keys.append(k)
            node = node[k]
        if not keys:
            return draw(JSONS)
        parent = doc
        for k in keys[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["replace", "delete", "deep", "huge"]))
        if op == "delete":
            del parent[keys[-1]]
        elif op == "deep":
            parent[keys[-1]] = nested(draw(st.integers(30, 300)))  # deeper ones: test_message_decoders_on_classic_attacks
        elif op == "huge":
            parent[keys[-1]] = draw(st.sampled_from([[2**20] * 8, 2**70, -1, "A" * 100_000, [0] * 50_000]))
        else:
            parent[keys[-1]] = draw(JSONS)
    return doc


@pytest.mark.parametrize("name", sorted(DECODERS))
@FUZZ
@given(data=st.data())
def test_message_decoders_raise_only_named_errors(name, data) -> None:
    decode(name, data.draw(mutated(SAMPLES[name])))


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_message_decoders_on_classic_attacks(name) -> None:
    for value in (None, [], {}, "x", 2**70, nested(5000), nested(200_000), {"": nested(900)}, [[]] * 100_000):
        decode(name, value)


@FUZZ
@given(raw=st.binary(max_size=2000) | st.text(max_size=500).map(str.encode))
def test_bounded_json_on_arbitrary_bytes(raw) -> None:
    COUNT["examples"] += 1
    try:
        loads(raw, "fuzz")
    except OmronTeeError as e:
        assert e.reason in ("malformed-message", "too-deep", "too-large")


@pytest.mark.parametrize(("body", "reason"), [
    (b"[" * 100_000 + b"]" * 100_000, "too-deep"),
    (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "too-deep"),
    (json.dumps(nested(40)).encode(), "too-deep"),
    (b"[" + b"0," * 300_000 + b"0]", "too-large"),
    (b"\xff\xfe garbage", "malformed-message"),
    (b"1" * 5000, "malformed-message"),  # an integer past Python's digit limit
    (b'"' + b"a" * 20 + b"\\ud800\\u" + b'"', "malformed-message"),
])
def test_bounded_json_refuses_with_a_reason(body, reason) -> None:
    with pytest.raises(OmronTeeError) as e:
        loads(body, "reply")
    assert e.value.reason == reason


def test_bounded_json_size_limit_is_checked_before_decoding() -> None:
    with pytest.raises(OmronTeeError) as e:
        untrusted.loads(b" " * 101, "reply", max_bytes=100)
    assert e.value.reason == "too-large"
    assert untrusted.loads(json.dumps(nested(31)).encode(), "ok") is not None


def test_receipt_files_with_hostile_shapes_are_refused_not_raised(sim) -> None:
    for doc in (nested(50_000), {"omron_tee_receipt": 2, "receipt": nested(3000)}, {"omron_tee_receipt": 2, "evidence": {"attached": [{"attached": [{}]}]}},
                {**SAMPLES["receipt-file"], "result": nested(3000)}, {**SAMPLES["receipt-file"], "workload": "alchemy"}):
        check = verify_receipt_file(doc, policy=sim.policy, verifiers=sim.verifiers, workloads=default_workloads(), models=sim.registry)
        assert not check.ok and check.reasons


def test_tensor_shapes_whose_product_wraps_int64_are_refused() -> None:
    """[2^20]*4 elements overflowed int64 in np.prod and passed as 0 bytes of data."""
    for shape in ([2**20] * 4, [2**20] * 8, [2**16, 2**16, 2**16, 2**16]):
        with pytest.raises(OmronTeeError) as e:
            Tensor.from_json({"dtype": "float32", "shape": shape, "data": ""})
        assert e.value.reason == "too-large"
    for dtype in (["float32"], {"a": 1}, None, 5):
        with pytest.raises(OmronTeeError) as e:
            Tensor.from_json({"dtype": dtype, "shape": [1], "data": _b64(4)})
        assert e.value.reason == "malformed-message"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_binary_request_frames_never_crash(data) -> None:
    """A miner meets the binary /infer frame from anyone: only a named refusal, never a crash."""
    from omron_tee.protocol import InferRequest

    for body in (data, b"OTIR\x01" + data):
        try:
            r = InferRequest.from_bytes(body)
        except OmronTeeError as e:
            assert e.reason
        else:
            assert r.to_bytes() == body and 1 <= len(r.key_id) <= 64 and r.sealed


def test_sealed_attachments_round_trip_and_refuse_what_does_not_add_up() -> None:
    from omron_tee.protocol import decode_sealed, encode_sealed

    obj = {"input": {"dtype": "float32", "shape": [2], "data": b"\x00\x01\x02\x03\x04\x05\x06\x07"}, "n": [1, {"x": b"yz"}]}
    wire = encode_sealed(obj)
    assert wire.startswith(b"OTSB") and decode_sealed(wire, "t") == obj
    assert decode_sealed(encode_sealed({"a": 1}), "t") == {"a": 1} and not encode_sealed({"a": 1}).startswith(b"OTSB")
    import json as _json

    header = _json.dumps({"b": [3], "j": {"k": {"$blob": 0}}}).encode()
    good = b"OTSB\x01" + len(header).to_bytes(4, "big") + header + b"abc"
    assert decode_sealed(good, "t") == {"k": b"abc"}
    bad = [good + b"x", good[:-1], good.replace(b'"$blob": 0', b'"$blob": 1'), b"OTSB\x01" + b"\xff\xff\xff\xff" + header,
           b"OTSB\x01" + len(header).to_bytes(4, "big") + header.replace(b"[3]", b"[1, 2]") + b"abc"]
    for b in bad:
        with pytest.raises(OmronTeeError):
            decode_sealed(b, "t")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_sealed_attachment_frames_never_crash(data) -> None:
    from omron_tee.protocol import decode_sealed

    for body in (data, b"OTSB\x01" + data, b"OTSB\x01" + len(data).to_bytes(4, "big") + data):
        try:
            decode_sealed(body, "t")
        except OmronTeeError as e:
            assert e.reason


@FUZZ
@given(st.lists(st.binary(max_size=3000), max_size=30), st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=40), st.binary(max_size=64))
def test_frame_reader_reads_any_cut_of_a_stream_and_only_its_frames(frames, cuts, garbage) -> None:
    """However a hostile or unlucky network cuts the stream, the reader returns exactly the frames, holds
    back only a partial one, and refuses a frame declared longer than its limit (whatever follows)."""
    from omron_tee.channel.stream import FrameReader, frame
    from omron_tee.errors import ChannelError

    COUNT["examples"] += 1
    wire = b"".join(frame(f) for f in frames)
    reader, got, at, i = FrameReader(max_frame=4096), [], 0, 0
    while at < len(wire):
        piece = wire[at:at + cuts[i % len(cuts)]]
        got += reader.feed(piece)
        at += len(piece)
        i += 1
        assert reader.pending <= 4 + 4096  # never more than one partial frame held
    assert got == frames and reader.pending == 0
    tail = FrameReader(max_frame=4096)
    assert tail.feed(wire + garbage[:3]) == frames and tail.pending == len(garbage[:3])  # under a length prefix: held
    with pytest.raises(ChannelError):
        FrameReader(max_frame=4096).feed(wire + (4097).to_bytes(4, "big") + garbage)


def test_json_in_other_encodings_is_refused_not_decoded() -> None:
    """The decoder would take UTF-16 and UTF-32, whose bytes the structural bound does not read: refused."""
    doc = '{"a": [[[1]]], "b": "x"}'
    for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"):
        with pytest.raises(OmronTeeError) as refused:
            untrusted.loads(doc.encode(encoding), "body")
        assert refused.value.reason == "malformed-message"
    assert untrusted.loads(doc.encode("utf-8-sig"), "body") == json.loads(doc)


def test_members_are_bounded_before_decoding_and_strings_do_not_count() -> None:
    many = b"[" + b"0," * 60 + b"0]"
    with pytest.raises(OmronTeeError) as refused:
        untrusted.loads(many, "body", max_items=50)
    assert refused.value.reason == "too-large"
    assert len(untrusted.loads(many, "body", max_items=61)) == 61  # exactly the limit: decoded
    nested = b"[" * 20 + b"]" * 20
    with pytest.raises(OmronTeeError):
        untrusted.loads(nested, "body", max_items=10, max_depth=32)  # 20 containers of one member each
    quoted = json.dumps({"s": "[" * 100 + "," * 100, "t": "\\\"[[[["}).encode()
    assert untrusted.loads(quoted, "body", max_depth=3, max_items=3) == json.loads(quoted)  # brackets and commas in strings


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(alphabet=st.sampled_from('ab"\\/[]{},:\n\t\u00e9\u2028'), max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(alphabet=st.sampled_from('k"\\[],{}'), max_size=4), inner, max_size=5),
    max_leaves=40,
)


def _true_shape(v, depth: int = 0) -> tuple[int, int]:
    """(nesting depth, commas + containers) of a decoded value: what ``structure`` must find on its bytes."""
    if isinstance(v, (list, dict)):
        members = list(v.values()) if isinstance(v, dict) else v
        inner = [_true_shape(m, depth + 1) for m in members]
        return max([depth + 1, *(d for d, _ in inner)]), max(len(members) - 1, 0) + 1 + sum(n for _, n in inner)
    return depth, 0


@FUZZ
@given(_JSON_VALUES, st.booleans(), st.booleans())
def test_the_byte_pass_reads_any_json_exactly(value, ascii_only, spaced) -> None:
    """Strings full of quotes, backslashes, brackets and commas, escaped either way: the pass outside string
    literals finds exactly the depth and the commas-plus-containers of the decoded value, both ways it can
    take (the expression past few strings, the mask past many)."""
    COUNT["examples"] += 1
    raw = json.dumps(value, ensure_ascii=ascii_only, separators=(", ", ": ") if spaced else (",", ":")).encode()
    assert untrusted.structure(raw) == _true_shape(value)
    saved, untrusted._REGEX_UP_TO_QUOTES = untrusted._REGEX_UP_TO_QUOTES, 0  # the mask over the bytes, as for many strings
    try:
        assert untrusted.structure(raw) == _true_shape(value)
    finally:
        untrusted._REGEX_UP_TO_QUOTES = saved
