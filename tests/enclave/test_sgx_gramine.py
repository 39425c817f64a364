"""SGX through Gramine's /dev/attestation, against a fake Gramine returning the real SGX quote."""

from __future__ import annotations

import errno
import hashlib
import threading
import time
from pathlib import Path

import pytest
from enclave_fakes import FakeGramine

from omron_tee.attestation.evidence import TeeType
from omron_tee.enclave.host import HostPaths
from omron_tee.enclave.sgx_gramine import GramineSgxBackend, summarize_sgx_quote
from omron_tee.errors import EnclaveError

RD = hashlib.sha512(b"report data of one exchange").digest()


def backend(g: FakeGramine) -> GramineSgxBackend:
    return GramineSgxBackend(paths=g.paths, files=g)


def test_quote_flow(gramine, vectors):
    ev = backend(gramine).attest(RD)
    assert ev.tee_type is TeeType.SGX and ev.quote == vectors.sgx_quote and ev.certificates == b""
    assert gramine.user_report_data == RD
    assert gramine.log == ["read attestation_type", "write user_report_data", "read quote"]


def test_measurement_is_mrenclave_from_target_info_without_a_quote(gramine, vectors):
    b = backend(gramine)
    assert b.measurement() == vectors.sgx_mrenclave
    assert "read quote" not in gramine.log


def test_summary_of_the_real_sgx_quote(vectors):
    s = summarize_sgx_quote(vectors.sgx_quote)
    assert (s.mrenclave, s.mrsigner, s.report_data, s.debug) == (vectors.sgx_mrenclave, vectors.sgx_mrsigner, vectors.sgx_report_data, False)
    assert s.attributes.hex() == "0500000000000000e700000000000000"


@pytest.mark.parametrize("kind,advice", [("epid", "EPID"), ("none", "without remote attestation")])
def test_only_dcap_is_accepted(tmp_path, vectors, kind, advice):
    g = FakeGramine(tmp_path, quote=vectors.sgx_quote, attestation_type=kind)
    with pytest.raises(EnclaveError, match=advice) as e:
        backend(g)
    assert 'sgx.remote_attestation = "dcap"' in str(e.value) and e.value.reason == "enclave-unavailable"


def test_outside_gramine_says_so(tmp_path):
    with pytest.raises(EnclaveError, match="not running inside Gramine"):
        GramineSgxBackend(paths=HostPaths.under(tmp_path))


def test_empty_quote_points_at_the_hosts_quoting_service(gramine):
    gramine.short_quote = 0
    with pytest.raises(EnclaveError, match="AESM"):
        backend(gramine).attest(RD)


def test_short_quote_is_refused(gramine):
    gramine.short_quote = 100
    with pytest.raises(EnclaveError, match="shorter than the minimum") as e:
        backend(gramine).attest(RD)
    assert e.value.reason == "enclave-bad-output"


def test_permission_error(gramine):
    gramine.fail["write:user_report_data"] = PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(EnclaveError, match="permission denied writing") as e:
        backend(gramine).attest(RD)
    assert e.value.reason == "enclave-permission"


def test_quote_failure_names_the_host_services(gramine):
    gramine.fail["read:quote"] = OSError(errno.EIO, "Input/output error")
    with pytest.raises(EnclaveError, match="aesmd") as e:
        backend(gramine).attest(RD)
    assert e.value.reason == "enclave-io"


def test_wrong_size_report_data_never_reaches_gramine(gramine):
    with pytest.raises(EnclaveError, match="64 bytes"):
        backend(gramine).attest(RD[:32])
    assert "write user_report_data" not in gramine.log


class SlowGramine(FakeGramine):
    """Quotes take a while, and report the user_report_data they were made over."""

    def read(self, path: Path) -> bytes:
        if path.name == "quote":
            before = self.user_report_data
            time.sleep(0.01)
            self.quotes_over.append((before, self.user_report_data))
        return super().read(path)


def test_concurrent_attestations_do_not_interleave(tmp_path, vectors):
    g = SlowGramine(tmp_path, quote=vectors.sgx_quote)
    g.quotes_over = []  # type: ignore[attr-defined]
    b = backend(g)
    datas = [hashlib.sha512(bytes([i])).digest() for i in range(8)]
    threads = [threading.Thread(target=b.attest, args=(d,)) for d in datas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Every quote was produced over one value that nobody changed meanwhile, and every request got its own.
    assert len(g.quotes_over) == 8
    assert all(before == after for before, after in g.quotes_over)
    assert sorted(b for b, _ in g.quotes_over) == sorted(datas)
    writes = [i for i, e in enumerate(g.log) if e == "write user_report_data"]
    assert all(g.log[i + 1] == "read quote" for i in writes)


# --- detection -------------------------------------------------------------------------


def test_detect_inside_gramine(gramine):
    a = GramineSgxBackend.detect(paths=gramine.paths)
    assert a.usable and "Gramine" in a.detail


def test_detect_inside_gramine_with_epid(tmp_path, vectors):
    g = FakeGramine(tmp_path, quote=vectors.sgx_quote, attestation_type="epid")
    a = GramineSgxBackend.detect(paths=g.paths)
    assert not a.usable and "EPID" in a.detail


def test_detect_sgx_machine_outside_gramine(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/sgx_enclave").write_bytes(b"")
    a = GramineSgxBackend.detect(paths=HostPaths.under(tmp_path))
    assert not a.usable and "not inside Gramine" in a.detail and "gramine-sgx" in a.detail


def test_detect_out_of_tree_driver(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/isgx").write_bytes(b"")
    assert "in-kernel driver" in GramineSgxBackend.detect(paths=HostPaths.under(tmp_path)).detail


def test_detect_sgx_cpu_without_device(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("flags\t: fpu sgx sgx_lc\n")
    assert "BIOS" in GramineSgxBackend.detect(paths=HostPaths.under(tmp_path)).detail


def test_detect_nothing(tmp_path):
    a = GramineSgxBackend.detect(paths=HostPaths.under(tmp_path))
    assert not a.usable and "not inside Gramine" in a.detail


def test_missing_quote_file_says_the_manifest_lacks_dcap(gramine):
    (gramine.dir / "quote").unlink()
    with pytest.raises(EnclaveError, match='sgx.remote_attestation = "dcap"') as e:
        backend(gramine).attest(RD)
    assert e.value.reason == "enclave-unavailable"
