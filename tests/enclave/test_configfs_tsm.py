"""TDX and SEV-SNP through configfs-tsm, against a fake kernel returning real evidence."""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import uuid
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from enclave_fakes import FakeTsmKernel

from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.enclave.configfs_tsm import ConfigfsTsm
from omron_tee.enclave.host import HostPaths
from omron_tee.enclave.sev_snp import CERT_GUIDS, SevSnpBackend, build_cert_table, parse_cert_table, summarize_snp_report
from omron_tee.enclave.tdx import MEASUREMENT_PROBE, TdxBackend, summarize_td_quote
from omron_tee.errors import EnclaveError

RD = hashlib.sha512(b"report data of one exchange").digest()


def oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def tdx(kernel: FakeTsmKernel, **kw) -> TdxBackend:
    return TdxBackend(paths=kernel.paths, files=kernel, backoff_s=0, **kw)


def snp(kernel: FakeTsmKernel, **kw) -> SevSnpBackend:
    return SevSnpBackend(paths=kernel.paths, files=kernel, backoff_s=0, **kw)


# --- the correct flow -----------------------------------------------------------


def test_tdx_quote_is_the_platforms_bytes_and_the_kernel_got_our_report_data(tdx_kernel, vectors):
    ev = tdx(tdx_kernel).attest(RD)
    assert ev == Evidence(tee_type=TeeType.TDX, quote=vectors.tdx_quote)
    assert tdx_kernel.inblobs == [RD]
    # The ABI's order: create, check provider, generation before, write, read, generation after, remove.
    name = tdx_kernel.created[0]
    assert tdx_kernel.log == [f"mkdir {name}", "read provider", "read generation", "write inblob", "read outblob", "read generation", f"rmdir {name}"]
    assert tdx_kernel.entries == {} and list(tdx_kernel.report_dir.iterdir()) == []


def test_each_report_uses_a_fresh_uniquely_named_entry(tdx_kernel):
    backend = tdx(tdx_kernel)
    for _ in range(3):
        backend.attest(RD)
    assert len(set(tdx_kernel.created)) == 3
    assert all(n.startswith(f"omron-tee-{os.getpid()}-") for n in tdx_kernel.created)


def test_tdx_measurement_is_mrtd_from_one_probe_quote(tdx_kernel, vectors):
    backend = tdx(tdx_kernel)
    assert backend.measurement() == vectors.tdx_mrtd
    assert backend.measurement() == vectors.tdx_mrtd
    assert tdx_kernel.inblobs == [MEASUREMENT_PROBE]


def test_summary_of_the_real_tdx_quote(vectors):
    s = summarize_td_quote(vectors.tdx_quote)
    assert (s.version, s.mrtd, s.report_data, s.debug) == (4, vectors.tdx_mrtd, vectors.tdx_report_data, False)


def test_snp_report_and_host_certificates_as_a_pem_chain(snp_kernel, vectors):
    ev = snp(snp_kernel).attest(RD)
    assert ev.tee_type is TeeType.SEV_SNP and ev.quote == vectors.snp_report
    # The host's table, re-armoured as PEM leaf first: the same DER bytes, byte for byte.
    pems = [p for p in ev.certificates.split(b"-----END CERTIFICATE-----\n") if p]
    ders = [base64.b64decode(p.split(b"-----BEGIN CERTIFICATE-----\n")[1]) for p in pems]
    assert ders == [vectors.vcek_der, vectors.ask_der, vectors.ark_der]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AMD's VCEK has serial 0, which cryptography warns about
        assert [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(ev.certificates)] == ders
    # Floor 0: no privlevel write, the kernel's default VMPL 0 applies.
    assert snp_kernel.requests == [(RD, 0)]
    assert "write privlevel" not in snp_kernel.log and snp_kernel.entries == {}


def test_snp_guest_above_vmpl0_requests_its_floor(tmp_path, vectors):
    seen = []
    kernel = FakeTsmKernel(tmp_path, "sev_guest", lambda i, p: (seen.append(p), (vectors.snp_report, b""))[1], privlevel_floor=2)
    ev = snp(kernel).attest(RD)
    assert seen == [2] and ev.certificates == b""
    assert kernel.log.index("write privlevel") < kernel.log.index("write inblob")


def test_snp_privlevel_below_the_floor_is_refused_with_the_rule(tmp_path, vectors):
    kernel = FakeTsmKernel(tmp_path, "sev_guest", lambda i, p: (vectors.snp_report, b""), privlevel_floor=2)
    with pytest.raises(EnclaveError, match="privlevel_floor") as e:
        snp(kernel, privlevel=1).attest(RD)
    assert e.value.reason == "config" and kernel.entries == {}


def test_snp_measurement_and_debug_bit_of_the_real_report(snp_kernel, vectors):
    assert snp(snp_kernel).measurement() == vectors.snp_measurement
    s = summarize_snp_report(vectors.snp_report)
    assert s.debug and s.report_data == vectors.snp_report_data and s.vmpl == 0


def test_snp_kernel_without_auxblob_gives_no_certificates(tmp_path, vectors):
    kernel = FakeTsmKernel(tmp_path, "sev_guest", lambda i, p: (vectors.snp_report, b""), hide=frozenset({"auxblob"}))
    assert snp(kernel).attest(RD).certificates == b""


def test_a_malformed_host_certificate_table_is_dropped_not_sent(tmp_path, vectors, caplog):
    kernel = FakeTsmKernel(tmp_path, "sev_guest", lambda i, p: (vectors.snp_report, b"\x01" * 40))
    with caplog.at_level(logging.WARNING, logger="omron_tee.enclave"):
        ev = snp(kernel).attest(RD)
    assert ev.certificates == b"" and "certificate table" in caplog.text


# --- another writer, dropped writes, transient errors ---------------------------------


def test_generation_moving_under_us_is_retried_on_a_fresh_entry(tdx_kernel, vectors, caplog):
    tdx_kernel.concurrent_writes = 1
    with caplog.at_level(logging.WARNING, logger="omron_tee.enclave"):
        ev = tdx(tdx_kernel).attest(RD)
    assert ev.quote == vectors.tdx_quote
    assert len(tdx_kernel.created) == 2 and tdx_kernel.entries == {}
    assert "generation went 0 -> 2 across our 1 write(s)" in caplog.text
    # The first attempt's report was generated for the foreign inblob; only the retry's is ours.
    assert tdx_kernel.inblobs == [b"\xee" * 64, RD]


def test_a_writer_that_never_stops_fails_clearly(tdx_kernel):
    tdx_kernel.concurrent_writes = 10
    with pytest.raises(EnclaveError, match="no consistent report after 3 attempts") as e:
        tdx(tdx_kernel).attest(RD)
    assert e.value.reason == "enclave-busy"
    assert len(tdx_kernel.created) == 3 and tdx_kernel.entries == {}


def test_an_inblob_write_dropped_at_close_is_caught_by_the_generation(tdx_kernel, vectors):
    # configfs ignores a binary attribute's error at close (EBUSY): the write silently did not happen.
    # Reading outblob then fails with the kernel's EINVAL (no inblob); the generation shows why.
    tdx_kernel.drop_inblob_writes = 1
    ev = tdx(tdx_kernel).attest(RD)
    assert ev.quote == vectors.tdx_quote and len(tdx_kernel.created) == 2
    assert tdx_kernel.inblobs == [RD]


def test_a_driver_refusal_with_a_consistent_generation_is_an_error_not_a_retry(tdx_kernel):
    tdx_kernel.fail["read:outblob"] = oserror(errno.EINVAL)
    with pytest.raises(EnclaveError, match="refused the report request") as e:
        tdx(tdx_kernel).attest(RD)
    assert e.value.reason == "enclave-refused" and len(tdx_kernel.created) == 1


def test_busy_quote_service_is_retried(tdx_kernel, vectors):
    tdx_kernel.fail["read:outblob"] = oserror(errno.EBUSY)
    tdx_kernel.fail_times["read:outblob"] = 1
    assert tdx(tdx_kernel).attest(RD).quote == vectors.tdx_quote
    assert len(tdx_kernel.created) == 2 and tdx_kernel.entries == {}


def test_name_collision_is_retried(tdx_kernel, vectors):
    tdx_kernel.fail["mkdir"] = FileExistsError(errno.EEXIST, "File exists")
    tdx_kernel.fail_times["mkdir"] = 1
    assert tdx(tdx_kernel).attest(RD).quote == vectors.tdx_quote


# --- missing interface, permissions, short reads, wrong platform ---------------------------


def test_missing_configfs_tsm_on_an_old_kernel_says_upgrade(tmp_path):
    paths = HostPaths.under(tmp_path)
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.5.0-1015-azure\n")
    (tmp_path / "proc/mounts").write_text("configfs /sys/kernel/config configfs rw 0 0\n")
    with pytest.raises(EnclaveError, match="older than 6.7") as e:
        TdxBackend(paths=paths, backoff_s=0).attest(RD)
    assert e.value.reason == "enclave-unavailable"


def test_missing_configfs_mount_says_mount_it(tmp_path):
    paths = HostPaths.under(tmp_path)
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.8.0\n")
    (tmp_path / "proc/mounts").write_text("proc /proc proc rw 0 0\n")
    with pytest.raises(EnclaveError, match="mount -t configfs none /sys/kernel/config"):
        SevSnpBackend(paths=paths, backoff_s=0).attest(RD)


def test_no_provider_registered_says_load_the_driver(tmp_path, vectors):
    kernel = FakeTsmKernel(tmp_path, None, lambda i, p: (vectors.tdx_quote, b""))
    with pytest.raises(EnclaveError, match="modprobe tdx_guest") as e:
        tdx(kernel).attest(RD)
    assert e.value.reason == "enclave-unavailable"


def test_permission_denied_says_run_as_root(tdx_kernel):
    tdx_kernel.fail["mkdir"] = PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(EnclaveError, match="root") as e:
        tdx(tdx_kernel).attest(RD)
    assert e.value.reason == "enclave-permission"


def test_permission_denied_mid_report_still_removes_the_entry(tdx_kernel):
    tdx_kernel.fail["write:inblob"] = PermissionError(errno.EPERM, "Operation not permitted")
    with pytest.raises(EnclaveError, match="permission denied writing"):
        tdx(tdx_kernel).attest(RD)
    assert tdx_kernel.entries == {} and tdx_kernel.log[-1].startswith("rmdir")


def test_short_outblob_is_refused(tdx_kernel):
    tdx_kernel.short_outblob = 600
    with pytest.raises(EnclaveError, match="outblob is 600 bytes, but a tdx_guest report is at least 636") as e:
        tdx(tdx_kernel).attest(RD)
    assert e.value.reason == "enclave-bad-output" and tdx_kernel.entries == {}


def test_empty_outblob_is_refused(snp_kernel):
    snp_kernel.short_outblob = 0
    with pytest.raises(EnclaveError, match="empty outblob"):
        snp(snp_kernel).attest(RD)


def test_missing_generation_attribute_names_it(tmp_path, vectors):
    kernel = FakeTsmKernel(tmp_path, "tdx_guest", lambda i, p: (vectors.tdx_quote, b""), hide=frozenset({"generation"}))
    with pytest.raises(EnclaveError, match="lacks the 'generation' attribute"):
        tdx(kernel).attest(RD)
    assert kernel.entries == {}


def test_wrong_provider_is_refused_before_writing(snp_kernel):
    with pytest.raises(EnclaveError, match="provider is 'sev_guest', expected 'tdx_guest'") as e:
        tdx(snp_kernel).attest(RD)
    assert e.value.reason == "enclave-wrong-platform"
    assert "write inblob" not in snp_kernel.log and snp_kernel.entries == {}


def test_tdx_io_error_points_at_the_hosts_quote_service(tdx_kernel):
    tdx_kernel.fail["read:outblob"] = oserror(errno.EIO)
    with pytest.raises(EnclaveError, match="Quote Generation Service"):
        tdx(tdx_kernel).attest(RD)


def test_timeout_says_so(tdx_kernel):
    tdx_kernel.fail["read:outblob"] = oserror(errno.ETIMEDOUT)
    with pytest.raises(EnclaveError, match="timed out"):
        tdx(tdx_kernel).attest(RD)


def test_failing_rmdir_does_not_lose_the_report(tdx_kernel, vectors, caplog):
    tdx_kernel.fail["rmdir"] = oserror(errno.EBUSY)
    with caplog.at_level(logging.WARNING, logger="omron_tee.enclave"):
        assert tdx(tdx_kernel).attest(RD).quote == vectors.tdx_quote
    assert "could not remove configfs-tsm entry" in caplog.text


def test_report_data_must_be_64_bytes(tdx_kernel, snp_kernel):
    for backend in (tdx(tdx_kernel), snp(snp_kernel)):
        with pytest.raises(EnclaveError, match="64 bytes"):
            backend.attest(b"short")
    assert tdx_kernel.created == [] and snp_kernel.created == []


def test_kernel_rejects_inblob_over_64_bytes(tdx_kernel):
    with pytest.raises(EnclaveError, match="1 to 64 bytes"):
        ConfigfsTsm("tdx_guest", paths=tdx_kernel.paths, files=tdx_kernel).report(bytes(65))


def test_a_quote_for_other_report_data_is_returned_with_a_warning(tdx_kernel, vectors, caplog):
    # A real vector was made for another nonce: the miner warns, the validator refuses it (see test_end_to_end).
    with caplog.at_level(logging.WARNING, logger="omron_tee.enclave"):
        tdx(tdx_kernel).attest(RD)
    assert "report data differs" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="omron_tee.enclave"):
        tdx(tdx_kernel).attest(vectors.tdx_report_data)
    assert "report data differs" not in caplog.text


def test_non_tdx_bytes_from_the_tdx_provider_are_refused(tmp_path, vectors):
    kernel = FakeTsmKernel(tmp_path, "tdx_guest", lambda i, p: (vectors.sgx_quote, b""))
    with pytest.raises(EnclaveError, match="not TDX"):
        tdx(kernel).attest(RD)


# --- detection -------------------------------------------------------------------------


def test_detect_in_a_td(tdx_kernel):
    a = TdxBackend.detect(paths=tdx_kernel.paths)
    assert a.usable and a.tee_type is TeeType.TDX and "configfs-tsm" in a.detail
    assert not SevSnpBackend.detect(paths=tdx_kernel.paths).usable


def test_detect_in_an_snp_guest(snp_kernel):
    assert SevSnpBackend.detect(paths=snp_kernel.paths).usable
    assert "not a TDX guest" in TdxBackend.detect(paths=snp_kernel.paths).detail


def test_detect_td_without_its_driver(tdx_kernel):
    (tdx_kernel.paths.dev / "tdx_guest").unlink()
    a = TdxBackend.detect(paths=tdx_kernel.paths)
    assert not a.usable and "modprobe tdx_guest" in a.detail


def test_detect_td_on_an_old_kernel_mentions_the_legacy_device(tmp_path):
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.2.0\n")
    (tmp_path / "proc/cpuinfo").write_text("flags\t: fpu tdx_guest\n")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/tdx_guest").write_bytes(b"")
    a = TdxBackend.detect(paths=HostPaths.under(tmp_path))
    assert not a.usable and "older than 6.7" in a.detail and "only a TDREPORT" in a.detail


def test_detect_snp_flag_without_device(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("flags\t: fpu sev sev_es sev_snp\n")
    a = SevSnpBackend.detect(paths=HostPaths.under(tmp_path))
    assert not a.usable and "modprobe sev-guest" in a.detail and "SNP host" in a.detail


# --- the GHCB certificate table ------------------------------------------------------


def test_cert_table_guids_are_in_amds_byte_order(vectors):
    table = vectors.snp_cert_table()
    # AMD's sev-guest tools (uuid_parse) and go-sev-guest write RFC 4122 order: the string's bytes.
    assert table[:16] == bytes.fromhex("63da758de6644564adc5f4b93be8accd")
    assert [e.name for e in parse_cert_table(table)] == ["vcek", "ask", "ark"]


def test_cert_table_in_mixed_endian_order_is_still_read(vectors):
    vcek = next(g for g, n in CERT_GUIDS.items() if n == "vcek")
    table = bytearray(build_cert_table([(vcek, vectors.vcek_der)]))
    table[:16] = vcek.bytes_le
    (entry,) = parse_cert_table(bytes(table))
    assert entry.name == "vcek" and entry.data == vectors.vcek_der


@pytest.mark.parametrize(
    "table,msg",
    [
        (b"", "no terminating"),
        (bytes(16) + (100).to_bytes(4, "little") + (10).to_bytes(4, "little"), "outside"),
        (uuid.uuid4().bytes + (24).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"\x30\x02\x01\x00", "no terminating"),
        (uuid.uuid4().bytes + (48).to_bytes(4, "little") + (99).to_bytes(4, "little") + bytes(24), "outside"),
    ],
)
def test_malformed_cert_tables(table, msg):
    with pytest.raises(EnclaveError, match=msg):
        parse_cert_table(table)
