"""A local network of real processes on loopback, shared by the end-to-end tests.

One embedded chain in a temporary folder; wallets registered in a fixed uid
order; miner subprocesses started with ``python -m omron_tee.miner`` (the same
flags as the localnet uses), each with its own log file; one registered miner
whose port has nothing listening. Tests drive in-process validators against
it. The ``crasher`` miner is killed by a test, so tests that need every
miner alive must not rely on it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import bittensor as bt
import pytest

from omron_tee.chain.base import Endpoint
from omron_tee.chain.embedded import EmbeddedChain
from omron_tee.config import create_wallet
from omron_tee.devnet import processes
from omron_tee.enclave.measurement import code_digest

NETUID = 1
BLOCK_TIME = 0.05
SLOW_DELAY = 1.5  # the slow miner's extra seconds: longer than the tests' prober timeout
PROBE_TIMEOUT = 0.6
CRASH_DELAY = 1.0

# Order = uid order (uid 0 is the validator). Fresh score books rank ties in this order.
ROLES: dict[str, tuple[str, ...]] = {
    "slow": ("--dev.delay", str(SLOW_DELAY)),
    "honest": (),
    "wrong": ("--dev.wrong_output",),
    "unapproved": ("--dev.measurement_variant", "unapproved-build"),
    "crasher": ("--dev.delay", str(CRASH_DELAY)),
}


@dataclass
class Miner:
    role: str
    wallet: bt.Wallet
    uid: int
    port: int
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def hotkey(self) -> str:
        return self.wallet.hotkey.ss58_address

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


@dataclass
class Net:
    dir: Path
    chain_path: Path
    wallet_path: Path
    chain: EmbeddedChain
    validator_wallet: bt.Wallet
    client_wallet: bt.Wallet
    miners: dict[str, Miner] = field(default_factory=dict)

    def wallet_args(self, name: str) -> list[str]:
        return ["--wallet.name", name, "--wallet.hotkey", "default", "--wallet.path", str(self.wallet_path)]

    def chain_args(self) -> list[str]:
        return ["--netuid", str(NETUID), "--subtensor.network", "embedded", "--chain.path", str(self.chain_path)]

    policy_file: Path | None = None  # the network's policy as a file, for validator processes
    probe_timeout: float = PROBE_TIMEOUT
    slow_delay: float = SLOW_DELAY
    crash_delay: float = CRASH_DELAY

    def policy(self):
        from omron_tee.models.registry import ModelRegistry
        from omron_tee.validator.neuron import local_dev_policy

        return local_dev_policy(self.chain_path, ModelRegistry.builtin())

    def validator(self, scores_path: Path, *, timeout: float = PROBE_TIMEOUT, seed: int = 0, **prober_kw):
        """An in-process Validator over this network (create it inside the event loop that uses it)."""
        from omron_tee.models.registry import ModelRegistry
        from omron_tee.validator.core import Validator
        from omron_tee.validator.prober import Prober
        from omron_tee.validator.neuron import build_verifiers
        from omron_tee.validator.scoring import ScoreBook
        from omron_tee.wire.auth import Signer
        from omron_tee.wire.client import SignedClient

        policy = self.policy()
        client = SignedClient(Signer(self.validator_wallet), timeout=timeout)
        prober = Prober(client, policy=policy, verifiers=build_verifiers(policy), models=ModelRegistry.builtin(), timeout=timeout, seed=seed, **prober_kw)
        return Validator(chain=self.chain, wallet=self.validator_wallet, prober=prober, scores=ScoreBook(scores_path), weights_interval=10)

    def neuron(self, role: str):
        return self.chain.metagraph().by_hotkey(self.miners[role].hotkey)

    def miner_logs(self) -> str:
        return "\n".join(m.log.read_text(errors="replace") for m in self.miners.values() if m.log.exists())


def start_miner(net: Net, m: Miner, flags: tuple[str, ...]) -> None:
    cmd = [sys.executable, "-m", "omron_tee.miner", *net.chain_args(), *net.wallet_args(f"miner-{m.role}"),
           "--axon.port", str(m.port), "--enclave", "simulated", "--logging.debug", *flags]
    out = open(m.log, "ab")
    m.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=net.dir)
    out.close()


def wait_serving(miners: list[Miner], timeout: float = 60.0) -> None:
    processes.wait_serving({m.role: m.port for m in miners}, {m.role: m.proc for m in miners if m.proc is not None},
                           timeout=timeout, tail=lambda role: next(m for m in miners if m.role == role).log.read_text()[-2000:])


@pytest.fixture(scope="package")
def net(tmp_path_factory) -> Net:
    d = tmp_path_factory.mktemp("localnet")
    chain_path = d / "chain.sqlite"
    wallet_path = d / "wallets"
    chain = EmbeddedChain(NETUID, path=chain_path, block_time=BLOCK_TIME, tempo=20, weights_rate_limit=10)
    validator = create_wallet("validator", "default", wallet_path)
    assert chain.register(validator, stake=1000.0) == 0
    n = Net(d, chain_path, wallet_path, chain, validator, create_wallet("client", "default", wallet_path))
    (d / "logs").mkdir()
    roles = [*ROLES, "down"]
    # Distinct ports, all held while they are picked: one picked and let go at a time may come back twice,
    # and then "down" is served by another miner (its probe named wrong-receiver, not unreachable).
    holders = [socket.socket() for _ in roles]
    try:
        for s in holders:
            s.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in holders]
    finally:
        for s in holders:
            s.close()
    for role, port in zip(roles, ports):
        w = create_wallet(f"miner-{role}", "default", wallet_path)
        n.miners[role] = Miner(role, w, chain.register(w), port, d / "logs" / f"{role}.log")
    # "down": registered and announced, but nothing listens on its port.
    down = n.miners["down"]
    chain.serve(down.wallet, Endpoint("127.0.0.1", down.port))
    try:
        for role, flags in ROLES.items():
            start_miner(n, n.miners[role], flags)
        wait_serving([n.miners[r] for r in ROLES])
        # The simulated measurement covers the package's sources: recompute it now (the
        # miners just did), in case the code changed since this process first hashed it.
        code_digest.cache_clear()
        code_digest()  # now, not lazily later: the miners measured the code as it is now
        n.policy_file = d / "policy.toml"
        from omron_tee.attestation.validate.policy import simulated_policy_toml as policy_toml

        n.policy_file.write_text(policy_toml(n.policy()))
        yield n
    finally:
        for m in n.miners.values():
            if m.proc is not None and m.proc.poll() is None:
                os.killpg(m.proc.pid, signal.SIGTERM)
        for m in n.miners.values():
            if m.proc is not None:
                try:
                    m.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    m.kill()
        chain.close()
