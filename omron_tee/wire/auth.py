"""btauth/1 request signing and verification (``bittensor.http_auth``), and who may call.

bittensor's module does the cryptography, freshness and replay checks; this
module adds what a subnet needs on top: a per-server nonce store, mapping
its errors to our named reasons, and the admission rule (registered, with a
validator permit, unless a local network relaxes it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import bittensor as bt
from bittensor import http_auth

from omron_tee.errors import AuthError, RateLimited
from omron_tee.reasons import Reason
from omron_tee.wire.ratelimit import RateLimiter, address_key

# Requests older than this are refused as stale (and replays within it are caught by the nonce store).
MAX_REQUEST_AGE = 10.0
# Failed authentications one network address (IPv6: its /64) may cause, per second and in a burst, before its
# requests are refused on arrival, unread: an honest validator causes none (a clock far off aside), while every
# forged request naming an admitted hotkey costs a body read, a hash and an sr25519 verification.
FAILED_AUTH_RATE = 2.0
FAILED_AUTH_BURST = 20.0

_REASONS: dict[type, Reason] = {
    http_auth.MalformedAuth: Reason.MALFORMED_AUTH,
    http_auth.WrongReceiver: Reason.WRONG_RECEIVER,
    http_auth.StaleRequest: Reason.STALE_REQUEST,
    http_auth.ReplayedRequest: Reason.REPLAYED_REQUEST,
    http_auth.BadSignature: Reason.BAD_SIGNATURE,
}


class Signer:
    """Signs requests with a wallet's hotkey (resolved once: resolving per request costs 20x)."""

    def __init__(self, wallet: bt.Wallet | object) -> None:
        self._signer = bt.resolve_signer(wallet, role="hotkey")
        self.hotkey: str = self._signer.ss58_address

    def headers(self, method: str, path: str, body: bytes, receiver: str | None) -> dict[str, str]:
        return http_auth.sign(self._signer, method=method, path=path, body=body, receiver_ss58=receiver)


@dataclass(frozen=True)
class Admission:
    """Who may call a server: a function from hotkey to a refusal message (None = admitted), and, where who may call
    is read from elsewhere, ``fresher``: awaited before refusing, it returns once a newer reading is in (or at once
    when none is due), without holding the event loop."""

    check: Callable[[str], str | None]
    fresher: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def anyone(cls) -> "Admission":
        return cls(lambda hotkey: None)


class RequestVerifier:
    """Verifies btauth/1 headers for one server hotkey, with its own replay store."""

    def __init__(self, self_hotkey: str, admission: Admission, *, max_age: float = MAX_REQUEST_AGE,
                 failures: RateLimiter | None = None) -> None:
        self.self_hotkey = self_hotkey
        self.admission = admission
        self.max_age = max_age
        self._nonces = http_auth.InMemoryNonceStore(retention=max_age + http_auth.DEFAULT_ALLOWED_SKEW + 5.0)
        self.failures = RateLimiter(FAILED_AUTH_RATE, FAILED_AUTH_BURST) if failures is None else failures

    async def precheck(self, headers: Mapping[str, str], address: str | None = None) -> None:
        """Refusals decided on a request's headers and where it comes from, before its body is read, hashed or its
        signature checked: ``RateLimited`` when requests from ``address`` (the peer's IP) have failed
        authentication more often than ``FAILED_AUTH_RATE`` allows (``verify`` counts them), and ``AuthError``
        (caller-not-permitted) when the hotkey it claims is not admitted, so a sender who may not call costs a
        lookup (and, for a hotkey not known yet, a wait for the admission's next reading, shared by every such
        request, off the event loop: a validator that just got its permit is admitted on first contact).
        Refusing an unverified claim is safe (it only ever refuses); an admitted claim goes on to ``verify``,
        and no claim at all is ``verify``'s to name. An address that does not parse (a test client, a Unix
        socket) is not limited."""
        key = self._failure_key(address)
        if key is not None:
            wait = self.failures.blocked(key)
            if wait is not None:
                e = RateLimited(f"too many requests from this address failed authentication (at most {self.failures.rate:g}/s); "
                                "refused unread")
                e.retry_after = wait
                raise e
        claimed = headers.get(http_auth.HEADER_HOTKEY) or headers.get(http_auth.HEADER_HOTKEY.lower())
        if not isinstance(claimed, str) or not 0 < len(claimed) <= 64:
            return
        refusal = self.admission.check(claimed)
        if refusal is not None and self.admission.fresher is not None:
            await self.admission.fresher()
            refusal = self.admission.check(claimed)
        if refusal is not None:
            if key is not None:
                self.failures.spend(key)
            raise AuthError(refusal, reason=Reason.CALLER_NOT_PERMITTED)

    @staticmethod
    def _failure_key(address: str | None) -> str | None:
        key = address_key(address) if address is not None else None
        return None if key == address_key(None) else key

    def verify(self, headers: Mapping[str, str], body: bytes, *, method: str, path: str, address: str | None = None) -> str:
        """The caller's hotkey, or ``AuthError`` with a named reason (counted against ``address``, see ``precheck``)."""
        try:
            return self._verify(headers, body, method=method, path=path)
        except AuthError:
            key = self._failure_key(address)
            if key is not None:
                self.failures.spend(key)
            raise

    def _verify(self, headers: Mapping[str, str], body: bytes, *, method: str, path: str) -> str:
        try:
            caller = http_auth.verify(
                headers,
                body,
                method=method,
                path=path,
                self_hotkey_ss58=self.self_hotkey,
                max_age=self.max_age,
                nonce_store=self._nonces,
            )
        except http_auth.AuthError as e:
            raise AuthError(str(e), reason=_REASONS.get(type(e), Reason.UNAUTHORIZED)) from None
        refusal = self.admission.check(caller.hotkey_ss58)
        if refusal is not None:
            raise AuthError(refusal, reason=Reason.CALLER_NOT_PERMITTED)
        return caller.hotkey_ss58
