"""Reference values for validator policies: SIGSTRUCT, gramine-sgx-sign output, quotes, reports, images."""

from __future__ import annotations

import hashlib
import importlib.util
import struct
import subprocess
import sys
import uuid

import pytest
from enclave_sigstruct import MRENCLAVE, SIGN_OUTPUT, make_sigstruct

from omron_tee.attestation.evidence import TeeType
from omron_tee.enclave import reference as ref
from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.errors import ConfigError


def test_sigstruct_gives_mrenclave_mrsigner_and_identity(signing_key):
    data = make_sigstruct(signing_key)
    sig = ref.parse_sigstruct(data)
    modulus_le = signing_key.public_key().public_numbers().n.to_bytes(384, "little")
    assert sig.mrenclave == MRENCLAVE
    assert sig.mrsigner == hashlib.sha256(modulus_le).digest()
    assert (sig.isv_prod_id, sig.isv_svn, sig.debug, sig.attribute_flags, sig.attribute_xfrm) == (7, 3, False, 0x4, 0x3)
    values = ref.sgx_reference_from_sigstruct(data)
    assert values.values["mrenclave"] == MRENCLAVE.hex() and not values.debug


def test_debug_enclave_is_flagged(signing_key):
    values = ref.sgx_reference_from_sigstruct(make_sigstruct(signing_key, debug=True))
    assert values.debug and "sgx.debug = false" in " ".join(values.notes)
    assert "DEBUG enclave" in values.to_toml()


def test_edited_sigstruct_does_not_verify(signing_key):
    data = bytearray(make_sigstruct(signing_key))
    data[960] ^= 1  # another MRENCLAVE
    with pytest.raises(ConfigError, match="signature does not verify"):
        ref.parse_sigstruct(bytes(data))


@pytest.mark.parametrize("mangle,msg", [(lambda d: d[:-1], "1808"), (lambda d: b"\0" + d[1:], "headers")])
def test_not_a_sigstruct(signing_key, mangle, msg):
    with pytest.raises(ConfigError, match=msg):
        ref.parse_sigstruct(mangle(make_sigstruct(signing_key)))


def test_gramine_sgx_sign_output():
    assert ref.parse_sign_output(SIGN_OUTPUT.format(MRENCLAVE.hex())) == MRENCLAVE
    with pytest.raises(ConfigError, match="Measurement"):
        ref.parse_sign_output("Memory:\n   nothing here\n")


def test_reference_values_from_the_real_quotes_and_report(vectors):
    sgx = ref.sgx_reference_from_quote(vectors.sgx_quote)
    assert sgx.values["mrenclave"] == vectors.sgx_mrenclave.hex() and sgx.values["mrsigner"] == vectors.sgx_mrsigner.hex()
    tdx = ref.tdx_reference_from_quote(vectors.tdx_quote)
    assert tdx.values["mrtd"] == vectors.tdx_mrtd.hex() and set(tdx.values) >= {"rtmr0", "rtmr1", "rtmr2", "rtmr3"}
    snp = ref.snp_reference_from_report(vectors.snp_report)
    assert snp.values["measurement"] == vectors.snp_measurement.hex() and snp.debug
    with pytest.raises(ConfigError, match="not TDX"):
        ref.tdx_reference_from_quote(vectors.sgx_quote)


def test_policy_snippets_load_into_the_validators_policy(vectors, signing_key):
    from omron_tee.attestation.validate.policy import Policy

    sgx = ref.sgx_reference_from_sigstruct(make_sigstruct(signing_key))
    assert Policy.from_toml(sgx.to_toml()).sgx.mrenclaves == {MRENCLAVE}
    signer_toml = "\n".join(line.removeprefix("# ") if line.startswith(("# [[", "# mrsigner", "# isv_", "# min_")) else line for line in sgx.to_toml().splitlines())
    signer = Policy.from_toml(signer_toml).sgx.signers[0]
    assert (signer.mrsigner.hex(), signer.isv_prod_id, signer.min_isv_svn) == (sgx.values["mrsigner"], 7, 3)

    tdx = ref.tdx_reference_from_quote(vectors.tdx_quote)
    (m,) = Policy.from_toml(tdx.to_toml()).tdx.measurements
    assert m.mrtd == vectors.tdx_mrtd and m.rtmrs[3] is None and m.rtmrs[0].hex() == tdx.values["rtmr0"]

    snp = ref.snp_reference_from_report(vectors.snp_report)
    assert Policy.from_toml(snp.to_toml()).sev_snp.measurements == {vectors.snp_measurement}

    sim = ref.simulated_reference([("m", bytes(32))])
    policy = Policy.from_toml(sim.to_toml())
    assert policy.simulated.allow and policy.simulated.measurements == {bytes.fromhex(sim.values["measurement"])}


def test_simulated_reference_is_what_the_miner_reports(registry):
    models = [(s.model_id, s.sha256) for s in registry.specs()]
    values = ref.simulated_reference(models)
    assert values.tee_type is TeeType.SIMULATED
    assert values.values["measurement"] == trusted_app_measurement(models).hex()


@pytest.fixture(scope="session")
def registry():
    from omron_tee.models.registry import ModelRegistry

    return ModelRegistry.builtin()


def synthetic_ovmf(tmp_path) -> str:
    """The smallest firmware sev-snp-measure accepts: pages ending in an OVMF GUIDed footer table
    with the SEV-ES reset block entry (real OVMF builds carry more entries and metadata sections)."""
    def entry(guid: str, data: bytes) -> bytes:
        return data + struct.pack("<H", len(data) + 18) + uuid.UUID(guid).bytes_le

    table = entry("00f771de-1a7e-4fcb-890e-68c77e2fb44e", struct.pack("<I", 0xFFFFF000))
    footer = struct.pack("<H", len(table) + 18) + uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
    tail = table + footer + bytes(32)
    body = hashlib.sha256(b"firmware").digest() * ((8192 - len(tail)) // 32 + 1)
    path = tmp_path / "OVMF.fd"
    path.write_bytes(body[: 8192 - len(tail)] + tail)
    return str(path)


def test_snp_measurement_from_an_image(tmp_path, monkeypatch):
    ovmf = synthetic_ovmf(tmp_path)
    if importlib.util.find_spec("sevsnpmeasure") is None:
        with pytest.raises(ConfigError, match="pip install sev-snp-measure"):
            ref.snp_reference_from_image(ovmf=ovmf, vcpus=4, vcpu_type="EPYC-v4")
        return
    values = ref.snp_reference_from_image(ovmf=ovmf, vcpus=4, vcpu_type="EPYC-Milan")
    # The same as sev-snp-measure's own command line for the same launch.
    cli = subprocess.run(
        [sys.executable, "-m", "sevsnpmeasure.cli", "--mode", "snp", "--vcpus", "4", "--vcpu-type", "EPYC-Milan", "--ovmf", ovmf],
        capture_output=True, text=True, check=True,
    )
    assert values.values["measurement"] == cli.stdout.strip()
    other = ref.snp_reference_from_image(ovmf=ovmf, vcpus=2, vcpu_type="EPYC-Milan")
    assert other.values["measurement"] != values.values["measurement"]
    with pytest.raises(ConfigError, match="unknown --vcpu-type"):
        ref.snp_reference_from_image(ovmf=ovmf, vcpus=4, vcpu_type="Pentium")
    with pytest.raises(ConfigError, match="no such file"):
        ref.snp_reference_from_image(ovmf=tmp_path / "missing.fd", vcpus=4, vcpu_type="EPYC-v4")


def test_snp_measurement_without_sev_snp_measure_says_how(tmp_path, monkeypatch):
    real = importlib.import_module

    def no_ssm(name, *a, **kw):
        if name.startswith("sevsnpmeasure"):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(ref.importlib, "import_module", no_ssm)
    with pytest.raises(ConfigError, match="pip install sev-snp-measure, then: sev-snp-measure --mode snp"):
        ref.snp_reference_from_image(ovmf=synthetic_ovmf(tmp_path), vcpus=4, vcpu_type="EPYC-v4")
