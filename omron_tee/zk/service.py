"""Loading the provers a miner serves and the verifiers a validator checks with.

Both come from the circuit cache (``omron-tee circuits build``), for every
model that declares the zk proof system. ``build=True`` builds what is
missing (a few seconds per small model); otherwise a model whose circuit is
not built is simply served or probed with the TEE proof system only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omron_tee.config import is_local
from omron_tee.errors import ConfigError, OmronTeeError
from omron_tee.models.registry import ModelRegistry
from omron_tee.zk.circuits import Circuit, build_circuit

log = logging.getLogger("omron_tee.zk")


def zk_model_ids(registry: ModelRegistry, model_ids: list[str] | None = None) -> list[str]:
    ids = model_ids if model_ids else registry.ids()
    return [m for m in ids if "zk" in registry.get(m).proof_systems and registry.get(m).runtime == "onnx"]


def load_circuits(
    registry: ModelRegistry,
    model_ids: list[str] | None = None,
    *,
    cache_dir: str | Path | None = None,
    srs_path: str | Path | None = None,
    network: str = "embedded",
    build: bool = False,
    proving_key: bool = True,
    input_visibility: str = "private",
) -> dict[str, Circuit]:
    """Circuits of the zk models among ``model_ids``: a ceremony SRS if given, else the development SRS (embedded only)."""
    out: dict[str, Circuit] = {}
    ids = zk_model_ids(registry, model_ids)
    if ids and srs_path is None and not is_local(network):
        log.info("zk proofs off: no ceremony SRS configured (--zk.srs PATH) for %s", ", ".join(ids))
        return out
    for m in ids:
        try:
            out[m] = build_circuit(
                registry.get(m),
                cache_dir=cache_dir,
                srs_path=srs_path,
                dev_network=None if srs_path else network,
                build=build,
                proving_key=proving_key,
                input_visibility=input_visibility,
            )
        except ConfigError:
            raise
        except OmronTeeError as e:
            log.info("model %s: zk proofs off (%s: %s)", m, e.reason, e)
    return out


def load_provers(registry: ModelRegistry, model_ids: list[str] | None = None, **kw) -> dict:
    from omron_tee.zk.prover import ZkProver

    return {m: ZkProver(c) for m, c in load_circuits(registry, model_ids, **kw).items()}


def load_verifiers(registry: ModelRegistry, model_ids: list[str] | None = None, **kw) -> dict:
    from omron_tee.zk.verifier import ZkVerifier

    return {m: ZkVerifier(c) for m, c in load_circuits(registry, model_ids, proving_key=False, **kw).items()}


def add_validator_args(p) -> None:
    """The validator neuron's zk flags (omron_tee/validator/neuron.py)."""
    z = p.add_argument_group("zk proofs (EZKL; docs/ZK.md)")
    z.add_argument("--zk.share", dest="zk_share", type=float, default=0.0,
                   help="share of benchmark probes sent as zk requests to miners that offer zk (default: %(default)s, off)")
    z.add_argument("--zk.timeout", dest="zk_timeout", type=float, default=60.0,
                   help="seconds a miner has to prove and answer a zk probe (default: %(default)s)")
    z.add_argument("--zk.circuits", dest="zk_circuits", default=None,
                   help="circuit cache (default: $OMRON_TEE_CIRCUITS or ~/.omron-tee/circuits); missing circuits are built")
    z.add_argument("--zk.srs", dest="zk_srs", default=None,
                   help="ceremony SRS file; without it zk probes run only on the embedded network (development SRS)")
    z.add_argument("--zk.verify_fraction", dest="zk_verify_fraction", type=float, default=1.0,
                   help="share of zk proofs verified (the output is always recomputed); one forged proof found is a strike "
                   "(score 0, then probation), so a lower share still deters forgery; verifying costs milliseconds "
                   "against the miner's second of proving, hence all by default (default: %(default)s)")
    z.add_argument("--zk.input_visibility", dest="zk_input_visibility", default="private", choices=["private", "hashed", "public"],
                   help="the input in zk proofs, as the miners' circuits have it (default: %(default)s)")


def validator_verifiers(args, registry: ModelRegistry, network: str) -> dict:
    """Verifiers for the validator's zk probes, or none when ``--zk.share`` is 0."""
    if not 0 < getattr(args, "zk_verify_fraction", 1.0) <= 1:
        raise ConfigError("--zk.verify_fraction must be in (0, 1]")
    if getattr(args, "zk_share", 0.0) <= 0:
        return {}
    if not 0 < args.zk_share <= 1:
        raise ConfigError("--zk.share must be between 0 and 1")
    verifiers = load_verifiers(registry, cache_dir=args.zk_circuits, srs_path=args.zk_srs, network=network, build=True,
                               input_visibility=args.zk_input_visibility)
    if verifiers:
        log.info("zk probes: %.0f%% of probes to miners offering zk, for %s", args.zk_share * 100, ", ".join(verifiers))
    return verifiers
