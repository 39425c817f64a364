"""A whole subnet on one machine: embedded chain, miners as real processes, validators, a client.

Miner roles in the default network (5 miners):
  honest      a simulated enclave of this release, correct and fast
  slow        same build, but adds --dev.delay to every answer
  wrong       same build, but returns wrong outputs
  unapproved  a build whose measurement is not in the validator's policy
  twin        the honest miner's equal: the two should earn the same
Further miners are honest. The validators (uids 0, 1, ...: two by default, with
different stakes) run in this process so that every request, verdict and score
change can be shown as it happens; the chain has commit-reveal on and settles
each epoch by Yuma consensus (docs/SCORING.md).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from omron_tee.chain.embedded import EmbeddedChain
from omron_tee.config import create_wallet
from omron_tee.devnet.processes import StartFailed, free_port, stop_all, wait_serving
from omron_tee.errors import OmronTeeError

NETUID = 1
VALIDATOR_STAKES = (1000.0, 600.0, 400.0, 300.0, 200.0, 150.0, 100.0, 80.0)
TEMPO = 20
REVEAL_PERIOD = 1  # epochs
SLOW_DELAY_S = 0.03
# Validators accept a build this many blocks after the owner published it (1 s at 50 ms blocks):
# on a real subnet, days, so the community can rebuild and inspect a release before it earns.
RELEASE_TIMELOCK_BLOCKS = 20


@dataclass(frozen=True)
class MinerRole:
    name: str
    flags: tuple[str, ...]
    description: str


ROLES = [
    MinerRole("honest", (), "correct and fast"),
    MinerRole("slow", ("--dev.delay", str(SLOW_DELAY_S)), f"correct, {SLOW_DELAY_S * 1000:.0f} ms slower"),
    MinerRole("wrong", ("--dev.wrong_output",), "returns wrong outputs"),
    MinerRole("unapproved", ("--dev.measurement_variant", "unapproved-build"), "measurement not in policy"),
    MinerRole("twin", (), "correct and fast, honest's equal"),
]


def role_for(i: int, roles: list[MinerRole] = ROLES) -> MinerRole:
    return roles[i] if i < len(roles) else MinerRole(f"honest-{i}", (), "correct and fast")


class Console:
    """Live, plain output: one line per event, colour only on a terminal."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stdout.isatty()

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.tty else text

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def step(self, text: str) -> None:
        self.say(self._c("1", "==> ") + text)

    def event(self, text: str, ok: bool) -> None:
        if not self.quiet:
            self.say(("  " + self._c("32", "✓") if ok else "  " + self._c("31", "✗")) + " " + text)


class LocalNet:
    def __init__(self, workdir: Path, n_miners: int, console: Console, *, block_time: float = 0.05, roles: list[MinerRole] = ROLES,
                 n_validators: int = 2) -> None:
        if not 1 <= n_validators <= len(VALIDATOR_STAKES):
            raise OmronTeeError(f"a local network runs 1 to {len(VALIDATOR_STAKES)} validators, not {n_validators}")
        self.n_validators = n_validators
        self.dir = workdir
        self.role_list = roles
        self.n = n_miners
        self.console = console
        self.block_time = block_time
        self.procs: list[subprocess.Popen] = []
        self.roles: dict[str, MinerRole] = {}
        self.uids: dict[str, int] = {}
        self.zk_circuits: Path | None = None  # circuit cache the miners prove from (None: TEE only)

    def setup(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.chain_path = self.dir / "chain.sqlite"
        self.wallet_path = self.dir / "wallets"
        self.chain = EmbeddedChain(NETUID, path=self.chain_path, block_time=self.block_time, tempo=TEMPO, weights_rate_limit=10,
                                   commit_reveal=True, reveal_period=REVEAL_PERIOD)
        self.console.step(f"embedded chain at {self.chain_path} (development chain: {self.block_time * 1000:.0f} ms blocks, tempo {TEMPO}, "
                          f"commit-reveal after {REVEAL_PERIOD} epoch, Yuma consensus)")
        self.validator_wallets, self.validator_uids = [], []
        for i in range(self.n_validators):
            w = create_wallet("localnet-validator" if i == 0 else f"localnet-validator{i + 1}", "default", self.wallet_path)
            self.validator_uids.append(self.chain.register(w, stake=VALIDATOR_STAKES[i]))
            self.validator_wallets.append(w)
        self.validator_wallet = self.validator_wallets[0]  # the one serving the third-party API
        self.client_wallet = create_wallet("localnet-client", "default", self.wallet_path)
        self.miner_wallets = []
        for i in range(self.n):
            w = create_wallet(f"localnet-miner{i}", "default", self.wallet_path)
            uid = self.chain.register(w)
            self.miner_wallets.append(w)
            self.roles[w.hotkey.ss58_address] = role_for(i, self.role_list)
            self.uids[w.hotkey.ss58_address] = uid
        self.publish_release()
        stakes = ", ".join(f"uid {i} {VALIDATOR_STAKES[i]:.0f} TAO" for i in range(self.n_validators))
        self.console.step(f"registered {self.n_validators} validator(s) ({stakes}; permits) and {self.n} miners; keys in {self.wallet_path}")

    def publish_release(self) -> None:
        """The subnet owner publishes this release's builds on chain (``omron-tee release publish`` does the same)."""
        from omron_tee.attestation.evidence import TeeType
        from omron_tee.attestation.validate.releases import Release, release_set_text
        from omron_tee.enclave.measurement import release_builds
        from omron_tee.models.llama import default_spec
        from omron_tee.models.registry import ModelRegistry

        self.owner_wallet = create_wallet("localnet-owner", "default", self.wallet_path)
        self.chain.register(self.owner_wallet)
        self.chain.claim_owner(self.owner_wallet)
        self.owner_hotkey = self.owner_wallet.hotkey.ss58_address
        models = ModelRegistry.builtin()
        shipped = [(s.model_id, s.sha256) for s in models.specs()]
        llms = [(default_spec().model_id, default_spec().sha256)]  # the builds with the default LLM, as `policy init` allows
        labels = ("localnet", "localnet-llm", "localnet-llm-only")
        builds = [Release(TeeType.SIMULATED, m, label) for (_, m), label in zip(release_builds(shipped, llms), labels)]
        self.chain.commit(self.owner_wallet, release_set_text(builds))  # one commitment, a line (field) per build
        self.release_block = self.chain.block()
        self.console.step(f"the subnet owner published this release's builds on chain at block {self.release_block}; validators accept them "
                          f"{RELEASE_TIMELOCK_BLOCKS} blocks later (`omron-tee release list --chain.path {self.chain_path}`)")

    def start_miners(self) -> None:
        self.console.step(f"starting {self.n} miner processes (simulated enclaves)")
        self.ports = []
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        for i, w in enumerate(self.miner_wallets):
            port = free_port()
            role = role_for(i, self.role_list)
            cmd = [
                sys.executable, "-m", "omron_tee.miner",
                "--netuid", str(NETUID), "--subtensor.network", "embedded", "--chain.path", str(self.chain_path),
                "--wallet.name", f"localnet-miner{i}", "--wallet.hotkey", "default", "--wallet.path", str(self.wallet_path),
                "--axon.port", str(port), "--enclave", "simulated", *role.flags,
                *(("--zk.circuits", str(self.zk_circuits)) if self.zk_circuits else ("--zk.off",)),
            ]
            out = open(logs / f"miner{i}.log", "wb")
            self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            self.ports.append(port)
            self.console.say(f"    uid {self.uids[w.hotkey.ss58_address]}  {role.name:<11} {role.description:<28} port {port}  log {logs / f'miner{i}.log'}")

    def wait_for_miners(self, timeout: float = 60.0) -> None:
        try:
            wait_serving({f"miner {i}": port for i, port in enumerate(self.ports)}, {f"miner {i}": p for i, p in enumerate(self.procs)},
                         timeout=timeout, tail=lambda name: (self.dir / "logs" / f"miner{name.split()[-1]}.log").read_text()[-800:])
        except StartFailed as e:
            raise OmronTeeError(f"{e} (see {self.dir / 'logs'})") from None
        self.console.step("all miners serving")

    def stop(self) -> None:
        stop_all(self.procs)
        if hasattr(self, "chain"):
            self.chain.close()
