"""Who may call the validator's API, and how often: token buckets per caller and for everyone together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omron_tee.errors import AuthError, ConfigError, RateLimited
from omron_tee.reasons import Reason
from omron_tee.wire.ratelimit import RateLimiter, address_key


class AddressQuota:
    """How often one network address may call the API at all, decided before anything is done for the request
    (a body read, a signature checked, a page built): the API shares the validator's one event loop with its
    probes, so a flood must not buy their time and skew the latencies miners are scored by.

    Every request but ``GET /health`` (constant work, what supervisors poll) spends from its address's bucket;
    requests to the unsigned routes (GET: public pages anyone may read) also from one budget shared by all
    addresses, so many addresses together cannot make them cost more. Signed routes then spend from
    ``ApiQuota``'s per-hotkey and global budgets, once the signature is checked.
    """

    def __init__(self, *, rate: float = 50.0, burst: float = 100.0, public_rate: float = 100.0, public_burst: float = 200.0) -> None:
        if min(rate, burst, public_rate, public_burst) <= 0:
            raise ConfigError("API address rates and bursts must be positive")
        self.addresses = RateLimiter(rate, burst)
        self.public = RateLimiter(public_rate, public_burst)

    def take(self, host: str | None, *, public: bool) -> None:
        self.addresses.take(address_key(host), what="this address")
        if public:
            self.public.take("*", what="all callers of the unsigned routes together (the API is busy)")


ADMIT_MODES = ("anyone", "registered", "staked")


class ApiQuota:
    """Who may call the API, and how often.

    Every caller spends from its own bucket and from one global bucket, so
    hotkeys made by the thousand share one budget instead of each getting a
    fresh burst. ``admit`` narrows who may call at all: ``registered`` hotkeys
    of the subnet, or ``staked`` ones, whose rate is then their share of the
    subnet's stake times the global rate (never below ``rate_floor``, never
    above the global rate): stake is the natural quota of a validator's API.
    """

    def __init__(self, *, rate: float = 20.0, burst: float = 40.0, global_rate: float = 200.0, global_burst: float = 400.0,
                 admit: str = "anyone", stake_of: Callable[[str], float | None] | None = None, total_stake: Callable[[], float] | None = None,
                 rate_floor: float = 1.0) -> None:
        if admit not in ADMIT_MODES:
            raise ConfigError(f"API admission must be one of {', '.join(ADMIT_MODES)}, not {admit!r}")
        if admit != "anyone" and (stake_of is None or total_stake is None):
            raise ConfigError("registered or staked admission needs the metagraph's stakes")
        self.admit = admit
        self.callers = RateLimiter(rate, burst)
        self.all = RateLimiter(global_rate, global_burst)
        self.global_rate, self.rate_floor = global_rate, rate_floor
        self._stake_of, self._total = stake_of, total_stake

    def take(self, caller: str) -> None:
        rate = burst = None
        if self.admit != "anyone" and not caller.startswith("key:"):  # API keys are admitted by their operator
            stake = self._stake_of(caller)  # type: ignore[misc]
            if stake is None:
                raise AuthError("this API admits registered hotkeys of the subnet only", reason=Reason.CALLER_NOT_REGISTERED)
            if self.admit == "staked":
                if stake <= 0:
                    raise AuthError("this API admits hotkeys with stake only", reason=Reason.CALLER_NOT_STAKED)
                total = max(self._total(), stake)  # type: ignore[misc]
                rate = min(self.global_rate, max(self.rate_floor, self.global_rate * stake / total))
                burst = 2.0 * rate
        self.callers.take(caller, rate=rate, burst=burst)
        self.all.take("*", what="all callers together (the API is busy)")


def metagraph_quota(validator: Any, **kw: Any) -> ApiQuota:
    """An ``ApiQuota`` reading stakes from the validator's metagraph (re-read when stale)."""

    def stakes() -> dict[str, float]:
        mg = validator.metagraph or validator.sync()
        return {n.hotkey: n.stake for n in mg.neurons}

    return ApiQuota(stake_of=lambda h: stakes().get(h), total_stake=lambda: sum(stakes().values()), **kw)
