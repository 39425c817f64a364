"""Public, checkable records: RFC 9162 Merkle logs (``merkle``) and what validators log and commit (``records``).

Pure and low in the layers, like ``attestation``: a third-party auditor or client needs
nothing else to check an inclusion proof or a commitment.
"""
