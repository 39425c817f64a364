"""The workload seam: what one kind of inference needs, on every side of the one exchange.

A workload (tensor model, zk-proved model, LLM) declares:

* its **input** and **result** types, their JSON inside the sealed request and
  the sealed stream, and the hashes the receipt covers (``input_hash``; the
  collector computes the output hash from what arrived);
* how the **enclave** produces the answer from a served model (``produce``:
  the parts of the stream, then the output hash);
* how a **validator** samples a benchmark input, computes its own reference
  and judges a miner's result (``sample``, ``reference``, ``judge``), and
  which latency class its timings are compared in.

Everything else (the channel, the enclave's trusted app, the miner's route,
the prober, the relay, the SDK, receipt files) carries workloads without
knowing which one: it asks ``Workloads.for_request`` or ``Workloads.get``.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from omron_tee.errors import ModelError
from omron_tee.models.spec import ModelSpec
from omron_tee.reasons import Reason

I = TypeVar("I")  # noqa: E741 - the input type
R = TypeVar("R")  # the result type
Json = Any  # a value decoded by omron_tee.untrusted (bounded): checked by the workload that owns it


@dataclass
class Served:
    """A model the enclave serves: its spec, its loaded runtime, and (zk) its prover."""

    spec: ModelSpec
    runtime: Any
    prover: Any = None


@dataclass
class Produced:
    """Filled in by ``Workload.produce`` as it goes: what the final chunk and the receipt say."""

    output_hash: bytes = b""
    meta: dict[str, Json] = field(default_factory=dict)


@dataclass(frozen=True)
class Judgement:
    """A validator's verdict on a verified result. ``correct`` None: not judged (e.g. a proof did not verify)."""

    correct: bool | None
    reason: str
    detail: str


class Collector(abc.ABC, Generic[R]):
    """The requester's side of one answer: checks each part as it arrives, then the whole result."""

    @abc.abstractmethod
    def part(self, data: Json) -> Any:
        """A verified part (typed by the workload); ``ChannelError`` (stream-malformed) if malformed."""

    @abc.abstractmethod
    def finish(self, meta: Json) -> tuple[R, bytes]:
        """The result and the output hash the receipt must cover."""


class Workload(abc.ABC, Generic[I, R]):
    name: str  # on the wire, in the sealed request
    latency_class: str  # timings are compared within a class only
    runtimes: tuple[str, ...]  # spec.runtime values this workload runs
    optional: bool = False  # a miner may not offer it: probed only where offered
    streamed: bool = False  # parts are worth passing on as they arrive (a relay does not buffer)
    max_frame: int = 64 * 1024
    max_stream: int = 8 * 1024 * 1024

    def serves(self, spec: ModelSpec) -> bool:
        return spec.runtime in self.runtimes

    unoffered_reason: str = Reason.MODEL_NOT_SERVED  # an optional workload asked of a miner that does not offer it

    def offered(self, offer: Any, model_id: str) -> bool:
        """Whether a miner's attestation (``AttestResponse``) offers this workload for ``model_id``."""
        return model_id in offer.models

    def unoffered(self, offer: Any, model_id: str) -> tuple[str, str]:
        """(reason, message) for a probe of this workload that ``offer`` does not offer."""
        return self.unoffered_reason, f"miner does not offer {model_id} as {self.name}"

    def judges(self, spec: ModelSpec) -> bool:
        """Whether a validator of this process can judge a result for ``spec`` (zk: holds its verifier)."""
        return True

    # --- the request -------------------------------------------------------------

    @abc.abstractmethod
    def encode_input(self, spec: ModelSpec, value: I) -> Json: ...

    @abc.abstractmethod
    def decode_input(self, spec: ModelSpec, data: Json) -> I:
        """The input a peer sent, checked against the spec; ``ProtocolError``/``ModelError`` if malformed."""

    @abc.abstractmethod
    def input_hash(self, spec: ModelSpec, value: I) -> bytes: ...

    def prepare_input(self, spec: ModelSpec, value: I) -> tuple[Json, bytes]:
        """The requester's side: the input's JSON for the sealed request and its hash (a workload may share one encoding)."""
        return self.encode_input(spec, value), self.input_hash(spec, value)

    def accept_input(self, spec: ModelSpec, data: Json) -> tuple[I, bytes]:
        """The enclave's side: the decoded input and its hash."""
        value = self.decode_input(spec, data)
        return value, self.input_hash(spec, value)

    # --- the enclave ----------------------------------------------------------------

    @abc.abstractmethod
    def produce(self, served: Served, value: I, out: Produced) -> AsyncIterator[Json]:
        """The answer's parts (JSON), as the runtime produces them; sets ``out`` before it ends."""

    # --- the requester ----------------------------------------------------------------

    @abc.abstractmethod
    def collector(self, spec: ModelSpec, value: I) -> Collector[R]: ...

    @abc.abstractmethod
    def result_json(self, result: R) -> Json:
        """The result as a receipt file keeps it."""

    @abc.abstractmethod
    def output_hash_of(self, data: Json) -> bytes:
        """The output hash of a result in a receipt file (``result_json``'s shape, from a hostile file)."""

    # --- the validator -------------------------------------------------------------------

    @abc.abstractmethod
    def sample(self, spec: ModelSpec, rng: np.random.Generator) -> I: ...

    @abc.abstractmethod
    async def reference(self, runtime: Any, spec: ModelSpec, value: I) -> R:
        """The validator's own result, computed before the miner is timed."""

    @abc.abstractmethod
    def judge(self, spec: ModelSpec, value: I, expected: R, got: R) -> Judgement: ...

    def latency(self, answer: Any, attest_s: float) -> float:
        """What scoring times: by default the whole exchange, attestation included."""
        return attest_s + answer.elapsed_s


class Workloads:
    """The workloads this process carries, by wire name, explicitly registered."""

    def __init__(self, workloads: Iterable[Workload]) -> None:
        self._by_name = {w.name: w for w in workloads}

    def names(self) -> list[str]:
        return list(self._by_name)

    def __iter__(self):
        return iter(self._by_name.values())

    def get(self, name: str) -> Workload:
        w = self._by_name.get(name)
        if w is None:
            raise ModelError(f"unknown workload {str(name)[:32]!r}; known: {', '.join(self._by_name)}", reason=Reason.UNSUPPORTED)
        return w

    def default_for(self, spec: ModelSpec) -> Workload:
        """The workload a model runs as unless a request asks for another (a zk-capable model: tensor)."""
        for w in self._by_name.values():
            if w.serves(spec) and not w.optional:
                return w
        for w in self._by_name.values():
            if w.serves(spec):
                return w
        raise ModelError(f"no workload runs model {spec.model_id!r} (runtime {spec.runtime!r})", reason=Reason.UNKNOWN_RUNTIME)

    def for_spec(self, spec: ModelSpec) -> list[Workload]:
        return [w for w in self._by_name.values() if w.serves(spec)]
