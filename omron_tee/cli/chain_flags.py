"""The flags that name a subnet and a wallet, shared by the commands that read or write the chain.

``add_chain_flags`` adds ``--subtensor.network``, ``--netuid`` and ``--chain.path``;
``open_chain`` connects as they say, refusing an embedded chain file that does not exist
(opening a missing one would create an empty chain); ``add_wallet_flags`` adds the
``--wallet.*`` flags the neurons take.
"""

from __future__ import annotations

import argparse

from omron_tee.chain.base import Chain


def add_chain_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subtensor.network", dest="network", default="embedded", help="embedded (default), local, test, finney or a ws:// URL")
    p.add_argument("--netuid", type=int, default=1, help="subnet uid (default: %(default)s)")
    p.add_argument("--chain.path", dest="chain_path", default=None, help="the embedded chain's file (default: the neurons' default)")


def add_wallet_flags(p: argparse.ArgumentParser, *, name: str, whose: str) -> None:
    p.add_argument("--wallet.name", dest="wallet_name", default=name, help=f"{whose} wallet (default: %(default)s)")
    p.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default", help="its hotkey (default: %(default)s)")
    p.add_argument("--wallet.path", dest="wallet_path", default="~/.bittensor/wallets", help="where wallets live (default: %(default)s)")


def open_chain(args: argparse.Namespace) -> Chain:
    """The chain the flags name (an embedded chain's file must exist already)."""
    from omron_tee.chain import connect
    from omron_tee.config import existing_chain_path, is_local

    if not is_local(args.network):
        return connect(args.network, args.netuid)
    path = existing_chain_path(args.chain_path, "is the network running? (name it with --chain.path)")
    return connect(args.network, args.netuid, chain_path=str(path))
