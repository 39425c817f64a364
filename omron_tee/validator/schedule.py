"""What to probe next: which workload and model for one miner, and which miners a request goes to. Pure.

Required workloads (tensor) are probed on every model the validator judges,
whether or not a miner says it serves it: serving them is the job. Optional
ones (zk, LLM) are probed only on miners whose latest attestation offers
them, each for its share of probes, so a miner is never scored on a workload
it does not offer, and one that offers it cannot tell a zk or LLM probe is
due.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from omron_tee.chain.base import Neuron
from omron_tee.workloads.base import Workload, Workloads


def choose(workloads: Workloads, judged: Mapping[str, list[str]], offer: Any, rng: np.random.Generator,
           shares: Mapping[str, float], *, model_id: str | None = None) -> tuple[Workload, str] | None:
    """(workload, model) for one probe, or None when the validator judges nothing.

    ``judged``: workload name -> the models the validator can judge it on; ``offer``: the
    miner's latest ``AttestResponse`` (None: not yet known); ``shares``: per optional workload,
    the share of probes it gets where offered."""
    for w in workloads:
        if not w.optional or offer is None:
            continue
        models = sorted(m for m in judged.get(w.name, ()) if w.offered(offer, m) and model_id in (None, m))
        if models and rng.random() < shares.get(w.name, 0.0):
            return w, str(rng.choice(models))
    for w in workloads:
        if w.optional:
            continue
        models = [m for m in judged.get(w.name, ()) if model_id in (None, m)]
        if models:
            return w, str(rng.choice(sorted(models)))
    if model_id is not None:  # an optional workload's model, asked for by name
        for w in workloads:
            if model_id in judged.get(w.name, ()):
                return w, model_id
    return None


def candidates(miners: Iterable[Neuron], scores: Mapping[str, float], offers: Mapping[str, Any], model_id: str, count: int) -> list[Neuron]:
    """Miners for a request on ``model_id``: those whose latest attestation offers it first (best score
    first), then those not yet seen; never one known to serve other models only."""
    ranked = sorted(miners, key=lambda n: scores.get(n.hotkey, 0.0), reverse=True)
    known = [n for n in ranked if n.hotkey in offers and model_id in offers[n.hotkey].models]
    unknown = [n for n in ranked if n.hotkey not in offers]
    return (known + unknown)[:count]
