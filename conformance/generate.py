"""Write conformance/v1: its simulated evidence, policies, and every case with the verdict a verifier must reach.

    .venv/bin/python conformance/generate.py [DIR]   # rewrites conformance/v1 (byte for byte the same: a test checks it)

Simulated evidence is signed with a key derived from a public seed (Ed25519 signatures
are deterministic), so the files are reproducible; the real evidence is referenced in
../shared/testvectors, never copied. Each expectation below is stated from what the
evidence is documented to be (shared/testvectors/README.md, docs/POLICY.md), not read
off our verifier: the runner then checks our verifier against them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omron_tee.attestation.abi import simulated as sim
from omron_tee.attestation.binding import EnclavePublicKeys, report_data_for
from omron_tee.attestation.evidence import Evidence, TeeType

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "v1"
KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"omron-tee conformance v1: simulated attestation key (public seed)").digest())
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"omron-tee conformance v1: a key no policy trusts").digest())
BUILD_A = hashlib.sha384(b"conformance build A").digest()
BUILD_B = hashlib.sha384(b"conformance build B").digest()
HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
OTHER_HOTKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
NONCE = hashlib.sha256(b"conformance nonce").digest()
KEYS = EnclavePublicKeys("x25519", hashlib.sha256(b"hpke public").digest(), hashlib.sha256(b"signing public").digest())
T0 = 1767225600  # 2026-01-01T00:00:00Z, when the simulated evidence was issued
PUBLISHER = "5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy"
TDX_REPORT_DATA = ("9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9"
                   "eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20")
TDX_MRTD = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
SGX_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
SGX_REPORT_DATA = (b"Hello, world!" + bytes(51)).hex()
SNP_MEASUREMENT = "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
SNP_REPORT_DATA = (bytes([1, 2, 3, 4, 5]) + bytes(59)).hex()


def simulated(measurement: bytes, *, key: Ed25519PrivateKey = KEY, debug: bool = False, nonce: bytes = NONCE, hotkey: str = HOTKEY,
              issued: int = T0) -> bytes:
    body = sim.encode_body(flags=sim.FLAG_DEBUG if debug else 0, issued_at_ms=issued * 1000, measurement=measurement,
                           report_data=report_data_for(nonce, KEYS, hotkey), key_id=hashlib.sha256(key.public_key().public_bytes_raw()).digest())
    return body + key.sign(body)


def binding(*, hotkey: str = HOTKEY) -> dict:
    return {"nonce": NONCE.hex(), "hotkey": hotkey, "kem": KEYS.kem, "hpke_public": KEYS.hpke_public.hex(), "signing_public": KEYS.signing_public.hex()}


def iso(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


SIM_KEY_HEX = KEY.public_key().public_bytes_raw().hex()
POLICIES = {
    "simulated.toml": f'[general]\nmax_evidence_age_seconds = 120\n\n[simulated]\nallow = true\ntrusted_keys = ["{SIM_KEY_HEX}"]\n'
                      f'measurements = ["{BUILD_A.hex()}", "{BUILD_B.hex()}"]\n',
    "simulated-a-only.toml": f'[simulated]\nallow = true\ntrusted_keys = ["{SIM_KEY_HEX}"]\nmeasurements = ["{BUILD_A.hex()}"]\n',
    "simulated-refused.toml": f'[simulated]\nallow = false\ntrusted_keys = ["{SIM_KEY_HEX}"]\nmeasurements = ["{BUILD_A.hex()}"]\n',
    "simulated-releases.toml": f'[simulated]\nallow = true\ntrusted_keys = ["{SIM_KEY_HEX}"]\nmeasurements = ["{BUILD_A.hex()}", "{BUILD_B.hex()}"]\n'
                               f'\n[releases]\nrequire_published = true\npublisher = "{PUBLISHER}"\nmin_age_blocks = 100\n',
    "tdx.toml": f'[general]\nmax_evidence_age_seconds = 120\n\n[[tdx.measurement]]\nmrtd = "{TDX_MRTD}"\n',
    "tdx-other-build.toml": f'[[tdx.measurement]]\nmrtd = "{"00" * 48}"\n',
    "sgx.toml": f'[sgx]\nmrenclave = ["{SGX_MRENCLAVE}"]\n',
    "sgx-hardening-tolerated.toml": f'[sgx]\nmrenclave = ["{SGX_MRENCLAVE}"]\n'
                                    'accepted_tcb_statuses = ["UpToDate", "ConfigurationAndSWHardeningNeeded"]\n'
                                    'allowed_advisories = ["INTEL-SA-00289", "INTEL-SA-00615"]\n',
    "snp.toml": f'[sev-snp]\nmeasurements = ["{SNP_MEASUREMENT}"]\n',
    "snp-debug-allowed.toml": f'[general]\nallow_debug = true\n\n[sev-snp]\nmeasurements = ["{SNP_MEASUREMENT}"]\n',
    "nvidia.toml": '[nvidia]\nallow_any_measurement = true\nrequire_ocsp = false\n',
}

TDX = {"file": "shared:intel-tdx/tdx_quote", "type": "tdx"}
TDX_COLL = ["shared:intel-tdx/tdx_quote_collateral.json"]
TDX_NOW = "2025-06-19T10:33:27Z"
SGX = {"file": "shared:intel-sgx/sgx_quote", "type": "sgx"}
SGX_COLL = ["shared:intel-sgx/sgx_quote_collateral.json"]
SGX_NOW = "2025-06-19T10:57:11Z"
SNP = {"file": "shared:amd-sev-snp/attestation.bin", "type": "sev-snp", "certs": "shared:amd-sev-snp/vcek.der"}
SNP_COLL = ["shared:amd-sev-snp/ask_ark_milan.pem"]
SNP_NOW = "2025-06-19T00:00:00Z"


def releases(*published: tuple[bytes, int], block: int = 1000) -> dict:
    return {"publisher": PUBLISHER, "block": block, "published": [{"tee": "simulated", "measurement": m.hex(), "label": "v1", "block": b}
                                                                 for m, b in published]}


def cases() -> list[tuple[str, str, dict]]:
    """(file name, what it tests, case) in the manifest's order."""
    ok = {"accepted": True, "reasons": []}

    def no(*reasons: str) -> dict:
        return {"accepted": False, "reasons": list(reasons)}

    now = iso(T0 + 10)
    sim_a = {"json": "evidence/simulated-a.json"}
    return [
        ("sim-accepted", "a simulated build the policy allows, fresh, bound to the exchange", dict(evidence=sim_a, policy="policies/simulated.toml", now=now, binding=binding(), expect=ok)),
        ("sim-stale", "the same evidence, judged 1000 s later (the policy allows 120 s)", dict(evidence=sim_a, policy="policies/simulated.toml", now=iso(T0 + 1000), binding=binding(), expect=no("stale-evidence"))),
        ("sim-from-the-future", "judged 60 s before it was issued", dict(evidence=sim_a, policy="policies/simulated.toml", now=iso(T0 - 60), binding=binding(), expect=no("stale-evidence"))),
        ("sim-other-hotkey", "evidence for one miner presented as another's (a relayed enclave)", dict(evidence=sim_a, policy="policies/simulated.toml", now=now, binding=binding(hotkey=OTHER_HOTKEY), expect=no("report-data-mismatch"))),
        ("sim-replayed-nonce", "evidence bound to an earlier exchange's nonce", dict(evidence={"json": "evidence/simulated-a-old-nonce.json"}, policy="policies/simulated.toml", now=now, binding=binding(), expect=no("report-data-mismatch"))),
        ("sim-build-not-allowed", "a build the policy does not list", dict(evidence={"json": "evidence/simulated-b.json"}, policy="policies/simulated-a-only.toml", now=now, binding=binding(), expect=no("measurement-not-allowed"))),
        ("sim-debug", "a debug enclave", dict(evidence={"json": "evidence/simulated-a-debug.json"}, policy="policies/simulated.toml", now=now, binding=binding(), expect=no("debug-enclave"))),
        ("sim-debug-and-stale", "two faults: both are named", dict(evidence={"json": "evidence/simulated-a-debug.json"}, policy="policies/simulated.toml", now=iso(T0 + 1000), binding=binding(), expect=no("debug-enclave", "stale-evidence"))),
        ("sim-untrusted-key", "signed by a key the policy does not trust", dict(evidence={"json": "evidence/simulated-a-other-key.json"}, policy="policies/simulated.toml", now=now, binding=binding(), expect=no("untrusted-signer"))),
        ("sim-bad-signature", "one bit of the signature flipped", dict(evidence={"file": "evidence/simulated-a.bin", "type": "simulated", "flip": [200]}, policy="policies/simulated.toml", now=now, binding=binding(), expect=no("bad-signature"))),
        ("sim-measurement-tampered", "one bit of the measurement flipped after signing", dict(evidence={"file": "evidence/simulated-a.bin", "type": "simulated", "flip": [20]}, policy="policies/simulated.toml", now=now, binding=binding(), expect=no("bad-signature"))),
        ("sim-truncated", "the report cut short", dict(evidence={"file": "evidence/simulated-a-truncated.bin", "type": "simulated"}, policy="policies/simulated.toml", now=now, binding=binding(), expect=no("evidence-malformed"))),
        ("sim-not-allowed-here", "a policy for real TEEs refuses simulated evidence", dict(evidence=sim_a, policy="policies/simulated-refused.toml", now=now, binding=binding(), expect=no("simulated-not-allowed"))),
        ("release-old-enough", "published 300 blocks ago; the timelock is 100", dict(evidence=sim_a, policy="policies/simulated-releases.toml", now=now, binding=binding(), releases=releases((BUILD_A, 700)), expect=ok)),
        ("release-too-recent", "published 30 blocks ago; the timelock is 100", dict(evidence=sim_a, policy="policies/simulated-releases.toml", now=now, binding=binding(), releases=releases((BUILD_A, 970)), expect=no("release-too-recent"))),
        ("release-unpublished", "the policy allows the build, the chain never published it", dict(evidence={"json": "evidence/simulated-b.json"}, policy="policies/simulated-releases.toml", now=now, binding=binding(), releases=releases((BUILD_A, 10)), expect=no("measurement-unpublished"))),
        ("release-unknown", "releases required but none could be read", dict(evidence=sim_a, policy="policies/simulated-releases.toml", now=now, binding=binding(), expect=no("releases-unknown"))),
        ("release-too-recent-and-forged", "a forged binding is named with the timelock", dict(evidence=sim_a, policy="policies/simulated-releases.toml", now=now, binding=binding(hotkey=OTHER_HOTKEY), releases=releases((BUILD_A, 970)), expect=no("report-data-mismatch", "release-too-recent"))),
        ("tdx-accepted", "a real TDX quote at its collateral's time: UpToDate, its MRTD allowed", dict(evidence=TDX, collateral=TDX_COLL, policy="policies/tdx.toml", now=TDX_NOW, binding={"report_data": TDX_REPORT_DATA}, expect=ok)),
        ("tdx-report-data-mismatch", "the same quote for another exchange", dict(evidence=TDX, collateral=TDX_COLL, policy="policies/tdx.toml", now=TDX_NOW, binding={"report_data": "00" * 64}, expect=no("report-data-mismatch"))),
        ("tdx-other-build", "a policy that allows another MRTD", dict(evidence=TDX, collateral=TDX_COLL, policy="policies/tdx-other-build.toml", now=TDX_NOW, binding={"report_data": TDX_REPORT_DATA}, expect=no("measurement-not-allowed"))),
        ("tdx-body-tampered", "one bit of the TD report body flipped", dict(evidence=TDX | {"flip": [200]}, collateral=TDX_COLL, policy="policies/tdx.toml", now=TDX_NOW, binding={"report_data": TDX_REPORT_DATA}, expect=no("bad-signature"))),
        ("tdx-no-collateral", "no collateral given: nothing is fetched", dict(evidence=TDX, collateral=[], policy="policies/tdx.toml", now=TDX_NOW, binding={"report_data": TDX_REPORT_DATA}, expect=no("collateral-missing"))),
        ("sgx-hardening-refused", "a real SGX quote whose TCB needs configuration and hardening, under an UpToDate-only policy", dict(evidence=SGX, collateral=SGX_COLL, policy="policies/sgx.toml", now=SGX_NOW, binding={"report_data": SGX_REPORT_DATA}, expect=no("tcb-status-not-accepted", "advisory-not-allowed"))),
        ("sgx-hardening-tolerated", "the same under a policy tolerating that status and its two advisories", dict(evidence=SGX, collateral=SGX_COLL, policy="policies/sgx-hardening-tolerated.toml", now=SGX_NOW, binding={"report_data": SGX_REPORT_DATA}, expect=ok)),
        ("sgx-collateral-expired", "the same quote judged on 2026-12-01: its CRLs have expired", dict(evidence=SGX, collateral=SGX_COLL, policy="policies/sgx-hardening-tolerated.toml", now="2026-12-01T00:00:00Z", binding={"report_data": SGX_REPORT_DATA}, expect=no("collateral-expired"))),
        ("snp-debug-refused", "a real SEV-SNP report from a debug guest, under a production policy", dict(evidence=SNP, collateral=SNP_COLL, policy="policies/snp.toml", now=SNP_NOW, binding={"report_data": SNP_REPORT_DATA}, expect=no("debug-enclave"))),
        ("snp-debug-allowed", "the same under a development policy that allows debug", dict(evidence=SNP, collateral=SNP_COLL, policy="policies/snp-debug-allowed.toml", now=SNP_NOW, binding={"report_data": SNP_REPORT_DATA}, expect=ok)),
        ("snp-signature-tampered", "one bit of the report's signature flipped", dict(evidence=SNP | {"flip": [0x2A0 + 5]}, collateral=SNP_COLL, policy="policies/snp-debug-allowed.toml", now=SNP_NOW, binding={"report_data": SNP_REPORT_DATA}, expect=no("bad-signature"))),
        ("snp-no-vcek", "no VCEK handed out and none in the collateral", dict(evidence={k: v for k, v in SNP.items() if k != "certs"}, collateral=SNP_COLL, policy="policies/snp-debug-allowed.toml", now=SNP_NOW, binding={"report_data": SNP_REPORT_DATA}, expect=no("collateral-missing"))),
        ("nvidia-alone", "GPU evidence alone binds no enclave keys", dict(evidence={"file": "shared:nvidia-h100/hopperAttestationReport.txt", "type": "nvidia", "certs": "shared:nvidia-h100/hopperCertChain.txt"}, policy="policies/nvidia.toml", now="2025-06-19T00:00:00Z", binding={"report_data": "00" * 64}, expect=no("report-data-mismatch"))),
    ]


def write() -> None:
    (OUT / "policies").mkdir(parents=True, exist_ok=True)
    (OUT / "evidence").mkdir(parents=True, exist_ok=True)
    for name, text in POLICIES.items():
        (OUT / "policies" / name).write_text(text)
    reports = {
        "simulated-a": simulated(BUILD_A),
        "simulated-b": simulated(BUILD_B),
        "simulated-a-debug": simulated(BUILD_A, debug=True),
        "simulated-a-other-key": simulated(BUILD_A, key=OTHER_KEY),
        "simulated-a-old-nonce": simulated(BUILD_A, nonce=hashlib.sha256(b"an earlier exchange").digest()),
    }
    for name, raw in reports.items():
        (OUT / "evidence" / f"{name}.json").write_text(json.dumps(Evidence(TeeType.SIMULATED, raw).to_json(), indent=2, sort_keys=True) + "\n")
    (OUT / "evidence" / "simulated-a.bin").write_bytes(reports["simulated-a"])
    (OUT / "evidence" / "simulated-a-truncated.bin").write_bytes(reports["simulated-a"][:100])
    names = []
    for name, what, case in cases():
        case = json.loads(json.dumps({"name": name, "description": what, **case}))  # a copy: cases share their evidence specs
        case["policy"] = "../" + case["policy"]
        for k in ("json", "file", "certs"):
            ref = case["evidence"].get(k)
            if ref and not ref.startswith("shared:"):
                case["evidence"][k] = "../" + ref
        (OUT / "cases").mkdir(exist_ok=True)
        (OUT / "cases" / f"{name}.json").write_text(json.dumps(case, indent=2, sort_keys=True) + "\n")
        names.append(f"cases/{name}.json")
    (OUT / "manifest.json").write_text(json.dumps({"version": 1, "cases": names}, indent=2) + "\n")


if __name__ == "__main__":
    write()
    print(f"wrote {len(cases())} cases to {OUT}", file=sys.stderr)
