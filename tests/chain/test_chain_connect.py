"""connect(): network names to Chain implementations, and clear refusals."""

from __future__ import annotations

import pytest

from omron_tee.chain import NETWORK_CHOICES, connect
from omron_tee.chain.embedded import EmbeddedChain
from omron_tee.errors import ConfigError


def test_embedded_opens_the_file_at_chain_path(tmp_path):
    path = tmp_path / "dev.sqlite"
    with connect("embedded", 3, chain_path=str(path), block_time=0.1, tempo=5) as chain:
        assert isinstance(chain, EmbeddedChain)
        assert chain.network == "embedded" and chain.netuid == 3
        assert chain.block_time() == 0.1 and chain.params.tempo == 5
    assert path.exists()


def test_embedded_defaults_to_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with connect("embedded", 1) as chain:
        assert chain.path == tmp_path / ".omron-tee" / "embedded-chain.sqlite"


def test_unknown_network_lists_the_choices():
    with pytest.raises(ConfigError) as refused:
        connect("mainnet", 1)
    for choice in ("embedded", "local", "test", "finney", "ws://"):
        assert choice in str(refused.value)
    assert "embedded" in NETWORK_CHOICES


def test_unknown_embedded_option_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown embedded chain option.*blocktime"):
        connect("embedded", 1, chain_path=str(tmp_path / "c.sqlite"), blocktime=1.0)


def test_embedded_options_are_refused_for_a_real_network():
    with pytest.raises(ConfigError, match="tempo only apply to the embedded chain"):
        connect("ws://127.0.0.1:1", 1, tempo=5)


@pytest.mark.parametrize("netuid", [-1, "1", True])
def test_bad_netuid(netuid):
    with pytest.raises(ConfigError, match="netuid"):
        connect("embedded", netuid)
