"""Every reason a refusal or a failure can name: one place for the stable slugs.

Errors carry one (``OmronTeeError.reason``), verdicts list them, probes score by them, logs and
summaries show them, and peers receive them in ``{"error": {"reason": ...}}``. The values are
part of the protocol and of operators' dashboards: add new ones, never rename old ones.
``Reason`` is a ``StrEnum``: a member is its slug wherever a string is expected (JSON, logs,
comparisons), so peers that speak plain strings keep working. A peer's own refusal arrives as
a plain string and is passed on as such: it may name a reason this build does not know.
``tests/test_reasons.py`` keeps string literals out of every place a reason is given.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    # The exception classes' defaults (omron_tee.errors); subclasses name something narrower.
    ERROR = "error"
    CONFIG = "config"
    MALFORMED_MESSAGE = "malformed-message"
    MALFORMED_REQUEST = "malformed-request"  # a sealed input its model cannot run
    ATTESTATION_FAILED = "attestation-failed"
    EVIDENCE_MALFORMED = "evidence-malformed"
    EVIDENCE_MISSING = "evidence-missing"  # an answer without the in-band evidence its request asked for
    EVIDENCE_UNVERIFIED = "evidence-unverified"
    COLLATERAL = "collateral"
    POLICY = "policy"
    CHANNEL = "channel"
    ENCLAVE = "enclave"
    MODEL = "model"
    CHAIN = "chain"
    RATE_LIMITED = "rate-limited"
    UNAUTHORIZED = "unauthorized"
    MINER_FAILED = "miner-failed"
    ZK = "zk"

    # Bytes from a peer (omron_tee.untrusted, protocol)
    TOO_DEEP = "too-deep"
    TOO_LARGE = "too-large"
    UNSUPPORTED = "unsupported"  # a request option this build does not serve

    # Evidence: signatures, chains and collateral (attestation.verify, attestation.collateral)
    UNSUPPORTED_TEE = "unsupported-tee"
    UNSUPPORTED_QUOTE = "unsupported-quote"
    BAD_SIGNATURE = "bad-signature"
    BAD_CERTIFICATE = "bad-certificate"
    BAD_CERTIFICATE_CHAIN = "bad-certificate-chain"
    UNTRUSTED_CHAIN = "untrusted-chain"
    UNTRUSTED_SIGNER = "untrusted-signer"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_YET_VALID = "certificate-not-yet-valid"
    REVOKED = "revoked"
    TCB_REVOKED = "tcb-revoked"
    BAD_OCSP = "bad-ocsp"
    VCEK_MISMATCH = "vcek-mismatch"
    FWID_MISMATCH = "fwid-mismatch"
    QE_IDENTITY_MISMATCH = "qe-identity-mismatch"
    COLLATERAL_MISSING = "collateral-missing"
    COLLATERAL_UNAVAILABLE = "collateral-unavailable"
    COLLATERAL_PENDING = "collateral-pending"  # being fetched for the next try; the validator never waits on a vendor
    COLLATERAL_NOT_FOUND = "collateral-not-found"  # the vendor's service answered that it has none for what evidence names
    COLLATERAL_UNKNOWN = "collateral-unknown"
    COLLATERAL_INVALID = "collateral-invalid"
    COLLATERAL_MISMATCH = "collateral-mismatch"
    COLLATERAL_EXPIRED = "collateral-expired"
    COLLATERAL_NOT_YET_VALID = "collateral-not-yet-valid"

    # Evidence against the policy (attestation.validate)
    MEASUREMENT_NOT_ALLOWED = "measurement-not-allowed"
    SIMULATED_NOT_ALLOWED = "simulated-not-allowed"
    DEBUG_ENCLAVE = "debug-enclave"
    STALE_EVIDENCE = "stale-evidence"
    TCB_STATUS_NOT_ACCEPTED = "tcb-status-not-accepted"
    TCB_EVALUATION_TOO_OLD = "tcb-evaluation-too-old"
    TCB_TOO_OLD = "tcb-too-old"
    ADVISORY_NOT_ALLOWED = "advisory-not-allowed"
    ISV_SVN_TOO_LOW = "isv-svn-too-low"
    MRSEAM_NOT_ALLOWED = "mrseam-not-allowed"
    TD_ATTRIBUTES = "td-attributes"
    GUEST_POLICY = "guest-policy"
    GUEST_SVN_TOO_LOW = "guest-svn-too-low"
    HOST_DATA_NOT_ALLOWED = "host-data-not-allowed"
    VMPL_NOT_ALLOWED = "vmpl-not-allowed"
    SIGNING_KEY_NOT_ALLOWED = "signing-key-not-allowed"
    CRL_NOT_CHECKED = "crl-not-checked"
    DRIVER_VERSION_NOT_ALLOWED = "driver-version-not-allowed"
    VBIOS_VERSION_NOT_ALLOWED = "vbios-version-not-allowed"

    # The exchange: binding, channel, receipts and streams
    MEASUREMENT_UNPUBLISHED = "measurement-unpublished"  # a build the subnet's publisher never released on chain
    RELEASE_TOO_RECENT = "release-too-recent"  # released, but its timelock has not passed: not yet earning, not struck
    RELEASES_UNKNOWN = "releases-unknown"  # the validator could not read the chain's releases: not charged
    REPORT_DATA_MISMATCH = "report-data-mismatch"  # replayed, relayed or forged evidence
    HOTKEY_MISMATCH = "hotkey-mismatch"  # an enclave asked to attest for another miner
    ENCLAVE_SHARED = "enclave-shared"  # its keys or machine already back another hotkey
    KEM_MISMATCH = "kem-mismatch"
    UNSUPPORTED_SUITE = "unsupported-suite"
    BAD_KEY = "bad-key"
    UNKNOWN_KEY = "unknown-key"  # the enclave restarted since it attested
    TAMPERED_CIPHERTEXT = "tampered-ciphertext"
    BAD_INPUT = "bad-input"
    MALFORMED_RESULT = "malformed-result"
    ENCLAVE_REFUSED = "enclave-refused"  # the enclave's sealed, named refusal
    BAD_RECEIPT = "bad-receipt"
    STREAM_MALFORMED = "stream-malformed"
    STREAM_TAMPERED = "stream-tampered"
    STREAM_TRUNCATED = "stream-truncated"
    STREAM_CLOSED = "stream-closed"

    # The wire: transport, authentication and admission
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    DISCONNECTED = "disconnected"  # the peer closed the connection before answering
    MALFORMED_REPLY = "malformed-reply"
    HTTP_ERROR = "http-error"  # a refusal without our JSON error body
    INTERNAL_ERROR = "internal-error"
    MALFORMED_AUTH = "malformed-auth"  # btauth/1 headers (bittensor.http_auth)
    WRONG_RECEIVER = "wrong-receiver"
    STALE_REQUEST = "stale-request"
    REPLAYED_REQUEST = "replayed-request"
    CALLER_NOT_PERMITTED = "caller-not-permitted"
    CALLER_NOT_REGISTERED = "caller-not-registered"
    CALLER_NOT_STAKED = "caller-not-staked"
    BAD_API_KEY = "bad-api-key"

    # Probes, scores and relays (omron_tee.validator)
    OK = "ok"
    WRONG_OUTPUT = "wrong-output"
    NOT_SERVING = "not-serving"
    MODEL_NOT_SERVED = "model-not-served"
    UNKNOWN_MODEL = "unknown-model"
    VALIDATOR_FAULT = "validator-fault"  # our bug, met by a miner's bytes: not charged
    UNJUDGED_TOO_OFTEN = "unjudged-too-often"  # the validator could not judge this miner several probes in a row: unavailable
    DEADLINE = "deadline"  # a relay's deadline passed before this candidate was tried
    ALL_MINERS_FAILED = "all-miners-failed"
    NO_ATTESTED_MINER = "no-attested-miner"
    NO_VALIDATOR_PERMIT = "no-validator-permit"
    NOT_COMMITTED = "not-committed"  # an audit entry no on-chain root covers yet
    NOT_PROBED = "not-probed"  # a validator that has no verdict on a miner yet
    OTHER = "other"  # a score record's reasons past its bound, folded together

    # Models, enclave backends and the chain
    MODEL_MISSING = "model-missing"
    MODEL_HASH_MISMATCH = "model-hash-mismatch"
    MODEL_LOAD_FAILED = "model-load-failed"
    UNKNOWN_RUNTIME = "unknown-runtime"
    ENCLAVE_UNAVAILABLE = "enclave-unavailable"
    ENCLAVE_WRONG_PLATFORM = "enclave-wrong-platform"
    ENCLAVE_PERMISSION = "enclave-permission"
    ENCLAVE_BUSY = "enclave-busy"
    ENCLAVE_IO = "enclave-io"
    ENCLAVE_BAD_OUTPUT = "enclave-bad-output"
    CHAIN_UNREACHABLE = "chain-unreachable"

    # zk proofs (a refused zk answer decays the miner's score)
    ZK_UNSUPPORTED = "zk-unsupported"
    ZK_PROOF_INVALID = "zk-proof-invalid"
    ZK_INPUT_MISMATCH = "zk-input-mismatch"
    ZK_OUTPUT_MISMATCH = "zk-output-mismatch"
    ZK_PROVE_FAILED = "zk-prove-failed"
    ZK_NOT_BUILT = "zk-not-built"
    ZK_BUILD_FAILED = "zk-build-failed"
    ZK_UNAVAILABLE = "zk-unavailable"
    CIRCUIT_MISMATCH = "circuit-mismatch"  # proven with another build of the model's circuit: no one's fault, not charged


# Failures a miner cannot be blamed for: counted and shown, never scored (docs/SCORING.md).
# The validator could not fetch collateral (its network, Intel's, AMD's or NVIDIA's service), is
# fetching it while the probe waits for nothing (the next probe finds it), or the vendor's service
# answered that it has none (AMD KDS has answered 404 for genuine chips for days at a time); the miner
# proved with a circuit that differs from the validator's own build of the same model; a zk probe
# asked of a miner that does not offer zk (a miner is never scored on a workload it does not offer).
# The validator could not read the chain's published releases.
NOT_CHARGED: frozenset[str] = frozenset({Reason.VALIDATOR_FAULT, Reason.COLLATERAL_UNAVAILABLE, Reason.COLLATERAL_PENDING,
                                         Reason.COLLATERAL_NOT_FOUND, Reason.CIRCUIT_MISMATCH,
                                         Reason.ZK_UNSUPPORTED, Reason.RELEASES_UNKNOWN})

# Of those, the ones a miner's own evidence can bring about (evidence naming a new chip for each probe keeps the
# validator fetching): not charged a few times in a row, then charged as unavailable (``Prober.uncharged``), so no
# miner holds its score by making every probe one the validator cannot judge.
UNCHARGED_A_FEW_TIMES: frozenset[str] = frozenset({Reason.VALIDATOR_FAULT, Reason.COLLATERAL_UNAVAILABLE, Reason.COLLATERAL_PENDING,
                                                   Reason.COLLATERAL_NOT_FOUND})

# Refusals that cost the miner its earnings for now but are no strike: it runs a published build
# whose timelock has not passed yet, and earns once it has (the score decays as for an outage).
NOT_STRUCK: frozenset[str] = frozenset({Reason.RELEASE_TOO_RECENT})
