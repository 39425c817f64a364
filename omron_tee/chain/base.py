"""The chain interface every omron-tee process talks to.

Miners, validators and the localnet supervisor never touch a chain client
directly: they hold a :class:`Chain` (from :func:`omron_tee.chain.connect`)
and read typed, frozen snapshots from it. Two implementations exist:
``EmbeddedChain`` (a development chain in one SQLite file) and
``SubtensorChain`` (a real subtensor node through bittensor's client).
"""

from __future__ import annotations

import abc
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from omron_tee.errors import ConfigError

if TYPE_CHECKING:  # bittensor is heavy to import; only its type is needed here
    import bittensor as bt

PROTOCOLS = ("http", "https")
# Networks reached through a subtensor node (besides ws:// / wss:// URLs).
SUBTENSOR_NETWORKS = ("local", "test", "finney")


@dataclass(frozen=True)
class Endpoint:
    """Where a neuron can be reached: an IP literal, a port and a scheme.

    The chain stores addresses, not host names, and ``0.0.0.0`` / ``::`` are
    bind addresses nobody can dial, so both are refused here.
    """

    ip: str
    port: int
    protocol: str = "http"

    def __post_init__(self) -> None:
        try:
            address = ipaddress.ip_address(self.ip)
        except ValueError:
            raise ConfigError(
                f"endpoint ip {self.ip!r} is not an IPv4/IPv6 address: the chain stores "
                "addresses, not host names (pass e.g. 127.0.0.1)"
            ) from None
        if address.is_unspecified:
            raise ConfigError(
                f"endpoint ip {self.ip} is a bind-all address peers cannot dial: "
                "serve the address peers should connect to (e.g. 127.0.0.1 or the host's IP)"
            )
        if (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not 1 <= self.port <= 65535
        ):
            raise ConfigError(
                f"endpoint port {self.port!r} is not a TCP port (1-65535)"
            )
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"endpoint protocol {self.protocol!r} is not supported: use one of {', '.join(PROTOCOLS)}"
            )
        # Store the canonical spelling so equal addresses compare equal.
        object.__setattr__(self, "ip", str(address))

    @property
    def url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.protocol}://{host}:{self.port}"


@dataclass(frozen=True)
class Neuron:
    """One registered hotkey on the subnet, as of the metagraph's block.

    ``stake`` and ``emission`` are TAO on the embedded chain; on subtensor
    they are the subnet's alpha amounts (dynamic TAO). ``emission`` is the
    cumulative total on the embedded chain and the last epoch's emission on
    subtensor (the real chain keeps no lifetime total). ``last_update`` is the
    block of the neuron's last weight set, or its registration block.
    """

    uid: int
    hotkey: str
    coldkey: str
    stake: float
    validator_permit: bool
    endpoint: Endpoint | None
    incentive: float
    dividends: float
    emission: float
    last_update: int
    consensus: float = 0.0  # Yuma: the stake-weighted median of the validators' weights on it
    trust: float = 0.0  # the share of its weight that survived clipping to consensus
    validator_trust: float = 0.0  # a validator's: how much of its weight agreed with consensus


@dataclass(frozen=True)
class Metagraph:
    """The subnet's neurons at one block, ordered by uid."""

    netuid: int
    block: int
    neurons: tuple[Neuron, ...]
    _by_uid: Mapping[int, Neuron] = field(init=False, repr=False, compare=False)
    _by_hotkey: Mapping[str, Neuron] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "neurons", tuple(sorted(self.neurons, key=lambda n: n.uid))
        )
        object.__setattr__(
            self, "_by_uid", MappingProxyType({n.uid: n for n in self.neurons})
        )
        object.__setattr__(
            self, "_by_hotkey", MappingProxyType({n.hotkey: n for n in self.neurons})
        )

    def by_hotkey(self, hotkey: str) -> Neuron | None:
        return self._by_hotkey.get(hotkey)

    def by_uid(self, uid: int) -> Neuron | None:
        return self._by_uid.get(uid)

    @property
    def hotkeys(self) -> tuple[str, ...]:
        return tuple(n.hotkey for n in self.neurons)

    @property
    def validators(self) -> tuple[Neuron, ...]:
        """Neurons holding a validator permit."""
        return tuple(n for n in self.neurons if n.validator_permit)

    @property
    def served(self) -> tuple[Neuron, ...]:
        """Neurons that have published an endpoint."""
        return tuple(n for n in self.neurons if n.endpoint is not None)

    def __len__(self) -> int:
        return len(self.neurons)


@dataclass(frozen=True)
class Emissions:
    """Emission received per hotkey, for run summaries.

    ``cumulative`` says what the numbers mean: True (embedded chain) for
    totals since the subnet was created, in TAO; False (subtensor) for the
    latest epoch only, in the subnet's alpha, because the real chain keeps no
    lifetime total per hotkey. ``undistributed`` is emission nobody was
    entitled to (e.g. an epoch with no weights); ``epochs`` counts processed
    epochs where the chain knows it (embedded), else None.
    """

    netuid: int
    block: int
    cumulative: bool
    by_hotkey: Mapping[str, float]
    undistributed: float = 0.0
    epochs: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_hotkey", MappingProxyType(dict(self.by_hotkey)))

    def of(self, hotkey: str) -> float:
        return self.by_hotkey.get(hotkey, 0.0)

    @property
    def total(self) -> float:
        return math.fsum(self.by_hotkey.values())


# A commitment, as the Commitments pallet stores it: up to MAX_COMMITMENT_FIELDS Raw fields of at most
# MAX_COMMITMENT_BYTES each. Here a commitment is text; each line (with its newline) is one field.
MAX_COMMITMENT_BYTES = 128
MAX_COMMITMENT_FIELDS = 3


@dataclass(frozen=True)
class Commitment:
    """Text a hotkey committed on the subnet, and the block it landed in.

    Releases (``omron_tee.attestation.validate.releases``) and validators' audit roots
    (``validator.audit``) travel as commitments; the chain only orders and dates them.
    """

    hotkey: str
    block: int
    data: str


def commitment_fields(data: str) -> list[bytes]:
    """The Raw fields ``data`` is stored as (one per line, each with its newline but the last), or a
    ConfigError saying why the chain would refuse it."""
    if not isinstance(data, str) or not data:
        raise ConfigError("a commitment is a non-empty text")
    lines = data.split("\n")
    if len(lines) > MAX_COMMITMENT_FIELDS:
        raise ConfigError(f"a commitment holds at most {MAX_COMMITMENT_FIELDS} lines (fields); this one has {len(lines)}")
    fields = [(line + "\n" if i < len(lines) - 1 else line).encode("utf-8") for i, line in enumerate(lines)]
    for f in fields:
        if not f.strip() or len(f) > MAX_COMMITMENT_BYTES:
            raise ConfigError(f"each line of a commitment is 1 to {MAX_COMMITMENT_BYTES} bytes (one is {len(f)})")
    return fields


def check_commitment(data: str) -> bytes:
    """The UTF-8 bytes of ``data`` when the chain would store it (``commitment_fields``), else a ConfigError."""
    return b"".join(commitment_fields(data))


class Chain(abc.ABC):
    """A subnet on some chain: reads of its state and the few writes neurons make.

    Every method raises :class:`ChainError` (or :class:`RateLimited`) when the
    chain cannot be reached or refuses; none returns a silent failure flag.
    """

    network: str
    netuid: int

    @abc.abstractmethod
    def block(self) -> int:
        """The current block number."""

    @abc.abstractmethod
    def block_time(self) -> float:
        """Seconds per block, for turning block counts into sleeps."""

    @abc.abstractmethod
    def metagraph(self) -> Metagraph:
        """Every neuron on the subnet at the current block."""

    @abc.abstractmethod
    def register(self, wallet: bt.Wallet) -> int:
        """Register the wallet's hotkey on the subnet (a no-op if it already is); return its uid."""

    @abc.abstractmethod
    def serve(self, wallet: bt.Wallet, endpoint: Endpoint) -> None:
        """Publish where the wallet's hotkey can be reached."""

    @abc.abstractmethod
    def set_weights(
        self, wallet: bt.Wallet, uids: list[int], weights: list[float], *, version_key: int = 0
    ) -> None:
        """Set the wallet hotkey's weights (committed, and revealed later, where the subnet has
        commit-reveal on), tagged ``version_key``; raises RateLimited when it is too soon."""

    @abc.abstractmethod
    def weights_rate_limit(self) -> int:
        """Blocks a hotkey must wait between weight sets."""

    @abc.abstractmethod
    def blocks_until_weights_allowed(self, hotkey: str) -> int:
        """0 when ``hotkey`` may set weights now, else the blocks left to wait."""

    @abc.abstractmethod
    def emissions(self) -> Emissions:
        """Emission received per hotkey (see :class:`Emissions` for the units)."""

    @abc.abstractmethod
    def weights(self) -> dict[int, dict[int, float]]:
        """Every validator's weights in effect (revealed, where the subnet has commit-reveal):
        validator uid -> miner uid -> fraction, each row summing to 1."""

    @abc.abstractmethod
    def commit(self, wallet: bt.Wallet, data: str) -> None:
        """Publish ``data`` (up to MAX_COMMITMENT_FIELDS lines of at most MAX_COMMITMENT_BYTES of UTF-8) as
        the hotkey's commitment on the subnet, replacing its previous one; the hotkey must be registered.
        Raises RateLimited when its space for the epoch is spent."""

    @abc.abstractmethod
    def commitments(self) -> tuple[Commitment, ...]:
        """The subnet's commitments, oldest first: every one ever made where the chain keeps them
        (embedded), else the latest per hotkey (subtensor stores only that)."""

    @abc.abstractmethod
    def subnet_owner(self) -> str | None:
        """The hotkey of the subnet's owner, or None when it has none."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the object is unusable afterwards."""

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def hotkey_address(wallet: bt.Wallet) -> str:
    """The ss58 address of a wallet's hotkey, or a ConfigError saying which file is missing."""
    try:
        return wallet.hotkey.ss58_address
    except (FileNotFoundError, PermissionError) as error:
        raise ConfigError(
            f"wallet {wallet.name!r} hotkey {wallet.hotkey_str!r} cannot be loaded ({error}): "
            "create it with `btcli wallet new-hotkey` or check --wallet.path"
        ) from None
    except Exception as error:  # an encrypted or corrupt keyfile
        raise ConfigError(
            f"wallet {wallet.name!r} hotkey {wallet.hotkey_str!r} cannot be loaded: {error}"
        ) from None


def coldkey_address(wallet: bt.Wallet) -> str:
    """The ss58 address of a wallet's coldkey, read from its public file (no password needed)."""
    try:
        return wallet.coldkeypub.ss58_address
    except (FileNotFoundError, PermissionError) as error:
        raise ConfigError(
            f"wallet {wallet.name!r} coldkey cannot be loaded ({error}): "
            "create it with `btcli wallet new-coldkey` or check --wallet.path"
        ) from None
    except Exception as error:
        raise ConfigError(
            f"wallet {wallet.name!r} coldkeypub cannot be loaded: {error}"
        ) from None


def check_netuid(netuid: object) -> int:
    if isinstance(netuid, bool) or not isinstance(netuid, int) or netuid < 0:
        raise ConfigError(f"netuid {netuid!r} is not a non-negative integer")
    return netuid


__all__ = [
    "SUBTENSOR_NETWORKS",
    "MAX_COMMITMENT_BYTES",
    "MAX_COMMITMENT_FIELDS",
    "Chain",
    "Commitment",
    "Emissions",
    "Endpoint",
    "Metagraph",
    "Neuron",
    "check_commitment",
    "commitment_fields",
    "check_netuid",
    "coldkey_address",
    "hotkey_address",
]
