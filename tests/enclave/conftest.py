"""Fixtures for the enclave backend tests: the real evidence bytes and fake platforms that return them."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from enclave_fakes import FakeGpuSource, FakeGramine, FakeTsmKernel, vectors_dir

from omron_tee.enclave.sev_snp import CERT_GUIDS, build_cert_table

GUID = {name: guid for guid, name in CERT_GUIDS.items()}


class Vectors:
    """The published evidence in ../shared/testvectors (see its README)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            pytest.fail(f"test vectors not found at {root}: they live in ../shared/testvectors beside the project (or set OMRON_TEE_TESTVECTORS)")
        self.root = root
        self.tdx_quote = (root / "intel-tdx/tdx_quote").read_bytes()
        self.sgx_quote = (root / "intel-sgx/sgx_quote").read_bytes()
        self.snp_report = (root / "amd-sev-snp/attestation.bin").read_bytes()
        self.vcek_der = (root / "amd-sev-snp/vcek.der").read_bytes()
        chain = x509.load_pem_x509_certificates((root / "amd-sev-snp/ask_ark_milan.pem").read_bytes())
        self.ask_der, self.ark_der = (c.public_bytes(Encoding.DER) for c in chain)
        self.hopper_report = bytes.fromhex((root / "nvidia-h100/hopperAttestationReport.txt").read_text().strip())
        self.hopper_chain = (root / "nvidia-h100/hopperCertChain.txt").read_bytes()
        # What the README says each one carries.
        self.tdx_report_data = bytes.fromhex(
            "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20"
        )
        self.tdx_mrtd = bytes.fromhex("91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7")
        self.sgx_report_data = b"Hello, world!".ljust(64, b"\0")
        self.sgx_mrenclave = bytes.fromhex("33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb")
        self.sgx_mrsigner = bytes.fromhex("815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6")
        self.snp_report_data = bytes.fromhex("0102030405").ljust(64, b"\0")
        self.snp_measurement = bytes.fromhex(
            "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
        )
        self.hopper_nonce = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")

    def snp_cert_table(self) -> bytes:
        """The auxblob a host hands out: the real VCEK, ASK and ARK in a GHCB certificate table."""
        return build_cert_table([(GUID["vcek"], self.vcek_der), (GUID["ask"], self.ask_der), (GUID["ark"], self.ark_der)])


@pytest.fixture(scope="session")
def vectors() -> Vectors:
    return Vectors(vectors_dir())


@pytest.fixture(scope="session")
def signing_key():
    """An SGX signing key: RSA-3072 with exponent 3, as gramine-sgx-gen-private-key makes."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=3, key_size=3072)


@pytest.fixture
def tdx_kernel(tmp_path: Path, vectors: Vectors) -> FakeTsmKernel:
    seen: list[bytes] = []

    def platform(inblob: bytes, privlevel: int) -> tuple[bytes, bytes]:
        seen.append(inblob)
        return vectors.tdx_quote, b""

    k = FakeTsmKernel(tmp_path, "tdx_guest", platform)
    k.inblobs = seen  # type: ignore[attr-defined]
    return k


@pytest.fixture
def snp_kernel(tmp_path: Path, vectors: Vectors) -> FakeTsmKernel:
    seen: list[tuple[bytes, int]] = []

    def platform(inblob: bytes, privlevel: int) -> tuple[bytes, bytes]:
        seen.append((inblob, privlevel))
        return vectors.snp_report, vectors.snp_cert_table()

    k = FakeTsmKernel(tmp_path, "sev_guest", platform)
    k.requests = seen  # type: ignore[attr-defined]
    return k


@pytest.fixture
def gramine(tmp_path: Path, vectors: Vectors) -> FakeGramine:
    return FakeGramine(tmp_path, quote=vectors.sgx_quote, mrenclave=vectors.sgx_mrenclave)


@pytest.fixture
def gpu_source(vectors: Vectors) -> FakeGpuSource:
    return FakeGpuSource(report=vectors.hopper_report, cert_chain=vectors.hopper_chain)
