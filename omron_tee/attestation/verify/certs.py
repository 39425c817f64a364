"""X.509 helpers shared by the AMD and NVIDIA verifiers (all checks by ``cryptography``).

- ``load_certificates``: PEM (one or many) or DER bytes to certificates. AMD's
  VCEKs carry a serial number of zero, which RFC 5280 forbids; ``cryptography``
  still parses them but warns on access (and says a future release will
  refuse them). We silence exactly that warning while loading and reading the
  serial, and record it, rather than let it reach a validator's logs per
  request; if a future release refuses the certificate, the error names it.
- ``verify_issued_by``: ``Certificate.verify_directly_issued_by`` (issuer name
  and signature, RSA PKCS#1 v1.5, RSA-PSS and ECDSA), mapped to our errors.
- ``check_validity``: the validity window at the verification time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import warnings
from collections.abc import Iterable, Iterator

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning

from omron_tee.errors import VerificationError
from omron_tee.reasons import Reason

_SERIAL_WARNING = r".*serial number which wasn't positive.*"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SERIAL_WARNING, category=CryptographyDeprecationWarning)
        yield


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """Certificates from PEM (any number, in order) or a single DER certificate."""
    try:
        with _quiet():
            if b"-----BEGIN CERTIFICATE-----" in data:
                return x509.load_pem_x509_certificates(data)
            return [x509.load_der_x509_certificate(data)]
    except ValueError as e:
        raise VerificationError(f"{what}: not a valid X.509 certificate ({e})", reason=Reason.BAD_CERTIFICATE) from None


def serial_number(cert: x509.Certificate) -> int:
    """The serial, without the non-positive-serial deprecation warning."""
    with _quiet():
        return cert.serial_number


def name_of(cert: x509.Certificate) -> str:
    try:
        cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        if cns:
            return str(cns[0].value)
        return cert.subject.rfc4514_string()
    except ValueError:
        return "<unnamed certificate>"


def verify_issued_by(child: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    try:
        child.verify_directly_issued_by(issuer)
    except InvalidSignature:
        raise VerificationError(
            f"{what}: the signature of '{name_of(child)}' does not verify with the key of '{name_of(issuer)}'",
            reason=Reason.BAD_CERTIFICATE_CHAIN,
        ) from None
    except ValueError as e:
        raise VerificationError(
            f"{what}: '{name_of(child)}' is not issued by '{name_of(issuer)}' ({e})", reason=Reason.BAD_CERTIFICATE_CHAIN
        ) from None
    except (TypeError, UnsupportedAlgorithm) as e:
        raise VerificationError(f"{what}: unsupported signature on '{name_of(child)}' ({e})", reason=Reason.BAD_CERTIFICATE_CHAIN) from None


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)


def check_validity(cert: x509.Certificate, now: float, what: str) -> None:
    t = _utc(now)
    if t < cert.not_valid_before_utc:
        raise VerificationError(
            f"{what}: '{name_of(cert)}' is not valid before {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}",
            reason=Reason.CERTIFICATE_NOT_YET_VALID,
        )
    if t > cert.not_valid_after_utc:
        raise VerificationError(
            f"{what}: '{name_of(cert)}' expired at {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}", reason=Reason.CERTIFICATE_EXPIRED
        )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def same_key(a: x509.Certificate, b: x509.Certificate) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return a.public_key().public_bytes(*fmt) == b.public_key().public_bytes(*fmt)


def verify_chain(chain: Iterable[x509.Certificate], now: float, what: str) -> None:
    """Each certificate issued by the next, all valid at ``now``; the last must be self-signed."""
    certs = list(chain)
    for child, parent in zip(certs, certs[1:]):
        verify_issued_by(child, parent, what)
    verify_issued_by(certs[-1], certs[-1], what)
    for c in certs:
        check_validity(c, now, what)


def der_uint(value: bytes, what: str) -> int:
    """A DER INTEGER's value (AMD encodes each VCEK TCB field so).

    ``cryptography`` exposes unknown extensions only as raw DER and has no
    public decoder for a bare INTEGER, so we read the tag-length-value here:
    short-form length only, which is all these one-to-two-byte values use.
    """
    if len(value) < 3 or value[0] != 0x02 or value[1] != len(value) - 2 or value[1] > 8:
        raise VerificationError(f"{what}: not a small DER INTEGER", reason=Reason.BAD_CERTIFICATE)
    return int.from_bytes(value[2:], "big", signed=True)


def der_octets(value: bytes, what: str) -> bytes:
    """A DER OCTET STRING's content, or the raw value when it is not wrapped (AMD's hwID is raw)."""
    if len(value) >= 2 and value[0] == 0x04:
        n = value[1]
        if n < 0x80 and n == len(value) - 2:
            return value[2:]
        if n == 0x81 and len(value) >= 3 and value[2] == len(value) - 3:
            return value[3:]
    return value
