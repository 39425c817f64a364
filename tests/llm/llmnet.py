"""Helpers for tests/llm: an in-process LLM network on loopback: embedded chain, LLM miners' HTTP servers, a validator and its API.

Everything runs in one event loop (``asyncio.run`` inside each test) with
real uvicorn servers, real btauth/1 signatures and real HPKE; the model is the
fake LLM (``omron_tee.models.testing``), shared by the miners' trusted apps
and the validator's reference, so a test takes milliseconds of generation.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from omron_tee.attestation.validate.policy import Policy, SimulatedPolicy  # noqa: E402
from omron_tee.attestation.verify.registry import VerifierRegistry  # noqa: E402
from omron_tee.attestation.verify.simulated import SimulatedVerifier  # noqa: E402
from omron_tee.chain.base import Endpoint  # noqa: E402
from omron_tee.chain.embedded import EmbeddedChain  # noqa: E402
from omron_tee.config import create_wallet  # noqa: E402
from omron_tee.devnet.processes import free_port  # noqa: E402
from omron_tee.enclave.measurement import trusted_app_measurement  # noqa: E402
from omron_tee.enclave.simulated import SimulatedBackend, dev_public_key  # noqa: E402
from omron_tee.miner.server import build_app  # noqa: E402
from omron_tee.enclave.dev_faults import DevFaults  # noqa: E402
from omron_tee.miner.trusted_app import TrustedApp  # noqa: E402
from omron_tee.models.registry import ModelRegistry  # noqa: E402
from omron_tee.validator.api.routes import build_api  # noqa: E402
from omron_tee.validator.core import Validator  # noqa: E402
from omron_tee.validator.prober import Prober  # noqa: E402
from omron_tee.validator.scoring import ScoreBook  # noqa: E402
from omron_tee.wire.auth import Admission, RequestVerifier, Signer  # noqa: E402
from omron_tee.wire.client import SignedClient  # noqa: E402
from omron_tee.workloads import default_workloads  # noqa: E402

MODEL = "fake-llm"


@dataclass
class MinerHandle:
    name: str
    wallet: object
    uid: int
    app: TrustedApp
    port: int

    @property
    def hotkey(self) -> str:
        return self.wallet.hotkey.ss58_address


@dataclass
class LlmNet:
    dir: Path
    registry: ModelRegistry
    chain: EmbeddedChain
    policy: Policy
    verifiers: VerifierRegistry
    validator: Validator
    client_wallet: object
    api_url: str = ""
    miners: dict[str, MinerHandle] = field(default_factory=dict)
    _servers: list = field(default_factory=list)

    @property
    def spec(self):
        return self.registry.get(MODEL)


async def _serve(app, port: int):
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task


@contextlib.asynccontextmanager
async def llm_net(tmp: Path, registry: ModelRegistry, roles: dict[str, DevFaults], *, api: bool = True):
    """Miners named by ``roles`` (each with its dev faults), a validator (uid 0) and its API."""
    tmp.mkdir(parents=True, exist_ok=True)
    chain = EmbeddedChain(1, path=tmp / "chain.sqlite", block_time=0.05)
    wallets = tmp / "wallets"
    vw = create_wallet("validator", "default", wallets)
    chain.register(vw, stake=1000.0)
    key_path = tmp / "dev-attestation.key"
    measurement = trusted_app_measurement([(MODEL, registry.get(MODEL).sha256)])
    policy = Policy(simulated=SimulatedPolicy(allow=True, trusted_keys=frozenset([dev_public_key(key_path)]), measurements=frozenset([measurement])))
    verifiers = VerifierRegistry([SimulatedVerifier([dev_public_key(key_path)])])
    client = SignedClient(Signer(vw), timeout=10.0)
    prober = Prober(client, policy=policy, verifiers=verifiers, models=registry, workloads=default_workloads(llm_tokens=8), timeout=10.0,
                    timeouts={"llm": 10.0}, shares={"llm": 1.0}, seed=1)
    scores = ScoreBook(tmp / "scores.sqlite")
    validator = Validator(chain=chain, wallet=vw, prober=prober, scores=scores)
    net = LlmNet(tmp, registry, chain, policy, verifiers, validator, create_wallet("client", "default", wallets))
    try:
        for name, faults in roles.items():
            w = create_wallet(f"miner-{name}", "default", wallets)
            uid = chain.register(w)
            app = TrustedApp(SimulatedBackend(key_path, measurement, faults=faults), registry, [MODEL], hotkey=w.hotkey.ss58_address)
            port = free_port()
            net._servers.append(await _serve(build_app(app, RequestVerifier(w.hotkey.ss58_address, Admission.anyone())), port))
            chain.serve(w, Endpoint("127.0.0.1", port))
            net.miners[name] = MinerHandle(name, w, uid, app, port)
        validator.sync()
        if api:
            port = free_port()
            net._servers.append(await _serve(build_api(validator, RequestVerifier(validator.hotkey, Admission.anyone())), port))
            net.api_url = f"http://127.0.0.1:{port}"
        yield net
    finally:
        for server, _ in net._servers:
            server.should_exit = True
        for _, task in net._servers:
            with contextlib.suppress(Exception):
                await task
        await client.aclose()
        scores.close()
        chain.close()
