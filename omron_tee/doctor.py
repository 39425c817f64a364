"""The miner doctor: the verdict validators will reach on a miner, and why, before it costs anything.

``omron-tee miner doctor`` runs on the miner's machine as the miner's hotkey:

1. the chain: is the hotkey registered, is it serving, are the subnet's releases readable;
2. the appraisal validators run: one benchmark exchange with the miner's own server, by
   the validator's own code (``validator.prober``: attestation against the policy and the
   chain's published releases, the sealed request, the answer judged against the
   validator's reference), mapped to the verdict scoring gives (``validator.reward``);
3. each validator that serves an API: its own last verdict on this miner, in an answer it
   signed (``POST /v1/miner/verdict``, verified here with ``bittensor.http_auth``).

What one machine cannot see: whether another hotkey presents the same enclave
(``enclave-shared``) is known only to the validators; step 3 reports it when they saw it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import bittensor as bt
from bittensor import http_auth

from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.validate.releases import ReleaseLog
from omron_tee.chain.base import Chain, Neuron
from omron_tee.errors import ChainError, MinerError, OmronTeeError
from omron_tee.models.registry import ModelRegistry
from omron_tee.protocol import loads
from omron_tee.reasons import Reason
from omron_tee.validator.api.verdicts import PATH, RESPONSE_PATH
from omron_tee.validator.neuron import build_verifiers
from omron_tee.validator.prober import Prober
from omron_tee.validator.releases import read_releases
from omron_tee.wire.auth import Signer
from omron_tee.wire.client import SignedClient

# What to do about the refusals a miner's operator can act on (the validator's own message says what it saw).
ADVICE: dict[str, str] = {
    Reason.OK: "nothing: validators verify this miner's answers",
    Reason.MEASUREMENT_NOT_ALLOWED: "run a build the validators' policy allows: the release the subnet publishes (`omron-tee release list`)",
    Reason.MEASUREMENT_UNPUBLISHED: "this build was never published on chain: run a published release (`omron-tee release list`)",
    Reason.RELEASE_TOO_RECENT: "nothing but wait: the build is published and earns once its timelock has passed (no strike meanwhile)",
    Reason.RELEASES_UNKNOWN: "nothing on your side: the validator could not read the chain's releases (it does not charge you for it)",
    Reason.SIMULATED_NOT_ALLOWED: "simulated enclaves are for local networks: run on SGX, TDX or SEV-SNP hardware (`omron-tee enclave detect`)",
    Reason.DEBUG_ENCLAVE: "launch the enclave without debug: debug enclaves can be read by the host",
    Reason.STALE_EVIDENCE: "check this machine's clock (NTP): the evidence's time is outside the policy's window",
    Reason.REPORT_DATA_MISMATCH: "the evidence does not bind this exchange: the enclave must attest each request's nonce with this hotkey",
    Reason.HOTKEY_MISMATCH: "the enclave attests for another hotkey: start the miner with its own wallet",
    Reason.ENCLAVE_SHARED: "another hotkey presents this enclave: one enclave may back one hotkey only",
    Reason.TCB_STATUS_NOT_ACCEPTED: "update the platform's microcode/firmware: its TCB status is not one the policy accepts",
    Reason.COLLATERAL_UNAVAILABLE: "nothing on your side: the validator could not fetch collateral (it does not charge you for it)",
    Reason.COLLATERAL_PENDING: "nothing but wait: the validator is fetching your platform's collateral and judges the next probe with it",
    Reason.COLLATERAL_NOT_FOUND: "hand your VCEK out with the evidence (the extended report's certificates) or check the chip: its maker's "
                                 "service has no collateral for it",
    Reason.UNJUDGED_TOO_OFTEN: "validators could not judge this miner several probes in a row (see the reason before it): until they can, "
                               "it counts as unavailable",
    Reason.TIMEOUT: "answer faster or check the network path: the answer did not come within the deadline",
    Reason.UNREACHABLE: "make the announced endpoint reachable (firewall, --axon.external_ip, the port)",
    Reason.WRONG_OUTPUT: "serve the pinned model unmodified: the output differs from the validator's reference",
    Reason.NOT_SERVING: "announce an endpoint: start the miner (it serves its axon on chain)",
    Reason.CALLER_NOT_PERMITTED: "this miner refuses the doctor's hotkey: run the doctor with the miner's own wallet",
}


def advice(reason: str) -> str:
    return ADVICE.get(reason, "see the message: it is the validator's own account of what it saw")


@dataclass(frozen=True)
class Finding:
    source: str  # "this machine (the validator's appraisal)" or a validator's hotkey
    verdict: str  # validator.reward.Verdict's value, or "unknown"
    reason: str
    message: str
    signed: bool = False  # a validator's answer whose btauth/1 signature verified
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def advice(self) -> str:
        return advice(self.reason)


@dataclass(frozen=True)
class Diagnosis:
    hotkey: str
    uid: int | None
    endpoint: str | None
    releases: ReleaseLog | None
    local: Finding | None
    validators: tuple[Finding, ...]
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems and self.local is not None and self.local.verdict == "verified"


async def appraise_self(wallet: bt.Wallet, neuron: Neuron, *, policy: Policy, models: ModelRegistry, releases: ReleaseLog | None,
                        timeout: float = 5.0, workload: str | None = None) -> Finding:
    """One benchmark exchange with the miner, exactly as a validator makes it, and the verdict scoring gives it."""
    client = SignedClient(Signer(wallet), timeout=timeout)
    try:
        prober = Prober(client, policy=policy, verifiers=build_verifiers(policy), models=models, timeout=timeout)
        prober.releases = lambda: releases
        r = await prober.probe(neuron, workload=workload)
    finally:
        await client.aclose()
    o = r.outcome
    return Finding("this machine (the validator's appraisal)", o.verdict.value, o.reason, r.message,
                   details={"model": r.model_id, "latency_s": o.latency_s, "attestation_accepted": o.attestation_accepted, "correct": o.correct})


async def ask_validator(wallet: bt.Wallet, validator: Neuron, *, timeout: float = 5.0) -> Finding:
    """The validator's signed account of its last verdict on this miner (a Finding saying why, if it gave none)."""
    me = wallet.hotkey.ss58_address
    assert validator.endpoint is not None
    client = SignedClient(Signer(wallet), timeout=timeout)
    try:
        async with client.stream(validator.endpoint.url, PATH, {}, receiver=validator.hotkey, timeout=timeout, max_bytes=64 * 1024) as body:
            raw = await body.read()
            headers = dict(body.headers)
    except MinerError as e:
        return Finding(validator.hotkey, "unknown", e.reason, f"no answer: {e}")
    finally:
        await client.aclose()
    try:
        signer = http_auth.verify(headers, raw, method="POST", path=RESPONSE_PATH, self_hotkey_ss58=me).hotkey_ss58
    except http_auth.AuthError as e:
        return Finding(validator.hotkey, "unknown", Reason.BAD_SIGNATURE, f"its answer is not signed for this miner ({type(e).__name__})")
    if signer != validator.hotkey:
        return Finding(validator.hotkey, "unknown", Reason.BAD_SIGNATURE, f"its answer is signed by {signer}, not by the validator")
    try:
        data = loads(raw, "verdict answer")
        last = data.get("last") if isinstance(data, dict) else None
    except OmronTeeError as e:
        return Finding(validator.hotkey, "unknown", e.reason, f"malformed answer: {e}", signed=True)
    facts = {k: data.get(k) for k in ("score", "earning", "streak", "strikes", "verified_needed", "weight")}
    if not isinstance(last, dict):
        return Finding(validator.hotkey, "unknown", Reason.NOT_SERVING if not data.get("registered") else Reason.NOT_PROBED,
                       "it has not probed this miner yet", signed=True, details=facts)
    return Finding(validator.hotkey, str(last.get("verdict", "unknown"))[:32], str(last.get("reason", "?"))[:64], str(last.get("message", ""))[:500],
                   signed=True, details=facts | {"model": last.get("model"), "at": last.get("at")})


async def diagnose(chain: Chain, wallet: bt.Wallet, *, policy: Policy, models: ModelRegistry, timeout: float = 5.0,
                   ask_validators: bool = True, workload: str | None = None) -> Diagnosis:
    """Everything the doctor says, from the chain, the miner's own server and the validators."""
    hotkey = wallet.hotkey.ss58_address
    problems: list[str] = []
    mg = chain.metagraph()
    me = mg.by_hotkey(hotkey)
    if me is None:
        return Diagnosis(hotkey, None, None, None, None, (), (f"hotkey {hotkey} is not registered on netuid {chain.netuid}: register it first",))
    releases = None
    if policy.releases.require_published:
        try:
            releases = read_releases(chain, policy.releases)
        except ChainError as e:
            problems.append(f"the chain's releases cannot be read, so validators refuse every build for now: {e}")
    local = None
    if me.endpoint is None:
        problems.append("this hotkey announces no endpoint: validators cannot reach it (start the miner)")
    else:
        local = await appraise_self(wallet, me, policy=policy, models=models, releases=releases, timeout=timeout, workload=workload)
    found: list[Finding] = []
    if ask_validators:
        vals = [n for n in mg.neurons if n.validator_permit and n.endpoint is not None and n.hotkey != hotkey]
        found = list(await asyncio.gather(*(ask_validator(wallet, v, timeout=timeout) for v in vals)))
    return Diagnosis(hotkey, me.uid, me.endpoint.url if me.endpoint else None, releases, local, tuple(found), tuple(problems))


def render(d: Diagnosis) -> list[str]:
    """The diagnosis in plain words, a line each."""
    out = [f"miner {d.hotkey}" + (f" (uid {d.uid}, serving {d.endpoint})" if d.uid is not None else "")]
    for p in d.problems:
        out.append(f"  problem: {p}")
    if d.releases is not None:
        out.append(f"  releases: {len(d.releases.releases)} published by {d.releases.publisher} as of block {d.releases.block}")
    findings = ([d.local] if d.local else []) + list(d.validators)
    for f in findings:
        who = f.source if f is d.local else f"validator {f.source}" + (" (signed answer)" if f.signed else "")
        out.append(f"  {who}: {f.verdict.upper()} — {f.reason}")
        if f.message and f.reason != Reason.OK:
            out.append(f"      why: {f.message}")
        out.append(f"      what to do: {f.advice}")
        if f.details.get("verified_needed"):
            out.append(f"      it earns after {f.details['verified_needed']} more verified answers in a row")
    return out
