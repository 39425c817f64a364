"""The hostile-miner suite's network: two honest miners and every hostile behaviour, real processes on loopback.

See ``omron_tee.devnet.network`` (shared with bench/bench_hostile.py).
"""

from __future__ import annotations

import pytest

from omron_tee.attestation.testing import vectors
from omron_tee.devnet import network


@pytest.fixture(scope="package")
def hostile_net(tmp_path_factory) -> network.HostileNet:
    if not vectors.available():
        pytest.fail(f"the hostile suite needs the shared test vectors at {vectors.TESTVECTORS}")
    net = network.start(tmp_path_factory.mktemp("hostilenet"), honest=2, vectors_dir=vectors.TESTVECTORS)
    try:
        yield net
    finally:
        net.stop()
