"""The enclave backend interface, one implementation per TEE platform."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from omron_tee.attestation.evidence import Evidence, TeeType


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run on this machine, and if not, why."""

    tee_type: TeeType
    usable: bool
    detail: str


class EnclaveBackend(abc.ABC):
    """Produces attestation evidence for the code running inside this TEE.

    Implementations must only be constructed inside the TEE they speak for:
    the keys of the trusted app live in this process's memory, and the
    evidence vouches for this process's measurement.
    """

    tee_type: TeeType

    @abc.abstractmethod
    def attest(self, report_data: bytes) -> Evidence:
        """Evidence whose report data is exactly ``report_data`` (64 bytes)."""

    @abc.abstractmethod
    def measurement(self) -> bytes | None:
        """The measurement a verifier will see, when the backend can know it (else None)."""

    def instrument(self, served: Any) -> Any:
        """The served model (``workloads.base.Served``) as this backend runs it: unchanged on every
        real TEE; a simulated enclave may wrap it in development faults (``enclave.dev_faults``)."""
        return served

    @classmethod
    @abc.abstractmethod
    def detect(cls) -> Availability:
        """Whether this platform's attestation interface is present here."""
