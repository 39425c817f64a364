from __future__ import annotations

import pytest

from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.testing import vectors


def pytest_collection_modifyitems(config, items):
    if vectors.available():
        return
    skip = pytest.mark.skip(reason=f"test vectors not found at {vectors.TESTVECTORS}")
    for item in items:
        if "vectors" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "vectors: needs ../shared/testvectors")


@pytest.fixture
def intel_store() -> CollateralStore:
    store = CollateralStore()
    store.load_path(vectors.SGX_COLLATERAL)
    store.load_path(vectors.TDX_COLLATERAL)
    return store
