"""The HTTP client the collateral fetchers share: httpx, created on first use.

Building an ``httpx.Client`` loads the CA bundle (tens of milliseconds); a
validator that never misses its cache should not pay it, nor hold sockets.
"""

from __future__ import annotations

import threading

import httpx


class LazyHttp:
    def __init__(self, timeout: float, client: httpx.Client | None = None) -> None:
        self._timeout = timeout
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self._timeout, follow_redirects=True)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
