"""The measurement of the trusted app, as the simulated enclave reports it.

A real TEE measures what it loads (Gramine's MRENCLAVE, a TD's MRTD/RTMRs,
an SNP launch digest). The simulated enclave stands in with a SHA-384 over
the trusted app's code (every module of the ``omron_tee`` package) and the
hashes of the models it serves, so that a changed build or a swapped model
gives a different measurement, just as on hardware.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

import omron_tee

_TAG = b"omron-tee/trusted-app/v1"


@functools.lru_cache(maxsize=1)
def code_digest() -> bytes:
    """SHA-256 over the package's Python sources, by relative path (cached: the code does not change under us)."""
    root = Path(omron_tee.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix().encode()
        h.update(len(rel).to_bytes(4, "big") + rel)
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.digest()


def trusted_app_measurement(models: Iterable[tuple[str, bytes]], *, variant: bytes = b"") -> bytes:
    """SHA-384 over the code digest and the (model id, sha256) pairs served.

    ``variant`` lets a development build mark itself as different (the
    localnet's "unapproved build" miner); release builds leave it empty.
    """
    h = hashlib.sha384()
    h.update(_TAG)
    h.update(code_digest())
    for model_id, digest in sorted(models):
        h.update(len(model_id).to_bytes(4, "big") + model_id.encode() + digest)
    if variant:
        h.update(b"variant:" + variant)
    return h.digest()


def release_builds(shipped: list[tuple[str, bytes]], llms: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """(label, measurement) of each simulated build of this release a local network's policy allows: miners
    serving the shipped models, and with LLMs, miners adding them (``--llm``) and LLM-only miners."""
    builds = [("miners serving the shipped models", trusted_app_measurement(shipped))]
    if llms:
        builds += [("miners with --llm", trusted_app_measurement(shipped + llms)), ("LLM-only miners", trusted_app_measurement(llms))]
    return builds
