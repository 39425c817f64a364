"""Validator- and client-side attestation, in layers usable alone.

- ``evidence``: the typed evidence, claims and verdicts;
- ``abi``: parse raw evidence bytes into typed structures, nothing else;
- ``verify``: signatures, certificate chains, collateral (returns ``Claims``);
- ``validate``: policy (measurements, TCB, debug, freshness, report-data binding);
- ``collateral``: fetching and caching what ``verify`` needs;
- ``testing``: fakes and test vectors.
"""
