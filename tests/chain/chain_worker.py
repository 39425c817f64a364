"""A second process for the concurrency test: hammers one embedded chain file.

Usage: python chain_worker.py CHAIN_PATH WALLET_DIR ROLE NAME... where ROLE is
``validator`` (register with stake, set weights on every miner in a loop) or
``miner`` (register, serve, read the metagraph in a loop). Exits non-zero on
any error.
"""

from __future__ import annotations

import sys
import time

import bittensor as bt

from omron_tee.chain import Endpoint
from omron_tee.chain.embedded import EmbeddedChain
from omron_tee.errors import RateLimited

PARAMS = dict(
    block_time=0.01,
    tempo=3,
    weights_rate_limit=0,
    max_validators=8,
    emission_per_block=0.5,
)


def main() -> None:
    path, wallet_dir, role, *names = sys.argv[1:]
    chain = EmbeddedChain(1, path=path, **PARAMS)
    wallets = [bt.Wallet(name=n, hotkey="default", path=wallet_dir) for n in names]
    for i, wallet in enumerate(wallets):
        if role == "validator":
            chain.register(wallet, stake=10.0 + i)
        else:
            chain.register(wallet)
            chain.serve(wallet, Endpoint("127.0.0.1", 9000 + i))
    deadline = time.monotonic() + 1.5
    rounds = 0
    while time.monotonic() < deadline:
        graph = chain.metagraph()
        if role == "validator":
            miners = [n.uid for n in graph.neurons if not n.validator_permit]
            for wallet in wallets:
                if miners:
                    try:
                        chain.set_weights(wallet, miners, [1.0 + u for u in miners])
                    except RateLimited:
                        pass
                chain.add_stake(wallet, 0.001)
        chain.emissions()
        rounds += 1
    chain.close()
    print(rounds)


if __name__ == "__main__":
    main()
