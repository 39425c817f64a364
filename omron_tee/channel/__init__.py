"""The channel to an attested enclave: HPKE sealing (``hpke``), the sealed answer stream (``stream``), the signed receipt (``receipt``)."""
