"""The validator neuron: flags, policy, the benchmark loop, weights, and the third-party API."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import replace
import sys
from pathlib import Path

import bittensor as bt

from omron_tee.attestation.validate.policy import Policy, SimulatedPolicy
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.attestation.verify.simulated import SimulatedVerifier
from omron_tee.chain import connect
from omron_tee.chain.base import Chain, Endpoint
from omron_tee.channel.hpke import KemSuite
from omron_tee.config import embedded_chain_path, DEFAULT_HOME, check_port_free, run_async, add_standard_args, dev_attestation_key_path, is_local, load_wallet, network_of, setup_logging, tune_allocator
from omron_tee.enclave.measurement import release_builds, trusted_app_measurement
from omron_tee.enclave.simulated import dev_public_key
from omron_tee.errors import ConfigError, OmronTeeError
from omron_tee.models.llama import default_llm_missing, default_spec, gguf_flag_specs
from omron_tee.models.registry import ModelRegistry
from omron_tee.validator.api.quota import ADMIT_MODES, AddressQuota, ApiQuota, metagraph_quota
from omron_tee.validator.api.routes import build_api
from omron_tee.validator.core import Event, ProbeEvent, Validator, WeightsEvent
from omron_tee.validator.prober import Prober
from omron_tee.validator.scoring import ScoreBook
from omron_tee.wire.auth import Admission, RequestVerifier, Signer
from omron_tee.wire.client import SignedClient
from omron_tee.protocol import MAX_BATCH
from omron_tee.wire.server import QuietServer, server_config
from omron_tee.workloads import default_workloads
from omron_tee.zk import service as zk_service


def build_parser(prog: str = "validator.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="omron-tee validator: attests miners' enclaves, sends them sealed benchmark inputs, "
        "checks the answers, scores miners on correctness and speed, sets weights, and relays "
        "third parties' end-to-end encrypted requests.",
    )
    add_standard_args(p)
    v = p.add_argument_group("validator")
    v.add_argument("--validator.policy", dest="policy", default=None,
                   help="attestation policy file (TOML, see docs/POLICY.md); required off local networks. "
                   "On the embedded chain the default accepts simulated enclaves of this release.")
    v.add_argument("--validator.interval", dest="interval", type=float, default=2.0,
                   help="seconds between two probes of one miner, randomised by ±50%%; a failing miner waits up to 16 times longer (default: %(default)s)")
    v.add_argument("--validator.max_in_flight", dest="max_in_flight", type=int, default=64,
                   help="probes in flight at once over all miners; each miner has its own lane, so a slow one delays only itself (default: %(default)s)")
    v.add_argument("--validator.weights_interval", dest="weights_interval", type=int, default=100, help="blocks between weight settings (default: %(default)s)")
    v.add_argument("--validator.top_k", dest="top_k", type=int, default=16, help="only the top K miners get weight (default: %(default)s)")
    v.add_argument("--validator.timeout", dest="timeout", type=float, default=5.0, help="seconds a miner has to answer (default: %(default)s)")
    v.add_argument("--validator.reuse_sessions", dest="reuse_sessions", action="store_true",
                   help="reuse a miner's attested session for --validator.session_ttl seconds instead of a fresh attestation per request")
    v.add_argument("--validator.session_ttl", dest="session_ttl", type=float, default=60.0, help="(default: %(default)s)")
    v.add_argument("--validator.fresh_in_band", dest="fresh_in_band", action="store_true",
                   help="with --validator.reuse_sessions: every request still proves freshness, by evidence for its own nonce that the "
                   "enclave returns with the answer (one round trip instead of two)")
    v.add_argument("--validator.batch", dest="batch", type=int, default=1, choices=range(1, MAX_BATCH + 1), metavar=f"1..{MAX_BATCH}",
                   help="probes per miner per turn; more than one travel as one batch (one signed request and, with "
                        "--validator.fresh_in_band, one evidence proving each probe fresh; docs/ARCHITECTURE.md) (default: %(default)s)")
    v.add_argument("--validator.kem", dest="kem", default=KemSuite.X25519.value, choices=[k.value for k in KemSuite], help="HPKE suite (default: %(default)s)")
    v.add_argument("--validator.api_ip", dest="api_ip", default="127.0.0.1", help="third-party API address (default: %(default)s)")
    v.add_argument("--validator.api_port", dest="api_port", type=int, default=8092, help="third-party API port; 0 turns the API off (default: %(default)s)")
    v.add_argument("--validator.api_admit", dest="api_admit", choices=ADMIT_MODES, default="anyone",
                   help="who may call the API: any hotkey, registered hotkeys of the subnet, or staked ones (rate by stake share) (default: %(default)s)")
    v.add_argument("--validator.api_rate", dest="api_rate", type=float, default=20.0, help="requests/s per caller hotkey (default: %(default)s)")
    v.add_argument("--validator.api_burst", dest="api_burst", type=float, default=40.0, help="burst per caller hotkey (default: %(default)s)")
    v.add_argument("--validator.api_global_rate", dest="api_global_rate", type=float, default=200.0,
                   help="requests/s for all callers together, so fresh hotkeys share one budget (default: %(default)s)")
    v.add_argument("--validator.api_address_rate", dest="api_address_rate", type=float, default=50.0,
                   help="requests/s per network address (IPv6: per /64), burst twice that, checked before a request is read (default: %(default)s)")
    v.add_argument("--validator.api_public_rate", dest="api_public_rate", type=float, default=100.0,
                   help="requests/s to the unsigned routes (status, metrics, dashboard, audit log) from every address together, "
                        "burst twice that (default: %(default)s)")
    v.add_argument("--validator.api_max_concurrency", dest="api_max_concurrency", type=int, default=512,
                   help="connections and requests in flight together on the API, past which it answers 503 (default: %(default)s)")
    v.add_argument("--chain.dev_stake", dest="dev_stake", type=float, default=1000.0,
                   help="embedded chain only: stake (TAO) this validator gives itself from the development faucet when it has none, so it holds a permit (default: %(default)s)")
    v.add_argument("--neuron.data_dir", dest="data_dir", default=str(DEFAULT_HOME / "validator"), help="where scores persist (default: %(default)s)")
    g = p.add_argument_group("LLM (see docs/LLM.md)")
    g.add_argument("--validator.llm", dest="validator_llm", choices=["auto", "on", "off"], default="auto",
                   help="offer and score the default LLM (gemma3-270m): 'auto' does when llama-cpp-python and the model package "
                   "are installed (default: %(default)s)")
    g.add_argument("--llm.gguf", dest="llm_gguf", action="append", default=[], metavar="PATH[=ID]",
                   help="also offer and score this GGUF model, pinned by its sha256; repeatable")
    g.add_argument("--validator.llm_share", dest="llm_share", type=float, default=0.2,
                   help="share of the probes of a miner that offers an LLM that are LLM completions (default: %(default)s)")
    g.add_argument("--validator.llm_tokens", dest="llm_tokens", type=int, default=16,
                   help="tokens per LLM benchmark completion (default: %(default)s)")
    g.add_argument("--validator.llm_timeout", dest="llm_timeout", type=float, default=30.0,
                   help="seconds an LLM miner has for a whole benchmark completion (default: %(default)s)")
    zk_service.add_validator_args(p)  # zk probes (docs/ZK.md)
    return p


def local_dev_policy(chain_path: str | Path, models: ModelRegistry) -> Policy:
    """The embedded chain's default: simulated enclaves of this release, signed by this network's dev key."""
    measurement = trusted_app_measurement([(s.model_id, s.sha256) for s in models.specs()])
    return Policy(
        simulated=SimulatedPolicy(
            allow=True,
            trusted_keys=frozenset([dev_public_key(dev_attestation_key_path(chain_path))]),
            measurements=frozenset([measurement]),
        )
    )


def build_verifiers(policy: Policy, *, background: bool = False) -> VerifierRegistry:
    """Every verifier this build has, trusting the policy's development keys for simulated evidence. ``background``
    (the validator's): collateral is fetched in the background, so the event loop that times every probe never
    waits on Intel, AMD or NVIDIA; a one-off check (doctor, a client) waits for it instead."""
    try:
        from omron_tee.attestation.defaults import default_registry
    except ImportError:  # pragma: no cover - the real-TEE verifiers are part of the package
        return VerifierRegistry([SimulatedVerifier(list(policy.simulated.trusted_keys))])
    return default_registry(simulated_keys=list(policy.simulated.trusted_keys), background=background)


def load_policy(args: argparse.Namespace, network: str, models: ModelRegistry) -> Policy:
    if args.policy:
        policy = Policy.load(args.policy)
    elif is_local(network):
        return local_dev_policy(args.chain_path, models)
    else:
        raise ConfigError(f"on '{network}' the validator needs --validator.policy FILE naming the trusted builds (see docs/POLICY.md)")
    if policy.simulated.allow and not is_local(network):
        raise ConfigError(f"policy {args.policy} accepts simulated enclaves, which is only allowed on a local network")
    return policy


def add_llms(args: argparse.Namespace, models: ModelRegistry, policy: Policy, *, local: bool) -> Policy:
    """Add the LLMs the flags ask for to ``models``; on a local network, also allow this release's
    LLM-serving builds (their measurement covers the LLM too). Returns the policy."""
    mode = getattr(args, "validator_llm", "off")
    specs = [default_spec()] if mode == "on" or (mode == "auto" and not default_llm_missing()) else []
    specs += gguf_flag_specs(getattr(args, "llm_gguf", []) or [])
    if not specs:
        return policy
    onnx = [(s.model_id, s.sha256) for s in models.specs()]
    for s in specs:
        models.add(s)
    if local and policy.simulated.allow:
        extra = {m for _, m in release_builds(onnx, [(s.model_id, s.sha256) for s in specs])}
        policy = replace(policy, simulated=replace(policy.simulated, measurements=policy.simulated.measurements | extra))
    return policy


def log_event(log: logging.Logger, ev: Event) -> None:
    if isinstance(ev, ProbeEvent):
        o = ev.result.outcome
        level = logging.INFO if o.ok else logging.WARNING
        if ev.held:
            log.log(level, "uid %-3d %-8s %-24s %s | score %.3f, this outcome scored once the weights being set are in", o.uid,
                    ev.result.model_id[:8], o.reason, ev.result.message, ev.old_score)
        else:
            log.log(level, "uid %-3d %-8s %-24s %s | score %.3f -> %.3f", o.uid, ev.result.model_id[:8], o.reason, ev.result.message, ev.old_score,
                    ev.new_score)
    elif isinstance(ev, WeightsEvent):
        if ev.error:
            log.warning("weights not set at block %d: %s", ev.block, ev.error)
        else:
            log.info("weights set at block %d: %s", ev.block, ", ".join(f"uid {u}: {w:.3f}" for u, w in ev.weights.as_dict().items()))


async def serve_forever(args: argparse.Namespace, log: logging.Logger) -> None:
    network = network_of(args)
    wallet: bt.Wallet = load_wallet(args)
    chain_path = embedded_chain_path(args) if is_local(network) else None  # checked before anything is written beside it
    # Configuration first: a mistake in it is named at once, not after the chain has answered.
    if args.max_in_flight < 1:
        raise ConfigError(f"--validator.max_in_flight {args.max_in_flight} must be at least 1")
    models = ModelRegistry.builtin()
    policy = load_policy(args, network, models)
    policy = add_llms(args, models, policy, local=is_local(network))  # LLMs on offer and scored (docs/LLM.md)
    chain: Chain = connect(network, args.netuid, chain_path=chain_path)
    hotkey = wallet.hotkey.ss58_address
    if is_local(network):
        chain.register(wallet)
        mine = chain.metagraph().by_hotkey(hotkey)
        if mine is not None and mine.stake <= 0 and args.dev_stake > 0:
            chain.add_stake(wallet, args.dev_stake)  # type: ignore[attr-defined]  # embedded chain's dev faucet
            log.info("embedded chain: staked %.0f TAO from the development faucet so this validator holds a permit", args.dev_stake)
    neuron = chain.metagraph().by_hotkey(hotkey)
    if neuron is None:
        raise ConfigError(f"validator hotkey {hotkey} is not registered on netuid {args.netuid}")
    if not neuron.validator_permit:
        log.warning("hotkey %s holds no validator permit yet: miners will refuse its requests until it has enough stake", hotkey)
    client = SignedClient(Signer(wallet), timeout=args.timeout)
    workloads = default_workloads(zk_verifiers=zk_service.validator_verifiers(args, models, network), llm_tokens=args.llm_tokens,
                                  zk_verify_fraction=args.zk_verify_fraction)
    prober = Prober(client, policy=policy, verifiers=build_verifiers(policy, background=True), models=models, workloads=workloads, kem=KemSuite.parse(args.kem),
                    timeout=args.timeout, timeouts={"zk": args.zk_timeout, "llm": args.llm_timeout},
                    shares={"zk": args.zk_share, "llm": args.llm_share}, reuse_sessions=args.reuse_sessions, session_ttl=args.session_ttl,
                    fresh_in_band=args.fresh_in_band)
    scores = ScoreBook(Path(args.data_dir) / f"scores-{network}-{args.netuid}-{hotkey}.sqlite")
    validator = Validator(chain=chain, wallet=wallet, prober=prober, scores=scores, weights_interval=args.weights_interval,
                          top_k=args.top_k, batch=args.batch, on_event=lambda ev: log_event(log, ev))
    log.info("validator uid %d hotkey %s on %s netuid %d; %d miners with scores restored", neuron.uid, hotkey, network, args.netuid, len(scores.records))
    server_task = None
    if args.api_port:
        check_port_free(args.api_ip, args.api_port, "--validator.api_port")
        quota_kw = dict(rate=args.api_rate, burst=args.api_burst, global_rate=args.api_global_rate, global_burst=2 * args.api_global_rate, admit=args.api_admit)
        quota = metagraph_quota(validator, **quota_kw) if args.api_admit != "anyone" else ApiQuota(**quota_kw)
        if args.api_max_concurrency < 1:
            raise ConfigError("--validator.api_max_concurrency must be at least 1")
        addresses = AddressQuota(rate=args.api_address_rate, burst=2 * args.api_address_rate, public_rate=args.api_public_rate,
                                 public_burst=2 * args.api_public_rate)
        api = build_api(validator, RequestVerifier(hotkey, Admission.anyone()), quota=quota, addresses=addresses)
        server = QuietServer(server_config(api, host=args.api_ip, port=args.api_port, max_concurrency=args.api_max_concurrency))
        server_task = asyncio.create_task(server.serve())
        if is_local(network):
            chain.serve(wallet, Endpoint(args.api_ip, args.api_port))
        log.info("third-party API on http://%s:%d", args.api_ip, args.api_port)
    # Probes of every workload run on one lane per miner (Validator.probe_continuously), so no
    # miner, however slow, delays the probing of another; this loop keeps the permit in
    # view and sets weights.
    stop: asyncio.Event | None = None
    lanes: asyncio.Task | None = None
    try:
        while True:
            mg = await validator.sync_async()  # off the loop: the lanes' probes are in flight on it
            me = mg.by_hotkey(hotkey)
            permitted = me is not None and me.validator_permit
            if not permitted and lanes is not None:
                stop.set()  # type: ignore[union-attr]
                await lanes
                lanes = None
            if not permitted:
                log.warning("this hotkey holds no validator permit: miners would refuse it, so no probing now")
            elif validator.miners():
                if lanes is None:
                    stop = asyncio.Event()
                    lanes = asyncio.create_task(validator.probe_continuously(stop, interval=args.interval, max_in_flight=args.max_in_flight))
            else:
                log.info("no miner serves yet; waiting")
            if await asyncio.to_thread(validator.due_for_weights):
                await validator.set_weights()  # its chain calls off the loop: the lanes probe on meanwhile
            await asyncio.sleep(args.interval)
    finally:
        if lanes is not None:
            stop.set()  # type: ignore[union-attr]
            await lanes
        scores.close()
        await client.aclose()
        if server_task:
            server_task.cancel()


def main(argv: list[str] | None = None, *, prog: str = "validator.py") -> int:
    args = build_parser(prog).parse_args(argv)
    log = setup_logging(args, "validator")
    tune_allocator()
    try:
        run_async(serve_forever(args, log))
    except OmronTeeError as e:
        print(f"validator: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
