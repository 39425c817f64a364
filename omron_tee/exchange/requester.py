"""The requester's side of the one exchange, as a sans-I/O state machine (as h11 is for HTTP).

Used alike by validators (benchmark traffic), the validator's OpenAI-compatible
path and third-party clients (their own private requests), for every
workload: ``check_attestation`` says whether evidence is acceptable and
yields the session; ``seal_request`` seals an input to the attested key and
returns the ``AnswerReader`` that, fed the answer's bytes as they arrive,
says what was verified. Nothing here does I/O; ``exchange.transport`` moves
the bytes. Every failure is an ``OmronTeeError`` whose ``reason`` names it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from omron_tee import untrusted
from omron_tee.attestation.binding import MAX_BATCH_NONCES, NONCE_LEN, EnclavePublicKeys, batch_nonce
from omron_tee.attestation.evidence import Evidence, Verdict
from omron_tee.attestation.validate.appraise import appraise
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.validate.releases import ReleaseLog
from omron_tee.attestation.verify.registry import VerifierRegistry
from omron_tee.channel.hpke import KemSuite, key_id, request_info, seal
from omron_tee.channel.receipt import Binding, Receipt
from omron_tee.channel.receipt import check as check_receipt
from omron_tee.channel.stream import ChunkOpener, FrameReader, new_reply_secret, open_header
from omron_tee.errors import AttestationError, ChannelError, MinerError, OmronTeeError, ProtocolError
from omron_tee.models.spec import ModelSpec
from omron_tee.protocol import BATCH_ANSWER, BATCH_EVIDENCE, BATCH_NO_EVIDENCE, BATCH_REFUSED, AttestResponse, InferBatch, InferRequest, SealedRequest
from omron_tee.reasons import Reason
from omron_tee.workloads.base import Workload

R = TypeVar("R")
MAX_HELD_PARTS = 16
# Judges the evidence an answer carries for its own request's nonce (``fresh_check`` makes one).
FreshCheck = Callable[[Evidence, bytes], Verdict]

# How long an attested session may be reused before the requester must re-attest.
DEFAULT_SESSION_TTL = 60.0


def new_nonce() -> bytes:
    return os.urandom(NONCE_LEN)


def fresh_check(session: "AttestedSession", *, hotkey: str, policy: Policy, registry: VerifierRegistry,
                releases: ReleaseLog | None = None, clock: Callable[[], float] = time.time) -> FreshCheck:
    """The check an answer's in-band evidence must pass: the same appraisal as an attestation, for the
    request's own nonce, the session's keys and the miner's hotkey, as of the answer's arrival."""

    def check(evidence: Evidence, nonce: bytes) -> Verdict:
        return appraise(evidence, nonce=nonce, keys=session.keys, hotkey=hotkey, policy=policy, registry=registry, now=clock(),
                        releases=releases)

    return check


def candidate_nonce(client_nonce: bytes, miner_hotkey: str) -> bytes:
    """The nonce a relayed attestation sends to one candidate miner.

    A third party's one fresh nonce becomes a different, unlinkable nonce per
    miner, so operators of several miners cannot compare nonces to pick out
    third-party traffic from the validator's benchmarks (which use one random
    nonce per miner); the client derives the same value to check the binding.
    """
    return hashlib.sha256(b"omron-tee/candidate-nonce/v1\0" + client_nonce + miner_hotkey.encode()).digest()


@dataclass(frozen=True)
class AttestedSession:
    """Keys a requester has seen attested, and until when it will trust them without re-attesting."""

    keys: EnclavePublicKeys
    evidence_hash: bytes
    verdict: Verdict
    evidence: Evidence  # what was verified, kept for receipt files
    attested_at: float
    expires_at: float
    attest_nonce: bytes

    @property
    def kem(self) -> KemSuite:
        return KemSuite.parse(self.keys.kem)

    @property
    def key_id(self) -> bytes:
        return key_id(self.keys.hpke_public)

    def fresh(self, now: float) -> bool:
        return now < self.expires_at


def check_attestation(
    response: AttestResponse,
    *,
    nonce: bytes,
    hotkey: str,
    policy: Policy,
    registry: VerifierRegistry,
    kem: KemSuite = KemSuite.X25519,
    now: float | None = None,
    ttl: float = DEFAULT_SESSION_TTL,
    releases: ReleaseLog | None = None,
) -> AttestedSession:
    """An ``AttestedSession`` if the evidence is acceptable, else ``AttestationError`` naming every reason.

    ``hotkey`` is the miner the requester addressed: evidence bound to another hotkey is
    refused, so no miner can present another's enclave. ``kem`` is the suite the requester
    asked for: keys of another suite are refused, so a miner's operator cannot downgrade a
    post-quantum request to classical X25519.
    """
    now = time.time() if now is None else now
    verdict = appraise(response.evidence, nonce=nonce, keys=response.keys, hotkey=hotkey, policy=policy, registry=registry, now=now,
                       releases=releases)
    if not verdict.accepted or verdict.claims is None:
        raise AttestationError("; ".join(verdict.reasons), reason=verdict.reason_code)
    if response.keys.kem != kem.value:
        raise AttestationError(f"the enclave answered with {response.keys.kem!r} keys, not the {kem.value!r} asked for", reason=Reason.KEM_MISMATCH)
    return AttestedSession(
        keys=response.keys,
        # The canonical digest of what was verified: unsigned bytes cannot give the same
        # evidence a second name.
        evidence_hash=verdict.claims.evidence_digest,
        verdict=verdict,
        evidence=response.evidence,
        attested_at=now,
        expires_at=now + ttl,
        attest_nonce=nonce,
    )


@dataclass
class Answer(Generic[R]):
    """A verified answer: the workload's result, the enclave's receipt, and how fast it came."""

    model_id: str
    workload: str
    result: R
    receipt: Receipt
    ttft_s: float | None  # first part's arrival, from the request's start
    elapsed_s: float
    input_hash: bytes
    session: AttestedSession  # the attested enclave that answered (for receipt files)
    miner_hotkey: str = ""


class AnswerReader(Generic[R]):
    """The exchange's requester side, sans-I/O: feed it the answer's bytes as they arrive.

    It derives the stream key from the header and the request's reply secret, opens each chunk in order, hands
    each part to the workload's collector (``feed`` returns the verified parts), and at
    the final chunk checks the receipt: signed by the attested key and covering this
    request's nonce, model, input, the output that arrived and the evidence verified.
    The caller only moves bytes and keeps time (``clock``). Failures: ``ChannelError``.
    """

    def __init__(self, session: AttestedSession, workload: Workload, spec: ModelSpec, value: object, *, nonce: bytes,
                 reply_secret: bytes, input_hash: bytes | None = None, clock: Callable[[], float] = time.perf_counter,
                 fresh: FreshCheck | None = None) -> None:
        self.session = session
        self.fresh = fresh
        self.fresh_verdict: Verdict | None = None
        self.workload = workload
        self.spec = spec
        self.nonce = nonce
        self.input_hash = workload.input_hash(spec, value) if input_hash is None else input_hash
        self._reply_secret = reply_secret
        self._collector = workload.collector(spec, value)
        self._frames = FrameReader(workload.max_frame)
        self._opener: ChunkOpener | None = None
        self._clock = clock
        self.started = clock()
        self.ttft_s: float | None = None
        self.parts = 0
        self.answer: Answer | None = None

    def restart_clock(self) -> None:
        """Time from now (the request is being sent): sealing is not the miner's time."""
        self.started = self._clock()

    def feed(self, data: bytes) -> list[object]:
        """The parts these bytes completed, each verified (the final chunk's parts once its receipt checks)."""
        out: list[object] = []
        for f in self._frames.feed(data):
            out.extend(self._on_frame(f))
        return out

    def _on_frame(self, data: bytes) -> list[object]:
        if self._opener is None:
            self._opener = ChunkOpener(open_header(self._reply_secret, data, self.nonce), self.nonce, max_chunk=self.workload.max_frame)
            return []
        if self.answer is not None:
            raise ChannelError("data after the final chunk of the stream", reason=Reason.STREAM_TAMPERED)
        chunk, final = self._opener.open(data)
        if final:
            return self._finish(chunk)
        if "p" not in chunk:
            raise ChannelError("stream chunk carries no part", reason=Reason.STREAM_MALFORMED)
        return [self._part(chunk["p"], self._clock() - self.started)]

    def _part(self, data: object, at: float) -> object:
        part = self._collector.part(data)
        self.parts += 1
        if self.ttft_s is None:
            self.ttft_s = at
        return part

    def _finish(self, chunk: dict) -> list[object]:
        elapsed = self._clock() - self.started
        held = chunk.get("ps", [])
        if not isinstance(held, list) or len(held) > MAX_HELD_PARTS:
            raise ChannelError("the final chunk's parts are malformed", reason=Reason.STREAM_MALFORMED)
        parts = [self._part(p, elapsed) for p in held]  # a workload that does not stream sends its parts here
        if chunk.get("error"):
            raise ChannelError(f"the enclave refused the request: {str(chunk['error'])[:300]}", reason=Reason.ENCLAVE_REFUSED)
        if chunk.get("n") != self.parts:
            raise ChannelError(f"the final chunk counts {str(chunk.get('n'))[:12]} parts, {self.parts} arrived", reason=Reason.STREAM_TRUNCATED)
        result, out_hash = self._collector.finish(chunk.get("meta"))
        try:
            receipt = Receipt.from_json(chunk.get("receipt"))
        except OmronTeeError:
            raise ChannelError("the final chunk has no valid receipt", reason=Reason.BAD_RECEIPT) from None
        check_receipt(receipt, signing_public=self.session.keys.signing_public,
                      expected=Binding(self.nonce, self.spec.sha256, self.input_hash, out_hash, self.session.evidence_hash))
        if self.fresh is not None:
            self.fresh_verdict = self._check_fresh(chunk.get("evidence"))
        self.answer = Answer(self.spec.model_id, self.workload.name, result, receipt, self.ttft_s, elapsed, self.input_hash, self.session)
        return parts

    def _check_fresh(self, raw: object) -> Verdict:
        """The in-band evidence: present, readable, and accepted for this request's nonce, keys and hotkey."""
        if raw is None:
            raise AttestationError("the answer carries no evidence for this request's nonce, which was asked for", reason=Reason.EVIDENCE_MISSING)
        try:
            evidence = Evidence.from_json(raw)
        except OmronTeeError as e:
            raise AttestationError(f"the answer's evidence cannot be read: {e}", reason=Reason.EVIDENCE_MALFORMED) from None
        assert self.fresh is not None
        verdict = self.fresh(evidence, self.nonce)
        if not verdict.accepted:
            raise AttestationError("the answer's evidence for this request: " + "; ".join(verdict.reasons), reason=verdict.reason_code)
        return verdict

    def close(self) -> Answer:
        """The verified answer; ``ChannelError`` (stream-truncated) if the stream ended early."""
        if self.answer is None:
            got = "no header" if self._opener is None else f"{self.parts} parts and no final chunk"
            raise ChannelError(f"the stream ended before its final chunk ({got})", reason=Reason.STREAM_TRUNCATED)
        if self._frames.pending:
            raise ChannelError("trailing bytes after the final chunk", reason=Reason.STREAM_TAMPERED)
        return self.answer


def seal_request(session: AttestedSession, workload: Workload, spec: ModelSpec, value: object, *,
                 nonce: bytes | None = None, clock: Callable[[], float] = time.perf_counter,
                 fresh: FreshCheck | None = None) -> tuple[InferRequest, AnswerReader]:
    """Seal ``value`` for ``spec``'s model, run as ``workload``, to the session's enclave key, with a
    fresh reply secret inside (the answer's stream key derives from it); the reader opens and checks
    the answer to exactly this request.

    ``fresh`` (``fresh_check``): ask the enclave for evidence bound to this request's nonce with
    its answer, and accept the answer only when that evidence passes: a proof of freshness per
    request in one round trip, on a session attested earlier (docs/ARCHITECTURE.md)."""
    nonce = new_nonce() if nonce is None else nonce
    reply_secret = new_reply_secret()
    encoded, input_hash = workload.prepare_input(spec, value)
    payload = SealedRequest(
        nonce=nonce,
        model_id=spec.model_id,
        workload=workload.name,
        input=encoded,
        reply_secret=reply_secret,
        evidence_hash=session.evidence_hash,
        fresh=fresh is not None,
    )
    sealed = seal(session.kem, session.keys.hpke_public, payload.encode_parts(), request_info(session.key_id))
    reader = AnswerReader(session, workload, spec, value, nonce=nonce, reply_secret=reply_secret, input_hash=input_hash, clock=clock, fresh=fresh)
    return InferRequest(key_id=session.key_id, sealed=sealed), reader


# A batch's evidence frame: evidence with every attachment allowed is well under this (transport's attestation cap),
# and its JSON's elements are bounded as an attestation's are.
MAX_BATCH_EVIDENCE_BYTES = 1024 * 1024
MAX_BATCH_EVIDENCE_ITEMS = 4096
MAX_BATCH_REPLY = 32 * 1024 * 1024  # a whole batch's answer, however large its workloads allow each answer to be
MAX_ERROR_FRAME = 16 * 1024


def _clear_refusal(data: bytes, what: str) -> tuple[str, str]:
    """(reason, message) of a refusal the miner sent in the clear inside a batch, or a named malformed one."""
    try:
        err = untrusted.loads(data, what, max_bytes=MAX_ERROR_FRAME)["error"]
        reason, message = err["reason"], err["message"]
        if isinstance(reason, str) and isinstance(message, str) and 0 < len(reason) <= 64:
            return reason, message[:300]
    except (ProtocolError, KeyError, TypeError):
        pass
    return Reason.MALFORMED_MESSAGE, f"{what} is not a named refusal"



class BatchReader:
    """The requester's side of a batch (``protocol.InferBatch``), sans-I/O: feed it the batch's answer.

    It holds one ``AnswerReader`` per request, in order. Each request's answer is its own sealed
    stream, opened and checked by its own reader exactly as alone, so one request's answer cannot
    pass for another's (other reply secret, other nonce). With ``fresh``, the one evidence after the
    answers must pass for ``batch_nonce`` of the answered requests' nonces, the session's keys and
    the miner's hotkey, or no answer of the batch counts. ``close`` gives each request's ``Answer`` or
    the ``OmronTeeError`` that refused it: one request's fault is not another's.
    """

    def __init__(self, readers: list[AnswerReader], *, fresh: FreshCheck | None, clock: Callable[[], float] = time.perf_counter) -> None:
        if not 1 <= len(readers) <= MAX_BATCH_NONCES:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH_NONCES} requests")
        self.readers = readers
        self.fresh = fresh
        self.fresh_verdict: Verdict | None = None
        self._clock = clock
        self.started = clock()
        largest = max(r.workload.max_stream for r in readers)
        self._frames = FrameReader(1 + max(largest, MAX_BATCH_EVIDENCE_BYTES))
        self._got: list[bytes] = []

    @property
    def max_bytes(self) -> int:
        """The most the batch's answer may take: every answer at its workload's cap, and the evidence."""
        n = len(self.readers)
        return min(MAX_BATCH_REPLY, sum(r.workload.max_stream for r in self.readers) + MAX_BATCH_EVIDENCE_BYTES + 5 * (n + 1))

    def restart_clock(self) -> None:
        self.started = self._clock()

    def feed(self, data: bytes) -> None:
        self._got.extend(self._frames.feed(data))
        if len(self._got) > len(self.readers) + 1:
            raise ChannelError("the batch's answer has more frames than requests and evidence", reason=Reason.STREAM_TAMPERED)

    def close(self) -> list[Answer | OmronTeeError]:
        """Each request's verified ``Answer`` (timed as the batch's time over its size) or its refusal;
        ``ChannelError`` for the whole batch if its answer has trailing bytes."""
        per = (self._clock() - self.started) / len(self.readers)
        if self._frames.pending:
            raise ChannelError("trailing bytes after the batch's last frame", reason=Reason.STREAM_TAMPERED)
        items, trailer = self._got[:len(self.readers)], self._got[len(self.readers):]
        results: list[Answer | OmronTeeError] = []
        answered: list[bytes] = []  # the nonces of the requests answered with a sealed stream
        for i, reader in enumerate(self.readers):
            if i >= len(items):
                results.append(ChannelError(f"the batch's answer ended before request {i + 1} of {len(self.readers)}", reason=Reason.STREAM_TRUNCATED))
                continue
            kind, body = items[i][:1], memoryview(items[i])[1:]
            if kind == BATCH_REFUSED:
                reason, message = _clear_refusal(bytes(body), "a batch's refusal")
                results.append(MinerError(f"the miner refused request {i + 1} of the batch: {message}", reason=reason))
                continue
            if kind != BATCH_ANSWER:
                results.append(ChannelError(f"request {i + 1} of the batch has no answer frame", reason=Reason.STREAM_MALFORMED))
                continue
            answered.append(reader.nonce)
            try:
                reader.feed(bytes(body))
                answer = reader.close()
            except OmronTeeError as e:
                results.append(e)
                continue
            answer.elapsed_s = answer.ttft_s = per
            results.append(answer)
        if self.fresh is not None and answered:
            refused = self._check_fresh(trailer, answered)
            if refused is not None:
                results = [refused if isinstance(r, Answer) else r for r in results]
        elif trailer:
            raise ChannelError("the batch's answer carries evidence that was not asked for", reason=Reason.STREAM_TAMPERED)
        return results

    def _check_fresh(self, trailer: list[bytes], answered: list[bytes]) -> AttestationError | None:
        """None if the batch's evidence passes for its answered requests' nonces, else why not."""
        if not trailer:
            return AttestationError("the batch's answer carries no evidence for its requests' nonces, which was asked for", reason=Reason.EVIDENCE_MISSING)
        kind, body = trailer[0][:1], bytes(memoryview(trailer[0])[1:])
        if kind == BATCH_NO_EVIDENCE:
            _, message = _clear_refusal(body, "a batch's evidence refusal")
            return AttestationError(f"the enclave gave no evidence for the batch: {message}", reason=Reason.EVIDENCE_MISSING)
        if kind != BATCH_EVIDENCE or len(body) > MAX_BATCH_EVIDENCE_BYTES:
            return AttestationError("the batch's last frame is not its evidence", reason=Reason.EVIDENCE_MALFORMED)
        try:
            evidence = Evidence.from_json(untrusted.loads(body, "a batch's evidence", max_bytes=MAX_BATCH_EVIDENCE_BYTES,
                                                          max_items=MAX_BATCH_EVIDENCE_ITEMS))
        except OmronTeeError as e:
            return AttestationError(f"the batch's evidence cannot be read: {e}", reason=Reason.EVIDENCE_MALFORMED)
        assert self.fresh is not None
        verdict = self.fresh(evidence, batch_nonce(answered))
        if not verdict.accepted:
            return AttestationError("the batch's evidence: " + "; ".join(verdict.reasons), reason=verdict.reason_code)
        self.fresh_verdict = verdict
        return None


def seal_batch(session: AttestedSession, items: list[tuple[Workload, ModelSpec, object]], *, fresh: FreshCheck | None = None,
               clock: Callable[[], float] = time.perf_counter) -> tuple[InferBatch, BatchReader]:
    """Seal each ``(workload, model, input)`` to the session's enclave key, as ``seal_request`` does one, into
    one batch; with ``fresh``, one evidence for the batch proves every request's freshness (its own nonce)."""
    if any(w.streamed for w, _, _ in items):
        raise ValueError("a workload that streams is not sent in a batch")
    sealed = [seal_request(session, w, spec, value, clock=clock) for w, spec, value in items]
    batch = InferBatch(tuple(request for request, _ in sealed), fresh=fresh is not None)
    return batch, BatchReader([reader for _, reader in sealed], fresh=fresh, clock=clock)
