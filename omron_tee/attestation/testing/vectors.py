"""Paths to and loaders for the real published evidence in ``../shared/testvectors``.

The vectors are not copied into the project: they live beside it (see
``shared/testvectors/README.md``). ``OMRON_TEE_TESTVECTORS`` overrides the
location. Nothing here is used by production code.
"""

from __future__ import annotations

import os
from pathlib import Path

from omron_tee.attestation.abi import nvidia as nv_abi
from omron_tee.attestation.evidence import Evidence, TeeType

REPO_ROOT = Path(__file__).resolve().parents[3]
TESTVECTORS = Path(os.environ.get("OMRON_TEE_TESTVECTORS", REPO_ROOT.parent / "shared" / "testvectors"))

SGX_QUOTE = TESTVECTORS / "intel-sgx" / "sgx_quote"
SGX_COLLATERAL = TESTVECTORS / "intel-sgx" / "sgx_quote_collateral.json"
SGX_NOW = 1750330631  # 2025-06-19T10:57:11Z
TDX_QUOTE = TESTVECTORS / "intel-tdx" / "tdx_quote"
TDX_COLLATERAL = TESTVECTORS / "intel-tdx" / "tdx_quote_collateral.json"
TDX_NOW = 1750329207  # 2025-06-19T10:33:27Z
SNP_DIR = TESTVECTORS / "amd-sev-snp"
SNP_REPORT = SNP_DIR / "attestation.bin"
SNP_VCEK = SNP_DIR / "vcek.der"
SNP_CHAIN = SNP_DIR / "ask_ark_milan.pem"
NVIDIA_DIR = TESTVECTORS / "nvidia-h100"
NVIDIA_REPORT = NVIDIA_DIR / "hopperAttestationReport.txt"
NVIDIA_CHAIN = NVIDIA_DIR / "hopperCertChain.txt"
NVIDIA_ROOT = NVIDIA_DIR / "verifier_device_root.pem"


def available() -> bool:
    return SGX_QUOTE.is_file() and SNP_REPORT.is_file() and NVIDIA_REPORT.is_file()


def sgx_evidence() -> Evidence:
    return Evidence(TeeType.SGX, SGX_QUOTE.read_bytes())


def tdx_evidence() -> Evidence:
    return Evidence(TeeType.TDX, TDX_QUOTE.read_bytes())


def snp_evidence(*, with_vcek: bool = True) -> Evidence:
    certs = SNP_VCEK.read_bytes() if with_vcek else b""
    return Evidence(TeeType.SEV_SNP, SNP_REPORT.read_bytes(), certificates=certs)


def nvidia_report_bytes() -> bytes:
    return nv_abi.decode_report_text(NVIDIA_REPORT.read_text())


def nvidia_evidence() -> Evidence:
    return Evidence(TeeType.NVIDIA, nvidia_report_bytes(), certificates=NVIDIA_CHAIN.read_bytes())
