"""The policy file: parsing (strict per-TEE sections), and the documented examples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from omron_tee.attestation.abi.snp import POLICY_MIGRATE_MA, POLICY_SMT, GuestPolicy, TcbVersion
from omron_tee.attestation.evidence import Claims, TeeType
from omron_tee.attestation.platform import DcapCollateral, SgxClaims, SnpClaims, TdxClaims
from omron_tee.attestation.validate.policy import Policy, SnpPolicy, inspection_policy
from omron_tee.errors import ConfigError

DOC = Path(__file__).resolve().parents[2] / "docs" / "POLICY.md"


def _claims(tee: TeeType, **kw) -> Claims:
    base = dict(tee_type=tee, measurement=bytes(48), report_data=bytes(64), debug=False, tcb_status="UpToDate")
    base.update(kw)
    return Claims(**base)


def _snp(policy_raw: int = 0, *, signing_key: str = "vcek") -> SnpClaims:
    tcb = TcbVersion.decode(0, turin_layout=False)
    return SnpClaims(version=2, guest_svn=0, policy=GuestPolicy(policy_raw), family_id=bytes(16), image_id=bytes(16), vmpl=0, host_data=bytes(32),
                     id_key_digest=bytes(48), author_key_digest=bytes(48), report_id=bytes(32), report_id_ma=bytes(32), chip_id=bytes(64),
                     signing_key=signing_key, reported_tcb=tcb, current_tcb=tcb, committed_tcb=tcb, launch_tcb=tcb, current_version=(1, 55, 0),
                     committed_version=(1, 55, 0), platform_info=())


def _tdx(mr_seam: bytes = b"\x00") -> TdxClaims:
    z = bytes(48)
    return TdxClaims(4, z, (z, z, z, z), mr_seam, z, bytes(8), bytes(8), bytes(8), z, z, z, bytes(16), True, 0, 0)


def _sgx(tcb_evaluation_data_number: int) -> SgxClaims:
    return SgxClaims(3, bytes(32), bytes(32), 0, 0, bytes(16), 0, bytes(16), bytes(64), 0, bytes(16), bytes(16), 0, 0,
                     collateral=DcapCollateral("00A067110000", "processor", "Intel SGX Root CA", "2027-01-01T00:00:00Z", tcb_evaluation_data_number))


def test_general_and_simulated_unchanged():
    p = Policy.from_toml('[general]\nmax_evidence_age_seconds = 30\nallow_debug = true\n[simulated]\nallow = true\nmeasurements = ["aa"]\n')
    assert p.max_evidence_age_seconds == 30 and p.allow_debug and p.simulated.allow
    c = _claims(TeeType.SIMULATED, measurement=b"\xaa", issued_at=100.0)
    assert p.check(c, now=110.0) == []
    assert [r for r, _ in p.check(c, now=200.0)] == ["stale-evidence"]
    assert [r for r, _ in Policy().check(c, now=100.0)] == ["simulated-not-allowed"]


def test_absent_section_refuses_the_tee():
    for tee in (TeeType.SGX, TeeType.TDX, TeeType.SEV_SNP, TeeType.NVIDIA):
        assert [r for r, _ in Policy().check(_claims(tee), now=0)] == ["unsupported-tee"]


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[sgx]\nmrenclaves = []", "mrenclaves"),
        ('[sgx]\nmrenclave = ["zz"]', "not hex"),
        ('[sgx]\nmrenclave = ["aa"]', "32 bytes"),
        ('[sgx]\naccepted_tcb_statuses = ["Fine"]', "unknown status"),
        ("[[sgx.signer]]\nmrsigner = \"" + "00" * 32 + "\"", "isv_prod_id"),
        ("[tdx]\n[[tdx.measurement]]\nrtmr0 = \"00\"", "mrtd"),
        ("[tdx]\n[[tdx.measurement]]\nmrtd = \"" + "00" * 48 + "\"\nrtmr9 = \"00\"", "rtmr9"),
        ("[sev-snp]\nmin_tcb = { boot = 1 }", "boot"),
        ('[sev-snp]\nforbidden_policy_bits = ["smt", "nope"]', "nope"),
        ("[sev-snp]\nallowed_vmpls = [4]", "allowed_vmpls"),
        ('[sev-snp]\nallowed_signing_keys = ["ark"]', "vcek and vlek"),
        ("[sev-snp]\nrequire_crl = 1", "true or false"),
        ('[nvidia]\ngolden = { "0" = ["aa"] }', "index"),
        ("[nvidia]\nrequire_ocsp = \"yes\"", "true or false"),
        ("[general]\nmax_evidence_age_seconds = \"soon\"", "number"),
        ("[sgx", "not valid TOML"),
    ],
)
def test_bad_policies_are_config_errors(toml, needle):
    with pytest.raises(ConfigError) as e:
        Policy.from_toml(toml, source="test.toml")
    assert needle in str(e.value) and "test.toml" in str(e.value)


def test_sev_snp_defaults_forbid_migration_agent_and_allow_underscored_name():
    p = Policy.from_toml("[sev_snp]\nallow_any_measurement = true\n")
    assert isinstance(p.sev_snp, SnpPolicy) and p.sev_snp.forbidden_policy_bits == frozenset({"migrate_ma"})


def test_inspection_policy():
    p = inspection_policy()
    assert p.check(_claims(TeeType.TDX, platform=_tdx()), now=0) == []
    assert [r for r, _ in p.check(_claims(TeeType.TDX, tcb_status="OutOfDate", platform=_tdx()), now=0)] == ["tcb-status-not-accepted"]
    assert [r for r, _ in p.check(_claims(TeeType.SEV_SNP, debug=True, platform=_snp()), now=0)] == ["debug-enclave"]


def test_snp_policy_reads_the_typed_report_and_fails_closed_without_it():
    """Guest-policy bits come from the report's own GuestPolicy; claims without the report's fields are refused, not assumed."""
    p = Policy.from_toml("[sev_snp]\nallow_any_measurement = true\nrequired_policy_bits = [\"smt\"]\n")
    assert p.check(_claims(TeeType.SEV_SNP, platform=_snp(POLICY_SMT)), now=0) == []
    clear = p.check(_claims(TeeType.SEV_SNP, platform=_snp(0)), now=0)
    assert [r for r, _ in clear] == ["guest-policy"] and "clear" in clear[0][1]
    forbidden = p.check(_claims(TeeType.SEV_SNP, platform=_snp(POLICY_SMT | POLICY_MIGRATE_MA)), now=0)
    assert [r for r, _ in forbidden] == ["guest-policy"] and "forbids" in forbidden[0][1]
    assert [r for r, _ in p.check(_claims(TeeType.SEV_SNP, platform=_snp(POLICY_SMT, signing_key="none")), now=0)] == ["signing-key-not-allowed"]
    for platform in (None, _tdx()):  # no report fields, or another TEE's
        assert [r for r, _ in p.check(_claims(TeeType.SEV_SNP, platform=platform), now=0)] == ["evidence-malformed"]
    # The display form keeps its shape (omron-tee evidence verify prints it).
    assert _claims(TeeType.SEV_SNP, platform=_snp(POLICY_SMT)).details["policy"]["smt"] is True


def _doc_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", DOC.read_text(), flags=re.S)


def test_documented_examples_load():
    blocks = _doc_blocks()
    assert len(blocks) >= 5
    loaded = [Policy.from_toml(b, source="docs/POLICY.md") for b in blocks]
    assert any(p.sgx for p in loaded) and any(p.tdx for p in loaded) and any(p.sev_snp for p in loaded) and any(p.nvidia for p in loaded)


def test_min_tcb_evaluation_data_number():
    c = _claims(TeeType.SGX, measurement=bytes(32), platform=_sgx(17))
    ok = Policy.from_mapping({"sgx": {"allow_any_measurement": True, "min_tcb_evaluation_data_number": 17}})
    assert ok.check(c, now=0) == []
    newer = Policy.from_mapping({"sgx": {"allow_any_measurement": True, "min_tcb_evaluation_data_number": 18}})
    assert [r for r, _ in newer.check(c, now=0)] == ["tcb-evaluation-too-old"]
