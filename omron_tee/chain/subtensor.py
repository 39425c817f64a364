"""The real chain: a subtensor node through bittensor 11.3.0's ``bt.Subtensor``.

Every call to the node runs on a daemon thread with a deadline, so an
unreachable or stalled node gives a one-line :class:`ChainError` within the
timeout instead of a hang (bittensor's own transport retries handshakes for
up to 10s per endpoint and waits 60s for responses). bittensor's typed errors
are mapped onto omron-tee's: rate limits become :class:`RateLimited`, every
other refusal a :class:`ChainError` carrying the chain's error name and
bittensor's remediation hint.

Nothing here looks up an external IP: ``serve`` publishes exactly the
endpoint it is given (bittensor 11's ``ServeAxon`` needs an explicit ip).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import urlsplit

import bittensor as bt
from bittensor.settings import NETWORKS as BT_NETWORKS

from omron_tee.chain.base import (
    SUBTENSOR_NETWORKS,
    Chain,
    Commitment,
    Emissions,
    Endpoint,
    Metagraph,
    Neuron,
    check_netuid,
    commitment_fields,
    hotkey_address,
)
from omron_tee.errors import ChainError, ConfigError, OmronTeeError, RateLimited
from omron_tee.reasons import Reason

T = TypeVar("T")

# ServeAxon's protocol tag is subnet-defined; 4 is what every bittensor
# neuron has always published, and the typed metagraph drops it anyway.
AXON_PROTOCOL_TAG = 4


def resolve_network(network: str) -> tuple[str, str]:
    """(label, ws url) for ``local`` / ``test`` / ``finney`` or a ws:// / wss:// URL."""
    if network.startswith(("ws://", "wss://")):
        return network, network
    if network in SUBTENSOR_NETWORKS:
        return network, BT_NETWORKS[network]
    raise ConfigError(
        f"unknown subtensor network {network!r}: use one of {', '.join(SUBTENSOR_NETWORKS)} "
        "or a ws:// / wss:// URL"
    )


def _unreachable_reason(error: BaseException) -> str:
    text = str(error)
    lowered = text.lower()
    if (
        "connect call failed" in lowered
        or "refused" in lowered
        or "errno 111" in lowered
    ):
        return "connection refused"
    if any(
        s in lowered
        for s in (
            "name or service not known",
            "nodename nor servname",
            "name resolution",
            "getaddrinfo",
        )
    ):
        return "host name not resolved"
    if (
        isinstance(error, TimeoutError)
        or "timed out" in lowered
        or "no response" in lowered
    ):
        return "timed out"
    return text.splitlines()[0] if text else type(error).__name__


def _parse_axon(axon: str | None) -> Endpoint | None:
    """An Endpoint from bittensor's ``ip:port`` / ``[v6]:port`` rendering, or None."""
    if not axon:
        return None
    host, _, port = axon.rpartition(":")
    try:
        return Endpoint(host.strip("[]"), int(port))
    except (ValueError, OmronTeeError):
        return (
            None  # a neuron advertising a non-dialable address is simply not reachable
        )


def _same_axon(current: Any, endpoint: Endpoint) -> bool:
    if not isinstance(current, dict):
        return False
    address = ipaddress.ip_address(endpoint.ip)
    try:
        return (
            int(current.get("ip") or 0) == int(address)
            and int(current.get("port") or 0) == endpoint.port
            and int(current.get("ip_type") or 4) == address.version
        )
    except (TypeError, ValueError):
        return False


class SubtensorChain(Chain):
    """One subnet on a subtensor node.

    ``timeout`` bounds connecting and every read; ``write_timeout`` bounds an
    extrinsic (which waits for finalization, ~2-3 blocks of 12s). ``subtensor``
    replaces the ``bt.Subtensor`` client and exists for tests.
    """

    def __init__(
        self,
        network: str,
        netuid: int,
        *,
        timeout: float = 10.0,
        write_timeout: float = 180.0,
        subtensor: Any | None = None,
    ) -> None:
        self.netuid = check_netuid(netuid)
        self.network, self.endpoint = resolve_network(network)
        if timeout <= 0 or write_timeout <= 0:
            raise ConfigError(
                f"timeouts must be > 0 seconds (got {timeout}, {write_timeout})"
            )
        self.timeout = float(timeout)
        self.write_timeout = float(write_timeout)
        self._block_time: float | None = None
        self._closed = False
        self._sub = subtensor if subtensor is not None else bt.Subtensor(self.endpoint)
        try:
            self._call("connect", self._sub.connect, self.timeout)
        except BaseException:
            self.close()
            raise

    # Calls with a deadline and error mapping -----------------------------------

    def _call(
        self, what: str, fn: Callable[[], T], timeout: float, *, write: bool = False
    ) -> T:
        if self._closed:
            raise ChainError(f"subtensor connection to {self.endpoint} is closed")
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as error:  # handed to the caller's thread
                future.set_exception(error)

        # A daemon thread, so a node that never answers cannot keep the process alive.
        threading.Thread(target=run, name=f"subtensor-{what}", daemon=True).start()
        try:
            return future.result(timeout)
        except TimeoutError as error:
            if (
                future.done()
            ):  # fn itself raised a TimeoutError (an OSError): map it below
                raise self._map(what, error) from error
            fate = (
                " (it may still land: check the chain before retrying)" if write else ""
            )
            raise ChainError(
                f"subtensor at {self.endpoint} did not answer '{what}' within {timeout:g}s{fate}: "
                f"{self._hint()}"
            ) from None
        except (bt.BittensorError, OSError) as error:
            raise self._map(what, error) from error

    def _read(self, what: str, fn: Callable[[], T]) -> T:
        return self._call(what, fn, self.timeout)

    def _write(self, what: str, fn: Callable[[], T]) -> T:
        return self._call(what, fn, self.write_timeout, write=True)

    def _hint(self) -> str:
        host = urlsplit(self.endpoint).hostname or ""
        try:
            local = (
                self.network == "local"
                or host == "localhost"
                or ipaddress.ip_address(host).is_loopback
            )
        except ValueError:
            local = False
        if local:
            return "start a local subtensor or use --subtensor.network embedded"
        return (
            "check the endpoint and your network, or use --subtensor.network embedded"
        )

    def _map(self, what: str, error: BaseException) -> OmronTeeError:
        if isinstance(error, (bt.RpcConnectionError, OSError)):
            return ChainError(
                f"cannot reach subtensor at {self.endpoint} ({_unreachable_reason(error)}): {self._hint()}",
                reason=Reason.CHAIN_UNREACHABLE,
            )
        if isinstance(error, bt.ChainError):
            detail = error.message.strip().rstrip(".")
            if error.name and error.name not in detail:
                detail = f"{error.name}: {detail}"
            # bittensor's remediation says what to do, except for unclassified errors.
            if error.code is not bt.ErrorCode.UNKNOWN:
                detail = f"{detail}; {error.remediation}"
            if error.code is bt.ErrorCode.RATE_LIMITED:
                return RateLimited(f"{what} refused by subtensor: {detail}")
            reason = Reason.NO_VALIDATOR_PERMIT if error.name == "NeuronNoValidatorPermit" else Reason.CHAIN
            return ChainError(f"{what} refused by subtensor: {detail}", reason=reason)
        return ChainError(f"{what} failed on subtensor {self.endpoint}: {error}")

    # Chain interface -------------------------------------------------------------

    def block(self) -> int:
        return int(self._read("read the block", lambda: self._sub.block))

    def block_time(self) -> float:
        if self._block_time is None:  # a property of the chain, read once
            self._block_time = float(
                self._read("read the block time", self._sub.block_time)
            )
        return self._block_time

    def metagraph(self) -> Metagraph:
        graph = self._read(
            "read the metagraph",
            lambda: self._sub.subnets.metagraph(self.netuid, commitments=False),
        )
        if graph is None:
            raise ChainError(
                f"subnet {self.netuid} does not exist on {self.network} ({self.endpoint}): check --netuid"
            )
        neurons = tuple(
            Neuron(
                uid=int(n.uid),
                hotkey=str(n.hotkey),
                coldkey=str(n.coldkey),
                stake=float(n.total_stake.amount),
                validator_permit=bool(n.validator_permit),
                endpoint=_parse_axon(n.axon),
                incentive=float(n.incentive),
                dividends=float(n.dividends),
                emission=float(n.emission.amount),
                last_update=int(n.last_update),
                consensus=float(getattr(n, "consensus", 0.0)),
                trust=float(getattr(n, "trust", 0.0)),
                validator_trust=float(getattr(n, "validator_trust", 0.0)),
            )
            for n in graph.neurons
        )
        return Metagraph(netuid=self.netuid, block=int(graph.block), neurons=neurons)

    def _uid(self, hotkey: str) -> int | None:
        uid = self._read(
            "look up the uid", lambda: self._sub.neurons.uid(hotkey, self.netuid)
        )
        return None if uid is None else int(uid)

    def register(self, wallet: bt.Wallet) -> int:
        """Burned registration (pays the subnet's registration cost from the coldkey); idempotent."""
        hotkey = hotkey_address(wallet)
        uid = self._uid(hotkey)
        if uid is not None:
            return uid

        def submit() -> None:
            intent = bt.BurnedRegister(netuid=self.netuid, hotkey_ss58=hotkey)
            try:
                self._sub.execute(intent, wallet).raise_for_failure()
            except bt.ChainError as error:
                # Lost a race with another registration of the same hotkey: the goal is met.
                if error.code is not bt.ErrorCode.ALREADY_EXISTS:
                    raise

        self._write("register", submit)
        uid = self._uid(hotkey)
        if uid is None:
            raise ChainError(
                f"registration of {hotkey} on netuid {self.netuid} reported success but the hotkey "
                "has no uid yet: read the metagraph again in a block or two"
            )
        return uid

    def serve(self, wallet: bt.Wallet, endpoint: Endpoint) -> None:
        if endpoint.protocol != "http":
            raise ConfigError(
                f"cannot serve {endpoint.url} on subtensor: the axon record has no scheme and "
                "peers read it as http; serve an http endpoint"
            )
        hotkey = hotkey_address(wallet)
        current = self._read(
            "read the served axon",
            lambda: self._sub.query(
                bt.storage.SubtensorModule.Axons, [self.netuid, hotkey]
            ),
        )
        # Re-serving the same address would only spend the serving rate limit.
        if _same_axon(current, endpoint):
            return
        intent = bt.ServeAxon(
            netuid=self.netuid,
            ip=endpoint.ip,
            port=endpoint.port,
            protocol=AXON_PROTOCOL_TAG,
        )
        self._write(
            "serve the axon",
            lambda: self._sub.execute(intent, wallet).raise_for_failure(),
        )

    def set_weights(
        self, wallet: bt.Wallet, uids: list[int], weights: list[float], *, version_key: int = 0
    ) -> None:
        uids = [int(u) for u in uids]
        weights = [float(w) for w in weights]

        def submit() -> None:
            # SetWeights conforms (clip, normalise, u16), picks commit-reveal when the
            # subnet needs it, and preflights registration and the rate limit.
            intent = bt.SetWeights(netuid=self.netuid, uids=uids, weights=weights, version_key=int(version_key))
            self._sub.execute(intent, wallet, retries=2).raise_for_failure()

        self._write("set weights", submit)

    def weights_rate_limit(self) -> int:
        return int(
            self._read(
                "read the weights rate limit",
                lambda: self._sub.hyperparameters.weights_rate_limit(self.netuid),
            )
        )

    def blocks_until_weights_allowed(self, hotkey: str) -> int:
        uid = self._uid(hotkey)
        if uid is None:
            raise ChainError(
                f"hotkey {hotkey} is not registered on netuid {self.netuid} ({self.network}): register it first"
            )
        since = self._read(
            "read blocks since the last weight set",
            lambda: self._sub.epochs.blocks_since_last_update(self.netuid, uid),
        )
        if since is None:
            return 0
        # The chain allows a set once since >= limit (bittensor's preflight agrees).
        return max(0, self.weights_rate_limit() - int(since))

    def emissions(self) -> Emissions:
        graph = self.metagraph()
        return Emissions(
            netuid=self.netuid,
            block=graph.block,
            cumulative=False,
            by_hotkey={n.hotkey: n.emission for n in graph.neurons},
        )

    def weights(self) -> dict[int, dict[int, float]]:
        # bittensor normalises each row of the chain's max-upscaled u16 values to fractions.
        rows = self._read("read the weights", lambda: self._sub.weights.weights(self.netuid))
        return {int(v): {int(m): float(w) for m, w in dict(row).items()} for v, row in dict(rows or {}).items()}

    def commit(self, wallet: bt.Wallet, data: str) -> None:
        # One Raw field per line (the pallet's Data::RawN, N <= 128; bittensor reads them back
        # concatenated); the Commitments pallet checks registration (AccountNotAllowedCommit),
        # the number of fields (TooManyFieldsInCommitmentInfo) and the epoch's space (SpaceLimitExceeded).
        fields = commitment_fields(data)
        call = bt.calls.Commitments.set_commitment(self.netuid, {"fields": [{f"Raw{len(f)}": f} for f in fields]})
        self._write("set the commitment", lambda: self._sub.submit_call(call, wallet).raise_for_failure())

    def commitments(self) -> tuple[Commitment, ...]:
        found = self._read("read the commitments", lambda: self._sub.subnets.commitments(self.netuid))
        out = []
        for hotkey, c in dict(found or {}).items():
            text = getattr(c, "value", None)
            if isinstance(text, str) and text:
                out.append(Commitment(str(hotkey), int(c.block), text))
        return tuple(sorted(out, key=lambda c: (c.block, c.hotkey)))

    def subnet_owner(self) -> str | None:
        owner = self._read(
            "read the subnet owner",
            lambda: self._sub.query(bt.storage.SubtensorModule.SubnetOwnerHotkey, [self.netuid]),
        )
        return str(owner) if owner else None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        sub = getattr(self, "_sub", None)
        if sub is not None:
            try:
                sub.close()
            except Exception:  # closing a half-open client must not mask the real error
                pass

    def __repr__(self) -> str:
        return f"SubtensorChain(network={self.network!r}, endpoint={self.endpoint!r}, netuid={self.netuid})"
