"""omron-tee: private, verified inference for Bittensor (TEE attestation beside zk proofs)."""

import os as _os

# onnxruntime (1.32) turns usage telemetry on by default: on first use it writes a device
# id and an event database under ~/.cache/Microsoft/. A private-inference enclave records
# nothing, so it is off everywhere this package runs. The variable is read when
# onnxruntime's library loads, so it is set here, before any of our modules imports it.
_os.environ["ORT_DISABLE_TELEMETRY"] = "1"

__version__ = "0.1.0"
