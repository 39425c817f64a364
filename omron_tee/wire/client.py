"""Client side: signed JSON requests over httpx, with keep-alive, bounded concurrency and timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from omron_tee.errors import MinerError, ProtocolError
from omron_tee.protocol import dumps, loads
from omron_tee.wire.auth import Signer


class SignedClient:
    """Keep-alive httpx pools, one per peer; every request is signed for its receiver.

    One small pool per peer rather than one large shared pool: httpcore scans
    every connection of a pool for every request it queues, which made a
    64-connection pool cost the validator more CPU than all its cryptography.
    """

    def __init__(self, signer: Signer, *, max_concurrency: int = 64, per_peer: int = 8, timeout: float = 10.0) -> None:
        self.signer = signer
        self._limit = asyncio.Semaphore(max_concurrency)
        self._per_peer = per_peer
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 3.0))
        self._pools: dict[str, httpx.AsyncClient] = {}

    def _pool(self, base_url: str) -> httpx.AsyncClient:
        pool = self._pools.get(base_url)
        if pool is None:
            pool = httpx.AsyncClient(
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=self._per_peer, max_keepalive_connections=self._per_peer),
                # trust_env=False: no proxies from the environment for peer-to-peer calls.
                trust_env=False,
            )
            self._pools[base_url] = pool
        return pool

    async def post(self, base_url: str, path: str, payload: Any, *, receiver: str | None, timeout: float | None = None) -> Any:
        """POST ``payload`` as JSON; returns the parsed reply or raises ``MinerError`` with a reason."""
        body = dumps(payload)
        headers = self.signer.headers("POST", path, body, receiver)
        headers["Content-Type"] = "application/json"
        async with self._limit:
            try:
                kwargs: dict[str, Any] = {} if timeout is None else {"timeout": httpx.Timeout(timeout, connect=min(timeout, 3.0))}
                resp = await self._pool(base_url).post(base_url + path, content=body, headers=headers, **kwargs)
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
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
