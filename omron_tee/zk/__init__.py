"""Omron's second proof system: EZKL zero-knowledge proofs of inference.

``circuits`` turns a pinned ONNX model into EZKL artifacts (settings,
compiled circuit, keys), cached by the model's sha256; ``prover`` makes a
proof of one inference (private input, public output); ``verifier`` checks
a proof and that its public outputs are the claimed ones.

Nothing here downloads anything: the SRS is a ceremony file at a configured
path, or, on the embedded development network only, one generated locally
(which can forge proofs, and says so loudly).
"""

import logging
import os

from omron_tee.zk.errors import ZkError

# ezkl logs through Python logging, and its errors quote witness values (derived from the
# private input). Silence it before its first call (its bridge caches levels); every ezkl
# failure reaches us as an exception anyway. OMRON_TEE_EZKL_LOG=1 turns it back on to debug.
if not os.environ.get("OMRON_TEE_EZKL_LOG"):
    logging.getLogger("ezkl").setLevel(logging.CRITICAL)

__all__ = ["ZkError"]
