"""The validator's state machine: pick miners, probe them, score, set weights.

Networking-free apart from the ``Prober``'s client; the neuron and the
local network both drive it. Every probe and every weight setting is
reported to ``on_event`` so callers can show what happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import bittensor as bt

from omron_tee.chain.base import Chain, Metagraph, Neuron
from omron_tee.errors import ChainError, RateLimited
from omron_tee.protocol import MAX_BATCH
from omron_tee.reasons import Reason
from omron_tee.validator.history import History
from omron_tee.validator.loopwatch import LoopWatch
from omron_tee.validator.metrics import ValidatorMetrics
from omron_tee.validator.prober import DEADLINE_SLACK_S, Prober, ProbeResult
from omron_tee.validator.releases import ReleaseWatcher
from omron_tee.validator.scoring import Outcome, ScoreBook
from omron_tee.validator.shared_read import SharedRead
from omron_tee.transparency.records import AuditCommitment, ReceiptEntry, WeightsEntry
from omron_tee.validator.weights import WEIGHTS_VERSION, WeightVector, weights_for

log = logging.getLogger("omron_tee.validator")

MAX_BACKOFF = 16.0  # a failing miner is probed at least every MAX_BACKOFF intervals
FAILURE_GAP_S = 0.25  # the shortest pause after a failed probe, before its backoff
DEFAULT_MAX_IN_FLIGHT = 64  # probes at once over all miners' lanes


@dataclass(frozen=True)
class ProbeEvent:
    result: ProbeResult
    old_score: float
    new_score: float
    held: bool = False  # recorded while weights were being set: scored (and logged) right after them


@dataclass(frozen=True)
class LastVerdict:
    """What the validator last concluded of a miner's benchmark exchange (what it tells the miner)."""

    at: float
    model_id: str
    reason: str
    message: str
    verdict: str  # validator.reward.Verdict's value


@dataclass(frozen=True)
class WeightsEvent:
    block: int
    weights: WeightVector
    error: str | None = None


Event = ProbeEvent | WeightsEvent


class Validator:
    def __init__(
        self,
        *,
        chain: Chain,
        wallet: bt.Wallet,
        prober: Prober,
        scores: ScoreBook,
        weights_interval: int = 100,
        top_k: int = 16,
        batch: int = 1,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.chain = chain
        self.wallet = wallet
        self.hotkey = wallet.hotkey.ss58_address
        self.prober = prober
        self.scores = scores
        self.weights_interval = weights_interval
        self.top_k = top_k
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} probes")
        self.batch = batch  # probes per miner per turn; more than one go as batches (Prober.probe_batch)
        self.on_event = on_event or (lambda e: None)
        self.metrics = ValidatorMetrics()
        self.history = History()  # what the dashboard shows (validator.api.dashboard)
        self.metagraph: Metagraph | None = None
        self.loop_watch = LoopWatch()  # running while probing continuously: a probe overlapping a stall of ours is not scored
        self._metagraph_read = SharedRead(chain.metagraph)  # sync_async's: one read in flight, shared
        self._synced_at = 0.0
        # A metagraph older than about a block is re-read before use: the API serves
        # between rounds, and a round (LLM probes, zk proofs) can take seconds.
        self._metagraph_max_age = max(1.0, chain.block_time())
        self.last_weights_block: int | None = None
        self._nothing_to_set_at: int | None = None  # block of the last attempt that found no miner earning
        self.last_weights: dict[int, float] = {}
        # While set_weights is at work: the scored outcomes recorded meanwhile, (outcome, model, time), applied and
        # logged after the weights entry (the audit log orders that entry exactly after the outcomes it used).
        self._held: list[tuple[Outcome, str, float]] | None = None
        self._cursor = 0
        self.verdicts: dict[str, LastVerdict] = {}  # hotkey -> the last benchmark verdict (api.verdicts tells the miner)
        self._receipt_entries: dict[bytes, int] = {}  # receipt digest -> its audit log entry (one receipt, one entry)
        self.releases = ReleaseWatcher(chain, prober.policy.releases)
        prober.releases = self.releases.current

    async def refresh_releases(self) -> None:
        """Read the chain's published releases when due, off the event loop (a no-op unless the policy needs them)."""
        if self.releases.needed:
            await asyncio.to_thread(self.releases.refresh)

    def sync(self) -> Metagraph:
        """Read the metagraph now (blocking: from async code, ``sync_async``)."""
        return self._synced(self.chain.metagraph())

    async def sync_async(self) -> Metagraph:
        """``sync`` with the chain read in a worker thread: a subtensor node takes seconds, which the probes
        in flight on this loop must not wait through. Callers meanwhile share the one read."""
        return self._synced(await self._metagraph_read.get())

    def _synced(self, mg: Metagraph) -> Metagraph:
        self.metagraph = mg
        self._synced_at = time.monotonic()
        # A deregistered hotkey's hardware may serve a newly registered one.
        self.prober.identities.retain({n.hotkey for n in mg.neurons})
        return mg

    @property
    def metagraph_stale(self) -> bool:
        return self.metagraph is None or time.monotonic() - self._synced_at >= self._metagraph_max_age

    def miners(self) -> list[Neuron]:
        age = time.monotonic() - self._synced_at
        synced = self.metagraph is None or age >= self._metagraph_max_age
        found = self._miners_in(self.sync() if synced else self.metagraph)
        if not found and not synced and age >= 0.1:
            # No miner yet (a network starting up): look again rather than wait a whole period.
            found = self._miners_in(self.sync())
        return found

    def known_miners(self) -> list[Neuron]:
        """The miners of the metagraph as last read (read now only when none was yet), for the lanes: their
        supervisor keeps it fresh, off the loop (``sync_async``)."""
        return self._miners_in(self.metagraph) if self.metagraph is not None else self.miners()

    async def current_miners(self) -> list[Neuron]:
        """``miners`` for async callers (the API's requests): a stale metagraph, or one without miners after 0.1 s,
        is read again off the loop, one read shared by the requests meanwhile."""
        if self.metagraph_stale:
            await self.sync_async()
        assert self.metagraph is not None
        found = self._miners_in(self.metagraph)
        if not found and time.monotonic() - self._synced_at >= 0.1:
            found = self._miners_in(await self.sync_async())  # a network starting up: look again now
        return found

    def _miners_in(self, mg: Metagraph) -> list[Neuron]:
        # Permit holders are validators: they serve an API, not inference.
        return [n for n in mg.neurons if n.endpoint is not None and n.hotkey != self.hotkey and not n.validator_permit]

    def pick(self, n: int) -> list[Neuron]:
        """``n`` miners, round-robin from a shuffled start, so every miner is probed equally often."""
        miners = self.miners()
        if not miners:
            return []
        if self._cursor == 0:
            random.shuffle(miners)
        picked = [miners[(self._cursor + i) % len(miners)] for i in range(n)]
        self._cursor = (self._cursor + n) % len(miners)
        return picked

    def record(self, outcome: Outcome, model_id: str = "?", *, now: float | None = None) -> tuple[float, float]:
        """Apply and log one outcome; (old score, new score). While weights are being submitted
        (``set_weights``), a scored outcome is held and applied after their log entry: (score, score) now."""
        if self._held is not None and outcome.kind != "relay":  # relayed outcomes are never logged: no order to keep
            self._held.append((outcome, model_id, self.scores.clock()))
            rec = self.scores.records.get(outcome.hotkey)
            score = rec.score if rec is not None else 0.0
            return score, score
        old, new = self.scores.update(outcome, now=now)
        self.metrics.outcome(outcome, new)
        self.history.exchange(uid=outcome.uid, model=model_id, latency_class=outcome.latency_class, kind=outcome.kind, reason=outcome.reason,
                              ok=outcome.ok, latency_s=outcome.latency_s, score=new)
        self.history.maybe_snapshot(self._scores_by_uid)
        return old, new

    def _scores_by_uid(self) -> dict[int, float]:
        return {r.uid: r.score for r in self.scores.records.values()}

    async def step(self, n: int) -> list[ProbeEvent]:
        """Probe ``n`` miners concurrently and score them (one round: it lasts as long as its slowest
        probe, at most a probe's deadline; ``probe_continuously`` lets no miner hold up another)."""
        targets = self.pick(n)
        await self.refresh_releases()
        since = self.loop_watch.clock()
        results = await asyncio.gather(*(self._probe(m) for m in targets))
        events = [self._scored(r, since=since) for rs in results for r in rs]
        self.scores.flush()
        return events

    async def _probe(self, neuron: Neuron) -> list[ProbeResult]:
        if self.batch > 1:
            return await self.prober.probe_batch(neuron, self.batch)
        return [await self.prober.probe(neuron)]

    def _scored(self, r: ProbeResult, *, since: float | None = None) -> ProbeEvent:
        """Record a probe's result; one that was in flight (from ``since``) while this loop stalled is counted, not
        scored (``validator-fault``): its latency or its timeout is ours, not its miner's."""
        if since is not None and r.outcome.kind == "benchmark":
            stalled = self.loop_watch.stalled_during(since)
            if stalled > 0 and self._stall_decided(r.outcome, stalled):
                log.info("the probe of uid %d overlapped a %.2f s stall of this validator's event loop: counted, not scored", r.outcome.uid, stalled)
                r = dataclasses.replace(r, outcome=dataclasses.replace(r.outcome, kind="validator-fault"),
                                        message=f"{r.message} (not scored: this validator's loop stalled {stalled:.2f} s meanwhile)")
        held = self._held is not None and r.outcome.kind != "relay"
        old, new = self.record(r.outcome, r.model_id)
        if r.outcome.kind == "benchmark":
            self.verdicts[r.outcome.hotkey] = LastVerdict(time.time(), r.model_id, r.outcome.reason, r.message[:500], r.outcome.verdict.value)
        ev = ProbeEvent(r, old, new, held)
        self.on_event(ev)
        return ev

    def _stall_decided(self, outcome: Outcome, stalled: float) -> bool:
        """Whether ``stalled`` seconds of this validator's own stall, not the miner, may have decided ``outcome``: a
        verified answer's latency counts the stall, so it cannot be scored; a timeout is the stall's when it took half
        the deadline or more (an honest miner needs far less than the other half); any other failure is the miner's,
        whatever the loop did (a stall makes no output wrong and no evidence bad)."""
        if outcome.ok:
            return True
        if outcome.reason == Reason.TIMEOUT:
            p = self.prober
            deadline = min(p.timeout, p.timeouts.get(outcome.latency_class, p.timeout)) + DEADLINE_SLACK_S
            return stalled >= deadline / 2
        return False

    async def probe_continuously(self, stop: asyncio.Event, *, interval: float, max_backoff: float = MAX_BACKOFF,
                                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        """Probe every miner on its own lane until ``stop`` is set.

        Each miner is probed, scored, then left alone for ``interval`` (times a random factor
        of 0.5 to 1.5, so probes are not predictable), so a miner that stalls until its
        deadline delays only its own next probe. A miner whose probe failed waits twice as
        long as before, up to ``max_backoff`` times the interval or ``FAILURE_GAP_S``,
        whichever is longer (its score is decaying anyway); one success brings it back to
        the normal pace. At most ``max_in_flight`` probes run at once over all lanes (a lane
        waits for a slot, never for another miner's answer). Scores are flushed about once a
        second; the metagraph decides which lanes exist.
        """
        lanes: dict[str, asyncio.Task] = {}
        slots = asyncio.Semaphore(max_in_flight)
        watching = asyncio.Event()
        watch = asyncio.create_task(self.loop_watch.run(watching))
        try:
            while not stop.is_set():
                await self.refresh_releases()
                if self.metagraph_stale:
                    with contextlib.suppress(ChainError):  # the last metagraph serves until the chain answers
                        await self.sync_async()
                for m in self.known_miners():
                    if m.hotkey not in lanes or lanes[m.hotkey].done():
                        lanes[m.hotkey] = asyncio.create_task(self._lane(m.hotkey, stop, interval, max_backoff, slots))
                self.scores.flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
        finally:
            for t in lanes.values():
                t.cancel()
            await asyncio.gather(*lanes.values(), return_exceptions=True)
            watching.set()
            await watch
            self.scores.flush()

    async def _lane(self, hotkey: str, stop: asyncio.Event, interval: float, max_backoff: float, slots: asyncio.Semaphore) -> None:
        backoff = 1.0
        while not stop.is_set():
            neuron = next((n for n in self.known_miners() if n.hotkey == hotkey), None)
            if neuron is None:
                return  # deregistered, or no longer serving: the supervisor starts a lane if it returns
            async with slots:
                since = self.loop_watch.clock()
                results = await self._probe(neuron)
            events = [self._scored(r, since=since) for r in results]
            failed = any(not ev.result.outcome.ok and ev.result.outcome.kind == "benchmark" for ev in events)
            backoff = min(backoff * 2.0, max_backoff) if failed else 1.0
            # A failing miner waits at least FAILURE_GAP_S times its backoff, even when the
            # validator probes as fast as it can: attackers cannot share its CPU equally.
            wait = max(interval, FAILURE_GAP_S) * backoff if failed else interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait * random.uniform(0.5, 1.5))

    def due_for_weights(self) -> bool:
        block = self.chain.block()
        if self.last_weights_block is not None and block - self.last_weights_block < self.weights_interval:
            return False
        # Nobody earned yet at the last attempt: look again in a while, not every block.
        if self._nothing_to_set_at is not None and block - self._nothing_to_set_at < max(1, self.weights_interval // 10):
            return False
        return self.chain.blocks_until_weights_allowed(self.hotkey) == 0

    async def set_weights(self) -> WeightsEvent:
        """Weights from the earning miners' scores, set on chain; then the audit log's root is committed.

        The chain calls run in worker threads, so probes and the API go on meanwhile (a subtensor node takes a
        block or more to include weights, and as long again for the audit commitment). The weights are computed
        from the scores as they stand; the scored outcomes recorded from then until the weights are in are held
        (``record``) and logged after the weights entry, so the audit log orders that entry exactly after the
        outcomes the weights came from (``validator.audit`` replays that). One weight setting at a time."""
        if self._held is not None:  # a second would lose the first one's held outcomes
            return self._weights_event(self.last_weights_block or -1, WeightVector((), ()), "weights are being set already")
        self._held = []  # from here on, outcomes wait for the weights entry (none is logged before it is decided)
        block, error = -1, None
        weights = WeightVector((), ())
        try:
            mg = await self.sync_async()
            with self.scores.lock:
                used, weights = weights_for(self.scores.earning_scores(), {n.hotkey: n.uid for n in mg.neurons}, exclude=self.hotkey,
                                            top_k=self.top_k)
            block = await asyncio.to_thread(self.chain.block)
            if not weights.uids:
                error = "no miner has earned weight yet"
                self._nothing_to_set_at = block
            else:
                await asyncio.to_thread(self.chain.set_weights, self.wallet, list(weights.uids), list(weights.weights),
                                        version_key=WEIGHTS_VERSION)
                self.last_weights_block = block
                self.last_weights = weights.as_dict()
                self.history.weights_set(block, self.last_weights)
                self.scores.log(WeightsEntry(block, WEIGHTS_VERSION, self.top_k, used, {str(u): w for u, w in weights.as_dict().items()}))
        except RateLimited as e:
            error = str(e)
        except ChainError as e:
            error = f"chain refused weights: {e}"
        finally:
            held, self._held = self._held, None
            for outcome, model_id, at in held:
                self.record(outcome, model_id, now=at)
            self.scores.flush()
        if error is None:
            await self.commit_audit()
        return self._weights_event(block, weights, error)

    def _weights_event(self, block: int, weights: WeightVector, error: str | None) -> WeightsEvent:
        ev = WeightsEvent(block, weights, error)
        self.metrics.weights_set(weights.as_dict(), error)
        self.on_event(ev)
        return ev

    def log_receipt(self, digest: bytes, miner_hotkey: str, model_hash: bytes) -> int | None:
        """Log a checked receipt's digest in the audit log (once); its entry's index, for the client's inclusion proof."""
        if digest not in self._receipt_entries:
            index = self.scores.log(ReceiptEntry(self.scores.clock(), digest.hex(), miner_hotkey, model_hash.hex()))
            if index is None:
                return None
            self._receipt_entries[digest] = index
            self.scores.flush()
        return self._receipt_entries[digest]

    async def commit_audit(self) -> AuditCommitment | None:
        """Commit the audit log's size and root on chain, the chain calls in worker threads (None when there is nothing
        new, or the chain refused: the next weight set commits a longer log, which covers this one). The log may grow
        meanwhile: the root covers its size when the commitment was made."""
        if self.scores.ledger is None:
            return None
        self.scores.flush()
        size = len(self.scores.ledger)
        done = self.scores.store.commits()
        if not size or (done and done[-1][0] == size):
            return None
        c = AuditCommitment(self.scores.store.log_id(), size, self.scores.ledger.tree.root(size))
        try:
            await asyncio.to_thread(self.chain.commit, self.wallet, c.to_commitment())
            block = await asyncio.to_thread(self.chain.block)
        except ChainError as e:  # RateLimited included
            log.warning("could not commit the audit log's root (%d entries) on chain: %s", size, e)
            return None
        self.scores.store.save_commit(size, c.root, block)
        return c
