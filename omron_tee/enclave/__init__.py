"""Miner side: how the trusted app obtains evidence on each platform.

``base.EnclaveBackend`` is the one interface every platform implements
(``attest(report_data) -> Evidence``, ``measurement()``); ``keys.EnclaveKeys``
holds the channel keys that only exist inside the enclave.
"""
