"""The command lines a user types: help works, mistakes are one clear line and exit 2, never a
traceback, and an unreachable subtensor is an error within seconds, not a hang.

Every command runs as its own process, all started at once (each one imports the stack)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from omron_tee.config import create_wallet

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def _omron_tee() -> list[str]:
    script = Path(PY).parent / "omron-tee"
    return [str(script)] if script.exists() else [PY, "-m", "omron_tee.cli"]


def _real_tee_policy(d: Path) -> Path:
    """A valid policy for a real network (it accepts no build; enough to get past the configuration)."""
    p = d / "real-tee-policy.toml"
    p.write_text("[general]\nmax_evidence_age_seconds = 120\n")
    return p


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    wallets = d / "wallets"
    create_wallet("w", "default", wallets)
    chain = ["--chain.path", str(d / "chain.sqlite")]
    have = ["--wallet.name", "w", "--wallet.path", str(wallets)]
    missing = ["--wallet.name", "nobody", "--wallet.path", str(wallets)]
    commands = {
        "help": [*_omron_tee(), "--help"],
        "localnet_help": [*_omron_tee(), "localnet", "--help"],
        "miner_help": [PY, "neurons/miner.py", "--help"],
        "validator_help": [PY, "neurons/validator.py", "--help"],
        "miner_bad_flag": [PY, "neurons/miner.py", "--no-such-flag"],
        "miner_no_wallet": [PY, "neurons/miner.py", "--subtensor.network", "embedded", *chain, *missing],
        "miner_local": [PY, "neurons/miner.py", "--netuid", "1", "--subtensor.network", "local", *have],
        "validator_local": [PY, "neurons/validator.py", "--netuid", "1", "--subtensor.network", "local", *have, "--neuron.data_dir", str(d / "v"),
                            "--validator.policy", str(_real_tee_policy(d))],
        "validator_no_policy": [PY, "neurons/validator.py", "--netuid", "1", "--subtensor.network", "local", *have, "--neuron.data_dir", str(d / "v")],
        "wallet_create": [*_omron_tee(), "wallet", "create", "--wallet.name", "fresh", "--wallet.path", str(wallets)],
    }
    # Two waves, so that the timed ones (an unreachable node) do not queue behind the rest for CPU.
    timed = {k: commands.pop(k) for k in ("miner_local", "validator_local", "validator_no_policy")}
    out = {}
    for wave in (commands, timed):
        out.update(_run_all(wave))
    out["_wallets"] = wallets
    return out


def _run_all(commands: dict[str, list[str]]) -> dict:
    """Run at once; each result is (returncode, stdout, stderr, seconds that process took)."""
    procs = {}
    for name, cmd in commands.items():
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL), time.monotonic())
    done: dict = {}
    deadline = time.monotonic() + 90
    while len(done) < len(procs):
        for name, (p, t0) in procs.items():
            if name not in done and (p.poll() is not None or time.monotonic() > deadline):
                took = time.monotonic() - t0
                if p.poll() is None:
                    p.kill()
                stdout, stderr = p.communicate()
                done[name] = (p.returncode if took < 90 else None, stdout, stderr, took)
        time.sleep(0.05)
    return done


@pytest.mark.parametrize("name,words", [
    ("help", ["localnet", "wallet", "receipt"]),
    ("localnet_help", ["--miners", "--requests", "--json"]),
    ("miner_help", ["--netuid", "--subtensor.network", "--wallet.name", "--wallet.hotkey", "--axon.port", "--enclave"]),
    ("validator_help", ["--netuid", "--subtensor.network", "--wallet.name", "--validator.policy", "--neuron.data_dir"]),
])
def test_help(runs, name, words) -> None:
    rc, out, err, _ = runs[name]
    assert rc == 0, err
    assert "Traceback" not in out + err
    for w in words:
        assert w in out, (name, w)


def test_bad_flag_exit_2(runs) -> None:
    rc, out, err, _ = runs["miner_bad_flag"]
    assert rc == 2, (out, err)
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1].count("error:") == 1
    assert len([line for line in err.splitlines() if "error" in line]) == 1


@pytest.mark.parametrize("argv", [["localnet", "--no-such-flag"], ["localnet", "--miners", "0"], ["receipt", "verify"], ["nonsense"]])
def test_cli_mistakes_exit_2_in_one_line(argv, capsys) -> None:
    from omron_tee.cli import main

    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own refusals
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in out + err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert "error" in err.strip().splitlines()[-1]


def test_missing_wallet_is_one_line(runs) -> None:
    rc, out, err, _ = runs["miner_no_wallet"]
    assert rc == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "nobody" in lines[0] and "omron-tee wallet create" in lines[0]


def test_validator_missing_wallet_in_process(tmp_path, capsys) -> None:
    import logging

    from omron_tee.validator.neuron import main

    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        rc = main(["--subtensor.network", "embedded", "--chain.path", str(tmp_path / "c.sqlite"), "--wallet.name", "nobody",
                   "--wallet.path", str(tmp_path / "w"), "--neuron.data_dir", str(tmp_path / "v")])
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
    out, err = capsys.readouterr()
    assert rc == 2
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "nobody" in errors[0] and "Traceback" not in err


def test_unreachable_subtensor_is_a_clear_error_not_a_hang(runs) -> None:
    rc, out, err, took = runs["validator_local"]
    assert rc == 2, (out, err)
    assert took < 20
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert errors[0] == err.strip().splitlines()[-1]
    assert "9944" in errors[0] or "subtensor" in errors[0]


@pytest.mark.parametrize(("name", "needle"), [("miner_local", "enclave"), ("validator_no_policy", "--validator.policy")])
def test_configuration_is_checked_before_the_chain_is_reached(runs, name, needle) -> None:
    """A miner without TEE hardware, or a validator without a policy, off the local network: named at once,
    before any connection to the (here unreachable) node is tried."""
    rc, out, err, took = runs[name]
    assert rc == 2 and "Traceback" not in out + err, (name, err)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and needle in errors[0] and "9944" not in errors[0], err


def test_simulated_enclave_and_policy_refused_off_local_networks(tmp_path, registry) -> None:
    from omron_tee.errors import ConfigError, OmronTeeError
    from omron_tee.miner.neuron import build_parser as miner_parser
    from omron_tee.miner.neuron import make_backend
    from omron_tee.validator.neuron import build_parser as validator_parser
    from omron_tee.validator.neuron import load_policy

    for network in ("finney", "test", "local"):
        args = miner_parser().parse_args(["--enclave", "simulated", "--chain.path", str(tmp_path / "c.sqlite")])
        with pytest.raises(OmronTeeError, match="simulated"):
            make_backend(args, network, registry)
        args = miner_parser().parse_args(["--enclave", "auto", "--dev.wrong_output", "--chain.path", str(tmp_path / "c.sqlite")])
        with pytest.raises(OmronTeeError, match="dev"):
            make_backend(args, network, registry)
        # A validator off the embedded chain needs a policy file, and one that refuses simulated evidence.
        args = validator_parser().parse_args(["--chain.path", str(tmp_path / "c.sqlite")])
        with pytest.raises(ConfigError, match="policy"):
            load_policy(args, network, registry)
        lax = tmp_path / "lax.toml"
        lax.write_text("[simulated]\nallow = true\n")
        args = validator_parser().parse_args(["--validator.policy", str(lax)])
        with pytest.raises(ConfigError, match="simulated"):
            load_policy(args, network, registry)
    # On the embedded chain the default policy accepts this release's simulated enclaves.
    args = validator_parser().parse_args(["--chain.path", str(tmp_path / "c.sqlite")])
    policy = load_policy(args, "embedded", registry)
    assert policy.simulated.allow and len(policy.simulated.measurements) == 1


def test_wallet_create(runs) -> None:
    rc, out, err, _ = runs["wallet_create"]
    assert rc == 0, err
    hotkey = runs["_wallets"] / "fresh" / "hotkeys" / "default"
    assert hotkey.exists()
    assert "hotkey" in out and "5" in out


def test_neuron_logs_are_dated_split_by_level_and_optionally_json(capsys) -> None:
    """Dated UTC timestamps; information on stdout and warnings on stderr (pm2's out and error logs); JSON lines on request."""
    import argparse
    import json
    import logging
    import re

    from omron_tee.config import setup_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        log = setup_logging(argparse.Namespace(log_debug=False, log_json=False), "miner")
        log.info("serving")
        log.warning("slow")
        out, err = capsys.readouterr()
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  miner serving$", out.strip()), out
        assert "slow" in err and "slow" not in out and "serving" not in err
        log = setup_logging(argparse.Namespace(log_debug=False, log_json=True), "validator")
        log.info("probe %s", "ok")
        line = json.loads(capsys.readouterr().out.strip())
        assert line["level"] == "info" and line["message"] == "probe ok" and line["logger"] == "omron_tee.validator" and line["time"].endswith("Z")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])


def test_policy_init_writes_a_policy_that_accepts_this_networks_miners(tmp_path, capsys) -> None:
    """The embedded chain's policy trusts its development key and this release's builds; elsewhere a template that loads."""
    from omron_tee.attestation.binding import EnclavePublicKeys, report_data_for
    from omron_tee.attestation.validate.appraise import appraise
    from omron_tee.attestation.validate.policy import Policy
    from omron_tee.attestation.verify.registry import VerifierRegistry
    from omron_tee.attestation.verify.simulated import SimulatedVerifier
    from omron_tee.chain.embedded import EmbeddedChain
    from omron_tee.cli import main
    from omron_tee.config import dev_attestation_key_path
    from omron_tee.enclave.measurement import trusted_app_measurement
    from omron_tee.enclave.simulated import SimulatedBackend, dev_public_key
    from omron_tee.models.registry import ModelRegistry

    chain_path = tmp_path / "chain.sqlite"
    assert main(["policy", "init", "--chain.path", str(chain_path)]) == 2  # no chain there yet: one line, no traceback
    assert "no embedded chain" in capsys.readouterr().err
    EmbeddedChain(1, path=chain_path).close()
    out = tmp_path / "policy.toml"
    assert main(["policy", "init", "--chain.path", str(chain_path), "-o", str(out)]) == 0
    policy = Policy.load(out)
    key_path = dev_attestation_key_path(chain_path)
    assert policy.simulated.allow and policy.simulated.trusted_keys == {dev_public_key(key_path)}
    measurement = trusted_app_measurement([(s.model_id, s.sha256) for s in ModelRegistry.builtin().specs()])
    assert measurement in policy.simulated.measurements and len(policy.simulated.measurements) == 3
    # A miner of this network, as the neuron starts it, passes that policy.
    keys = EnclavePublicKeys("x25519-hkdf-sha256-aes256gcm", bytes(32), bytes(32))
    nonce = bytes(32)
    evidence = SimulatedBackend(key_path, measurement).attest(report_data_for(nonce, keys, "5Miner"))
    import time

    verdict = appraise(evidence, nonce=nonce, keys=keys, hotkey="5Miner", policy=policy, registry=VerifierRegistry([SimulatedVerifier([dev_public_key(key_path)])]),
                       now=time.time())
    assert verdict.accepted, verdict.reasons
    assert main(["policy", "init", "--subtensor.network", "finney", "-o", str(tmp_path / "finney.toml")]) == 0
    finney = Policy.load(tmp_path / "finney.toml")
    assert not finney.simulated.allow and "[sgx]" in (tmp_path / "finney.toml").read_text()


def test_policy_files_refuse_misspelt_sections_and_keys(tmp_path) -> None:
    """A misspelt key may be the rule the operator meant: it is an error, never dropped."""
    from omron_tee.attestation.validate.policy import Policy
    from omron_tee.errors import ConfigError

    for text, needle in (("[genral]\nallow_debug = false\n", "genral"), ("[general]\nmax_evidence_age = 30\n", "max_evidence_age"),
                         ("[simulated]\nalow = true\n", "alow"), ("[general]\nallow_debug = \"no\"\n", "true or false")):
        with pytest.raises(ConfigError) as e:
            Policy.from_toml(text, source="p.toml")
        assert needle in str(e.value), text


def test_neuron_help_names_the_command_and_status_says_when_no_network_runs(tmp_path, capsys) -> None:
    from omron_tee.cli import main

    with pytest.raises(SystemExit):
        main(["miner", "--help"])
    assert capsys.readouterr().out.startswith("usage: omron-tee miner")
    assert main(["status", "--chain.path", str(tmp_path / "typo.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no embedded chain" in err
    assert not (tmp_path / "typo.sqlite").exists()  # a mistyped path creates nothing


def test_a_mistyped_chain_path_is_an_error_not_a_fresh_network(tmp_path, capsys) -> None:
    """A neuron given a --chain.path that does not exist stops with one line and writes nothing there;
    --chain.create starts a new network on purpose."""
    from omron_tee.config import create_wallet
    from omron_tee.validator.neuron import main as validator_main

    create_wallet("v", "default", tmp_path / "wallets")
    typo = tmp_path / "chian" / "chain.sqlite"
    args = ["--subtensor.network", "embedded", "--chain.path", str(typo), "--wallet.name", "v", "--wallet.path", str(tmp_path / "wallets"),
            "--validator.api_port", "0", "--neuron.data_dir", str(tmp_path / "data")]
    assert validator_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no embedded chain" in err and "--chain.create" in err
    assert not typo.parent.exists()  # nothing written: no chain, no development key


def test_client_tools_take_the_neurons_dotted_flags_and_explain_every_flag(capsys) -> None:
    """The client tools accept bittensor's dotted spelling beside their own, and no flag goes without help."""
    import argparse

    from omron_tee.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["llm", "complete", "hi", "--validator.url", "http://v", "--validator.hotkey", "5V", "--client.policy", "p.toml",
                              "--llm.max_tokens", "4"])
    assert (args.validator, args.validator_hotkey, args.policy, args.max_tokens) == ("http://v", "5V", "p.toml", 4)

    def walk(p: argparse.ArgumentParser):
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in a.choices.values():
                    yield from walk(sub)

    missing = [f"{p.prog}: {a.option_strings or a.dest}" for p in walk(parser) for a in p._actions
               if not a.help and not isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)) and a.dest != "rest"]
    assert not missing, missing
