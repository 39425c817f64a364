"""Shared fixtures for the chain tests: real bittensor wallets and a movable clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import bittensor as bt
import pytest


class Clock:
    """Unix time that only moves when a test says so (EmbeddedChain's ``clock``)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_wallet(tmp_path: Path) -> Callable[[str], bt.Wallet]:
    """Create a real unencrypted wallet (coldkey + hotkey) under tmp_path."""

    def make(name: str) -> bt.Wallet:
        wallet = bt.Wallet(name=name, hotkey="default", path=str(tmp_path / "wallets"))
        wallet.create_new_coldkey(use_password=False, overwrite=True, suppress=True)
        wallet.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
        return wallet

    return make
