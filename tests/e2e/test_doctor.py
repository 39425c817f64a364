"""``omron-tee miner doctor`` as an operator runs it, against real miner processes: plain words, the validator's verdict."""

from __future__ import annotations

import json
import subprocess
import sys


def _doctor(net, role: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "omron_tee.cli", "miner", "doctor", *net.wallet_args(f"miner-{role}"),
                           "--chain.path", str(net.chain_path), "--timeout", "3", *extra], capture_output=True, text=True, timeout=120)


def test_the_doctor_says_what_validators_conclude_and_why(net) -> None:
    honest = _doctor(net, "honest", "--no-validators", "--json")
    assert honest.returncode == 0, honest.stdout + honest.stderr
    d = json.loads(honest.stdout)
    assert d["ok"] and d["local"]["verdict"] == "verified" and d["local"]["reason"] == "ok"
    unapproved = _doctor(net, "unapproved", "--no-validators")
    assert unapproved.returncode == 1, unapproved.stdout + unapproved.stderr
    text = unapproved.stdout
    assert "STRIKE — measurement-not-allowed" in text and "what to do: run a build the validators' policy allows" in text
    assert "Traceback" not in unapproved.stdout + unapproved.stderr
    wrong = json.loads(_doctor(net, "wrong", "--no-validators", "--json").stdout)
    assert wrong["local"]["reason"] == "wrong-output" and wrong["local"]["verdict"] == "strike"


def test_a_doctor_mistake_is_one_clear_line(net, tmp_path) -> None:
    missing = subprocess.run([sys.executable, "-m", "omron_tee.cli", "miner", "doctor", "--wallet.name", "nobody", "--wallet.path", str(tmp_path),
                              "--chain.path", str(net.chain_path)], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1 and "no hotkey" in missing.stderr
    wallet = net.wallet_args("miner-honest")
    no_policy = subprocess.run([sys.executable, "-m", "omron_tee.cli", "miner", "doctor", *wallet, "--subtensor.network", "ws://127.0.0.1:1"],
                               capture_output=True, text=True, timeout=60)
    assert no_policy.returncode == 2 and "needs --policy FILE" in no_policy.stderr and "Traceback" not in no_policy.stderr
