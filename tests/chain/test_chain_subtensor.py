"""SubtensorChain: bittensor results and errors mapped onto omron-tee's, and no hangs.

No subtensor node can run here, so the success paths are exercised against
``FakeSubtensor``, a small stand-in for ``bt.Subtensor`` that returns real
bittensor types (Metagraph, ExtrinsicResult, ChainError). The unreachable-node
tests use the real ``bt.Subtensor`` against closed or silent local ports.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import bittensor as bt
import pytest
from bittensor.metagraph import Metagraph as BtMetagraph
from bittensor.metagraph import MetagraphNeuron

from omron_tee.chain import Endpoint, connect
from omron_tee.chain.subtensor import SubtensorChain
from omron_tee.errors import ChainError, ConfigError, RateLimited

NETUID = 7


def bt_neuron(
    uid: int, hotkey: str, *, axon: str | None = None, permit: bool = False
) -> MetagraphNeuron:
    alpha = lambda amount: bt.Balance.from_alpha(amount, NETUID)
    return MetagraphNeuron(
        uid=uid,
        hotkey=hotkey,
        coldkey=f"cold-{hotkey}",
        active=True,
        validator_permit=permit,
        last_update=90 + uid,
        block_at_registration=10,
        rank=0.0,
        trust=0.0,
        consensus=0.0,
        incentive=0.25 * uid,
        dividends=0.5 if permit else 0.0,
        pruning_score=0.0,
        emission=alpha(1.5 * uid),
        alpha_stake=alpha(100.0 * uid),
        tao_stake=bt.Balance.from_tao(0),
        total_stake=alpha(100.0 * uid),
        axon=axon,
        identity=None,
        commitment=None,
    )


def bt_metagraph(neurons: list[MetagraphNeuron], block: int = 120) -> BtMetagraph:
    return BtMetagraph(
        netuid=NETUID,
        mechid=0,
        name="omron-tee",
        symbol="t",
        block=block,
        tempo=360,
        last_step=100,
        blocks_since_last_step=20,
        owner_hotkey="owner",
        owner_coldkey="owner-cold",
        network_registered_at=1,
        num_uids=len(neurons),
        max_uids=256,
        price=None,
        moving_price=None,
        identity=None,
        neurons=neurons,
        commitments={},
        unregistered_commitments={},
        raw={},
    )


class FakeSubtensor:
    """Stands in for bt.Subtensor: the reads SubtensorChain makes, and execute()."""

    def __init__(self) -> None:
        self.uids: dict[str, int] = {}
        self.graph: BtMetagraph | None = bt_metagraph([])
        self.axons: dict[str, dict] = {}
        self.since_last_update: dict[int, int | None] = {}
        self.rate_limit = 10
        self.executed: list[tuple[Any, Any, dict]] = []
        self.outcome: Callable[[Any], bt.ExtrinsicResult] = lambda intent: (
            bt.ExtrinsicResult(success=True)
        )
        self.connect_error: BaseException | None = None
        self.read_delay = threading.Event()
        self.read_delay.set()
        self.closed = False
        self.neurons = SimpleNamespace(uid=lambda hotkey, netuid: self.uids.get(hotkey))
        self.subnets = SimpleNamespace(metagraph=self._metagraph)
        self.epochs = SimpleNamespace(
            blocks_since_last_update=lambda netuid, uid: self.since_last_update.get(uid)
        )
        self.hyperparameters = SimpleNamespace(
            weights_rate_limit=lambda netuid: self.rate_limit
        )

    def connect(self) -> FakeSubtensor:
        if self.connect_error is not None:
            raise self.connect_error
        return self

    @property
    def block(self) -> int:
        self.read_delay.wait()
        return 120

    def block_time(self) -> float:
        return 12.0

    def _metagraph(
        self, netuid: int, *, commitments: bool = True
    ) -> BtMetagraph | None:
        assert netuid == NETUID and commitments is False
        return self.graph

    def query(self, item: Any, params: list) -> Any:
        assert item == bt.storage.SubtensorModule.Axons and params[0] == NETUID
        return self.axons.get(params[1])

    def execute(self, intent: Any, wallet: Any, **kwargs: Any) -> bt.ExtrinsicResult:
        self.executed.append((intent, wallet, kwargs))
        return self.outcome(intent)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake() -> FakeSubtensor:
    return FakeSubtensor()


@pytest.fixture
def chain(fake):
    chain = SubtensorChain(
        "local", NETUID, timeout=2.0, write_timeout=2.0, subtensor=fake
    )
    yield chain
    chain.close()


def failed(
    message: str, name: str | None = None, code: bt.ErrorCode | None = None
) -> bt.ExtrinsicResult:
    return bt.ExtrinsicResult(
        success=False, message=message, error=bt.ChainError(message, name, code)
    )


# Reads ---------------------------------------------------------------------------------


def test_metagraph_maps_bittensor_neurons(chain, fake):
    fake.graph = bt_metagraph(
        [
            bt_neuron(1, "hk1", axon="10.1.2.3:8091", permit=True),
            bt_neuron(0, "hk0"),
            bt_neuron(2, "hk2", axon="[2001:db8::1]:9000"),
        ]
    )
    graph = chain.metagraph()
    assert graph.netuid == NETUID and graph.block == 120
    assert [n.uid for n in graph.neurons] == [0, 1, 2]
    one = graph.by_hotkey("hk1")
    assert one.coldkey == "cold-hk1" and one.validator_permit and one.dividends == 0.5
    assert (
        one.stake == 100.0
        and one.emission == 1.5
        and one.incentive == 0.25
        and one.last_update == 91
    )
    assert one.endpoint == Endpoint("10.1.2.3", 8091)
    assert graph.by_uid(2).endpoint.url == "http://[2001:db8::1]:9000"
    assert graph.by_uid(0).endpoint is None
    emissions = chain.emissions()
    assert (
        not emissions.cumulative
        and emissions.of("hk2") == 3.0
        and emissions.total == 4.5
    )


def test_metagraph_of_a_missing_subnet_is_a_chain_error(chain, fake):
    fake.graph = None
    with pytest.raises(ChainError, match=f"subnet {NETUID} does not exist on local"):
        chain.metagraph()


def test_simple_reads(chain, fake):
    assert chain.block() == 120 and chain.block_time() == 12.0
    fake.rate_limit = 100
    assert chain.weights_rate_limit() == 100


def test_blocks_until_weights_allowed(chain, fake):
    fake.uids = {"hk": 3}
    fake.since_last_update[3] = 40
    assert chain.blocks_until_weights_allowed("hk") == 0
    fake.since_last_update[3] = 4
    assert chain.blocks_until_weights_allowed("hk") == 6
    fake.since_last_update[3] = None
    assert chain.blocks_until_weights_allowed("hk") == 0
    with pytest.raises(ChainError, match="not registered on netuid 7"):
        chain.blocks_until_weights_allowed("stranger")


# Writes ----------------------------------------------------------------------------------


def test_register_is_a_no_op_for_a_registered_hotkey(chain, fake, make_wallet):
    wallet = make_wallet("m")
    fake.uids[wallet.hotkey.ss58_address] = 4
    assert chain.register(wallet) == 4
    assert fake.executed == []


def test_register_submits_a_burned_registration(chain, fake, make_wallet):
    wallet = make_wallet("m")
    hotkey = wallet.hotkey.ss58_address

    def land(intent):
        fake.uids[hotkey] = 9
        return bt.ExtrinsicResult(success=True)

    fake.outcome = land
    assert chain.register(wallet) == 9
    ((intent, signer, _),) = fake.executed
    assert isinstance(intent, bt.BurnedRegister)
    assert intent.netuid == NETUID and intent.hotkey_ss58 == hotkey and signer is wallet


def test_register_race_already_registered_is_success(chain, fake, make_wallet):
    wallet = make_wallet("m")

    def lost_race(intent):
        fake.uids[wallet.hotkey.ss58_address] = 2
        return failed("already registered", "HotKeyAlreadyRegisteredInSubNet")

    fake.outcome = lost_race
    assert chain.register(wallet) == 2


def test_register_refusal_says_why_and_what_to_do(chain, fake, make_wallet):
    fake.outcome = lambda intent: failed("Balance too low", "NotEnoughBalanceToStake")
    with pytest.raises(ChainError) as refused:
        chain.register(make_wallet("poor"))
    message = str(refused.value)
    assert message.startswith("register refused by subtensor: NotEnoughBalanceToStake")
    assert "fund the coldkey" in message and "\n" not in message


def test_set_weights_submits_a_set_weights_intent(chain, fake, make_wallet):
    np = pytest.importorskip("numpy")
    wallet = make_wallet("v")
    chain.set_weights(wallet, list(np.array([0, 3])), [np.float32(0.25), 0.75])
    ((intent, signer, kwargs),) = fake.executed
    assert isinstance(intent, bt.SetWeights) and signer is wallet
    assert (
        intent.netuid == NETUID
        and intent.uids == [0, 3]
        and intent.weights == [0.25, 0.75]
    )
    assert all(type(u) is int for u in intent.uids)
    assert kwargs["retries"] >= 1


def test_rate_limit_preflight_becomes_rate_limited(chain, fake, make_wallet):
    # bittensor's SetWeights preflight raises (not returns) when it is too soon.
    def too_soon(intent):
        raise bt.ChainError(
            "Weights on netuid 7 were last set 3 blocks ago; the rate limit is 100 blocks. "
            "Retry in ~97 blocks (~1164s).",
            code=bt.ErrorCode.RATE_LIMITED,
        )

    fake.outcome = too_soon
    with pytest.raises(
        RateLimited, match="set weights refused by subtensor: .*Retry in ~97 blocks"
    ) as limited:
        chain.set_weights(make_wallet("v"), [1], [1.0])
    assert limited.value.reason == "rate-limited"


def test_on_chain_rate_limit_becomes_rate_limited(chain, fake, make_wallet):
    fake.outcome = lambda intent: failed(
        "Setting weights too fast", "SettingWeightsTooFast"
    )
    with pytest.raises(RateLimited, match="SettingWeightsTooFast"):
        chain.set_weights(make_wallet("v"), [1], [1.0])


def test_missing_permit_is_a_chain_error_with_its_reason(chain, fake, make_wallet):
    fake.outcome = lambda intent: failed("no permit", "NeuronNoValidatorPermit")
    with pytest.raises(ChainError, match="lacks a validator permit") as refused:
        chain.set_weights(make_wallet("v"), [1], [1.0])
    assert not isinstance(refused.value, RateLimited)
    assert refused.value.reason == "no-validator-permit"


def test_bad_weights_rejected_by_bittensor_become_chain_errors(chain, make_wallet):
    with pytest.raises(ChainError, match="Duplicate UIDs"):
        chain.set_weights(make_wallet("v"), [1, 1], [1.0, 1.0])


def test_serve_publishes_the_given_ip(chain, fake, make_wallet):
    wallet = make_wallet("m")
    chain.serve(wallet, Endpoint("192.0.2.10", 8091))
    ((intent, signer, _),) = fake.executed
    assert isinstance(intent, bt.ServeAxon) and signer is wallet
    assert (intent.netuid, intent.ip, intent.port) == (NETUID, "192.0.2.10", 8091)


def test_serve_skips_an_unchanged_axon(chain, fake, make_wallet):
    wallet = make_wallet("m")
    fake.axons[wallet.hotkey.ss58_address] = {
        "ip": int(ipaddress.ip_address("192.0.2.10")),
        "port": 8091,
        "ip_type": 4,
        "protocol": 4,
    }
    chain.serve(wallet, Endpoint("192.0.2.10", 8091))
    assert fake.executed == []
    chain.serve(wallet, Endpoint("192.0.2.10", 8092))
    assert len(fake.executed) == 1


def test_serve_refuses_https_and_maps_serving_rate_limit(chain, fake, make_wallet):
    wallet = make_wallet("m")
    with pytest.raises(ConfigError, match="serve an http endpoint"):
        chain.serve(wallet, Endpoint("192.0.2.10", 443, "https"))
    fake.outcome = lambda intent: failed("serving too fast", "ServingRateLimitExceeded")
    with pytest.raises(RateLimited, match="serve the axon refused"):
        chain.serve(wallet, Endpoint("192.0.2.10", 80))


# Connection failures and deadlines -------------------------------------------------------------


def test_connection_errors_become_one_line_chain_errors(fake):
    fake.connect_error = bt.RpcConnectionError(
        "could not connect to any endpoint: [Errno 111] Connect call failed ('127.0.0.1', 9944)"
    )
    with pytest.raises(ChainError) as unreachable:
        SubtensorChain("local", NETUID, subtensor=fake)
    assert str(unreachable.value) == (
        "cannot reach subtensor at ws://127.0.0.1:9944 (connection refused): "
        "start a local subtensor or use --subtensor.network embedded"
    )
    assert unreachable.value.reason == "chain-unreachable"
    assert fake.closed


def test_a_connection_lost_mid_session_is_a_chain_error(chain, fake):
    fake.subnets.metagraph = lambda netuid, commitments: (_ for _ in ()).throw(
        bt.RpcConnectionError(
            "RPC request failed after exhausting endpoint retries: timed out"
        )
    )
    with pytest.raises(
        ChainError, match=r"cannot reach subtensor at ws://127.0.0.1:9944 \(timed out\)"
    ):
        chain.metagraph()


def test_a_stalled_node_cannot_hang_a_read(chain, fake):
    chain.timeout = 0.3
    fake.read_delay.clear()
    started = time.monotonic()
    with pytest.raises(ChainError, match="did not answer 'read the block' within 0.3s"):
        chain.block()
    assert time.monotonic() - started < 1.5
    fake.read_delay.set()


def test_closed_chain_refuses_calls(chain, fake):
    chain.close()
    assert fake.closed
    with pytest.raises(ChainError, match="closed"):
        chain.block()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_node_fails_fast_with_a_clear_error():
    url = f"ws://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ChainError) as unreachable:
        connect(url, 1, timeout=5.0)
    elapsed = time.monotonic() - started
    assert str(unreachable.value) == (
        f"cannot reach subtensor at {url} (connection refused): "
        "start a local subtensor or use --subtensor.network embedded"
    )
    assert elapsed < 3.0, f"took {elapsed:.1f}s"


def test_silent_node_times_out_within_the_timeout():
    # Accepts TCP but never completes the websocket handshake.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"ws://127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(
            ChainError, match=f"subtensor at {url} did not answer 'connect' within 0.5s"
        ):
            connect(url, 1, timeout=0.5)
        assert time.monotonic() - started < 2.0


def test_local_network_names_the_default_endpoint(monkeypatch):
    if __import__("os").environ.get("BT_CHAIN_ENDPOINT"):
        pytest.skip("BT_CHAIN_ENDPOINT overrides the local endpoint")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 9944)) == 0:
            pytest.skip("something listens on 127.0.0.1:9944")
    with pytest.raises(
        ChainError,
        match=r"cannot reach subtensor at ws://127.0.0.1:9944 \(connection refused\)",
    ):
        connect("local", 1, timeout=5.0)
