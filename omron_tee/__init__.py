"""omron-tee: private, verified inference for Bittensor (TEE attestation beside zk proofs)."""

__version__ = "0.1.0"
