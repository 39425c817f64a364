"""The enclave's channel keys: HPKE (to receive inputs) and Ed25519 (to sign receipts).

They are generated inside the enclave at start and never leave it; the
evidence binds their public halves (see ``attestation.binding``).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omron_tee.attestation.binding import EnclavePublicKeys
from omron_tee.channel.hpke import HpkeKeyPair, KemSuite


class EnclaveKeys:
    def __init__(self, kem: KemSuite = KemSuite.X25519) -> None:
        self.hpke = HpkeKeyPair.generate(kem)
        self._signing = Ed25519PrivateKey.generate()
        self.public = EnclavePublicKeys(
            kem=kem.value,
            hpke_public=self.hpke.public_bytes,
            signing_public=self._signing.public_key().public_bytes_raw(),
        )

    def sign(self, data: bytes) -> bytes:
        return self._signing.sign(data)
