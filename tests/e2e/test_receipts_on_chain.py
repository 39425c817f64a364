"""Receipts committed on chain, end to end: a third party records its receipt, the validator commits its log's
root, the inclusion proof verifies against the chain with the CLI, and an auditor recomputes its weights from
what it serves."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from omron_tee.attestation.validate.policy import simulated_policy_toml
from omron_tee.errors import OmronTeeError
from omron_tee.validator.scoring import Outcome

from test_third_party import MODELS, Api, _secret_input


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "omron_tee.cli", *args], capture_output=True, text=True, timeout=120)


def test_a_recorded_receipt_is_proven_on_chain_and_the_validator_is_audited(net, tmp_path) -> None:
    spec = MODELS.get("digits-mlp")
    x = _secret_input(spec)

    async def go():
        async with Api(net, tmp_path / "scores.sqlite") as api:
            c = api.client()
            try:
                r = await c.infer(spec.model_id, x, candidates=4, deadline_s=8.0)
                receipt = c.receipt_file(r)
                index, digest = await c.record_receipt(receipt)
                again, _ = await c.record_receipt(receipt)
                async with httpx.AsyncClient() as http:
                    early = (await http.get(f"{api.url}/v1/receipts/{index}/proof")).json()
                    served_early = (await http.get(f"{api.url}/v1/audit/entries")).json()
                    bad_index = await http.get(f"{api.url}/v1/receipts/x/proof")
                    bad_page = await http.get(f"{api.url}/v1/audit/entries?limit=100000")
                # A forged receipt is refused with its named reason, and never logged.
                forged = receipt.to_json()
                forged["receipt"]["signature"] = "00" * 64
                with pytest.raises(OmronTeeError) as refused:
                    await c._post("/v1/receipts", forged)
                # The validator scores a few benchmark outcomes and sets weights: that commits its root.
                for m in (net.miners["honest"], net.miners["slow"]):
                    for _ in range(20):
                        api.v.record(Outcome(m.hotkey, m.uid, True, "ok", 0.01, True, True))
                while api.v.chain.blocks_until_weights_allowed(api.v.hotkey):
                    await asyncio.sleep(0.05)
                ev = await api.v.set_weights()
                proof = await c.inclusion_proof(index)
                audited = await asyncio.to_thread(_cli, "audit", "weights", "--validator", api.url, "--chain.path", str(net.chain_path), "--json")
                return receipt, index, again, early, served_early, bad_index, bad_page, refused.value, ev, proof, audited, api.policy
            finally:
                await c.aclose()

    receipt, index, again, early, served_early, bad_index, bad_page, refused, ev, proof, audited, policy = asyncio.run(go())
    assert again == index  # one receipt, one entry
    assert early["error"]["reason"] == "not-committed" and served_early["entries"] == []  # nothing is served before it is committed
    assert bad_index.status_code == 400 and bad_page.status_code == 400
    assert refused.reason == "bad-receipt"
    assert ev.error is None
    assert proof.index == index and proof.size > index
    receipt_path, proof_path, policy_path = tmp_path / "receipt.json", tmp_path / "proof.json", tmp_path / "policy.toml"
    receipt.save(receipt_path)
    proof_path.write_text(json.dumps(proof.to_json()))
    policy_path.write_text(simulated_policy_toml(policy))
    ok = _cli("receipt", "verify", str(receipt_path), "--policy", str(policy_path), "--proof", str(proof_path), "--chain.path", str(net.chain_path), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = json.loads(ok.stdout)
    assert out["valid"] and out["entry"] == index and out["committed_at_block"] is not None
    # A proof moved to another entry, or for another receipt, fails.
    moved = proof.to_json() | {"index": proof.index + 1 if proof.index + 1 < proof.size else proof.index - 1}
    proof_path.write_text(json.dumps(moved))
    bad = _cli("receipt", "verify", str(receipt_path), "--policy", str(policy_path), "--proof", str(proof_path), "--chain.path", str(net.chain_path), "--json")
    assert bad.returncode == 1 and any("inclusion path" in r for r in json.loads(bad.stdout)["reasons"])
    # The auditor, as anyone runs it, accounts for the validator's weights from what it serves and the chain.
    assert audited.returncode == 0, audited.stdout + audited.stderr
    report = json.loads(audited.stdout)
    assert report["ok"] and report["receipts"] == 1 and report["outcomes"] >= 40 and report["chain_matches_entry"] is not None
