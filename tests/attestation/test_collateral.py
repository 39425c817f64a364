"""The collateral store: persistence, expiry, fetching once (from local fake servers), bundles."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from omron_tee.attestation.collateral import bundle
from omron_tee.attestation.collateral.amd import AmdKdsClient
from omron_tee.attestation.collateral.intel import IntelCollateral, IntelPcsClient
from omron_tee.attestation.collateral.nvidia import NvidiaCollateralClient
from omron_tee.attestation.collateral.store import CollateralStore, valid_relpath
from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.attestation.testing import vectors
from omron_tee.attestation.testing.dcap import DcapTestPki, verifier_with_test_root
from omron_tee.attestation.testing.nvidia import NvidiaTestPki
from omron_tee.attestation.testing.servers import fake_server, pcs_route
from omron_tee.attestation.testing.snp import SnpTestPki
from omron_tee.attestation.verify.dcap import SgxVerifier
from omron_tee.errors import CollateralError

pytestmark = pytest.mark.vectors
NOW = 1_790_000_000.0

def test_intel_fetched_once_then_cached_and_persisted(tmp_path):
    pki = DcapTestPki("sgx", NOW)
    coll = pki.collateral()
    ev = Evidence(TeeType.SGX, pki.sgx_quote())
    with fake_server(pcs_route(coll)) as (url, log):
        store = CollateralStore(tmp_path, intel_client=IntelPcsClient(url))
        v = verifier_with_test_root(pki, store)
        v.verify(ev, now=NOW)
        assert len(log) == 4
        for _ in range(5):
            v.verify(ev, now=NOW)
        assert len(log) == 4  # no fetch per request
    assert (tmp_path / f"intel/{coll.key}.json").is_file()
    offline = CollateralStore(tmp_path)  # a restart, without network
    assert verifier_with_test_root(pki, offline).verify(ev, now=NOW).tcb_status == "ConfigurationAndSWHardeningNeeded"


def test_intel_refetch_on_expiry_is_rate_limited(tmp_path):
    pki = DcapTestPki("sgx", NOW)
    coll = pki.collateral(next_update=NOW + 3600)
    ev = Evidence(TeeType.SGX, pki.sgx_quote())
    with fake_server(pcs_route(coll)) as (url, log):
        store = CollateralStore(tmp_path, intel_client=IntelPcsClient(url), refetch_interval=300)
        v = verifier_with_test_root(pki, store)
        v.verify(ev, now=NOW)
        assert len(log) == 4
        later = NOW + 7200  # past nextUpdate: one refetch (still the same, expired, collateral)
        with pytest.raises(CollateralError) as e:
            v.verify(ev, now=later)
        assert e.value.reason == "collateral-expired"
        assert len(log) == 8
        with pytest.raises(CollateralError):
            v.verify(ev, now=later)
        assert len(log) == 8  # not again within refetch_interval


def test_intel_fetch_failure_is_a_collateral_error():
    pki = DcapTestPki("sgx", NOW)
    with fake_server(lambda p, q, b: (503, {}, b"")) as (url, log):
        store = CollateralStore(intel_client=IntelPcsClient(url))
        with pytest.raises(CollateralError) as e:
            verifier_with_test_root(pki, store).verify(Evidence(TeeType.SGX, pki.sgx_quote()), now=NOW)
    assert e.value.reason == "collateral-unavailable" and "503" in str(e.value)
    store = CollateralStore(intel_client=IntelPcsClient("http://127.0.0.1:9", timeout=2))
    with pytest.raises(CollateralError) as e:
        SgxVerifier(store).verify(vectors.sgx_evidence(), now=vectors.SGX_NOW)
    assert "cannot reach" in str(e.value)


def test_amd_kds_fetch_of_vcek_and_crl(tmp_path):
    pki = SnpTestPki(NOW)

    def route(path: str, query: dict, body: bytes):
        if path == f"/vcek/v1/Milan/{pki.chip_id.hex()}":
            assert query == {"blSPL": "2", "teeSPL": "0", "snpSPL": "5", "ucodeSPL": "68"}
            return 200, {}, pki.vcek.public_bytes(serialization.Encoding.DER)
        if path == "/vcek/v1/Milan/crl":
            return 200, {}, pki.crl().public_bytes(serialization.Encoding.DER)
        if path == "/vcek/v1/Milan/cert_chain":
            return 200, {}, pki.chain_pem()
        return 404, {}, b""

    with fake_server(route) as (url, log):
        store = CollateralStore(tmp_path, amd_client=AmdKdsClient(url))
        v = pki.verifier(store)
        ev = pki.evidence(version=3, certificates=b"")  # CPUID says Milan; no VCEK handed out
        claims = v.verify(ev, now=NOW)
        assert claims.details["crl_checked"] is True
        v.verify(ev, now=NOW)
        assert sorted(log) == sorted([f"/vcek/v1/Milan/{pki.chip_id.hex()}", "/vcek/v1/Milan/crl"])
    assert any(p.name.endswith(".der") for p in (tmp_path / "amd" / "vcek").iterdir())


def test_nvidia_ocsp_fetch():
    pki = NvidiaTestPki(NOW)
    by_serial = {c.serial_number: i for i, c in enumerate(pki.leaf_first)}

    def route(path: str, query: dict, body: bytes):
        req = ocsp.load_der_ocsp_request(body)
        return 200, {"Content-Type": "application/ocsp-response"}, pki.ocsp_der(by_serial[req.serial_number])

    with fake_server(route) as (url, log):
        store = CollateralStore(nvidia_client=NvidiaCollateralClient(ocsp_url=url + "/"))
        v = pki.verifier(store)
        assert v.verify(pki.evidence(), now=NOW).details["ocsp"] == "good"
        assert len(log) == 3
        v.verify(pki.evidence(), now=NOW)
        assert len(log) == 3


def test_bundle_round_trip_and_refusals(tmp_path):
    src = CollateralStore(tmp_path / "a")
    src.load_path(vectors.SGX_COLLATERAL, persist=True)
    src.load_path(vectors.SNP_DIR, persist=True)
    data = bundle.export(src, now=NOW)
    doc = json.loads(data)
    assert doc["format"] == bundle.FORMAT and len(doc["entries"]) == 3

    dst = CollateralStore(tmp_path / "b")
    report = dst.import_bundle(bundle.parse(data))
    assert len(report.imported) == 3 and not report.rejected
    again = CollateralStore(tmp_path / "b")
    assert SgxVerifier(again).verify(vectors.sgx_evidence(), now=vectors.SGX_NOW).tcb_status == "ConfigurationAndSWHardeningNeeded"

    evil = json.loads(data)
    evil["entries"][0]["path"] = "../../etc/passwd"
    rep = CollateralStore(tmp_path / "c").import_bundle(bundle.parse(json.dumps(evil).encode()))
    assert rep.rejected and not (tmp_path / "etc").exists()
    mislabelled = json.loads(data)
    intel = next(e for e in mislabelled["entries"] if e["path"].startswith("intel/"))
    intel["path"] = "intel/tdx-B0C06F000000-platform.json"
    rep = CollateralStore(tmp_path / "d").import_bundle(bundle.parse(json.dumps(mislabelled).encode()))
    # The content says which platform it is for; it is filed under its own key, not the bundle's label.
    assert rep.imported and all(not p.startswith("intel/tdx") for p in rep.imported)
    corrupt = json.loads(data)
    corrupt["entries"][0]["sha256"] = "00" * 32
    with pytest.raises(CollateralError):
        bundle.parse(json.dumps(corrupt).encode())
    with pytest.raises(CollateralError):
        bundle.parse(b"[1, 2]")


def test_bundle_keeps_newer_intel_collateral(tmp_path):
    pki = DcapTestPki("sgx", NOW)
    newer, older = pki.collateral(next_update=NOW + 60 * 86400), pki.collateral(next_update=NOW + 10 * 86400)
    store = CollateralStore(tmp_path)
    store.add_intel(newer)
    src = CollateralStore()
    src.add_intel(older, persist=False)
    rep = store.import_bundle(bundle.parse(bundle.export(src)))
    assert rep.skipped and not rep.imported
    assert CollateralStore(tmp_path).intel("sgx", older.fmspc, older.ca, now=NOW).expires_at == newer.expires_at


def test_store_layout_and_loose_files(tmp_path):
    assert valid_relpath("intel/sgx-00A067110000-processor.json")
    for bad in ("intel/../x.json", "/etc/passwd", "amd/vcek/zz.der", "nvidia/rim/a b.swidtag"):
        assert not valid_relpath(bad)
    store = CollateralStore()
    with pytest.raises(CollateralError) as e:
        store.add_loose(b"\x00\x01junk", name="junk.bin")
    assert e.value.reason == "collateral-unknown"
    # A directory with unrelated files loads the collateral and skips the rest.
    assert store.load_path(vectors.NVIDIA_DIR) == []
    with pytest.raises(CollateralError):
        IntelCollateral.from_json("{}")


def test_a_running_store_sees_collateral_imported_by_another_process(tmp_path, monkeypatch):
    running = CollateralStore(tmp_path)
    with pytest.raises(CollateralError):
        SgxVerifier(running).verify(vectors.sgx_evidence(), now=vectors.SGX_NOW)
    CollateralStore(tmp_path).load_path(vectors.SGX_COLLATERAL, persist=True)  # e.g. `omron-tee collateral import`
    monkeypatch.setattr(running, "_scanned_at", running._scanned_at - 61)  # a minute later
    assert SgxVerifier(running).verify(vectors.sgx_evidence(), now=vectors.SGX_NOW).tcb_status == "ConfigurationAndSWHardeningNeeded"


# --- fetching in the background (the validator's store) -------------------------------------------------------------


def _settled(store: CollateralStore, timeout: float = 10.0) -> None:
    import time

    end = time.monotonic() + timeout
    while store.pending() and time.monotonic() < end:
        time.sleep(0.01)
    assert store.pending() == 0


def test_a_background_store_never_waits_for_a_fetch(tmp_path):
    """A lookup that needs AMD KDS is answered collateral-pending at once, while KDS has not even answered; the
    fetched VCEK lands in the store and the next verification finds it."""
    import threading

    pki = SnpTestPki(NOW)
    release = threading.Event()

    def route(path: str, query: dict, body: bytes):
        release.wait(10)
        if path == f"/vcek/v1/Milan/{pki.chip_id.hex()}":
            return 200, {}, pki.vcek.public_bytes(serialization.Encoding.DER)
        if path == "/vcek/v1/Milan/crl":
            return 200, {}, pki.crl().public_bytes(serialization.Encoding.DER)
        return 404, {}, b""

    with fake_server(route) as (url, log):
        store = CollateralStore(tmp_path, amd_client=AmdKdsClient(url), background=True)
        v = pki.verifier(store)
        ev = pki.evidence(version=3, certificates=b"")
        with pytest.raises(CollateralError) as e:
            v.verify(ev, now=NOW)  # KDS is held: only an answer that did not wait for it can get here
        assert e.value.reason == "collateral-pending" and not release.is_set()
        release.set()
        _settled(store)
        with pytest.raises(CollateralError) as e:
            v.verify(ev, now=NOW)  # the VCEK is in; the CRL is fetched next, in the background too
        assert e.value.reason == "collateral-pending"
        _settled(store)
        assert v.verify(ev, now=NOW).details["crl_checked"] is True
    assert sorted(log) == sorted([f"/vcek/v1/Milan/{pki.chip_id.hex()}", "/vcek/v1/Milan/crl"])


class _HeldKds:
    """An AMD KDS client whose VCEK fetches wait until released, then find nothing."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.asked: list[bytes] = []

    def fetch_vcek(self, product, chip_id, tcb):
        self.asked.append(chip_id)
        self.release.wait(10)
        raise CollateralError("KDS has none (HTTP 404)", reason="collateral-not-found")


def test_evidence_naming_a_new_chip_each_time_cannot_queue_fetches_without_bound():
    from omron_tee.attestation.collateral.store import MAX_PENDING_FETCHES

    pki = SnpTestPki(NOW)
    kds = _HeldKds()
    store = CollateralStore(amd_client=kds, background=True)  # type: ignore[arg-type]
    v = pki.verifier(store)
    reasons = []
    for _ in range(MAX_PENDING_FETCHES + 8):
        with pytest.raises(CollateralError) as e:
            v.verify(pki.evidence(pki.report(chip_id=os.urandom(64), version=3), certificates=b""), now=NOW)
        reasons.append((e.value.reason, "waiting" in str(e.value)))
    assert {r for r, _ in reasons} == {"collateral-pending"}
    assert sum(full for _, full in reasons) == 8  # past the bound: refused without queueing
    assert store.pending() == MAX_PENDING_FETCHES and len(kds.asked) <= 1
    kds.release.set()
    _settled(store)
    assert len(kds.asked) == MAX_PENDING_FETCHES


def test_what_the_vendor_answered_is_named_and_not_asked_again_at_once():
    """KDS answers that it has no VCEK for the chip: collateral-not-found, inline and in the background, and within
    the refetch interval the same answer again (not "missing"), without asking KDS again."""
    pki = SnpTestPki(NOW)
    for background in (False, True):
        with fake_server(lambda p, q, b: (404, {}, b"")) as (url, log):
            store = CollateralStore(amd_client=AmdKdsClient(url), background=background)
            v = pki.verifier(store)
            ev = pki.evidence(version=3, certificates=b"")
            if background:
                with pytest.raises(CollateralError) as e:
                    v.verify(ev, now=NOW)
                assert e.value.reason == "collateral-pending"
                _settled(store)
            for _ in range(2):
                with pytest.raises(CollateralError) as e:
                    v.verify(ev, now=NOW)
                assert e.value.reason == "collateral-not-found"
            assert len(log) == 1


def test_attempts_for_chips_named_once_are_forgotten_once_their_interval_is_over(monkeypatch):
    """Each new chip a report names leaves a fetch attempt (and its failure) behind: the store forgets those whose
    refetch interval is over instead of growing by one entry per probe for as long as the validator runs."""
    from omron_tee.attestation.collateral import store as store_mod

    monkeypatch.setattr(store_mod, "MAX_TRACKED_ATTEMPTS", 50)
    pki = SnpTestPki(NOW)
    with fake_server(lambda p, q, b: (404, {}, b"")) as (url, _):
        store = CollateralStore(amd_client=AmdKdsClient(url), refetch_interval=0.001)
        v = pki.verifier(store)
        for _ in range(200):
            with pytest.raises(CollateralError):
                v.verify(pki.evidence(pki.report(chip_id=os.urandom(64), version=3), certificates=b""), now=NOW)
        assert len(store._attempts) <= 51 and len(store._failed) <= 51  # noqa: SLF001
