"""HPKE sealing (both suites), size-hiding padding, receipts and the report-data binding."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omron_tee.attestation.binding import (
    NONCE_LEN,
    EnclavePublicKeys,
    binding_matches,
    report_data_for,
)
from omron_tee.channel.hpke import HpkeKeyPair, KemSuite, bucket_size, key_id, pad, request_info, seal, unpad
from omron_tee.channel.receipt import Receipt
from omron_tee.errors import ChannelError
from omron_tee.exchange.requester import AttestedSession, seal_request
from omron_tee.workloads.tensor import TensorWorkload
from omron_tee.workloads.tensor import sample_input

SUITES = list(KemSuite)


@pytest.mark.parametrize("kem", SUITES, ids=lambda k: k.name)
def test_seal_open_roundtrip(kem: KemSuite) -> None:
    kp = HpkeKeyPair.generate(kem)
    if kem is KemSuite.MLKEM768_X25519:
        assert len(kp.public_bytes) == 1184 + 32
    else:
        assert len(kp.public_bytes) == 32
    msg = os.urandom(777)
    info = request_info(key_id(kp.public_bytes))
    sealed = seal(kem, kp.public_bytes, msg, info)
    assert msg not in sealed
    assert kp.open(sealed, info) == msg
    # Sealing is randomised: the same plaintext twice gives different ciphertexts.
    assert seal(kem, kp.public_bytes, msg, info) != sealed


@pytest.mark.parametrize("kem", SUITES, ids=lambda k: k.name)
def test_tampered_ciphertext_is_refused(kem: KemSuite) -> None:
    kp = HpkeKeyPair.generate(kem)
    info = b"ctx"
    sealed = bytearray(seal(kem, kp.public_bytes, b"secret input", info))
    for pos in (0, len(sealed) // 2, len(sealed) - 1):  # KEM encapsulation, body, tag
        bad = bytearray(sealed)
        bad[pos] ^= 0x01
        with pytest.raises(ChannelError) as e:
            kp.open(bytes(bad), info)
        assert e.value.reason == "tampered-ciphertext"
    with pytest.raises(ChannelError) as e:
        kp.open(bytes(sealed[:-1]), info)
    assert e.value.reason == "tampered-ciphertext"
    with pytest.raises(ChannelError) as e:
        kp.open(b"", info)
    assert e.value.reason == "tampered-ciphertext"


@pytest.mark.parametrize("kem", SUITES, ids=lambda k: k.name)
def test_wrong_key_and_wrong_context_are_refused(kem: KemSuite) -> None:
    kp, other = HpkeKeyPair.generate(kem), HpkeKeyPair.generate(kem)
    sealed = seal(kem, kp.public_bytes, b"for kp only", request_info(b"n" * 16))
    with pytest.raises(ChannelError) as e:
        other.open(sealed, request_info(b"n" * 16))
    assert e.value.reason == "tampered-ciphertext"
    # Right key, but bound to another context (another key's name).
    with pytest.raises(ChannelError) as e:
        kp.open(sealed, request_info(b"m" * 16))
    assert e.value.reason == "tampered-ciphertext"


def test_suites_do_not_mix() -> None:
    x = HpkeKeyPair.generate(KemSuite.X25519)
    with pytest.raises(ChannelError) as e:
        seal(KemSuite.MLKEM768_X25519, x.public_bytes, b"m", b"i")
    assert e.value.reason == "bad-key"
    with pytest.raises(ChannelError) as e:
        KemSuite.parse("rsa-oaep")
    assert e.value.reason == "unsupported-suite"


@pytest.mark.parametrize("kem", SUITES, ids=lambda k: k.name)
def test_unusable_public_key_is_a_channel_error(kem: KemSuite) -> None:
    """A well-formed but low-order X25519 point: a named refusal, not a stray ValueError."""
    n = 32 if kem is KemSuite.X25519 else 1184 + 32
    good = HpkeKeyPair.generate(kem).public_bytes
    zero = good[: n - 32] + bytes(32)
    with pytest.raises(ChannelError) as e:
        seal(kem, zero, b"m", b"i")
    assert e.value.reason == "bad-key"
    with pytest.raises(ChannelError) as e:
        seal(kem, good[:-1], b"m", b"i")
    assert e.value.reason == "bad-key"


def test_padding_buckets() -> None:
    assert bucket_size(0) == 1024
    assert bucket_size(1020) == 1024
    assert bucket_size(1021) == 2048
    for n in (0, 1, 500, 1020, 1021, 5000):
        p = pad(b"x" * n)
        assert len(p) == bucket_size(n)
        assert unpad(p) == b"x" * n
    with pytest.raises(ChannelError) as e:
        unpad(b"\xff\xff\xff\xff" + bytes(10))
    assert e.value.reason == "malformed-message"


def test_padding_in_parts_and_opening_as_a_view_give_the_same_bytes() -> None:
    from omron_tee import untrusted

    obj = {"i": 1, "data": os.urandom(70_000), "more": [b"", b"ab"], "text": "x"}
    parts = untrusted.dumps_attached_parts(obj)
    assert pad(parts) == pad(untrusted.dumps_attached(obj)) == pad(b"".join(parts))
    opened = unpad(pad(parts), view=True)
    assert isinstance(opened, memoryview) and untrusted.loads_attached(opened, "t") == obj
    assert all(type(b) is bytes for b in untrusted.loads_attached(opened, "t")["more"])  # attachments are bytes, not views
    assert untrusted.loads_attached(unpad(pad(b'{"a":1}'), view=True), "t") == {"a": 1}  # plain JSON through a view
    with pytest.raises(ChannelError) as e:
        pad([b"x" * (1 << 20)] * 80)  # the limit counts every part
    assert e.value.reason == "too-large"


def test_the_allocator_keeps_large_buffers_where_it_can() -> None:
    import platform

    from omron_tee.config import tune_allocator

    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")
    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")  # idempotent


def test_large_messages_are_padded_by_padme_not_doubled() -> None:
    from omron_tee.channel.hpke import POWER_OF_TWO_UPTO, padme

    assert bucket_size(POWER_OF_TWO_UPTO - 4) == POWER_OF_TWO_UPTO  # the last power-of-two bucket
    sizes = [POWER_OF_TWO_UPTO - 3 + i * 977 for i in range(3000)] + [2**20, 2**20 + 1, 8 * 2**20 + 12345, 16 * 2**20]
    for n in sizes:
        b = bucket_size(n)
        assert n + 4 <= b <= (n + 4) * 1.12, n  # Padmé: at most about +11 %
    assert bucket_size(2**20) <= 1.04 * (2**20 + 4)  # a 1 MiB tensor grows by under 4 %, not 100 %
    # Few buckets: every length from 1 MiB to 2 MiB pads to one of 32 sizes in that octave, or to 2 MiB itself.
    assert len({padme(n) for n in range(2**20, 2**21, 97)}) <= 33
    assert all(padme(a) <= padme(b) for a, b in zip(sizes, sizes[1:]) if a <= b)
    big = b"y" * (3 * 2**20 + 7)
    assert unpad(pad(big)) == big and len(pad(big)) == bucket_size(len(big))


@pytest.mark.parametrize("kem", SUITES, ids=lambda k: k.name)
def test_ciphertext_length_depends_only_on_bucket(kem: KemSuite) -> None:
    kp = HpkeKeyPair.generate(kem)
    lengths = {len(seal(kem, kp.public_bytes, os.urandom(n), b"i")) for n in (1, 10, 300, 900, 1020)}
    assert len(lengths) == 1
    assert len(seal(kem, kp.public_bytes, os.urandom(1021), b"i")) > lengths.pop()


TENSOR = TensorWorkload()


def _session(kem: KemSuite) -> AttestedSession:
    kp = HpkeKeyPair.generate(kem)
    keys = EnclavePublicKeys(kem.value, kp.public_bytes, Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    return AttestedSession(keys=keys, evidence_hash=os.urandom(32), verdict=None, evidence=None, attested_at=0.0, expires_at=1e12, attest_nonce=os.urandom(32))  # type: ignore[arg-type]


@pytest.mark.parametrize("kem", SUITES, ids=lambda k: k.name)
def test_benchmark_and_third_party_requests_look_alike(kem: KemSuite, registry) -> None:
    """A validator's spot check and a user's request of the same model have equal sizes."""
    session = _session(kem)
    rng = np.random.default_rng(1)
    sizes = set()
    for spec in registry.specs():
        bench = sample_input(spec, rng)
        # A "user" input: same shape, very different values (large, negative, exact zeros).
        user = (np.arange(np.prod(spec.input_shape), dtype=np.float32).reshape(spec.input_shape) * -1234.5678).astype(spec.input_dtype)
        user.flat[::3] = 0
        r1, _ = seal_request(session, TENSOR, spec, bench)
        r2, _ = seal_request(session, TENSOR, spec, user)
        assert len(r1.sealed) == len(r2.sealed), spec.model_id
        assert r1.key_id == r2.key_id
        sizes.add(len(r1.sealed))
    # The shipped models' inputs differ in size (10 to 64 features), yet with the default suite
    # their requests do not: one padding bucket holds them all. (With MLKEM768 the 1.2 kB reply
    # key pushes the largest input into the next bucket; per model, sizes still match.)
    assert len({int(np.prod(s.input_shape)) for s in registry.specs()}) > 1
    if kem is KemSuite.X25519:
        assert len(sizes) == 1


def _receipt(key: Ed25519PrivateKey) -> Receipt:
    r = Receipt(os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(32), 1_700_000_000_123)
    return dataclasses.replace(r, signature=key.sign(r.signed_bytes()))


def test_receipt_sign_verify_and_json_roundtrip() -> None:
    key = Ed25519PrivateKey.generate()
    r = _receipt(key)
    r.verify(key.public_key().public_bytes_raw())
    back = Receipt.from_json(r.to_json())
    assert back == r
    back.verify(key.public_key().public_bytes_raw())


@pytest.mark.parametrize("field", ["nonce", "model_hash", "input_hash", "output_hash", "evidence_hash", "issued_at_ms", "signature"])
def test_receipt_any_field_changed_is_bad(field: str) -> None:
    key = Ed25519PrivateKey.generate()
    r = _receipt(key)
    value = getattr(r, field)
    if isinstance(value, int):
        changed = value + 1
    else:
        changed = bytes([value[0] ^ 1]) + value[1:]
    bad = dataclasses.replace(r, **{field: changed})
    with pytest.raises(ChannelError) as e:
        bad.verify(key.public_key().public_bytes_raw())
    assert e.value.reason == "bad-receipt"


def test_receipt_other_key_is_bad() -> None:
    r = _receipt(Ed25519PrivateKey.generate())
    with pytest.raises(ChannelError) as e:
        r.verify(Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    assert e.value.reason == "bad-receipt"
    with pytest.raises(ChannelError) as e:
        r.verify(b"short")
    assert e.value.reason == "bad-receipt"


def test_receipt_from_malformed_json() -> None:
    r = _receipt(Ed25519PrivateKey.generate()).to_json()
    for broken in ({**r, "nonce": "zz"}, {k: v for k, v in r.items() if k != "input_hash"}, {**r, "model_hash": "00"}, "not a dict"):
        with pytest.raises(ChannelError) as e:
            Receipt.from_json(broken)
        assert e.value.reason == "malformed-message"


def test_report_data_binds_nonce_hotkey_and_keys() -> None:
    nonce = os.urandom(NONCE_LEN)
    keys = EnclavePublicKeys(KemSuite.X25519.value, os.urandom(32), os.urandom(32))
    hk = "5MinerHotkeyA000000000000000000000000000000000"
    rd = report_data_for(nonce, keys, hk)
    assert len(rd) == 64
    assert report_data_for(nonce, keys, hk) == rd
    assert binding_matches(rd, nonce, keys, hk)
    variants = [
        (os.urandom(NONCE_LEN), keys, hk),
        (nonce, dataclasses.replace(keys, hpke_public=os.urandom(32)), hk),
        (nonce, dataclasses.replace(keys, signing_public=os.urandom(32)), hk),
        (nonce, dataclasses.replace(keys, kem=KemSuite.MLKEM768_X25519.value), hk),
        (nonce, keys, "5MinerHotkeyB000000000000000000000000000000000"),  # another miner relaying this enclave
    ]
    for n, k, h in variants:
        assert report_data_for(n, k, h) != rd
        assert not binding_matches(rd, n, k, h)
    # Length-prefixing: moving bytes between the two keys changes the binding.
    shifted = EnclavePublicKeys(keys.kem, keys.hpke_public + keys.signing_public[:1], keys.signing_public[1:])
    assert report_data_for(nonce, shifted, hk) != rd
    with pytest.raises(ValueError):
        report_data_for(b"short", keys, hk)
    with pytest.raises(ValueError):
        report_data_for(nonce, keys, "")
