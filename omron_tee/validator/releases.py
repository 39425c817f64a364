"""The releases a validator's policy trusts, read from the chain and kept for the probes.

The policy's rule is pure (``attestation.validate.releases``); this module only moves the
chain's commitments into a ``ReleaseLog``. Reads block (a subtensor node can take seconds),
so the validator refreshes from a worker thread and probes read the last log it got. A log
only grows, so an old one can refuse a new build for a few seconds but never accept a build
the chain has not published; when none could be read yet, evidence is refused with
``releases-unknown``, which is the validator's fault and never charged to the miner.
"""

from __future__ import annotations

import logging
import threading
import time

from omron_tee.attestation.validate.releases import OWNER, ReleaseLog, ReleasePolicy
from omron_tee.chain.base import Chain
from omron_tee.errors import ChainError

log = logging.getLogger("omron_tee.validator")


def read_releases(chain: Chain, rule: ReleasePolicy, *, seen: dict | None = None) -> ReleaseLog:
    """The publisher's releases on ``chain`` now (ChainError when the chain cannot say); ``seen``: the
    blocks since which this reader saw each build published (subtensor keeps only the latest commitment)."""
    publisher = chain.subnet_owner() if rule.publisher == OWNER else rule.publisher
    if publisher is None:
        raise ChainError("the subnet has no owner, so no release can be published by it: name a publisher in the policy's [releases]")
    block = chain.block()
    return ReleaseLog.from_commitments(((c.hotkey, c.block, c.data) for c in chain.commitments()), publisher=publisher, block=block, seen=seen)


class ReleaseWatcher:
    """The last ``ReleaseLog`` read, refreshed at most once per ``every`` seconds."""

    def __init__(self, chain: Chain, rule: ReleasePolicy, *, every: float | None = None) -> None:
        self.chain = chain
        self.rule = rule
        self.every = max(1.0, chain.block_time()) if every is None else every
        self._log: ReleaseLog | None = None
        self._read_at = float("-inf")
        # (TEE, measurement) -> the earliest block this validator saw it published since, while it stays
        # published: on subtensor a republication would otherwise restart a build's clock.
        self._seen: dict = {}
        self._lock = threading.Lock()

    @property
    def needed(self) -> bool:
        return self.rule.require_published

    def current(self) -> ReleaseLog | None:
        return self._log

    def refresh(self, *, force: bool = False) -> ReleaseLog | None:
        """Read the chain again when due (blocking: call it from a worker thread in async code)."""
        if not self.needed:
            return None
        with self._lock:
            if not force and time.monotonic() - self._read_at < self.every:
                return self._log
            self._read_at = time.monotonic()
            try:
                log = read_releases(self.chain, self.rule, seen=self._seen)
                self._seen = {(p.release.tee, p.release.measurement): p.block for p in log.releases}
                self._log = log
            except ChainError as e:
                log.warning("could not read the published releases (keeping the last ones read): %s", e)
            return self._log
