"""Deliberate misbehaviour for the local network's demo miners, around the runtime, simulated enclaves only.

``SimulatedBackend(faults=...)`` wraps each served model's runtime and prover
(``EnclaveBackend.instrument``); the trusted app's own code path never
branches on a fault, and no real backend has a way to take one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

# "wrong output" changes a completion from this token on.
WRONG_OUTPUT_FROM = 2


@dataclass(frozen=True)
class DevFaults:
    delay_s: float = 0.0  # added to every answer (before the first token of a completion)
    wrong_output: bool = False
    bad_proof: bool = False  # zk: corrupt the proof's bytes
    mismatched_proof: bool = False  # zk: prove another input than the one answered

    @property
    def any(self) -> bool:
        return self.delay_s > 0 or self.wrong_output or self.bad_proof or self.mismatched_proof

    def instrument(self, served: Any) -> Any:
        """``served`` (a ``workloads.base.Served``) with its runtime and prover wrapped to misbehave."""
        if not self.any:
            return served
        runtime = _FaultyLlm(served.runtime, self) if hasattr(served.runtime, "stream") else _FaultyTensor(served.runtime, self)
        prover = _FaultyProver(served.prover, self) if served.prover is not None else None
        return replace(served, runtime=runtime, prover=prover)


class _Proxy:
    def __init__(self, inner: Any, faults: DevFaults) -> None:
        self._inner = inner
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _FaultyTensor(_Proxy):
    def run(self, x: np.ndarray) -> Any:
        out = self._inner.run(x)
        if self._faults.wrong_output:
            out = out + 0.5  # off by far more than any model's tolerance
        if not self._faults.delay_s:
            return out
        return self._late(out)  # an awaitable: slow for its requester, not for the miner's other requests

    async def _late(self, out: np.ndarray) -> np.ndarray:
        await asyncio.sleep(self._faults.delay_s)
        return out


class _FaultyLlm(_Proxy):
    def stream(self, prompt: str, max_tokens: int, stop: threading.Event | None = None) -> Iterator[tuple[int, bytes]]:
        if self._faults.delay_s:
            time.sleep(self._faults.delay_s)  # runs in the generation thread
        for n, (tok, piece) in enumerate(self._inner.stream(prompt, max_tokens, stop)):
            if self._faults.wrong_output and n >= WRONG_OUTPUT_FROM:
                tok = (tok + 1) % self._inner.n_vocab
                piece = self._inner.piece(tok)
            yield tok, piece


class _FaultyProver(_Proxy):
    def prove(self, x: np.ndarray) -> Any:
        if self._faults.mismatched_proof:
            x = x * 0.5  # a valid proof, but of another inference
        zp = self._inner.prove(x)
        if self._faults.bad_proof:
            from omron_tee.zk.prover import tamper_proof

            zp = replace(zp, proof=tamper_proof(zp.proof))
        return zp
