"""Client side: signed JSON requests over httpx, with keep-alive, bounded concurrency and timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from omron_tee.errors import MinerError, ProtocolError
from omron_tee.protocol import dumps, loads
from omron_tee.wire.auth import Signer


class SignedClient:
    """One pooled httpx client for all peers; every request is signed for its receiver."""

    def __init__(self, signer: Signer, *, max_concurrency: int = 64, timeout: float = 10.0) -> None:
        self.signer = signer
        self._limit = asyncio.Semaphore(max_concurrency)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            # trust_env=False: no proxies from the environment for peer-to-peer calls.
            trust_env=False,
        )

    async def post(self, base_url: str, path: str, payload: Any, *, receiver: str | None, timeout: float | None = None) -> Any:
        """POST ``payload`` as JSON; returns the parsed reply or raises ``MinerError`` with a reason."""
        body = dumps(payload)
        headers = self.signer.headers("POST", path, body, receiver)
        headers["Content-Type"] = "application/json"
        async with self._limit:
            try:
                kwargs: dict[str, Any] = {} if timeout is None else {"timeout": httpx.Timeout(timeout, connect=min(timeout, 3.0))}
                resp = await self._http.post(base_url + path, content=body, headers=headers, **kwargs)
            except httpx.TimeoutException:
                raise MinerError(f"no answer from {base_url} within the timeout", reason="timeout") from None
            except httpx.TransportError as e:
                raise MinerError(f"cannot reach {base_url}: {type(e).__name__}", reason="unreachable") from None
        if resp.status_code != 200:
            reason, message = "http-error", f"HTTP {resp.status_code}"
            try:
                err = resp.json()["error"]
                reason, message = str(err["reason"]), str(err["message"])
            except (ValueError, KeyError, TypeError):
                pass
            raise MinerError(f"{base_url}{path} refused: {message}", reason=reason)
        try:
            return loads(resp.content, "reply")
        except ProtocolError as e:
            raise MinerError(str(e), reason="malformed-reply") from None

    async def aclose(self) -> None:
        await self._http.aclose()
