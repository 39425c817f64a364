"""Token buckets by key, and the key a network address spends from: what the validator's API and the miner's
routes limit callers with."""

from __future__ import annotations

import ipaddress
import threading
import time

from omron_tee.errors import RateLimited


class RateLimiter:
    """Token buckets by key, each with its own rate and burst (the defaults unless given)."""

    MAX_TRACKED = 10_000

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def blocked(self, key: str) -> float | None:
        """Seconds until ``key`` has a token again, None while it has one; nothing is spent (``spend`` counts)."""
        now = time.monotonic()
        with self._lock:
            got = self._buckets.get(key)
        if got is None:
            return None
        tokens = min(self.burst, got[0] + (now - got[1]) * self.rate)
        return None if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def spend(self, key: str) -> None:
        """One token from ``key`` where it has one; never refuses (what counts failures, which ``blocked`` then reads)."""
        try:
            self.take(key)
        except RateLimited:
            pass

    def take(self, key: str, *, rate: float | None = None, burst: float | None = None, what: str = "this hotkey") -> None:
        rate = self.rate if rate is None else rate
        burst = self.burst if burst is None else burst
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) >= self.MAX_TRACKED and key not in self._buckets:
                # Forget keys whose bucket has refilled: they are as good as new, so
                # fresh hotkeys cannot grow this table without bound.
                full = (self.burst - 1.0) / self.rate
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
            tokens, at = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens < 1.0:
                e = RateLimited(f"too many requests from {what}: at most {rate:g}/s (burst {burst:g})")
                e.retry_after = (1.0 - tokens) / rate
                raise e
            self._buckets[key] = (tokens - 1.0, now)


def address_key(host: str | None) -> str:
    """The bucket a network address spends from: an IPv4 address as it is, an IPv6 address by its /64 (one
    subscriber's usual allocation: rotating addresses inside it buys nothing). An address that does not parse
    (none, or a test client's name) spends from one bucket shared by all such."""
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return "addr:unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"ip:{ip.ipv4_mapped}"
        return "ip:" + str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return f"ip:{ip}"
