"""The miner's launcher inside Gramine: options only through OMRON_TEE_MINER_ARGS, --enclave forced to sgx."""

from __future__ import annotations

import pytest

from omron_tee.enclave import gramine_launch
from omron_tee.enclave.gramine_launch import LaunchError, miner_argv


def test_options_reach_the_miner_with_sgx_forced_and_the_wallet_mount():
    argv = miner_argv("--netuid 7 --subtensor.network finney --wallet.name 'my miner' --axon.port 9000")
    assert argv == ["--netuid", "7", "--subtensor.network", "finney", "--wallet.name", "my miner", "--axon.port", "9000",
                    "--wallet.path", "/wallets", "--enclave", "sgx"]
    from omron_tee.miner.neuron import build_parser

    ns = build_parser().parse_args(argv)
    assert (ns.enclave, ns.wallet_path, ns.wallet_name, ns.netuid) == ("sgx", "/wallets", "my miner", 7)


def test_explicit_wallet_path_is_kept():
    assert "/wallets" not in miner_argv("--wallet.path=/mnt/w")


@pytest.mark.parametrize("raw", ["--enclave simulated", "--encl simulated", "--enclave=tdx"])
def test_another_backend_is_refused(raw):
    with pytest.raises(LaunchError, match="sgx only"):
        miner_argv(raw)


@pytest.mark.parametrize("raw,msg", [("--no-such-flag", "unknown option"), ("-c 'import os'", "unknown option"), ("'unclosed", "shell quoting")])
def test_anything_but_miner_options_is_refused(raw, msg):
    with pytest.raises(LaunchError, match=msg):
        miner_argv(raw)


def test_main_runs_the_miner_with_the_checked_options(monkeypatch):
    seen = []
    monkeypatch.setenv(gramine_launch.ENV, "--netuid 3")
    monkeypatch.setattr("omron_tee.miner.neuron.main", lambda argv: seen.append(argv) or 0)
    assert gramine_launch.main() == 0
    assert seen == [["--netuid", "3", "--wallet.path", "/wallets", "--enclave", "sgx"]]


def test_main_refuses_bad_options_without_starting_the_miner(monkeypatch, capsys):
    monkeypatch.setenv(gramine_launch.ENV, "--enclave simulated")
    monkeypatch.setattr("omron_tee.miner.neuron.main", lambda argv: pytest.fail("the miner must not start"))
    assert gramine_launch.main() == 2
    assert "sgx only" in capsys.readouterr().err
