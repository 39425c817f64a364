"""--enclave auto|sgx|tdx|sev-snp|nvidia|simulated, and detect_all."""

from __future__ import annotations

import logging

import pytest
from enclave_fakes import FakeNvml

from omron_tee.attestation.evidence import TeeType
from omron_tee.enclave.host import HostPaths
from omron_tee.enclave.nvidia_gpu import CompositeBackend, NvmlEvidenceSource
from omron_tee.enclave.select import detect_all, select_backend
from omron_tee.enclave.sev_snp import SevSnpBackend
from omron_tee.enclave.sgx_gramine import GramineSgxBackend
from omron_tee.enclave.simulated import SimulatedBackend
from omron_tee.enclave.tdx import TdxBackend
from omron_tee.errors import EnclaveError


@pytest.fixture
def sim_factory(tmp_path):
    made = []

    def factory():
        b = SimulatedBackend(tmp_path / "dev.key", bytes(48))
        made.append(b)
        return b

    factory.made = made  # type: ignore[attr-defined]
    return factory


def test_auto_picks_tdx_in_a_td(tdx_kernel):
    b = select_backend("auto", network="finney", paths=tdx_kernel.paths)
    assert isinstance(b, TdxBackend)


def test_auto_picks_snp_in_an_snp_guest(snp_kernel):
    assert isinstance(select_backend("auto", network="test", paths=snp_kernel.paths), SevSnpBackend)


def test_auto_picks_sgx_inside_gramine(gramine):
    assert isinstance(select_backend("auto", network="finney", paths=gramine.paths), GramineSgxBackend)


def test_auto_attaches_cc_gpus_beside_a_td(tdx_kernel, vectors):
    source = NvmlEvidenceSource(FakeNvml(report=vectors.hopper_report, cert_chain=vectors.hopper_chain))
    b = select_backend("auto", network="finney", paths=tdx_kernel.paths, gpu_source=source)
    assert isinstance(b, CompositeBackend) and b.tee_type is TeeType.TDX


def test_auto_leaves_gpus_out_when_cc_is_off(tdx_kernel, vectors):
    source = NvmlEvidenceSource(FakeNvml(report=vectors.hopper_report, cert_chain=vectors.hopper_chain, cc=False))
    assert isinstance(select_backend("auto", network="finney", paths=tdx_kernel.paths, gpu_source=source), TdxBackend)


def test_gpus_required_but_off_is_an_error(tdx_kernel, vectors):
    source = NvmlEvidenceSource(FakeNvml(report=vectors.hopper_report, cert_chain=vectors.hopper_chain, cc=False))
    with pytest.raises(EnclaveError, match="confidential computing mode is off"):
        select_backend("tdx", network="finney", paths=tdx_kernel.paths, gpu_source=source, gpus=True)


def test_nvidia_kind_is_the_cpu_vm_plus_gpus(snp_kernel, gpu_source):
    b = select_backend("nvidia", network="finney", paths=snp_kernel.paths, gpu_source=gpu_source)
    assert isinstance(b, CompositeBackend) and b.tee_type is TeeType.SEV_SNP


def test_nvidia_kind_without_a_confidential_vm_explains(tmp_path, gpu_source):
    with pytest.raises(EnclaveError, match="needs a confidential VM") as e:
        select_backend("nvidia", network="finney", paths=HostPaths.under(tmp_path), gpu_source=gpu_source)
    assert "not a TDX guest" in str(e.value)


def test_explicit_kind_that_is_not_here_says_why(tdx_kernel):
    with pytest.raises(EnclaveError, match="--enclave sgx: not usable on this machine: no SGX device"):
        select_backend("sgx", network="finney", paths=tdx_kernel.paths)


@pytest.mark.parametrize("network", ["finney", "test", "ws://10.0.0.1:9944"])
def test_auto_never_falls_back_to_simulated_off_local_networks(tmp_path, sim_factory, network):
    with pytest.raises(EnclaveError, match=f"refused on network '{network}'") as e:
        select_backend("auto", network=network, paths=HostPaths.under(tmp_path), simulated=sim_factory)
    assert "found no TEE hardware" in str(e.value) and "not a TDX guest" in str(e.value)
    assert sim_factory.made == []


@pytest.mark.parametrize("network", ["embedded", "local"])
def test_auto_falls_back_to_simulated_on_local_networks_with_a_warning(tmp_path, sim_factory, network, caplog):
    with caplog.at_level(logging.WARNING, logger="omron_tee.enclave"):
        b = select_backend("auto", network=network, paths=HostPaths.under(tmp_path), simulated=sim_factory)
    assert isinstance(b, SimulatedBackend) and "falling back to the SIMULATED enclave" in caplog.text


def test_fallback_without_the_simulated_factory_is_a_config_error(tmp_path):
    with pytest.raises(EnclaveError, match="development key") as e:
        select_backend("auto", network="embedded", paths=HostPaths.under(tmp_path))
    assert e.value.reason == "config"


def test_simulated_kind(tmp_path, sim_factory, caplog):
    with caplog.at_level(logging.WARNING, logger="omron_tee.enclave"):
        assert isinstance(select_backend("simulated", network="embedded", simulated=sim_factory), SimulatedBackend)
    assert caplog.text == ""
    with pytest.raises(EnclaveError, match="refused on network 'finney'"):
        select_backend("simulated", network="finney", simulated=sim_factory)


def test_unknown_kind():
    with pytest.raises(EnclaveError, match="unknown --enclave 'tpm'") as e:
        select_backend("tpm", network="embedded")
    assert e.value.reason == "config"


def test_detect_all_gives_every_type_with_a_reason(tdx_kernel):
    found = {a.tee_type: a for a in detect_all(paths=tdx_kernel.paths)}
    assert list(found) == [TeeType.SGX, TeeType.TDX, TeeType.SEV_SNP, TeeType.NVIDIA, TeeType.SIMULATED]
    assert found[TeeType.TDX].usable and not found[TeeType.SGX].usable and not found[TeeType.NVIDIA].usable
    assert all(a.detail for a in found.values())
