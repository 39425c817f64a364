"""A local network of real processes for tests and benchmarks: honest miners, hostile miners, one chain.

``start(dir, honest=..., hostile=...)`` registers every member on a fresh
embedded chain, starts the honest miners (``python -m omron_tee.miner``,
simulated enclaves) and one process of hostile miners
(``python -m omron_tee.devnet.hostile``), waits until all answer, and
announces the hostile ones. ``HostileNet.stop()`` ends every process. Loopback
only. The ``relay`` miner relays the first honest miner's enclave; two
hotkeys present one ``shared-enclave``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import bittensor as bt

from omron_tee.attestation.validate.policy import SgxPolicy
from omron_tee.chain.base import Endpoint
from omron_tee.chain.embedded import EmbeddedChain
from omron_tee.config import create_wallet, dev_attestation_key_path
from omron_tee.devnet.hostile import BEHAVIOURS
from omron_tee.devnet.processes import free_port, stop_all, wait_serving
from omron_tee.enclave.measurement import code_digest

NETUID = 1
# The hostile miners, by name; "shared-enclave" backs two hotkeys.
HOSTILE = {b: b for b in BEHAVIOURS if b != "shared-enclave"} | {"shared-1": "shared-enclave", "shared-2": "shared-enclave"}


def honest_names(n: int) -> tuple[str, ...]:
    return tuple(f"honest-{chr(ord('a') + i)}" for i in range(n))


@dataclass
class Member:
    name: str
    behaviour: str  # "honest" or a hostile behaviour
    wallet: bt.Wallet
    uid: int
    port: int

    @property
    def hotkey(self) -> str:
        return self.wallet.hotkey.ss58_address


@dataclass
class HostileNet:
    dir: Path
    chain_path: Path
    wallet_path: Path
    chain: EmbeddedChain
    validator_wallet: bt.Wallet
    members: dict[str, Member] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)
    served_by: dict[str, subprocess.Popen] = field(default_factory=dict)  # member name -> its process

    def by_hotkey(self, hotkey: str) -> Member:
        return next(m for m in self.members.values() if m.hotkey == hotkey)

    def validator(self, scores_path: Path, *, timeout: float = 1.0, policy=None, batch: int = 1, **prober_kw):
        """An in-process Validator over this network (create it inside the event loop that uses it)."""
        from omron_tee.models.registry import ModelRegistry
        from omron_tee.validator.core import Validator
        from omron_tee.validator.prober import Prober
        from omron_tee.workloads import default_workloads
        from omron_tee.validator.neuron import build_verifiers, local_dev_policy
        from omron_tee.validator.scoring import ScoreBook
        from omron_tee.wire.auth import Signer
        from omron_tee.wire.client import SignedClient

        models = ModelRegistry.builtin()
        if policy is None:
            # This network's simulated enclaves, and an SGX section (allowing no enclave) as a production validator
            # has one: evidence of a type with no section is refused unread, and the hostile miners' SGX evidence
            # must meet the SGX verifier, not that gate.
            policy = replace(local_dev_policy(self.chain_path, models), sgx=SgxPolicy())
        client = SignedClient(Signer(self.validator_wallet), timeout=timeout)
        prober = Prober(client, policy=policy, verifiers=build_verifiers(policy), models=models, workloads=default_workloads(), timeout=timeout, seed=0,
                        **prober_kw)
        return Validator(chain=self.chain, wallet=self.validator_wallet, prober=prober, scores=ScoreBook(scores_path), weights_interval=5,
                         batch=batch)

    def wallet_args(self, name: str) -> list[str]:
        return ["--wallet.name", name, "--wallet.hotkey", "default", "--wallet.path", str(self.wallet_path)]

    def chain_args(self) -> list[str]:
        return ["--netuid", str(NETUID), "--subtensor.network", "embedded", "--chain.path", str(self.chain_path)]

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in (self.dir / "logs").glob("*.log"))

    def stop(self) -> None:
        stop_all(self.procs)
        self.chain.close()


def _spawn(net: HostileNet, cmd: list[str], log: str) -> subprocess.Popen:
    out = open(net.dir / "logs" / f"{log}.log", "ab")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=net.dir)
    out.close()
    net.procs.append(p)
    return p


def _wait_healthy(net: HostileNet, members: list[Member], timeout: float = 90.0) -> None:
    wait_serving({m.name: m.port for m in members}, net.served_by, timeout=timeout, tail=lambda name: net.logs()[-3000:])





def start(d: Path, *, honest: int = 2, hostile: dict[str, str] | None = None, vectors_dir: Path | None = None,
          variants: dict[str, str] | None = None) -> HostileNet:
    """The network in folder ``d`` (``hostile``: name -> behaviour; default every behaviour once; ``variants``: honest
    miner name -> a development build variant it runs, so its measurement differs from this release's)."""
    hostile = HOSTILE if hostile is None else hostile
    (d / "logs").mkdir(parents=True, exist_ok=True)
    chain_path, wallet_path = d / "chain.sqlite", d / "wallets"
    chain = EmbeddedChain(NETUID, path=chain_path, block_time=0.05, tempo=20, weights_rate_limit=5)
    vw = create_wallet("validator", "default", wallet_path)
    chain.register(vw, stake=1000.0)
    net = HostileNet(d, chain_path, wallet_path, chain, vw)
    names = honest_names(honest)
    for name, behaviour in [*((h, "honest") for h in names), *hostile.items()]:
        w = create_wallet(f"miner-{name}", "default", wallet_path)
        net.members[name] = Member(name, behaviour, w, chain.register(w), free_port())
    try:
        for name in names:
            m = net.members[name]
            net.served_by[name] = _spawn(net, [sys.executable, "-m", "omron_tee.miner", *net.chain_args(), *net.wallet_args(f"miner-{name}"),
                                               "--axon.port", str(m.port), "--enclave", "simulated", "--zk.off",
                                               *(("--dev.measurement_variant", variants[name]) if name in (variants or {}) else ())], name)
        _wait_healthy(net, [net.members[h] for h in names])  # the honest miners made the dev key by now
        bad = [m for m in net.members.values() if m.behaviour != "honest"]
        if bad:
            ports_file = d / "hostile-ports.json"
            config = {
                "dev_key": str(dev_attestation_key_path(chain_path)),
                "vectors": str(vectors_dir) if vectors_dir else None,
                "ports_file": str(ports_file),
                "miners": [{"behaviour": m.behaviour, "hotkey": m.hotkey, "victim": net.members[names[0]].hotkey} for m in bad],
            }
            (d / "hostile.json").write_text(json.dumps(config))
            hostile_proc = _spawn(net, [sys.executable, "-m", "omron_tee.devnet.hostile", str(d / "hostile.json")], "hostile")
            net.served_by.update({m.name: hostile_proc for m in bad})
            deadline = time.monotonic() + 60
            while not ports_file.exists():
                if time.monotonic() > deadline or hostile_proc.poll() is not None:
                    raise RuntimeError(f"the hostile miners did not start:\n{net.logs()[-3000:]}")
                time.sleep(0.05)
            ports = json.loads(ports_file.read_text())
            for m in bad:
                m.port = int(ports[m.hotkey])
            _wait_healthy(net, bad)
            for m in bad:  # hostile miners announce themselves like anyone (the honest ones did at start)
                chain.serve(m.wallet, Endpoint("127.0.0.1", m.port))
        code_digest.cache_clear()
        code_digest()  # the simulated measurement covers the sources as the miners measured them
    except BaseException:
        net.stop()
        raise
    return net
