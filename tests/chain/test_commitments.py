"""Commitments on both chains: the Commitments pallet's rules on the embedded chain, the generated call on subtensor."""

from __future__ import annotations

import bittensor as bt
import pytest

from omron_tee.chain.base import MAX_COMMITMENT_BYTES, Commitment
from omron_tee.chain.embedded import COMMITMENT_MIN_COST, COMMITMENT_SPACE, EmbeddedChain
from omron_tee.chain.subtensor import SubtensorChain
from omron_tee.errors import ChainError, ConfigError, RateLimited

from test_chain_subtensor import NETUID, FakeSubtensor


@pytest.fixture
def chain(tmp_path, clock):
    c = EmbeddedChain(1, path=tmp_path / "c.sqlite", clock=clock, block_time=1.0, tempo=10)
    yield c
    c.close()


def test_embedded_keeps_every_commitment_in_order_with_its_block(chain, clock, make_wallet):
    a, b = make_wallet("a"), make_wallet("b")
    chain.register(a)
    chain.register(b)
    chain.commit(a, "first")
    clock.advance(3)
    chain.commit(b, "from b")
    chain.commit(a, "second")
    got = chain.commitments()
    assert [c.data for c in got] == ["first", "from b", "second"]
    assert got[0] == Commitment(a.hotkey.ss58_address, got[0].block, "first") and got[1].block == got[0].block + 3


def test_embedded_refuses_unregistered_hotkeys_oversized_text_and_a_spent_epoch(chain, clock, make_wallet):
    a = make_wallet("a")
    with pytest.raises(ChainError, match="AccountNotAllowedCommit"):
        chain.commit(a, "x")
    chain.register(a)
    with pytest.raises(ConfigError, match=f"1 to {MAX_COMMITMENT_BYTES} bytes"):
        chain.commit(a, "é" * 65)
    with pytest.raises(ConfigError, match="at most 3 lines"):
        chain.commit(a, "1\n2\n3\n4")
    with pytest.raises(ConfigError):
        chain.commit(a, "one\n\nthree")  # an empty field
    chain.commit(a, "x" * 127 + "\n" + "y" * 127 + "\nz")  # three fields, each within its 128 bytes
    with pytest.raises(ConfigError):
        chain.commit(a, "")
    for _ in range(COMMITMENT_SPACE // COMMITMENT_MIN_COST - 3):
        chain.commit(a, "short")  # each costs the minimum (the three-field one above cost 257)
    with pytest.raises(RateLimited, match="SpaceLimitExceeded"):
        chain.commit(a, "one too many")
    clock.advance(10)  # the next epoch resets the space
    chain.commit(a, "next epoch")
    assert chain.commitments()[-1].data == "next epoch"


def test_embedded_owner_is_claimed_once_by_a_registered_hotkey(chain, make_wallet):
    a, b = make_wallet("a"), make_wallet("b")
    assert chain.subnet_owner() is None
    with pytest.raises(ChainError):
        chain.claim_owner(a)
    chain.register(a)
    chain.register(b)
    chain.claim_owner(a)
    chain.claim_owner(a)
    with pytest.raises(ChainError, match="already has an owner"):
        chain.claim_owner(b)
    assert chain.subnet_owner() == a.hotkey.ss58_address


def test_subtensor_commits_through_the_generated_call_and_reads_the_commitments_namespace(make_wallet):
    fake = FakeSubtensor()
    submitted = []
    fake.submit_call = lambda call, wallet: submitted.append(call) or bt.ExtrinsicResult(success=True)
    fake.subnets.commitments = lambda netuid: {
        "hk-b": type("C", (), {"value": "later", "block": 90})(),
        "hk-a": type("C", (), {"value": "earlier", "block": 50})(),
        "hk-sealed": type("C", (), {"value": None, "block": 70})(),
    }
    base_query = fake.query
    fake.query = lambda item, params: "owner-hk" if item == bt.storage.SubtensorModule.SubnetOwnerHotkey else base_query(item, params)
    chain = SubtensorChain("local", NETUID, timeout=2.0, write_timeout=2.0, subtensor=fake)
    try:
        chain.commit(make_wallet("o"), "otee-release/1 x")
        chain.commit(make_wallet("o"), "line one\nline 2")
        one, two = submitted
        assert one == bt.calls.Commitments.set_commitment(NETUID, {"fields": [{"Raw16": b"otee-release/1 x"}]})
        assert two == bt.calls.Commitments.set_commitment(NETUID, {"fields": [{"Raw9": b"line one\n"}, {"Raw6": b"line 2"}]})
        assert [c.data for c in chain.commitments()] == ["earlier", "later"]  # a sealed payload is not readable yet
        assert chain.subnet_owner() == "owner-hk"
    finally:
        chain.close()


def test_subtensor_weights_are_the_weights_namespace_rows():
    from types import SimpleNamespace

    fake = FakeSubtensor()
    fake.weights = SimpleNamespace(weights=lambda netuid: {0: {1: 0.25, 2: 0.75}})
    chain = SubtensorChain("local", NETUID, timeout=2.0, write_timeout=2.0, subtensor=fake)
    try:
        assert chain.weights() == {0: {1: 0.25, 2: 0.75}}
    finally:
        chain.close()


def test_the_names_called_on_subtensor_exist_in_bittensor():
    sub = bt.Subtensor("ws://127.0.0.1:1")
    assert callable(sub.subnets._target.commitments) and callable(sub.weights._target.weights)
    assert bt.storage.SubtensorModule.SubnetOwnerHotkey is not None
    assert callable(bt.calls.Commitments.set_commitment) and callable(bt.Subtensor.submit_call)
