"""Intel SGX ECDSA quote, version 3: parse only.

Header (48) | SGX report body (384) | signature data (see ``dcap_common``).
The quote signature covers bytes 0..432 (header and report body).
"""

from __future__ import annotations

from dataclasses import dataclass

from omron_tee.attestation.abi import dcap_common as dc
from omron_tee.attestation.abi.binary import Reader, require_bytes

STRUCTURE = "SGX quote"
SIGNED_LEN = dc.HEADER_LEN + dc.ENCLAVE_REPORT_LEN


@dataclass(frozen=True)
class SgxQuote:
    header: dc.QuoteHeader
    report: dc.EnclaveReport
    signature_data: dc.SignatureData
    signed_bytes: bytes

    @property
    def debug(self) -> bool:
        return self.report.debug

    @property
    def pck_chain_pem(self) -> bytes | None:
        return self.signature_data.pck_chain_pem


def parse(data: bytes) -> SgxQuote:
    data = require_bytes(data, STRUCTURE)
    r = Reader(data, STRUCTURE)
    header = dc.parse_header(r)
    if header.version != 3:
        raise r.error("header.version", f"unsupported SGX quote version {header.version} (expected 3)")
    if header.tee_type != dc.TEE_TYPE_SGX:
        raise r.error("header.tee_type", f"0x{header.tee_type:08x} is not SGX (0x00000000)")
    report = dc.parse_enclave_report(r, "report")
    signed = data[:SIGNED_LEN]
    sig = dc.parse_signature_data(r, header.version)
    return SgxQuote(header, report, sig, signed)
