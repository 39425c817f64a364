"""Relaying a third party's sealed requests: the parts both relays share (tensor and LLM stream).

The client sealed one copy of its request per candidate miner; the validator
tries them in order within the client's deadline, skipping miners that no
longer serve, and holds a miner's failure against it only when it is the
miner's fault.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from omron_tee.chain.base import Neuron
from omron_tee.errors import MinerError
from omron_tee.protocol import InferRequest, RelayRequest, Tried
from omron_tee.validator.core import Validator
from omron_tee.validator.scoring import Outcome
from omron_tee.reasons import Reason

# Refusals caused by the client's own request (bad ciphertext, stale key...), not by the
# miner: not even counted against it in the summaries.
REQUEST_FAULTS = frozenset({Reason.TAMPERED_CIPHERTEXT, Reason.MALFORMED_MESSAGE, Reason.BAD_KEY, Reason.UNKNOWN_KEY, Reason.UNSUPPORTED_SUITE, Reason.TOO_LARGE})


def relay_targets(validator: Validator, request: RelayRequest, tried: list[Tried]) -> Iterator[tuple[str, InferRequest, Neuron, float]]:
    """The attempts still worth making, with the seconds left; skipped ones are noted in ``tried``."""
    by_hotkey = {n.hotkey: n for n in validator.miners()}
    deadline = time.monotonic() + request.deadline_ms / 1000
    for hotkey, sealed in request.attempts:
        neuron = by_hotkey.get(hotkey)
        left = deadline - time.monotonic()
        if left <= 0.05:
            tried.append(Tried(hotkey, Reason.DEADLINE))
            return
        if neuron is None or neuron.endpoint is None:
            tried.append(Tried(hotkey, Reason.NOT_SERVING))
            continue
        yield hotkey, sealed, neuron, left


def record_failure(validator: Validator, neuron: Neuron, reason: str, tried: list[Tried]) -> None:
    """Count a relay failure (scoring never holds relayed traffic against a miner: see scoring)."""
    tried.append(Tried(neuron.hotkey, reason))
    if reason not in REQUEST_FAULTS:
        validator.record(Outcome(neuron.hotkey, neuron.uid, False, reason, None, None, None, kind="relay"))


def record_success(validator: Validator, neuron: Neuron, started: float, tried: list[Tried]) -> None:
    tried.append(Tried(neuron.hotkey, Reason.OK))
    validator.record(Outcome(neuron.hotkey, neuron.uid, True, Reason.OK, time.perf_counter() - started, None, None, kind="relay"))


def all_failed(tried: list[Tried]) -> MinerError:
    return MinerError("no miner answered within the deadline: " + ", ".join(f"{t.hotkey[:8]}…:{t.reason}" for t in tried), reason=Reason.ALL_MINERS_FAILED)
