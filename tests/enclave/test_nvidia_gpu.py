"""NVIDIA CC GPUs: evidence through NVML, bound to the CPU report data, attached to CPU evidence."""

from __future__ import annotations

import hashlib

import pytest
from enclave_fakes import FakeGpuSource, FakeNvml

from omron_tee.attestation.evidence import Evidence, TeeType
from omron_tee.enclave.host import HostPaths
from omron_tee.enclave.nvidia_gpu import (
    CompositeBackend,
    GpuEvidence,
    NvidiaGpus,
    NvmlEvidenceSource,
    check_gpu_evidence,
    gpu_nonce,
)
from omron_tee.enclave.tdx import TdxBackend
from omron_tee.errors import EnclaveError

RD = hashlib.sha512(b"report data of one exchange").digest()


def test_gpu_nonce_is_sha256_of_the_cpu_report_data():
    assert gpu_nonce(RD) == hashlib.sha256(RD).digest()
    with pytest.raises(EnclaveError):
        gpu_nonce(RD[:32])


def test_gpu_evidence_is_nvmls_bytes(gpu_source, vectors):
    evs = NvidiaGpus(gpu_source).attest(RD)
    assert evs == (Evidence(tee_type=TeeType.NVIDIA, quote=vectors.hopper_report, certificates=vectors.hopper_chain),)
    assert gpu_source.nonces == [hashlib.sha256(RD).digest()]


def test_composite_attaches_every_gpu_to_the_cpu_evidence(tdx_kernel, vectors):
    source = FakeGpuSource(report=vectors.hopper_report, cert_chain=vectors.hopper_chain, gpus=2)
    backend = CompositeBackend(TdxBackend(paths=tdx_kernel.paths, files=tdx_kernel, backoff_s=0), NvidiaGpus(source))
    ev = backend.attest(RD)
    assert backend.tee_type is TeeType.TDX and ev.tee_type is TeeType.TDX and ev.quote == vectors.tdx_quote
    assert [a.tee_type for a in ev.attached] == [TeeType.NVIDIA, TeeType.NVIDIA]
    assert tdx_kernel.inblobs == [RD] and source.nonces == [hashlib.sha256(RD).digest()]
    # It survives the wire (the verified digest receipts refer to covers the attachments: see test_evidence_digest).
    assert Evidence.from_json(ev.to_json()) == ev
    assert backend.measurement() == vectors.tdx_mrtd


def test_composite_refuses_sgx_cpu(gramine, gpu_source):
    from omron_tee.enclave.sgx_gramine import GramineSgxBackend

    with pytest.raises(EnclaveError, match="TDX or SEV-SNP"):
        CompositeBackend(GramineSgxBackend(paths=gramine.paths, files=gramine), NvidiaGpus(gpu_source))


def test_evidence_that_is_not_spdm_is_refused(vectors):
    nonce = gpu_nonce(RD)
    with pytest.raises(EnclaveError, match="SPDM 1.1 GET_MEASUREMENTS"):
        check_gpu_evidence(GpuEvidence(0, b"\x10" + vectors.hopper_report[1:], vectors.hopper_chain), nonce)
    with pytest.raises(EnclaveError, match="no PEM certificate chain"):
        check_gpu_evidence(GpuEvidence(0, vectors.hopper_report, b""), nonce)


def test_real_hopper_evidence_carries_its_own_nonce(vectors, caplog):
    ev = GpuEvidence(0, vectors.hopper_report, vectors.hopper_chain)
    assert ev.request_nonce() == vectors.hopper_nonce
    with caplog.at_level("WARNING", logger="omron_tee.enclave"):
        check_gpu_evidence(ev, vectors.hopper_nonce)
    assert caplog.text == ""
    with caplog.at_level("WARNING", logger="omron_tee.enclave"):
        check_gpu_evidence(ev, gpu_nonce(RD))
    assert "another nonce" in caplog.text


# --- NVML ---------------------------------------------------------------------------------


def nvml(vectors, **kw) -> FakeNvml:
    return FakeNvml(report=vectors.hopper_report, cert_chain=vectors.hopper_chain, **kw)


def test_nvml_source_trims_nvmls_fixed_buffers(vectors):
    fake = nvml(vectors, gpus=2)
    nonce = gpu_nonce(RD)
    evs = NvmlEvidenceSource(fake).collect(nonce)
    assert [(e.index, e.report, e.cert_chain) for e in evs] == [(0, vectors.hopper_report, vectors.hopper_chain), (1, vectors.hopper_report, vectors.hopper_chain)]
    assert f"report 0 {nonce.hex()}" in fake.calls and f"report 1 {nonce.hex()}" in fake.calls
    assert fake.initialized == 0  # shut down again


def test_nvml_source_refuses_cc_off(vectors):
    with pytest.raises(EnclaveError, match="not in confidential computing mode"):
        NvmlEvidenceSource(nvml(vectors, cc=False)).collect(gpu_nonce(RD))


@pytest.mark.parametrize(
    "kw,usable,text",
    [
        ({}, True, "1 GPU(s) in confidential computing mode (production)"),
        ({"devtools": True}, True, "DevTools mode on"),
        ({"cc": False}, False, "confidential computing mode is off"),
        ({"gpus": 0}, False, "sees no GPU"),
        ({"init_error": 12}, False, "libnvidia-ml.so"),
        ({"init_error": 9}, False, "kernel driver is not loaded"),
        ({"cc_error": 3}, False, "does not support confidential computing"),
    ],
)
def test_nvml_status(vectors, kw, usable, text):
    status = NvmlEvidenceSource(nvml(vectors, **kw)).status()
    assert status.usable is usable and text in status.detail


def test_missing_binding_says_what_to_install():
    def missing():
        raise ImportError("No module named 'pynvml'")

    source = NvmlEvidenceSource(importer=missing)
    assert "pip install nvidia-ml-py" in source.status().detail
    with pytest.raises(EnclaveError, match="pip install nvidia-ml-py"):
        source.collect(bytes(32))


def test_detect_without_a_driver(tmp_path):
    a = NvidiaGpus.detect(paths=HostPaths.under(tmp_path))
    assert not a.usable and "no NVIDIA driver" in a.detail


def test_detect_with_nvml(vectors, tmp_path):
    a = NvidiaGpus.detect(paths=HostPaths.under(tmp_path), source=NvmlEvidenceSource(nvml(vectors)))
    assert a.usable and a.tee_type is TeeType.NVIDIA
