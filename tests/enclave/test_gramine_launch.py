"""The miner inside Gramine: options only through OMRON_TEE_MINER_ARGS, --enclave forced to sgx."""

from __future__ import annotations

import pytest

from omron_tee.enclave.gramine_launch import ENV, LaunchError, miner_argv
from omron_tee.miner.neuron import build_parser


def argv(raw: str) -> list[str]:
    return miner_argv(raw, build_parser())


def test_options_reach_the_miner_with_sgx_forced_and_the_wallet_mount():
    out = argv("--netuid 7 --subtensor.network finney --wallet.name 'my miner' --axon.port 9000")
    assert out == ["--netuid", "7", "--subtensor.network", "finney", "--wallet.name", "my miner", "--axon.port", "9000",
                   "--wallet.path", "/wallets", "--enclave", "sgx"]
    ns = build_parser().parse_args(out)
    assert (ns.enclave, ns.wallet_path, ns.wallet_name, ns.netuid) == ("sgx", "/wallets", "my miner", 7)


def test_explicit_wallet_path_is_kept():
    assert "/wallets" not in argv("--wallet.path=/mnt/w")


@pytest.mark.parametrize("raw", ["--enclave simulated", "--encl simulated", "--enclave=tdx"])
def test_another_backend_is_refused(raw):
    with pytest.raises(LaunchError, match="sgx only"):
        argv(raw)


@pytest.mark.parametrize("raw,msg", [("--no-such-flag", "unknown option"), ("-c 'import os'", "unknown option"), ("'unclosed", "shell quoting")])
def test_anything_but_miner_options_is_refused(raw, msg):
    with pytest.raises(LaunchError, match=msg):
        argv(raw)


def test_the_manifests_command_runs_the_miner_with_the_checked_options(monkeypatch):
    from omron_tee.cli import main

    seen = []
    monkeypatch.setenv(ENV, "--netuid 3")
    monkeypatch.setattr("omron_tee.miner.neuron.main", lambda a: seen.append(a) or 0)
    assert main(["enclave", "gramine-miner"]) == 0
    assert seen == [["--netuid", "3", "--wallet.path", "/wallets", "--enclave", "sgx"]]


def test_bad_options_never_start_the_miner(monkeypatch, capsys):
    from omron_tee.cli import main

    monkeypatch.setenv(ENV, "--enclave simulated")
    monkeypatch.setattr("omron_tee.miner.neuron.main", lambda a: pytest.fail("the miner must not start"))
    assert main(["enclave", "gramine-miner"]) == 2
    assert "sgx only" in capsys.readouterr().err
