"""EmbeddedChain: the development chain's rules, persistence and multi-process safety."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omron_tee.chain import Endpoint, Metagraph
from omron_tee.chain import embedded
from omron_tee.chain.embedded import RAO_PER_TAO, EmbeddedChain
from omron_tee.errors import ChainError, ConfigError, RateLimited

HERE = Path(__file__).parent


@pytest.fixture
def open_chain(tmp_path, clock):
    """Open EmbeddedChains on one file with the test clock; all closed at teardown."""
    opened: list[EmbeddedChain] = []

    def open_(**params) -> EmbeddedChain:
        params.setdefault("path", tmp_path / "chain.sqlite")
        chain = EmbeddedChain(params.pop("netuid", 1), clock=clock, **params)
        opened.append(chain)
        return chain

    yield open_
    for chain in opened:
        chain.close()


def advance_blocks(clock, chain: EmbeddedChain, blocks: int) -> None:
    clock.advance(blocks * chain.block_time())


# Registration, stake, permits ------------------------------------------------------


def test_register_gives_uids_in_order_and_is_idempotent(open_chain, make_wallet):
    chain = open_chain()
    a, b, c = make_wallet("a"), make_wallet("b"), make_wallet("c")
    assert [chain.register(a), chain.register(b), chain.register(c)] == [0, 1, 2]
    assert chain.register(b) == 1
    graph = chain.metagraph()
    assert [n.uid for n in graph.neurons] == [0, 1, 2]
    assert graph.by_hotkey(b.hotkey.ss58_address).uid == 1
    assert graph.by_uid(2).coldkey == c.coldkeypub.ss58_address
    assert graph.by_uid(7) is None and graph.by_hotkey("5Fnobody") is None


def test_register_refuses_a_hotkey_already_owned_by_another_coldkey(
    open_chain, make_wallet, tmp_path
):
    chain = open_chain()
    owner, other = make_wallet("owner"), make_wallet("other")
    chain.register(owner)
    # Put owner's hotkey file into the other wallet: same hotkey, different coldkey.
    wallets = tmp_path / "wallets"
    (wallets / "other" / "hotkeys" / "default").write_bytes(
        (wallets / "owner" / "hotkeys" / "default").read_bytes()
    )
    thief = type(other)(name="other", hotkey="default", path=str(wallets))
    with pytest.raises(ChainError, match="already registered .* under coldkey"):
        chain.register(thief)


def test_register_needs_a_wallet_with_keys(open_chain, tmp_path):
    import bittensor as bt

    chain = open_chain()
    missing = bt.Wallet(name="ghost", hotkey="nope", path=str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="ghost.*nope.*cannot be loaded"):
        chain.register(missing)


def test_stake_at_registration_only_once_then_faucet_adds(open_chain, make_wallet):
    chain = open_chain()
    v = make_wallet("v")
    chain.register(v, stake=50)
    chain.register(v, stake=50)  # idempotent: no second credit
    assert chain.metagraph().by_uid(0).stake == 50.0
    assert chain.add_stake(v, 2.5) == 52.5
    assert chain.metagraph().by_uid(0).stake == 52.5
    with pytest.raises(ConfigError, match="must be > 0"):
        chain.add_stake(v, 0)
    with pytest.raises(ChainError, match="not registered"):
        chain.add_stake(make_wallet("stranger"), 1.0)


def test_permits_go_to_the_top_stakes_only(open_chain, make_wallet):
    chain = open_chain(max_validators=2)
    small, big, mid, zero = (make_wallet(n) for n in ("small", "big", "mid", "zero"))
    chain.register(small, stake=1)
    chain.register(big, stake=10)
    chain.register(mid, stake=5)
    chain.register(zero)
    assert [n.validator_permit for n in chain.metagraph().neurons] == [
        False,
        True,
        True,
        False,
    ]
    chain.add_stake(small, 20)  # overtakes everyone; mid drops out
    graph = chain.metagraph()
    assert [n.uid for n in graph.validators] == [0, 1]
    # Stake > 0 is required even when permits are left over.
    assert not open_chain(netuid=2, max_validators=8).metagraph().validators


# Serving ---------------------------------------------------------------------------


def test_serve_records_the_endpoint(open_chain, make_wallet):
    chain = open_chain()
    m = make_wallet("m")
    chain.register(m)
    assert chain.metagraph().by_uid(0).endpoint is None
    chain.serve(m, Endpoint("127.0.0.1", 8091))
    endpoint = chain.metagraph().by_uid(0).endpoint
    assert endpoint == Endpoint("127.0.0.1", 8091, "http")
    assert endpoint.url == "http://127.0.0.1:8091"
    chain.serve(m, Endpoint("::1", 8443, "https"))
    assert chain.metagraph().by_uid(0).endpoint.url == "https://[::1]:8443"
    assert [n.uid for n in chain.metagraph().served] == [0]
    with pytest.raises(ChainError, match="not registered"):
        chain.serve(make_wallet("x"), Endpoint("127.0.0.1", 1))


@pytest.mark.parametrize(
    ("ip", "port", "protocol", "match"),
    [
        ("0.0.0.0", 80, "http", "bind-all"),
        ("localhost", 80, "http", "not an IPv4/IPv6 address"),
        ("127.0.0.1", 0, "http", "not a TCP port"),
        ("127.0.0.1", 70000, "http", "not a TCP port"),
        ("127.0.0.1", 80, "grpc", "not supported"),
    ],
)
def test_endpoint_refuses_what_peers_cannot_dial(ip, port, protocol, match):
    with pytest.raises(ConfigError, match=match):
        Endpoint(ip, port, protocol)


# Weights -----------------------------------------------------------------------------


def test_only_permit_holders_may_set_weights(open_chain, make_wallet):
    chain = open_chain()
    v, m = make_wallet("v"), make_wallet("m")
    chain.register(v, stake=10)
    chain.register(m)
    with pytest.raises(ChainError, match="no validator permit") as refused:
        chain.set_weights(m, [0], [1.0])
    assert refused.value.reason == "no-validator-permit"
    chain.set_weights(v, [1], [1.0])


def test_weights_rate_limit_is_enforced_per_hotkey(open_chain, make_wallet, clock):
    chain = open_chain(weights_rate_limit=5)
    v1, v2, m = make_wallet("v1"), make_wallet("v2"), make_wallet("m")
    chain.register(v1, stake=10)
    chain.register(v2, stake=10)
    chain.register(m)
    hotkey = v1.hotkey.ss58_address
    assert chain.weights_rate_limit() == 5
    assert chain.blocks_until_weights_allowed(hotkey) == 0
    chain.set_weights(v1, [2], [1.0])
    advance_blocks(clock, chain, 2)
    assert chain.blocks_until_weights_allowed(hotkey) == 3
    with pytest.raises(
        RateLimited,
        match=r"2 blocks ago; the rate limit is 5 blocks: wait 3 more block",
    ) as limited:
        chain.set_weights(v1, [2], [1.0])
    assert limited.value.reason == "rate-limited"
    chain.set_weights(v2, [2], [1.0])  # another hotkey is not limited by v1's set
    advance_blocks(clock, chain, 3)
    assert chain.blocks_until_weights_allowed(hotkey) == 0
    chain.set_weights(v1, [2], [1.0])
    assert chain.metagraph().by_uid(0).last_update == chain.block()
    with pytest.raises(ChainError, match="not registered"):
        chain.blocks_until_weights_allowed("5Fnobody")


@pytest.mark.parametrize(
    ("uids", "weights", "match"),
    [
        ([1, 2], [1.0], "2 uids but 1 weights"),
        ([], [], "no uids"),
        ([1, 1], [1.0, 1.0], "duplicate uids"),
        ([1], [-1.0], "finite number >= 0"),
        ([1], [math.nan], "finite number >= 0"),
        ([1], [0.0], "all weights are zero"),
        ([9], [1.0], r"uids \[9\] that are not registered"),
        ([-1], [1.0], "non-negative integer"),
    ],
)
def test_malformed_weights_are_refused(open_chain, make_wallet, uids, weights, match):
    chain = open_chain()
    v = make_wallet("v")
    chain.register(v, stake=1)
    chain.register(make_wallet("m"))
    with pytest.raises(ChainError, match=match):
        chain.set_weights(v, uids, weights)


def test_numpy_scores_are_accepted(open_chain, make_wallet, clock):
    np = pytest.importorskip("numpy")
    chain = open_chain(tempo=4)
    v = make_wallet("v")
    chain.register(v, stake=1)
    chain.register(make_wallet("m1"))
    chain.register(make_wallet("m2"))
    chain.set_weights(v, np.array([1, 2]), np.array([0.25, 0.75], dtype=np.float32))
    advance_blocks(clock, chain, 4)
    assert [n.incentive for n in chain.metagraph().neurons] == [0.0, 0.25, 0.75]


# Emission ------------------------------------------------------------------------------


def rao(tao: float) -> int:
    return round(tao * RAO_PER_TAO)


def test_emission_split_follows_yuma_consensus(open_chain, make_wallet, clock):
    chain = open_chain(tempo=10, emission_per_block=1.0, weights_rate_limit=0)
    a, b = make_wallet("a"), make_wallet("b")
    m1, m2, m3 = make_wallet("m1"), make_wallet("m2"), make_wallet("m3")
    chain.register(a, stake=30)  # uid 0
    chain.register(b, stake=10)  # uid 1
    for m in (m1, m2, m3):  # uids 2, 3, 4
        chain.register(m)
    chain.set_weights(a, [2, 3], [3, 1])
    chain.set_weights(b, [2, 3], [1, 1])
    advance_blocks(clock, chain, 20)  # two epochs of 10 TAO each

    graph = chain.metagraph()
    emissions = chain.emissions()
    assert emissions.epochs == 2 and emissions.cumulative
    # Stake .75 / .25. Consensus (stake-weighted median): m1 .75 (a alone holds .75 of the
    # stake), m2 .25. b's .5 on m2 is clipped to .25. Ranks: m1 = .75*.75 + .25*.5 = .6875,
    # m2 = .75*.25 + .25*.25 = .25; incentive = rank / .9375.
    assert graph.by_uid(2).consensus == pytest.approx(0.75) and graph.by_uid(3).consensus == pytest.approx(0.25)
    assert graph.by_uid(2).incentive == pytest.approx(0.6875 / 0.9375)
    assert graph.by_uid(3).incentive == pytest.approx(0.25 / 0.9375)
    assert graph.by_uid(4).incentive == 0.0
    assert graph.by_uid(3).trust == pytest.approx(0.25 / 0.3125)  # its weight that survived clipping
    assert graph.by_uid(0).validator_trust == pytest.approx(1.0) and graph.by_uid(1).validator_trust == pytest.approx(0.75)
    # Half of 2 * 10 TAO to miners by incentive; half to validators by dividends from bonds:
    # bonds on m1 are a .5625/.6875, b .125/.6875; on m2 .75 / .25; D_a = .8, D_b = .2.
    assert emissions.of(m1.hotkey.ss58_address) == pytest.approx(10 * 0.6875 / 0.9375)
    assert emissions.of(m2.hotkey.ss58_address) == pytest.approx(10 * 0.25 / 0.9375)
    assert emissions.of(m3.hotkey.ss58_address) == 0.0
    assert graph.by_uid(0).dividends == pytest.approx(0.8)
    assert emissions.of(a.hotkey.ss58_address) == pytest.approx(8.0)
    assert emissions.of(b.hotkey.ss58_address) == pytest.approx(2.0)
    assert [n.emission for n in graph.neurons] == [
        emissions.of(h) for h in graph.hotkeys
    ]
    # Exact accounting in rao: paid + undistributed == epochs * tempo * emission.
    paid = sum(rao(v) for v in emissions.by_hotkey.values()) + rao(
        emissions.undistributed
    )
    assert paid == 2 * 10 * RAO_PER_TAO


def test_a_validator_that_disagrees_loses_dividends_and_moves_no_incentive(open_chain, make_wallet, clock):
    chain = open_chain(tempo=10, weights_rate_limit=0)
    v = [make_wallet(f"v{i}") for i in range(3)]
    for w, stake in zip(v, (40, 40, 20)):
        chain.register(w, stake=stake)  # uids 0, 1, 2
    honest, other = make_wallet("honest"), make_wallet("other")
    chain.register(honest)  # uid 3
    chain.register(other)  # uid 4
    chain.set_weights(v[0], [3, 4], [1, 1])
    chain.set_weights(v[1], [3, 4], [1, 1])
    chain.set_weights(v[2], [4], [1])  # the dissenter puts everything on uid 4
    advance_blocks(clock, chain, 50)
    graph = chain.metagraph()
    # Consensus holds both at .5: the dissenter's extra weight on uid 4 is clipped away.
    assert graph.by_uid(3).incentive == pytest.approx(0.5 * 0.8 / (0.5 * 0.8 + 0.5))
    assert graph.by_uid(2).validator_trust == pytest.approx(0.5)
    assert graph.by_uid(0).validator_trust == pytest.approx(1.0)
    # Per unit of stake the dissenter earns less than those who agreed.
    assert graph.by_uid(2).dividends / 20 < graph.by_uid(0).dividends / 40


def test_commit_reveal_weights_count_only_from_the_reveal_epoch(open_chain, make_wallet, clock):
    chain = open_chain(tempo=10, weights_rate_limit=0, commit_reveal=True, reveal_period=1)
    v, m1, m2 = make_wallet("v"), make_wallet("m1"), make_wallet("m2")
    chain.register(v, stake=10)
    chain.register(m1)
    chain.register(m2)
    chain.set_weights(v, [1], [1.0])  # committed in epoch 0: revealed when epoch 1 starts (block 10)
    assert chain.weights() == {} and chain.pending_reveals() == {0: 10}
    advance_blocks(clock, chain, 10)  # epoch 0 paid with no weights
    assert chain.emissions().undistributed == pytest.approx(10.0)
    assert chain.weights() == {0: {1: 1.0}} and chain.pending_reveals() == {}
    chain.set_weights(v, [2], [1.0])  # committed in epoch 1, revealed at block 20
    advance_blocks(clock, chain, 10)  # epoch 1 paid by the first commit
    graph = chain.metagraph()
    assert graph.by_uid(1).incentive == 1.0 and graph.by_uid(2).incentive == 0.0
    advance_blocks(clock, chain, 10)
    assert chain.metagraph().by_uid(2).incentive == 1.0


def test_weights_below_the_subnet_version_are_refused(open_chain, make_wallet):
    chain = open_chain(weights_version=3)
    v = make_wallet("v")
    chain.register(v, stake=1)
    chain.register(make_wallet("m"))
    with pytest.raises(ChainError, match="IncorrectWeightVersionKey"):
        chain.set_weights(v, [1], [1.0], version_key=2)
    chain.set_weights(v, [1], [1.0], version_key=3)


def test_a_schema_1_file_is_migrated_and_keeps_its_state(tmp_path, make_wallet, clock):
    import sqlite3

    path = tmp_path / "old.sqlite"
    chain = EmbeddedChain(1, path=path, clock=clock, tempo=5, weights_rate_limit=0)
    v, m = make_wallet("v"), make_wallet("m")
    chain.register(v, stake=5)
    chain.register(m)
    chain.close()
    db = sqlite3.connect(path)  # make it look like a file written by the previous release
    for table, column, _ in embedded._MIGRATIONS:
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.execute("DROP TABLE bonds")
    db.execute("DROP TABLE commits")
    db.execute("UPDATE chain SET schema_version = 1")
    db.commit()
    db.close()
    again = EmbeddedChain(1, path=path, clock=clock)
    assert again.metagraph().by_uid(0).stake == 5 and not again.params.commit_reveal
    again.set_weights(v, [1], [1.0])
    advance_blocks(clock, again, 5)
    assert again.metagraph().by_uid(1).incentive == 1.0
    again.close()


def test_epoch_with_no_weights_is_undistributed(open_chain, make_wallet, clock):
    chain = open_chain(tempo=5, emission_per_block=2.0)
    chain.register(make_wallet("v"), stake=5)
    chain.register(make_wallet("m"))
    advance_blocks(clock, chain, 5)
    emissions = chain.emissions()
    assert emissions.epochs == 1 and emissions.total == 0.0
    assert emissions.undistributed == pytest.approx(10.0)


def test_weights_of_a_validator_that_lost_its_permit_stop_counting(
    open_chain, make_wallet, clock
):
    chain = open_chain(tempo=5, max_validators=1, weights_rate_limit=0)
    old, new = make_wallet("old"), make_wallet("new")
    m1, m2 = make_wallet("m1"), make_wallet("m2")
    chain.register(old, stake=10)
    chain.register(new, stake=1)
    chain.register(m1)
    chain.register(m2)
    chain.set_weights(old, [2], [1.0])
    advance_blocks(clock, chain, 5)
    chain.add_stake(
        new, 100
    )  # new takes the only permit; old's weights no longer count
    chain.set_weights(new, [3], [1.0])
    advance_blocks(clock, chain, 5)
    graph = chain.metagraph()
    assert graph.by_uid(2).incentive == 0.0 and graph.by_uid(3).incentive == 1.0
    emissions = chain.emissions()
    assert emissions.of(m1.hotkey.ss58_address) == pytest.approx(
        2.5
    )  # first epoch only
    assert emissions.of(m2.hotkey.ss58_address) == pytest.approx(
        2.5
    )  # second epoch only
    assert emissions.of(new.hotkey.ss58_address) == pytest.approx(2.5)


def test_missed_epochs_pay_the_same_as_epochs_settled_one_by_one(
    tmp_path, make_wallet, clock
):
    wallets = [make_wallet(n) for n in ("v1", "v2", "m1", "m2")]

    def run(path: Path, settle_every_epoch: bool) -> dict[str, float]:
        start = clock.now
        chain = EmbeddedChain(
            1, path=path, clock=clock, tempo=7, emission_per_block=0.3
        )
        chain.register(wallets[0], stake=3)
        chain.register(wallets[1], stake=4)
        chain.register(wallets[2])
        chain.register(wallets[3])
        chain.set_weights(wallets[0], [2, 3], [1, 2])
        chain.set_weights(wallets[1], [2], [1])
        for _ in range(9):
            advance_blocks(clock, chain, 7)
            if settle_every_epoch:
                chain.metagraph()
        emissions = chain.emissions()
        assert emissions.epochs == 9
        chain.close()
        clock.now = start
        return dict(emissions.by_hotkey)

    assert run(tmp_path / "a.sqlite", True) == run(tmp_path / "b.sqlite", False)


# Persistence, parameters, the block clock -------------------------------------------------


def test_state_persists_across_reopen(tmp_path, make_wallet, clock):
    path = tmp_path / "nested" / "dir" / "chain.sqlite"
    first = EmbeddedChain(3, path=path, clock=clock, tempo=4, block_time=0.5)
    v, m = make_wallet("v"), make_wallet("m")
    first.register(v, stake=7)
    first.register(m)
    first.serve(m, Endpoint("10.0.0.2", 8000))
    first.set_weights(v, [1], [1])
    advance_blocks(clock, first, 9)
    before = first.metagraph()
    first.close()
    with pytest.raises(ChainError, match="closed"):
        first.metagraph()

    again = EmbeddedChain(3, path=path, clock=clock)  # parameters come from the file
    assert again.params.tempo == 4 and again.block_time() == 0.5
    assert again.block() == before.block == 9
    assert again.metagraph() == before
    assert again.emissions().epochs == 2
    assert again.register(m) == 1
    again.close()


def test_conflicting_parameters_are_refused(open_chain):
    open_chain(tempo=4, block_time=0.5)
    with pytest.raises(ConfigError, match=r"tempo=9 \(file has 4\)"):
        open_chain(tempo=9)
    with pytest.raises(ConfigError, match=r"block_time=1.0 \(file has 0.5\)"):
        open_chain(block_time=1.0)
    # A new netuid in the same file gets its own subnet parameters, but the chain's clock.
    other = open_chain(netuid=2, tempo=9)
    assert other.params.tempo == 9 and other.block_time() == 0.5


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"block_time": 0}, "block_time"),
        ({"tempo": 0}, "tempo"),
        ({"weights_rate_limit": -1}, "weights_rate_limit"),
    ],
)
def test_invalid_parameters_are_config_errors(open_chain, params, match):
    with pytest.raises(ConfigError, match=match):
        open_chain(**params)


def test_a_file_that_is_not_a_chain_is_a_config_error(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="is not an embedded chain file"):
        EmbeddedChain(1, path=junk)


def test_block_clock_follows_the_stored_genesis(open_chain, clock):
    chain = open_chain(block_time=0.1)
    assert chain.block() == 0
    clock.advance(0.3)
    assert chain.block() == 3  # no float floor surprise at exact multiples
    clock.advance(0.05)
    assert chain.block() == 3
    other = open_chain()  # a second opener computes the same block from the file
    assert other.block() == chain.block() == 3
    assert chain.metagraph().block == 3


def test_block_clock_runs_on_wall_time(tmp_path):
    chain = EmbeddedChain(1, path=tmp_path / "wall.sqlite", block_time=0.02)
    start = chain.block()
    time.sleep(0.1)
    assert chain.block() - start >= 4
    chain.close()


def test_metagraph_is_cheap(open_chain, make_wallet):
    chain = open_chain()
    for i in range(20):
        chain.register(make_wallet(f"w{i}"), stake=i)
    started = time.perf_counter()
    for _ in range(200):
        graph = chain.metagraph()
    per_call = (time.perf_counter() - started) / 200
    assert isinstance(graph, Metagraph) and len(graph) == 20
    assert per_call < 0.025, f"metagraph() took {per_call * 1000:.1f} ms"


# Several processes on one file ----------------------------------------------------------------


def test_two_processes_share_one_file_without_double_counting(tmp_path, make_wallet):
    path = tmp_path / "shared.sqlite"
    wallet_dir = tmp_path / "wallets"
    validators = ["va", "vb"]
    miners = ["ma", "mb", "mc"]
    for name in validators + miners:
        make_wallet(name)
    worker = str(HERE / "chain_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(path), str(wallet_dir), role, *names],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role, names in (("validator", validators), ("miner", miners))
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert int(out.strip()) > 0

    chain = EmbeddedChain(1, path=path)
    graph = chain.metagraph()
    assert sorted(n.uid for n in graph.neurons) == list(range(5))
    assert len(set(graph.hotkeys)) == 5
    assert sum(n.endpoint is not None for n in graph.neurons) == 3
    chain.close()
    # Exact conservation: a double-paid epoch would break this equality.
    with sqlite3.connect(path) as db:
        done, undistributed, tempo, per_block = db.execute(
            "SELECT epochs_done, undistributed_rao, tempo, emission_per_block_rao FROM subnets WHERE netuid = 1"
        ).fetchone()
        (paid,) = db.execute(
            "SELECT SUM(emission_rao) FROM neurons WHERE netuid = 1"
        ).fetchone()
    assert done > 10
    assert paid > 0
    assert paid + undistributed == done * tempo * per_block
