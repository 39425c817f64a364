"""Every verifier this build has, wired to one collateral store.

``default_registry`` is what validators and clients use: the simulated
verifier (trusting the given development keys), Intel SGX and TDX (dcap-qvl),
AMD SEV-SNP and NVIDIA GPUs (cryptography), all behind the same
``VerifierRegistry`` seam.

``default_store`` is the collateral store they share: a directory cache
(``$OMRON_TEE_COLLATERAL_DIR``, else ``~/.cache/omron-tee/collateral``) and,
unless ``fetch=False`` or ``$OMRON_TEE_COLLATERAL_OFFLINE=1``, clients that
fill it from Intel PCS (or the PCCS in ``$OMRON_TEE_PCCS_URL``), AMD KDS
(``$OMRON_TEE_AMD_KDS_URL``) and NVIDIA's OCSP service
(``$OMRON_TEE_NVIDIA_OCSP_URL``) when an entry is missing or expired, never
per request. An air-gapped validator sets the offline flag and imports bundles
(``omron-tee collateral import``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from omron_tee.attestation.collateral.amd import AMD_KDS_URL, AmdKdsClient
from omron_tee.attestation.collateral.intel import INTEL_PCS_URL, IntelPcsClient
from omron_tee.attestation.collateral.nvidia import NVIDIA_OCSP_URL, NVIDIA_RIM_URL, NvidiaCollateralClient
from omron_tee.attestation.collateral.store import CollateralStore
from omron_tee.attestation.verify.dcap import SgxVerifier, TdxVerifier
from omron_tee.attestation.verify.nvidia import NvidiaVerifier
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.attestation.verify.simulated import SimulatedVerifier
from omron_tee.attestation.verify.snp import SnpVerifier


def default_collateral_dir() -> Path:
    env = os.environ.get("OMRON_TEE_COLLATERAL_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "omron-tee" / "collateral"


def default_store(
    cache_dir: str | Path | None = None,
    *,
    fetch: bool | None = None,
    pccs_url: str | None = None,
    kds_url: str | None = None,
    nvidia_ocsp_url: str | None = None,
    background: bool = False,
) -> CollateralStore:
    """The persistent collateral cache, with fetch clients unless offline; ``background``: fetches never make a
    lookup wait (``collateral-pending`` meanwhile), as a validator needs."""
    if fetch is None:
        fetch = os.environ.get("OMRON_TEE_COLLATERAL_OFFLINE", "") not in ("1", "true", "yes")
    root = Path(cache_dir) if cache_dir is not None else default_collateral_dir()
    if not fetch:
        return CollateralStore(root)
    return CollateralStore(
        root,
        background=background,
        intel_client=IntelPcsClient(pccs_url or os.environ.get("OMRON_TEE_PCCS_URL") or INTEL_PCS_URL),
        amd_client=AmdKdsClient(kds_url or os.environ.get("OMRON_TEE_AMD_KDS_URL") or AMD_KDS_URL),
        nvidia_client=NvidiaCollateralClient(
            ocsp_url=nvidia_ocsp_url or os.environ.get("OMRON_TEE_NVIDIA_OCSP_URL") or NVIDIA_OCSP_URL,
            rim_url=os.environ.get("OMRON_TEE_NVIDIA_RIM_URL") or NVIDIA_RIM_URL,
        ),
    )


def default_registry(simulated_keys: Iterable[bytes] = (), *, collateral: CollateralStore | None = None,
                     background: bool = False) -> VerifierRegistry:
    """A registry with every verifier: simulated (trusting ``simulated_keys``), SGX, TDX, SEV-SNP, NVIDIA.

    ``collateral`` defaults to ``default_store()``; pass a ``CollateralStore``
    to choose the cache directory, the fetch URLs, or to stay offline; ``background`` is ``default_store``'s.
    """
    store = collateral if collateral is not None else default_store(background=background)
    return VerifierRegistry(
        [
            SimulatedVerifier(list(simulated_keys)),
            SgxVerifier(store),
            TdxVerifier(store),
            SnpVerifier(store),
            NvidiaVerifier(store),
        ]
    )
