"""Errors of the zk proof system, each with a stable reason slug."""

from __future__ import annotations

from omron_tee.errors import MinerError, OmronTeeError
from omron_tee.reasons import Reason

class ZkError(OmronTeeError):
    """Building, proving or loading zk artifacts failed."""

    reason = Reason.ZK


class ZkRefused(MinerError):
    """A miner's zk answer is refused; ``reason`` names why."""

    reason = Reason.ZK_PROOF_INVALID
