"""The simulated enclave: development only, rejected by validators outside a local network.

Evidence is a ``SimulatedReport`` signed with a development attestation key
kept in a file (one per local network). Holding that file is all it takes to
forge evidence, which is exactly why policies accept simulated evidence only
on the embedded chain.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omron_tee.attestation.abi import simulated as abi
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.enclave.base import Availability, EnclaveBackend
from omron_tee.enclave.dev_faults import DevFaults
from omron_tee.errors import EnclaveError


def load_or_create_dev_key(path: str | Path) -> Ed25519PrivateKey:
    """The development attestation key at ``path``, created (mode 0600) if absent."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        # O_EXCL: when several local processes start at once, exactly one creates the key.
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
    for _ in range(50):
        data = p.read_bytes()
        if data.strip().endswith(b"-----"):
            break
        time.sleep(0.01)  # another process is still writing it
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise EnclaveError(f"{p} is not a PEM Ed25519 private key; delete it to make a new development key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EnclaveError(f"{p} holds a key that is not Ed25519")
    return key


def dev_public_key(path: str | Path) -> bytes:
    """The raw public key a validator trusts for simulated evidence of this local network."""
    return load_or_create_dev_key(path).public_key().public_bytes_raw()


class SimulatedBackend(EnclaveBackend):
    tee_type = TeeType.SIMULATED

    def __init__(self, key_path: str | Path, measurement: bytes, *, debug: bool = False, faults: DevFaults = DevFaults()) -> None:
        if len(measurement) != 48:
            raise EnclaveError("simulated measurement must be 48 bytes (SHA-384)")
        self._key = load_or_create_dev_key(key_path)
        self._key_id = hashlib.sha256(self._key.public_key().public_bytes_raw()).digest()
        self._measurement = measurement
        self._flags = abi.FLAG_DEBUG if debug else 0
        self.faults = faults

    def attest(self, report_data: bytes) -> Evidence:
        if len(report_data) != 64:
            raise EnclaveError(f"report data must be 64 bytes, got {len(report_data)}")
        body = abi.encode_body(
            flags=self._flags,
            issued_at_ms=int(time.time() * 1000),
            measurement=self._measurement,
            report_data=report_data,
            key_id=self._key_id,
        )
        return Evidence(tee_type=TeeType.SIMULATED, quote=body + self._key.sign(body))

    def measurement(self) -> bytes:
        return self._measurement

    def instrument(self, served: Any) -> Any:
        return self.faults.instrument(served)

    @classmethod
    def detect(cls) -> Availability:
        return Availability(TeeType.SIMULATED, True, "always available; for development only (validators refuse it outside a local network)")
