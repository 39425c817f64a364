"""The validator neuron's LLM part: flags, the LLM models and policy, and LLM probes in the loop.

Hooked into ``validator/neuron.py`` with three calls: ``add_validator_args``
(flags), ``setup`` (after the policy is loaded: add the LLM specs to the
registry, and on local networks allow this release's LLM-serving builds),
and ``LlmRounds.maybe_step`` in the loop.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from dataclasses import replace
from typing import Any

from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.errors import OmronTeeError
from omron_tee.llm.model import DEFAULT_PACKAGE, default_gguf_path, llm_ids
from omron_tee.llm.neuron import llm_specs
from omron_tee.llm.model import with_llm
from omron_tee.validator.core import ProbeEvent

log = logging.getLogger("omron_tee.validator")


def add_validator_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LLM (see docs/LLM.md)")
    g.add_argument("--validator.llm", dest="validator_llm", choices=["auto", "on", "off"], default="auto",
                   help="offer and score the default LLM (gemma3-270m): 'auto' does when llama-cpp-python and the model package "
                   "are installed (default: %(default)s)")
    g.add_argument("--llm.gguf", dest="llm_gguf", action="append", default=[], metavar="PATH[=ID]",
                   help="also offer and score this GGUF model, pinned by its sha256; repeatable")
    g.add_argument("--validator.llm_every", dest="llm_every", type=int, default=5,
                   help="rounds between LLM probe rounds (default: %(default)s)")
    g.add_argument("--validator.llm_tokens", dest="llm_tokens", type=int, default=16,
                   help="tokens per LLM benchmark completion (default: %(default)s)")


def _available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and (
        importlib.util.find_spec(DEFAULT_PACKAGE) is not None or default_gguf_path().exists()
    )


def setup(args: argparse.Namespace, models: Any, policy: Any, *, local: bool) -> Any:
    """Add the LLM specs to ``models``; on a local network, also allow this release's LLM-serving builds. Returns the policy."""
    mode = getattr(args, "validator_llm", "off")
    ns = argparse.Namespace(llm=mode == "on" or (mode == "auto" and _available()), llm_gguf=getattr(args, "llm_gguf", []))
    specs = llm_specs(ns)
    if not specs:
        return policy
    onnx = [(s.model_id, s.sha256) for s in models.specs()]
    with_llm(models, specs)
    if local and policy.simulated.allow:
        llm = [(s.model_id, s.sha256) for s in specs]
        extra = {trusted_app_measurement(onnx + llm), trusted_app_measurement(llm)}  # miners with --llm, and LLM-only miners
        policy = replace(policy, simulated=replace(policy.simulated, measurements=policy.simulated.measurements | extra))
    log.info("LLMs on offer and scored: %s", ", ".join(s.model_id for s in specs))
    return policy


class LlmRounds:
    """Every ``every`` rounds, probe up to ``n`` miners with a private benchmark completion."""

    def __init__(self, validator: Any, *, every: int = 5, max_tokens: int = 16) -> None:
        self.validator = validator
        self.every = max(1, every)
        self.max_tokens = max_tokens
        self.round = 0
        self._prober = None

    def enabled(self) -> bool:
        return bool(llm_ids(self.validator.prober.models))

    async def maybe_step(self, n: int) -> None:
        self.round += 1
        if not self.enabled() or self.round % self.every:
            return
        try:
            if self._prober is None:
                from omron_tee.validator.llm_forward import LlmProber

                self._prober = LlmProber(self.validator, max_tokens=self.max_tokens)
            miners = self.validator.miners()
            served = self._prober.state.served
            known = [m for m in miners if self._prober.model_id in served.get(m.hotkey, ())]
            unknown = [m for m in miners if m.hotkey not in served]
            for neuron in (known + unknown)[:n]:
                r = await self._prober.probe(neuron)
                if r is None:
                    continue
                old, new = self.validator.record(r.outcome)
                self.validator.on_event(ProbeEvent(r, old, new))
            self.validator.scores.flush()
        except OmronTeeError as e:
            log.warning("LLM probes skipped this round: %s", e)
