"""Omron's second proof system: EZKL zero-knowledge proofs of inference.

``circuits`` turns a pinned ONNX model into EZKL artifacts (settings,
compiled circuit, keys), cached by the model's sha256; ``prover`` makes a
proof of one inference (private input, public output); ``verifier`` checks
a proof and that its public outputs are the claimed ones.

Nothing here downloads anything: the SRS is a ceremony file at a configured
path, or, on the embedded development network only, one generated locally
(which can forge proofs, and says so loudly).
"""

from omron_tee.zk.errors import ZkError

__all__ = ["ZkError"]
