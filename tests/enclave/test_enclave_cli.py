"""omron-tee enclave detect / measure, through the same argparse wiring the main CLI uses."""

from __future__ import annotations

import argparse
import json
import tomllib

import pytest
from enclave_sigstruct import MRENCLAVE, SIGN_OUTPUT, make_sigstruct

from omron_tee.cli import enclave as cli


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omron-tee")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    args = parser.parse_args(argv)
    return args.handler(args)


def test_detect_in_a_td(tdx_kernel, capsys):
    assert run(["enclave", "detect", "--root", str(tdx_kernel.root)]) == 0
    out = capsys.readouterr().out
    assert "tdx        usable" in out and "--enclave auto would use: tdx" in out
    assert "not inside Gramine" in out


def test_detect_json_on_a_machine_without_tee(tmp_path, capsys):
    assert run(["enclave", "detect", "--json", "--root", str(tmp_path)]) == 1
    found = json.loads(capsys.readouterr().out)
    assert [f["tee_type"] for f in found] == ["sgx", "tdx", "sev-snp", "nvidia", "simulated"]
    assert [f["usable"] for f in found] == [False, False, False, False, True]


def test_measure_sgx_sig(tmp_path, signing_key, capsys):
    sig = tmp_path / "omron-tee-miner.sig"
    sig.write_bytes(make_sigstruct(signing_key))
    assert run(["enclave", "measure", "--sig", str(sig)]) == 0
    out = capsys.readouterr().out
    assert f"mrenclave: {MRENCLAVE.hex()}" in out
    snippet = out.split("# for the validator's policy file:\n", 1)[1]
    assert tomllib.loads(snippet)["sgx"]["mrenclave"] == [MRENCLAVE.hex()]


def test_measure_sign_output_json(tmp_path, capsys):
    log = tmp_path / "sign.log"
    log.write_text(SIGN_OUTPUT.format(MRENCLAVE.hex()))
    assert run(["enclave", "measure", "--sign-output", str(log), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tee_type"] == "sgx" and data["values"]["mrenclave"] == MRENCLAVE.hex()
    assert tomllib.loads(data["policy_toml"])["sgx"]["mrenclave"] == [MRENCLAVE.hex()]


def test_measure_infers_the_type_of_a_quote(vectors, capsys):
    q = vectors.root / "intel-tdx/tdx_quote"
    assert run(["enclave", "measure", "--quote", str(q), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["values"]["mrtd"] == vectors.tdx_mrtd.hex()
    assert run(["enclave", "measure", "--quote", str(vectors.root / "intel-sgx/sgx_quote"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["values"]["mrenclave"] == vectors.sgx_mrenclave.hex()


def test_measure_snp_report(vectors, capsys):
    assert run(["enclave", "measure", "--report", str(vectors.root / "amd-sev-snp/attestation.bin")]) == 0
    out = capsys.readouterr().out
    assert vectors.snp_measurement.hex() in out and "DEBUG" in out


def test_measure_simulated_default(capsys):
    from omron_tee.enclave.measurement import trusted_app_measurement
    from omron_tee.models.registry import ModelRegistry

    assert run(["enclave", "measure"]) == 0
    out = capsys.readouterr().out
    specs = ModelRegistry.builtin().specs()
    expected = trusted_app_measurement([(s.model_id, s.sha256) for s in specs]).hex()
    snippet = tomllib.loads(out.split("# for the validator's policy file:\n", 1)[1])
    assert snippet["simulated"]["measurements"] == [expected]


def test_measure_live_in_a_td(tdx_kernel, vectors, capsys, monkeypatch):
    from omron_tee.enclave import configfs_tsm

    # The command builds the production file seam; put the fake kernel behind it.
    monkeypatch.setattr(configfs_tsm, "OsDeviceFiles", lambda: tdx_kernel)
    assert run(["enclave", "measure", "--enclave", "tdx", "--live", "--root", str(tdx_kernel.root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["values"]["mrtd"] == vectors.tdx_mrtd.hex() and "live evidence" in data["notes"][0]
    assert tdx_kernel.entries == {}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--sig", "/nonexistent.sig"], "cannot read SIGSTRUCT /nonexistent.sig"),
        (["--enclave", "tdx"], "--live"),
        (["--enclave", "sev-snp", "--ovmf", "/x.fd"], "--vcpus N is required"),
        (["--enclave", "sgx"], "--sig FILE"),
        (["--live"], "--live needs --enclave"),
        (["--models", "no-such-model"], "no-such-model"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(argv, message, capsys):
    assert run(["enclave", "measure", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("omron-tee enclave: error: ") and message in err and "Traceback" not in err


def test_live_measure_without_hardware_is_a_clear_error(tmp_path, capsys):
    assert run(["enclave", "measure", "--enclave", "sev-snp", "--live", "--root", str(tmp_path)]) == 2
    assert "not an SEV-SNP guest" in capsys.readouterr().err


def test_main_cli_exposes_the_enclave_commands(capsys):
    from omron_tee.cli import main

    assert main(["enclave", "measure", "--enclave", "tdx"]) == 2
    assert "--live" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--llm"], ["--models", "breast-cancer-mlp,diabetes-mlp,digits-mlp,gemma3-270m"]])
def test_measure_simulated_with_the_llm(argv, capsys):
    """The build of a miner started with --llm: the shipped models and the default LLM, as the validator's policy allows it."""
    from omron_tee.enclave.measurement import release_builds
    from omron_tee.models.llama import default_spec
    from omron_tee.models.registry import ModelRegistry

    assert run(["enclave", "measure", *argv]) == 0
    out = capsys.readouterr().out
    snippet = tomllib.loads(out.split("# for the validator's policy file:\n", 1)[1])
    onnx = [(s.model_id, s.sha256) for s in ModelRegistry.builtin().specs()]
    llm = default_spec()
    builds = dict(release_builds(onnx, [(llm.model_id, llm.sha256)]))
    assert snippet["simulated"]["measurements"] == [builds["miners with --llm"].hex()]
