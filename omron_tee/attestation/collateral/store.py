"""The collateral store: every verifier's collateral, cached in memory and on disk.

A validator verifies offline after the first fetch: lookups are answered from
memory; a fetch happens only when an entry is missing or past its own expiry
(the earliest ``nextUpdate`` it carries), at most once per ``refetch_interval``
per entry, and only when a client for that vendor was configured. When a
refresh fails the expired entry is still returned, so that the verifier
reports *why* it refuses (e.g. "CRL expired") rather than "missing"; when a
fetch fails with nothing cached, lookups within ``refetch_interval`` raise that
failure again (``collateral-unavailable``, or ``collateral-not-found`` when the
vendor answered that it has none) rather than "missing".

Fetches run inline by default (a command-line verification waits for them).
With ``background=True`` (the validator's store: its event loop times every
probe, and Intel PCS or AMD KDS may take seconds) a lookup that needs a fetch
queues it for the store's one fetch thread and raises ``collateral-pending`` at
once; the fetched entry lands in memory and the next lookup finds it. At most
``MAX_PENDING_FETCHES`` keys wait at a time, so evidence naming a new chip for
every probe cannot make the validator fetch without bound.

Directory layout (``root``), one file per entry, written atomically::

    intel/{sgx|tdx}-{FMSPC}-{processor|platform}.json   dcap-qvl QuoteCollateralV3 JSON
    amd/{ask|asvk}-{product}.pem                         intermediate CA
    amd/vcek/{chip id hex}-{reported TCB hex}.der        VCEK of one chip at one TCB
    amd/vlek/{sha256 prefix}.der                         VLEK (installed by a cloud provider)
    amd/crl-{product}-{vcek|vlek}.der                    ARK-signed CRL
    nvidia/ocsp/{serial hex}-{sha256 prefix}.der         OCSP response
    nvidia/rim/{RIM id}.swidtag                          reference integrity manifest

``load_path`` also takes loose files (a collateral JSON, a directory of
certificates and CRLs as handed out by KDS) and sorts them by content.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from omron_tee.attestation.abi.snp import TcbVersion
from omron_tee.attestation.collateral import amd as amd_coll
from omron_tee.attestation.collateral.intel import IntelCollateral, IntelPcsClient
from omron_tee.attestation.collateral.nvidia import CachedOcsp, NvidiaCollateralClient, issuer_key_hash
from omron_tee.attestation.verify.certs import load_certificates, serial_number
from omron_tee.errors import CollateralError, ConfigError, VerificationError
from omron_tee.reasons import Reason

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_PENDING_FETCHES = 16
MAX_TRACKED_ATTEMPTS = 4096

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_LAYOUT = re.compile(
    r"^(intel/(sgx|tdx)-[0-9A-F]{12}-(processor|platform)\.json"
    r"|amd/(ask|asvk)-[A-Za-z]{1,16}\.pem"
    r"|amd/vcek/[0-9a-f]{16,128}-[0-9a-f]{16}\.der"
    r"|amd/vlek/[0-9a-f]{16}\.der"
    r"|amd/crl-[A-Za-z]{1,16}-(vcek|vlek)\.der"
    r"|nvidia/ocsp/[0-9a-f]{1,64}-[0-9a-f]{16}\.der"
    r"|nvidia/rim/[A-Za-z0-9._-]{1,128}\.swidtag)$"
)


def valid_relpath(rel: str) -> bool:
    """Whether ``rel`` is a path this store writes (bundles may contain nothing else)."""
    return bool(_LAYOUT.match(rel))


class CollateralStore:
    def __init__(
        self,
        root: str | Path | None = None,
        *,
        intel_client: IntelPcsClient | None = None,
        amd_client: amd_coll.AmdKdsClient | None = None,
        nvidia_client: NvidiaCollateralClient | None = None,
        refetch_interval: float = 300.0,
        background: bool = False,
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.intel_client = intel_client
        self.amd_client = amd_client
        self.nvidia_client = nvidia_client
        self.refetch_interval = refetch_interval
        self._lock = threading.RLock()
        self._files: dict[str, bytes] = {}  # relpath -> bytes, what export writes
        self._intel: dict[str, IntelCollateral] = {}
        self._amd_ca: dict[tuple[str, str], x509.Certificate] = {}  # (role, product)
        self._vcek: dict[tuple[bytes, int], x509.Certificate] = {}  # (hwid, tcb raw)
        self._vlek: list[x509.Certificate] = []
        self._amd_crl: dict[tuple[str, str], x509.CertificateRevocationList] = {}
        self._ocsp: dict[int, list[CachedOcsp]] = {}  # serial -> responses
        self._rims: dict[str, bytes] = {}
        self._attempts: dict[str, float] = {}
        self._failed: dict[str, CollateralError] = {}  # key -> its last fetch's failure (until one succeeds)
        self.background = background
        self._pending: set[str] = set()  # keys queued or being fetched in the background
        self._jobs: queue.SimpleQueue[tuple[str, Callable[[], object]]] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._scanned_at = time.monotonic()
        if self.root is not None and self.root.exists():
            self._load_root()

    def _rescan(self) -> None:
        """Re-read the directory (at most once a minute) when a lookup misses or finds expired collateral:
        another process (``omron-tee collateral import``, a second validator) may have added it."""
        if self.root is None or not self.root.exists():
            return
        t = time.monotonic()
        with self._lock:
            if t - self._scanned_at < 60.0:
                return
            self._scanned_at = t
        self._load_root()

    # --- loading ---------------------------------------------------------

    def _load_root(self) -> None:
        assert self.root is not None
        for path in sorted(self.root.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(self.root).as_posix()
            if not valid_relpath(rel):
                continue
            try:
                self._ingest(rel, path.read_bytes(), persist=False)
            except (CollateralError, VerificationError, OSError) as e:
                log.warning("collateral store: skipping %s: %s", rel, e)

    def _ingest(self, rel: str, data: bytes, *, persist: bool) -> str:
        """Parse one store file by its path and add it; returns its relpath."""
        top = rel.split("/", 2)
        if rel.startswith("intel/"):
            return self.add_intel(IntelCollateral.from_json(data), persist=persist)
        if rel.startswith("amd/crl-"):
            return self.add_amd_crl(_load_crl(data, rel), persist=persist)
        if rel.startswith("amd/"):
            return self.add_amd_certificate(load_certificates(data, rel)[0], persist=persist)
        if rel.startswith("nvidia/ocsp/"):
            return self.add_ocsp(CachedOcsp.from_der(data), persist=persist)
        if rel.startswith("nvidia/rim/"):
            return self.add_rim(Path(rel).stem, data, persist=persist)
        raise CollateralError(f"unknown collateral path {rel!r} ({top[0]})", reason=Reason.COLLATERAL_INVALID)

    def load_path(self, path: str | Path, *, persist: bool = False) -> list[str]:
        """Add collateral from a file or a directory (a store root or loose files)."""
        p = Path(path)
        if p.is_dir():
            loaded = []
            for f in sorted(p.rglob("*")):
                if f.is_file():
                    rel = f.relative_to(p).as_posix()
                    try:
                        if valid_relpath(rel):
                            loaded.append(self._ingest(rel, f.read_bytes(), persist=persist))
                        else:
                            loaded.extend(self.add_loose(f.read_bytes(), name=f.name, persist=persist))
                    except CollateralError as e:
                        if e.reason == Reason.COLLATERAL_UNKNOWN:
                            log.info("collateral: skipping %s (not collateral)", f)
                            continue
                        raise CollateralError(f"{f}: {e}", reason=e.reason) from None
                    except VerificationError as e:
                        raise CollateralError(f"{f}: {e}", reason=Reason.COLLATERAL_INVALID) from None
            return loaded
        try:
            data = p.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read collateral {p}: {e.strerror}") from None
        return self.add_loose(data, name=p.name, persist=persist)

    def add_loose(self, data: bytes, *, name: str = "collateral", persist: bool = False) -> list[str]:
        """Sort one file by content: Intel JSON, a bundle, certificates, a CRL, an OCSP response, a RIM."""
        from omron_tee.attestation.collateral import bundle  # local: bundle imports this module

        stripped = data.lstrip()
        if stripped.startswith(b"{"):
            if bundle.is_bundle(data):
                return self.import_bundle(bundle.parse(data), persist=persist).imported
            return [self.add_intel(IntelCollateral.from_json(data), persist=persist)]
        if stripped.startswith(b"<") or name.endswith((".swidtag", ".xml")):
            return [self.add_rim(Path(name).stem, data, persist=persist)]
        if b"-----BEGIN X509 CRL-----" in data:
            return [self.add_amd_crl(_load_crl(data, name), persist=persist)]
        if b"-----BEGIN CERTIFICATE-----" in data:
            return [self.add_amd_certificate(c, persist=persist) for c in load_certificates(data, name) if amd_coll.classify(c)]
        # DER: a certificate, a CRL or an OCSP response.
        try:
            cert = load_certificates(data, name)[0]
        except VerificationError:
            cert = None
        if cert is not None:
            return [self.add_amd_certificate(cert, persist=persist)] if amd_coll.classify(cert) else []
        try:
            return [self.add_amd_crl(x509.load_der_x509_crl(data), persist=persist)]
        except ValueError:
            pass
        try:
            return [self.add_ocsp(CachedOcsp.from_der(data), persist=persist)]
        except CollateralError:
            pass
        raise CollateralError(f"{name}: not collateral omron-tee knows (Intel JSON, bundle, certificate, CRL, OCSP response, RIM)", reason=Reason.COLLATERAL_UNKNOWN)

    # --- persistence -----------------------------------------------------

    def _put_file(self, rel: str, data: bytes, persist: bool) -> str:
        if not valid_relpath(rel):
            raise CollateralError(f"refusing to store collateral under {rel!r}", reason=Reason.COLLATERAL_INVALID)
        with self._lock:
            self._files[rel] = data
            if persist and self.root is not None:
                target = self.root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    os.replace(tmp, target)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
        return rel

    def files(self) -> Iterator[tuple[str, bytes]]:
        with self._lock:
            items = sorted(self._files.items())
        yield from items

    # --- Intel -----------------------------------------------------------

    def add_intel(self, coll: IntelCollateral, *, persist: bool = True) -> str:
        with self._lock:
            self._intel[coll.key] = coll
        return self._put_file(f"intel/{coll.key}.json", coll.json_text.encode(), persist)

    def intel_keys(self) -> list[str]:
        with self._lock:
            return sorted(self._intel)

    def intel(self, tee: str, fmspc: str, ca: str, *, now: float) -> IntelCollateral:
        key = f"{tee}-{fmspc.upper()}-{ca}"
        with self._lock:
            cached = self._intel.get(key)
        if cached is None or cached.expired(now):
            self._rescan()
            with self._lock:
                cached = self._intel.get(key)
        if cached is not None and not cached.expired(now):
            return cached
        client = self.intel_client
        if client is not None and self._may_fetch(f"intel/{key}"):
            try:
                fresh = self._vendor(f"intel/{key}", lambda: _kept(self.add_intel, client.fetch(tee, fmspc.upper(), ca)))
                if fresh.key == key:
                    if not fresh.expired(now):
                        self._fetched(f"intel/{key}")
                    return fresh
            except CollateralError as e:
                if e.reason == Reason.COLLATERAL_PENDING:
                    raise
                log.warning("Intel collateral refresh for %s failed: %s", key, e)
                if cached is None:
                    raise
        if cached is not None:
            return cached
        failed = self.failure(f"intel/{key}")
        if failed is not None:
            raise failed
        have = ", ".join(self.intel_keys()) or "none"
        raise CollateralError(
            f"no Intel collateral for {tee.upper()} FMSPC {fmspc.upper()} ({ca} CA) and no PCCS/PCS configured to fetch it "
            f"(collateral present: {have}); give --collateral FILE, DIR or URL, or import a bundle",
            reason=Reason.COLLATERAL_MISSING,
        )

    def _fetched(self, key: str) -> None:
        """A fetch brought fresh collateral: the next expiry may fetch again at once."""
        with self._lock:
            self._attempts.pop(key, None)

    def _may_fetch(self, key: str) -> bool:
        t = time.monotonic()
        with self._lock:
            last = self._attempts.get(key)
            if last is not None and t - last < self.refetch_interval:
                return False
            if len(self._attempts) >= MAX_TRACKED_ATTEMPTS:
                # Evidence naming a new chip each time adds a key each time: forget the attempts (and their failures)
                # whose interval is over, which would be fetched again anyway.
                self._attempts = {k: v for k, v in self._attempts.items() if t - v < self.refetch_interval}
                self._failed = {k: v for k, v in self._failed.items() if k in self._attempts}
            self._attempts[key] = t
        return True

    def _vendor(self, key: str, fetch: Callable[[], T]) -> T:
        """``fetch()`` (a vendor client's call that also adds what it got to the store) for the entry ``key``.
        Inline: now, its failure remembered for ``failure``. In the background: queued for the fetch thread, and
        ``collateral-pending`` raised at once."""
        if not self.background:
            try:
                out = fetch()
            except CollateralError as e:
                with self._lock:
                    self._failed[key] = e
                raise
            with self._lock:
                self._failed.pop(key, None)
            return out
        with self._lock:
            if key not in self._pending:
                if len(self._pending) >= MAX_PENDING_FETCHES:
                    self._attempts.pop(key, None)  # not attempted: the next lookup may queue it
                    raise CollateralError(f"collateral {key} is not fetched yet: {len(self._pending)} other fetches are waiting",
                                          reason=Reason.COLLATERAL_PENDING)
                self._pending.add(key)
                self._jobs.put((key, fetch))
                if self._worker is None or not self._worker.is_alive():
                    self._worker = threading.Thread(target=self._fetch_forever, name="collateral-fetch", daemon=True)
                    self._worker.start()
        raise CollateralError(f"collateral {key} is being fetched; a later attestation will find it", reason=Reason.COLLATERAL_PENDING)

    def _fetch_forever(self) -> None:
        """The background fetch thread: one fetch at a time, in the order asked."""
        while True:
            key, fetch = self._jobs.get()
            failure: CollateralError | None = None
            try:
                fetch()
            except CollateralError as e:
                failure = e
                log.warning("collateral fetch for %s failed: %s", key, e)
            except Exception as e:  # noqa: BLE001 - a vendor's bytes met a bug of ours: the entry stays missing
                failure = CollateralError(f"fetching {key} failed ({type(e).__name__})", reason=Reason.COLLATERAL_UNAVAILABLE)
                log.error("collateral fetch for %s failed: %s", key, type(e).__name__)
            with self._lock:
                if failure is None:
                    self._failed.pop(key, None)
                else:
                    self._failed[key] = failure
                self._pending.discard(key)

    def failure(self, key: str) -> CollateralError | None:
        """The last fetch of ``key`` failed with this, and none has succeeded since."""
        with self._lock:
            return self._failed.get(key)

    def pending(self) -> int:
        """How many fetches are queued or in flight (background mode)."""
        with self._lock:
            return len(self._pending)

    # --- AMD -------------------------------------------------------------

    def add_amd_certificate(self, cert: x509.Certificate, *, persist: bool = True) -> str:
        role = amd_coll.classify(cert)
        if role is None:
            raise CollateralError(f"'{cert.subject.rfc4514_string()}' is not an AMD SEV certificate", reason=Reason.COLLATERAL_INVALID)
        der = cert.public_bytes(Encoding.DER)
        if role.role in ("ask", "asvk", "ark"):
            if role.role == "ark":
                # Roots are pinned in the code (verify.roots), never taken from collateral.
                return f"amd/ark-{role.product} (ignored: roots are built in)"
            if not role.product or not role.product.isalpha():
                raise CollateralError(f"unknown AMD product in '{role.product}'", reason=Reason.COLLATERAL_INVALID)
            with self._lock:
                self._amd_ca[(role.role, role.product)] = cert
            return self._put_file(f"amd/{role.role}-{role.product}.pem", cert.public_bytes(Encoding.PEM), persist)
        if role.role == "vcek":
            hwid = amd_coll.leaf_hwid(cert)
            if hwid is None:
                raise CollateralError("VCEK has no hwID extension", reason=Reason.COLLATERAL_INVALID)
            tcb = amd_coll.leaf_tcb(cert, turin_layout=role.product == "Turin")
            with self._lock:
                self._vcek[(hwid, tcb.raw)] = cert
            return self._put_file(f"amd/vcek/{hwid.hex()}-{tcb.raw:016x}.der", der, persist)
        with self._lock:
            if all(c.public_bytes(Encoding.DER) != der for c in self._vlek):
                self._vlek.append(cert)
        return self._put_file(f"amd/vlek/{hashlib.sha256(der).hexdigest()[:16]}.der", der, persist)

    def amd_intermediate(self, role: str, product: str) -> x509.Certificate | None:
        with self._lock:
            cert = self._amd_ca.get((role, product))
        client = self.amd_client
        if cert is None and client is not None and self._may_fetch(f"amd/{role}-{product}"):

            def fetch() -> x509.Certificate | None:
                got = None
                for c in client.fetch_cert_chain(product, "vlek" if role == "asvk" else "vcek"):
                    if amd_coll.classify(c) and amd_coll.classify(c).role == role:  # type: ignore[union-attr]
                        self.add_amd_certificate(c)
                        got = c
                return got

            try:
                cert = self._vendor(f"amd/{role}-{product}", fetch)
            except CollateralError as e:
                if e.reason == Reason.COLLATERAL_PENDING:
                    raise
                log.warning("AMD cert chain fetch for %s failed: %s", product, e)
        return cert

    def amd_vcek(self, chip_id: bytes, tcb: TcbVersion, product: str | None) -> x509.Certificate | None:
        keys = [(chip_id, tcb.raw), (chip_id[:8], tcb.raw)]
        for attempt in range(2):
            with self._lock:
                for k in keys:
                    if k in self._vcek:
                        return self._vcek[k]
            if attempt == 0:
                self._rescan()
        if self.amd_client is None or product is None or not any(chip_id):
            return None
        key = f"amd/vcek/{chip_id.hex()}-{tcb.raw:016x}"
        if not self._may_fetch(key):
            failed = self.failure(key)
            if failed is not None:
                raise failed  # the vendor's answer (none for that chip, or unreachable), not "missing"
            return None
        client = self.amd_client
        try:
            return self._vendor(key, lambda: _kept(self.add_amd_certificate, client.fetch_vcek(product, chip_id, tcb)))
        except CollateralError as e:
            if e.reason != Reason.COLLATERAL_PENDING:
                log.warning("VCEK fetch failed: %s", e)
            raise

    def amd_vleks(self) -> list[x509.Certificate]:
        with self._lock:
            return list(self._vlek)

    def add_amd_crl(self, crl: x509.CertificateRevocationList, *, persist: bool = True) -> str:
        cns = crl.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        issuer = str(cns[0].value) if cns else ""
        if not issuer.startswith("ARK-") or not issuer[4:].isalpha():
            raise CollateralError(f"CRL issued by '{issuer}' is not an AMD ARK CRL", reason=Reason.COLLATERAL_INVALID)
        product = issuer[4:]
        # KDS serves one CRL per product for VCEKs and one for VLEKs; both are ARK-signed.
        signer = "vlek" if _crl_mentions_vlek(crl) else "vcek"
        with self._lock:
            self._amd_crl[(product, signer)] = crl
        return self._put_file(f"amd/crl-{product}-{signer}.der", crl.public_bytes(Encoding.DER), persist)

    def amd_crl(self, product: str, signer: str, *, now: float) -> x509.CertificateRevocationList | None:
        with self._lock:
            crl = self._amd_crl.get((product, signer)) or self._amd_crl.get((product, "vcek"))
        fresh = crl is not None and (crl.next_update_utc is None or crl.next_update_utc.timestamp() >= now)
        if not fresh:
            self._rescan()
            with self._lock:
                crl = self._amd_crl.get((product, signer)) or self._amd_crl.get((product, "vcek"))
            fresh = crl is not None and (crl.next_update_utc is None or crl.next_update_utc.timestamp() >= now)
        client = self.amd_client
        if not fresh and client is not None and self._may_fetch(f"amd/crl-{product}-{signer}"):
            try:
                new = self._vendor(f"amd/crl-{product}-{signer}", lambda: _kept(self.add_amd_crl, client.fetch_crl(product, signer)))
                crl = new
                if new.next_update_utc is None or new.next_update_utc.timestamp() >= now:
                    self._fetched(f"amd/crl-{product}-{signer}")
            except CollateralError as e:
                if e.reason == Reason.COLLATERAL_PENDING:
                    raise
                log.warning("AMD CRL fetch for %s failed: %s", product, e)
        return crl

    # --- NVIDIA ----------------------------------------------------------

    def add_ocsp(self, entry: CachedOcsp, *, persist: bool = True) -> str:
        serial = entry.response.serial_number
        with self._lock:
            lst = [e for e in self._ocsp.get(serial, []) if e.response.issuer_key_hash != entry.response.issuer_key_hash]
            lst.append(entry)
            self._ocsp[serial] = lst
        tag = hashlib.sha256(entry.response.issuer_key_hash).hexdigest()[:16]
        return self._put_file(f"nvidia/ocsp/{serial:x}-{tag}.der", entry.der, persist)

    def ocsp(self, cert: x509.Certificate, issuer: x509.Certificate, *, now: float) -> CachedOcsp | None:
        serial = serial_number(cert)
        with self._lock:
            candidates = list(self._ocsp.get(serial, []))
        found = None
        for e in candidates:
            if e.response.issuer_key_hash == issuer_key_hash(cert, issuer, e.response.hash_algorithm):
                found = e
        client = self.nvidia_client
        if (found is None or found.expires_at < now) and client is not None:
            if self._may_fetch(f"nvidia/ocsp/{serial:x}"):
                try:
                    new = self._vendor(f"nvidia/ocsp/{serial:x}", lambda: _kept(self.add_ocsp, client.fetch_ocsp(cert, issuer)))
                    found = new
                    if new.expires_at >= now:
                        self._fetched(f"nvidia/ocsp/{serial:x}")
                except CollateralError as e:
                    if e.reason == Reason.COLLATERAL_PENDING:
                        raise
                    log.warning("OCSP fetch failed: %s", e)
        return found

    def add_rim(self, rim_id: str, xml: bytes, *, persist: bool = True) -> str:
        if not _SAFE_NAME.match(rim_id):
            raise CollateralError(f"bad RIM id {rim_id!r}", reason=Reason.COLLATERAL_INVALID)
        if not xml.lstrip().startswith(b"<"):
            raise CollateralError(f"RIM {rim_id} is not XML", reason=Reason.COLLATERAL_INVALID)
        with self._lock:
            self._rims[rim_id] = xml
        return self._put_file(f"nvidia/rim/{rim_id}.swidtag", xml, persist)

    def rim(self, rim_id: str) -> bytes | None:
        with self._lock:
            xml = self._rims.get(rim_id)
        client = self.nvidia_client
        if xml is None and client is not None and self._may_fetch(f"nvidia/rim/{rim_id}"):
            try:
                xml = self._vendor(f"nvidia/rim/{rim_id}", lambda: _kept(lambda x: self.add_rim(rim_id, x), client.fetch_rim(rim_id)))
            except CollateralError as e:
                if e.reason == Reason.COLLATERAL_PENDING:
                    raise
                log.warning("RIM fetch failed: %s", e)
                xml = None
        return xml

    # --- bundles ---------------------------------------------------------

    def import_bundle(self, entries: list[tuple[str, bytes]], *, persist: bool = True):
        from omron_tee.attestation.collateral.bundle import ImportReport

        report = ImportReport()
        for rel, data in entries:
            if not valid_relpath(rel):
                report.rejected.append(f"{rel}: not a collateral path")
                continue
            with self._lock:
                current = self._files.get(rel)
            if current is not None and rel.startswith("intel/"):
                old, new = IntelCollateral.from_json(current), IntelCollateral.from_json(data)
                if old.expires_at > new.expires_at:
                    report.skipped.append(f"{rel}: the store's copy is newer")
                    continue
            try:
                report.imported.append(self._ingest(rel, data, persist=persist))
            except (CollateralError, VerificationError) as e:
                report.rejected.append(f"{rel}: {e}")
        return report


def _kept(add: Callable[[T], object], value: T) -> T:
    """``value``, once ``add`` has put it in the store (what a fetch does with what it got)."""
    add(value)
    return value


def _load_crl(data: bytes, what: str) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise CollateralError(f"{what}: not a CRL", reason=Reason.COLLATERAL_INVALID) from None


def _crl_mentions_vlek(crl: x509.CertificateRevocationList) -> bool:
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return False
    names = idp.full_name or []
    return any("/vlek/" in str(getattr(n, "value", "")) for n in names)


__all__ = ["CollateralStore", "valid_relpath"]
