"""Errors of the zk proof system, each with a stable reason slug."""

from __future__ import annotations

from omron_tee.errors import MinerError, OmronTeeError

# Reasons a validator names when it refuses a zk answer (they decay the miner's score).
ZK_PROOF_INVALID = "zk-proof-invalid"  # missing, malformed, or does not verify against our verifying key
ZK_INPUT_MISMATCH = "zk-input-mismatch"  # hashed/public input: the proof is about another input
ZK_OUTPUT_MISMATCH = "zk-output-mismatch"  # verifies, but its public outputs are not the claimed output
ZK_UNSUPPORTED = "zk-unsupported"  # the miner does not prove this model
ZK_PROVE_FAILED = "zk-prove-failed"  # the prover could not make a proof (miner side)


class ZkError(OmronTeeError):
    """Building, proving or loading zk artifacts failed."""

    reason = "zk"


class ZkRefused(MinerError):
    """A miner's zk answer is refused; ``reason`` names why."""

    reason = ZK_PROOF_INVALID
