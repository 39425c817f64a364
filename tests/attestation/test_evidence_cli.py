"""``omron-tee evidence verify`` and ``omron-tee collateral``: the published vectors' verdicts, and user mistakes."""

from __future__ import annotations

import argparse
import json

import pytest

from omron_tee.cli import attestation as cli
from omron_tee.attestation.testing import vectors

pytestmark = pytest.mark.vectors
T = vectors.TESTVECTORS


def run(*argv: str) -> int:
    p = argparse.ArgumentParser(prog="omron-tee")
    sub = p.add_subparsers(dest="command", required=True)
    cli.register(sub)
    args = p.parse_args(list(argv))
    return args.handler(args)


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = run(*argv, "--json")
    return code, json.loads(capsys.readouterr().out)


def test_sgx_on_its_day(capsys, tmp_path):
    code, out = run_json(capsys, "evidence", "verify", str(vectors.SGX_QUOTE), "--collateral", str(vectors.SGX_COLLATERAL), "--now", "2025-06-19T10:57:11Z")
    assert out["tee_type"] == "sgx" and out["verified"] is True
    assert out["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert out["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert out["measurement"] == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    assert out["report_data"].startswith("48656c6c6f2c20776f726c6421") and out["debug"] is False
    assert out["verdict"] == "rejected" and code == 1  # the inspection policy wants UpToDate
    assert out["reason_codes"] == ["tcb-status-not-accepted", "advisory-not-allowed"]
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[sgx]\nmrenclave = ["33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"]\n'
        'accepted_tcb_statuses = ["ConfigurationAndSWHardeningNeeded"]\nallowed_advisories = ["INTEL-SA-00289", "INTEL-SA-00615"]\n'
    )
    code, out = run_json(capsys, "evidence", "verify", str(vectors.SGX_QUOTE), "--collateral", str(vectors.SGX_COLLATERAL), "--now", "2025-06-19T10:57:11Z", "--policy", str(policy))
    assert (code, out["verdict"], out["reasons"]) == (0, "accepted", [])


def test_sgx_today_reports_crl_expired_with_claims(capsys):
    code, out = run_json(capsys, "evidence", "verify", str(vectors.SGX_QUOTE), "--collateral", str(vectors.SGX_COLLATERAL))
    assert code == 1 and out["verdict"] == "rejected" and out["verified"] is False
    assert out["reason_codes"] == ["collateral-expired"] and "CrlExpired" in out["reasons"][0]
    assert out["measurement"].startswith("33d8736d")  # the parsed claims are still shown


def test_tdx_on_its_day_is_accepted(capsys):
    code, out = run_json(capsys, "evidence", "verify", str(vectors.TDX_QUOTE), "--type", "tdx", "--collateral", str(vectors.TDX_COLLATERAL), "--now", "2025-06-19T10:33:27Z")
    assert (code, out["verdict"], out["tcb_status"], out["advisory_ids"]) == (0, "accepted", "UpToDate", [])
    assert out["measurement"].startswith("91eb2b44") and out["details"]["td_attributes"] == "0000001000000000"


def test_report_data_requirement(capsys):
    args = ["evidence", "verify", str(vectors.TDX_QUOTE), "--collateral", str(vectors.TDX_COLLATERAL), "--now", "2025-06-19T10:33:27Z"]
    rd = "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20"
    assert run_json(capsys, *args, "--report-data", rd)[0] == 0
    code, out = run_json(capsys, *args, "--report-data", "00" * 64)
    assert code == 1 and out["reason_codes"] == ["report-data-mismatch"]


def test_no_collateral_no_network_says_so(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("OMRON_TEE_COLLATERAL_DIR", str(tmp_path / "empty-cache"))
    code, out = run_json(capsys, "evidence", "verify", str(vectors.SGX_QUOTE), "--now", "2025-06-19T10:57:11Z")
    assert code == 1 and out["reason_codes"] == ["collateral-missing"]
    assert "no Intel collateral" in out["reasons"][0] and out["measurement"].startswith("33d8736d")


def test_snp_default_refuses_debug_dev_accepts(capsys, tmp_path):
    code, out = run_json(capsys, "evidence", "verify", str(vectors.SNP_REPORT), "--collateral", str(vectors.SNP_DIR))
    assert out["tee_type"] == "sev-snp" and out["verified"] is True and out["debug"] is True
    assert (code, out["reason_codes"]) == (1, ["debug-enclave"])
    dev = tmp_path / "dev.toml"
    dev.write_text("[general]\nallow_debug = true\n[sev-snp]\nallow_any_measurement = true\n")
    code, out = run_json(capsys, "evidence", "verify", str(vectors.SNP_REPORT), "--collateral", str(vectors.SNP_DIR), "--policy", str(dev))
    assert (code, out["verdict"]) == (0, "accepted")
    code, out = run_json(capsys, "evidence", "verify", str(vectors.SNP_REPORT), "--certs", str(vectors.SNP_VCEK), "--policy", str(dev))
    assert code == 0


def test_nvidia_chain_and_signature(capsys, tmp_path):
    args = ["evidence", "verify", str(vectors.NVIDIA_REPORT), "--certs", str(vectors.NVIDIA_CHAIN)]
    code, out = run_json(capsys, *args)
    assert out["tee_type"] == "nvidia" and out["verified"] is True
    assert out["report_data"] == "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
    assert code == 1 and out["reason_codes"] == ["ocsp-missing"]
    pol = tmp_path / "gpu.toml"
    pol.write_text("[nvidia]\nallow_any_measurement = true\nrequire_ocsp = false\n")
    assert run_json(capsys, *args, "--policy", str(pol))[0] == 0


def test_evidence_json_file(capsys, tmp_path):
    f = tmp_path / "ev.json"
    f.write_text(json.dumps(vectors.snp_evidence().to_json()))
    code, out = run_json(capsys, "evidence", "verify", str(f))
    assert out["verified"] is True and out["reason_codes"] == ["debug-enclave"]


def test_human_output(capsys):
    code = run("evidence", "verify", str(vectors.TDX_QUOTE), "--collateral", str(vectors.TDX_COLLATERAL), "--now", "2025-06-19T10:33:27Z")
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("tdx evidence: ACCEPTED") and "mr_td: 91eb2b44" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["evidence", "verify", "/nonexistent/quote"],
        ["evidence", "verify", str(vectors.SGX_QUOTE), "--now", "yesterday"],
        ["evidence", "verify", str(vectors.SGX_QUOTE), "--report-data", "xyz"],
        ["evidence", "verify", str(vectors.SGX_QUOTE), "--collateral", "/nonexistent/coll.json"],
        ["evidence", "verify", str(vectors.SGX_QUOTE), "--policy", "/nonexistent/policy.toml"],
        ["evidence", "verify", str(vectors.SNP_VCEK)],  # not evidence at all
        ["collateral", "import", "/nonexistent/bundle.json"],
    ],
)
def test_user_mistakes_are_one_line(capsys, argv, tmp_path, monkeypatch):
    monkeypatch.setenv("OMRON_TEE_COLLATERAL_DIR", str(tmp_path))
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("omron-tee: error:") and "Traceback" not in err and err.count("\n") == 1


def test_bad_policy_file_is_one_line(capsys, tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[sgx]\nmrenclaves = []\n")
    assert run("evidence", "verify", str(vectors.SGX_QUOTE), "--policy", str(p)) == 2
    assert "unknown key(s) mrenclaves" in capsys.readouterr().err


def test_collateral_import_export_list(capsys, tmp_path):
    cache, other = tmp_path / "cache", tmp_path / "other"
    assert run("collateral", "import", str(vectors.SGX_COLLATERAL), str(vectors.SNP_DIR), "--dir", str(cache)) == 0
    out = capsys.readouterr().out
    assert "intel/sgx-00A067110000-processor.json" in out and "amd/vcek/" in out
    bundle = tmp_path / "bundle.json"
    assert run("collateral", "export", str(bundle), "--dir", str(cache)) == 0
    assert "exported 3" in capsys.readouterr().out
    assert run("collateral", "import", str(bundle), "--dir", str(other)) == 0
    capsys.readouterr()
    assert run("collateral", "list", "--dir", str(other), "--now", "2025-06-19T10:57:11Z") == 0
    listing = capsys.readouterr().out
    assert "intel/sgx-00A067110000-processor.json expires 2025-07-19T10:01:18Z" in listing and "EXPIRED" not in listing
    # The imported cache serves the verifier offline.
    code, out = run_json(capsys, "evidence", "verify", str(vectors.SGX_QUOTE), "--collateral", str(other), "--now", "2025-06-19T10:57:11Z")
    assert out["verified"] is True
    assert run("collateral", "export", str(tmp_path / "x.json"), "--dir", str(tmp_path / "missing")) == 2


def test_collateral_fetch_into_the_cache(capsys, tmp_path):
    from omron_tee.attestation.collateral.intel import IntelCollateral
    from omron_tee.attestation.testing.servers import fake_server, pcs_route

    cache = tmp_path / "cache"
    with fake_server(pcs_route(IntelCollateral.from_json(vectors.SGX_COLLATERAL.read_bytes()))) as (url, log):
        # The published quote's platform: its collateral is fetched (it is then verified at the time given, when the
        # collateral served had expired, so the quote does not verify, which is not the fetch's concern).
        code = run("collateral", "fetch", str(vectors.SGX_QUOTE), "--dir", str(cache), "--pccs-url", url, "--now", "2026-09-21T00:00:00Z")
    out = capsys.readouterr().out
    assert code == 0 and "fetched intel/sgx-00A067110000-processor.json" in out and len(log) == 4
    assert (cache / "intel" / "sgx-00A067110000-processor.json").is_file()


def test_a_made_up_pck_chain_fetches_nothing(capsys, tmp_path):
    """The FMSPC in a PCK certificate Intel did not sign is never trusted to choose collateral: nothing is fetched for it."""
    from omron_tee.attestation.testing.dcap import DcapTestPki
    from omron_tee.attestation.testing.servers import fake_server, pcs_route

    pki = DcapTestPki("sgx", 1_790_000_000.0)
    quote = tmp_path / "quote.bin"
    quote.write_bytes(pki.sgx_quote())
    with fake_server(pcs_route(pki.collateral())) as (url, log):
        code = run("collateral", "fetch", str(quote), "--dir", str(tmp_path / "cache"), "--pccs-url", url, "--now", "2026-09-21T00:00:00Z")
    out = capsys.readouterr().out
    assert code == 0 and "does not lead to Intel's SGX root CA" in out and "fetched" not in out and log == []
