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
    p = subprocess.run([*_omron_tee(), "localnet", "--miners", "4", "--requests", "60", "--json", str(out_json), "--dir", str(work), "--seed", "3"],
                       capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stdout + p.stderr
    assert elapsed < 90
    s = json.loads(out_json.read_text())

    miners = {m["role"]: m for m in s["miners"]}
    # The four ONNX miners of the brief; the localnet may add others beside them (e.g. an LLM miner).
    assert {"honest", "slow", "wrong", "unapproved"} <= set(miners)
    for m in s["miners"]:
        for key in ("uid", "hotkey", "enclave_type", "requests", "attestations_accepted", "attestations_rejected",
                    "correct", "incorrect", "median_latency_ms", "score", "weight"):
            assert key in m, key
        assert m["requests"] >= (60 // 4 if m["role"] in ("honest", "slow", "wrong", "unapproved") else 1)
        assert m["enclave_type"] == "simulated"
        # Verdict counts add up: every benchmark request got a verdict or a named failure.
        assert sum(m["reasons"].values()) == m["requests"]
    honest, slow, wrong, unapproved = (miners[r] for r in ("honest", "slow", "wrong", "unapproved"))
    assert honest["weight"] == max(m["weight"] for m in s["miners"]) and honest["weight"] > 0.5
    assert honest["score"] > slow["score"] > 0
    assert honest["median_latency_ms"] < slow["median_latency_ms"]
    assert wrong["weight"] == 0 and unapproved["weight"] == 0
    assert wrong["incorrect"] >= 15 and wrong["correct"] == 0 and set(wrong["reasons"]) == {"wrong-output"}
    assert unapproved["attestations_rejected"] >= 15 and unapproved["attestations_accepted"] == 0
    assert set(unapproved["reasons"]) == {"measurement-not-allowed"}
    assert honest["correct"] >= 15 and honest["incorrect"] == 0 and honest["failures"] == 0
    assert honest["emission_tao"] > 0 and wrong["emission_tao"] == 0 and unapproved["emission_tao"] == 0
    totals = s["totals"]
    for k in ("requests", "attestations_accepted", "attestations_rejected", "correct", "incorrect"):
        assert totals[k] == sum(m[k] for m in s["miners"])
    assert totals["requests"] >= 60
    assert len(s["miners"]) >= 4

    # The third-party request: answered by an approved miner, receipt valid offline.
    tp = s["third_party"]
    assert tp["ok"] is True and tp["receipt_valid"] is True
    assert tp["miner_uid"] in (honest["uid"], slow["uid"], wrong["uid"])
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
