"""``connect()``: one network name in, the matching :class:`Chain` out."""

from __future__ import annotations

from typing import Any

from omron_tee.chain.base import SUBTENSOR_NETWORKS, Chain, check_netuid
from omron_tee.errors import ConfigError

EMBEDDED = "embedded"
NETWORK_CHOICES = (EMBEDDED, *SUBTENSOR_NETWORKS, "ws://HOST:PORT", "wss://HOST:PORT")


def connect(
    network: str,
    netuid: int,
    *,
    chain_path: str | None = None,
    timeout: float = 10.0,
    **embedded_opts: Any,
) -> Chain:
    """Open ``netuid`` on ``network``.

    ``embedded`` opens (or creates) the development chain in ``chain_path``
    (default ``~/.omron-tee/embedded-chain.sqlite``); ``embedded_opts`` are
    EmbeddedChain's parameters (block_time, tempo, weights_rate_limit,
    max_validators, max_uids, emission_per_block). ``local``, ``test``,
    ``finney`` or a ws:// / wss:// URL reach a subtensor node, failing with a
    ChainError within ``timeout`` seconds when it cannot be reached;
    ``chain_path`` is ignored there. On the embedded chain ``timeout`` bounds
    the wait for another process's lock on the file.
    """
    check_netuid(netuid)
    if not isinstance(network, str):
        raise ConfigError(
            f"network {network!r} is not a string: use one of {', '.join(NETWORK_CHOICES)}"
        )
    if network == EMBEDDED:
        from omron_tee.chain.embedded import PARAM_NAMES, EmbeddedChain

        unknown = sorted(
            set(embedded_opts) - set(PARAM_NAMES) - {"busy_timeout", "clock"}
        )
        if unknown:
            raise ConfigError(
                f"unknown embedded chain option(s) {', '.join(unknown)}: use {', '.join(PARAM_NAMES)}"
            )
        # ``timeout`` bounds the wait for another process's lock on the file.
        embedded_opts.setdefault("busy_timeout", timeout)
        return EmbeddedChain(netuid, path=chain_path, **embedded_opts)
    if network in SUBTENSOR_NETWORKS or network.startswith(("ws://", "wss://")):
        given = sorted(k for k, v in embedded_opts.items() if v is not None)
        if given:
            raise ConfigError(
                f"option(s) {', '.join(given)} only apply to the embedded chain, not {network!r}: drop them"
            )
        # Imported here: bittensor is slow to import and the embedded chain never needs it.
        from omron_tee.chain.subtensor import SubtensorChain

        return SubtensorChain(network, netuid, timeout=timeout)
    raise ConfigError(
        f"unknown network {network!r}: use one of {', '.join(NETWORK_CHOICES)}"
    )
