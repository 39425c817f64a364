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

from omron_tee.errors import AuthError
from omron_tee.reasons import Reason

# Requests older than this are refused as stale (and replays within it are caught by the nonce store).
MAX_REQUEST_AGE = 10.0

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

    def __init__(self, self_hotkey: str, admission: Admission, *, max_age: float = MAX_REQUEST_AGE) -> None:
        self.self_hotkey = self_hotkey
        self.admission = admission
        self.max_age = max_age
        self._nonces = http_auth.InMemoryNonceStore(retention=max_age + http_auth.DEFAULT_ALLOWED_SKEW + 5.0)

    async def precheck(self, headers: Mapping[str, str]) -> None:
        """``AuthError`` (caller-not-permitted) when the hotkey a request claims is not admitted, decided on its
        headers alone: before its body is read, hashed or its signature checked, so a sender who may not call
        costs a lookup (and, for a hotkey not known yet, a wait for the admission's next reading, shared by every
        such request, off the event loop: a validator that just got its permit is admitted on first contact).
        Refusing an unverified claim is safe (it only ever refuses); an admitted claim goes on to ``verify``,
        and no claim at all is ``verify``'s to name."""
        claimed = headers.get(http_auth.HEADER_HOTKEY) or headers.get(http_auth.HEADER_HOTKEY.lower())
        if not isinstance(claimed, str) or not 0 < len(claimed) <= 64:
            return
        refusal = self.admission.check(claimed)
        if refusal is not None and self.admission.fresher is not None:
            await self.admission.fresher()
            refusal = self.admission.check(claimed)
        if refusal is not None:
            raise AuthError(refusal, reason=Reason.CALLER_NOT_PERMITTED)

    def verify(self, headers: Mapping[str, str], body: bytes, *, method: str, path: str) -> str:
        """The caller's hotkey, or ``AuthError`` with a named reason."""
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
