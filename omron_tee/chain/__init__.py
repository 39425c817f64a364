"""The chain layer: one :class:`Chain` interface, an embedded development chain
and the real subtensor. Start with :func:`connect`; see docs/CHAIN.md."""

from omron_tee.chain.base import Chain, Emissions, Endpoint, Metagraph, Neuron
from omron_tee.chain.factory import NETWORK_CHOICES, connect

__all__ = [
    "NETWORK_CHOICES",
    "Chain",
    "Emissions",
    "Endpoint",
    "Metagraph",
    "Neuron",
    "connect",
]
