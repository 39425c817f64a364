"""The validator's Prometheus metrics (``prometheus-client``), served at ``GET /metrics`` on its API.

What an operator watches: probes by outcome and latency class, attestation
verdicts, probe latencies, each miner's score and weight, weight settings,
relayed third-party traffic and the API's refusals (rate limits, admission).
Nothing private: no input, output, prompt or completion, and no label a peer
can grow without bound (a reason that is not one of ours is counted as
``other``; miners are labelled by uid, of which a subnet has at most 256).
Each validator has its own registry, so several in one process do not mix.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from omron_tee.reasons import Reason

_KNOWN = {r.value for r in Reason}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def _reason(reason: str) -> str:
    return reason if reason in _KNOWN else Reason.OTHER.value


class ValidatorMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.probes = Counter("omron_tee_probes_total", "Benchmark probes of miners, by outcome", ["reason", "latency_class"], registry=r)
        self.attestations = Counter("omron_tee_attestations_total", "Attestation verdicts on miners' evidence", ["verdict"], registry=r)
        self.latency = Histogram("omron_tee_probe_latency_seconds", "Latency of verified, correct probes, as scoring times them",
                                 ["latency_class"], buckets=LATENCY_BUCKETS, registry=r)
        self.validator_faults = Counter("omron_tee_validator_faults_total", "Probes that met a bug of the validator's (not charged)", registry=r)
        self.relayed = Counter("omron_tee_relayed_total", "Third-party exchanges relayed to miners, by outcome", ["reason"], registry=r)
        self.score = Gauge("omron_tee_miner_score", "Each miner's score", ["uid"], registry=r)
        self.weight = Gauge("omron_tee_miner_weight", "The weight last set for each miner", ["uid"], registry=r)
        self.weight_settings = Counter("omron_tee_weight_settings_total", "Weight settings, by result", ["result"], registry=r)
        self.api_refusals = Counter("omron_tee_api_refusals_total", "Requests the third-party API refused before relaying", ["reason"], registry=r)

    def outcome(self, outcome: object, new_score: float) -> None:
        """One ``validator.scoring.Outcome`` the score book applied, and the score it left."""
        kind = getattr(outcome, "kind", "benchmark")
        reason = _reason(str(getattr(outcome, "reason", Reason.OTHER)))
        if kind == "relay":
            self.relayed.labels(reason).inc()
            return
        if kind == "validator-fault":
            self.validator_faults.inc()
            return
        latency_class = str(getattr(outcome, "latency_class", "tee"))
        self.probes.labels(reason, latency_class).inc()
        accepted = getattr(outcome, "attestation_accepted", None)
        if accepted is not None:
            self.attestations.labels("accepted" if accepted else "rejected").inc()
        latency = getattr(outcome, "latency_s", None)
        if getattr(outcome, "ok", False) and latency is not None:
            self.latency.labels(latency_class).observe(latency)
        self.score.labels(str(getattr(outcome, "uid", -1))).set(new_score)

    def weights_set(self, weights: dict[int, float], error: str | None) -> None:
        self.weight_settings.labels("error" if error else "ok").inc()
        if error is None:
            self.weight.clear()
            for uid, w in weights.items():
                self.weight.labels(str(uid)).set(w)

    def api_refused(self, reason: str) -> None:
        self.api_refusals.labels(_reason(reason)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
