"""`omron-tee localnet` as a user runs it: the JSON summary says what the issue promises,
and no private input or output reaches its output or the miners' logs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from omron_tee.attestation.validate.policy import Policy
from omron_tee.exchange.receipt_file import verify_receipt_file
from omron_tee.workloads import default_workloads
from omron_tee.models.registry import ModelRegistry
from omron_tee.workloads.tensor import sample_input
from omron_tee.validator.neuron import build_verifiers


def _omron_tee() -> list[str]:
    script = Path(sys.executable).parent / "omron-tee"
    return [str(script)] if script.exists() else [sys.executable, "-m", "omron_tee.cli"]


def test_localnet_summary(tmp_path) -> None:
    work = tmp_path / "net"
    out_json = tmp_path / "out.json"
    t0 = time.monotonic()
    p = subprocess.run([*_omron_tee(), "localnet", "--requests", "120", "--json", str(out_json), "--dir", str(work), "--seed", "3"],
                       capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stdout + p.stderr
    assert elapsed < 120
    s = json.loads(out_json.read_text())

    miners = {m["role"]: m for m in s["miners"]}
    # The five ONNX miners of the default network; the localnet may add others beside them (e.g. an LLM miner).
    assert {"honest", "slow", "wrong", "unapproved", "twin"} <= set(miners)
    vnames = [v["name"] for v in s["validators"]]
    assert len(vnames) == 2  # two validators by default, with different stakes
    assert s["validators"][0]["stake"] > s["validators"][1]["stake"] > 0
    for m in s["miners"]:
        for key in ("uid", "hotkey", "enclave_type", "requests", "attestations_accepted", "attestations_rejected",
                    "correct", "incorrect", "median_latency_ms", "score", "weight", "weights_by_validator", "consensus", "incentive"):
            assert key in m, key
        assert m["enclave_type"] == "simulated"
        # Verdict counts add up: every benchmark request got a verdict or a named failure.
        assert sum(m["reasons"].values()) == m["requests"]
        if m["role"] in ("honest", "slow", "wrong", "unapproved", "twin"):
            assert m["requests"] >= 3 * len(vnames)  # every validator probed every miner, failing ones backed off
    honest, slow, wrong, unapproved, twin = (miners[r] for r in ("honest", "slow", "wrong", "unapproved", "twin"))
    assert honest["score"] > slow["score"] > 0
    assert honest["median_latency_ms"] < slow["median_latency_ms"]
    for m in (wrong, unapproved):
        assert m["weight"] == 0 and m["incentive"] == 0 and m["emission_tao"] == 0
        assert all(w == 0 for w in m["weights_by_validator"].values())
    assert wrong["correct"] == 0 and set(wrong["reasons"]) == {"wrong-output"}
    assert unapproved["attestations_accepted"] == 0 and set(unapproved["reasons"]) == {"measurement-not-allowed"}
    assert honest["incorrect"] == 0 and honest["failures"] == 0
    # Consensus: both validators weigh the honest miners; the chain's incentive follows them.
    for m in (honest, twin):
        assert all(w > 0.2 for w in m["weights_by_validator"].values()), m
        assert m["incentive"] > 0.2 and m["emission_tao"] > 0 and m["consensus"] > 0
    assert honest["incentive"] > slow["incentive"]
    assert s["equal_miners"]["miners"] == [honest["uid"], twin["uid"]] and s["equal_miners"]["apart_percent"] < 25
    for v in s["validators"]:
        assert v["validator_trust"] > 0.8 and v["agreement"] > 0.9 and v["emission_tao"] > 0
    totals = s["totals"]
    for k in ("requests", "attestations_accepted", "attestations_rejected", "correct", "incorrect"):
        assert totals[k] == sum(m[k] for m in s["miners"])
    assert totals["requests"] >= 120 * len(vnames)
    assert "equal miners:" in p.stdout and "validator trust" in p.stdout

    # The third-party request: answered by an approved miner, receipt valid offline.
    tp = s["third_party"]
    assert tp["ok"] is True and tp["receipt_valid"] is True
    assert tp["miner_uid"] in (honest["uid"], slow["uid"], wrong["uid"], twin["uid"])
    assert {"hotkey": unapproved["hotkey"], "reason": "measurement-not-allowed"} in tp["rejected"]
    policy = Policy.load(work / "policy.toml")
    receipt = json.loads(Path(tp["receipt"]).read_text())
    assert verify_receipt_file(receipt, policy=policy, verifiers=build_verifiers(policy), workloads=default_workloads(), models=ModelRegistry.builtin()).ok

    # No private data in what the network printed or logged. The third-party input is the
    # localnet's (first model, rng seed 7); its output is in the receipt file the client saved.
    models = ModelRegistry.builtin()
    spec = models.specs()[0]
    assert receipt["model_id"] == spec.model_id
    x = sample_input(spec, np.random.default_rng(7))
    y = np.frombuffer(base64.b64decode(receipt["result"]["output"]["data"]), dtype=receipt["result"]["output"]["dtype"]).reshape(receipt["result"]["output"]["shape"])
    np.testing.assert_allclose(y, models.runtime(spec.model_id).run(x), rtol=1e-5, atol=1e-6)
    texts = {"stdout": p.stdout, "stderr": p.stderr}
    for log in sorted((work / "logs").glob("*.log")):
        texts[log.name] = log.read_text(errors="replace")
    assert len(texts) >= 6
    for a in (x, y):
        raw = np.ascontiguousarray(a).tobytes()
        for fp in (base64.b64encode(raw).decode()[:32], raw.hex()[:32], repr(a)[:50], repr(float(a.reshape(-1)[0]))):
            for name, text in texts.items():
                assert fp not in text, f"private data {fp!r} in {name}"
