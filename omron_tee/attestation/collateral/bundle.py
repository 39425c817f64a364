"""Collateral bundles: carry a store's content to an air-gapped validator.

A bundle is one JSON file::

    {"format": "omron-tee/collateral-bundle/v1",
     "created": "2025-06-19T10:57:11Z",
     "entries": [{"path": "intel/sgx-00A067110000-processor.json",
                  "sha256": "<hex>", "data": "<base64>"}, ...]}

Paths are the store's own (``store.valid_relpath``); nothing else is
accepted, so a bundle cannot write outside the store. Importing parses every
entry as the store would (a malformed or mislabelled entry is rejected, not
written) and keeps the store's Intel collateral when it is newer than the
bundle's. The bundle is not signed: its content is. Intel collateral, AMD
certificates and CRLs and NVIDIA OCSP responses are verified against the
vendors' roots when used, as if fetched.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omron_tee.errors import CollateralError
from omron_tee.reasons import Reason

if TYPE_CHECKING:
    from omron_tee.attestation.collateral.store import CollateralStore

FORMAT = "omron-tee/collateral-bundle/v1"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def export(store: "CollateralStore", *, now: float | None = None) -> bytes:
    created = dt.datetime.fromtimestamp(now if now is not None else dt.datetime.now().timestamp(), tz=dt.timezone.utc)
    entries = [
        {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "data": base64.b64encode(data).decode("ascii")}
        for rel, data in store.files()
    ]
    doc = {"format": FORMAT, "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"), "entries": entries}
    return json.dumps(doc, indent=1).encode()


def is_bundle(data: bytes) -> bool:
    return b'"format"' in data[:4096] and FORMAT.encode() in data[:4096]


def parse(data: bytes) -> list[tuple[str, bytes]]:
    if len(data) > MAX_BUNDLE_BYTES:
        raise CollateralError(f"bundle is larger than {MAX_BUNDLE_BYTES} bytes", reason=Reason.COLLATERAL_INVALID)
    try:
        doc: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise CollateralError("bundle is not JSON", reason=Reason.COLLATERAL_INVALID) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CollateralError(f"not a collateral bundle (format must be {FORMAT!r})", reason=Reason.COLLATERAL_INVALID)
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise CollateralError("bundle has no entries list", reason=Reason.COLLATERAL_INVALID)
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("path"), str) or not isinstance(e.get("data"), str):
            raise CollateralError(f"bundle entry {i} needs a path and base64 data", reason=Reason.COLLATERAL_INVALID)
        try:
            blob = base64.b64decode(e["data"], validate=True)
        except ValueError:
            raise CollateralError(f"bundle entry {e['path']!r}: data is not base64", reason=Reason.COLLATERAL_INVALID) from None
        if "sha256" in e and hashlib.sha256(blob).hexdigest() != e["sha256"]:
            raise CollateralError(f"bundle entry {e['path']!r}: sha256 does not match its data", reason=Reason.COLLATERAL_INVALID)
        out.append((e["path"], blob))
    return out
