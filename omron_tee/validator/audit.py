"""The auditor: recompute a validator's weights from its published log and compare them with the chain.

Anyone can run it (``omron-tee audit weights``). Its inputs are public: the entries the
validator serves (``/v1/audit/entries``), the roots it committed on chain, the chain's
uids and the weights it set. It checks, and names every failure:

1. the entries hash to every root the validator committed (``transparency.merkle``), so
   the log served is the log committed, in full, in order;
2. replaying the entries through this release's score book (``validator.scoring``, the
   very code the validator scores with) gives, at every ``weights`` entry, exactly the
   weights logged there, from the uids the chain gives those hotkeys, omitting no miner
   that was earning;
3. the weights the chain holds for the validator are one of its logged sets (with
   commit-reveal, the chain shows a set once it is revealed: the newest logged set or an
   older one while a newer one waits).

A validator that sets weights its log does not produce, serves a log other than the one
it committed, or logs weights its scores do not give is caught by (3), (1) or (2). The
rule replayed is this release's: a log of another weights version is reported, not judged.
A validator that lost its store starts a log of another name; the auditor audits the newest
and names the earlier ones it can no longer check (the weights they gave are in the past,
and the weights on chain now are checked against the newest log).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from omron_tee.errors import ProtocolError
from omron_tee.transparency import records
from omron_tee.transparency.merkle import MerkleLog
from omron_tee.validator.scoring import MinerRecord, Outcome, ScoreBook, snapshot_of
from omron_tee.validator.weights import WEIGHTS_VERSION, weights_for

CHAIN_TOLERANCE = 2.0 / 65535  # subtensor stores weights as u16; the embedded chain as floats


@dataclass(frozen=True)
class WeightsCheck:
    index: int  # the entry's position in the log
    block: int
    logged: dict[int, float]
    recomputed: dict[int, float]

    @property
    def ok(self) -> bool:
        return self.logged.keys() == self.recomputed.keys() and all(math.isclose(self.logged[u], self.recomputed[u], rel_tol=1e-12, abs_tol=1e-15)
                                                                  for u in self.logged)


@dataclass(frozen=True)
class AuditReport:
    validator_hotkey: str
    entries: int
    weight_sets: tuple[WeightsCheck, ...]
    problems: tuple[str, ...]
    chain_match: int | None = None  # the log index of the weights set the chain's weights equal
    outcomes: int = 0
    receipts: int = 0
    log_id: str | None = None
    earlier_logs: tuple[str, ...] = ()  # logs it committed before this one, which it no longer serves: not auditable

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Replay:
    book: ScoreBook
    checks: list[WeightsCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    outcomes: int = 0
    receipts: int = 0


def _load_snapshot(book: ScoreBook, snap: records.SnapshotEntry) -> None:
    """Start the book again from a snapshot's records (``ValueError`` for one that does not read as records)."""
    try:
        loaded = {h: MinerRecord.from_fields(h, r["uid"], r["score"], r) for h, r in snap.records.items()}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"a snapshot record does not read ({type(e).__name__}: {e})") from None
    book.records.clear()
    book.records.update(loaded)
    book.invalidate()


def replay(entries: Sequence[bytes], *, validator_hotkey: str, registered: Mapping[str, int] | None = None) -> _Replay:
    """Run ``entries`` through a fresh score book; every weights entry checked against what it gives.

    ``registered``: the chain's hotkey -> uid now, to check the uids the log says it weighted."""
    now = [0.0]
    state = _Replay(ScoreBook(":memory:", clock=lambda: now[0], audit=False))
    for i, data in enumerate(entries):
        try:
            e = records.decode(data)
        except ProtocolError as err:
            state.problems.append(f"entry {i} is malformed: {err}")
            return state
        if isinstance(e, records.OutcomeEntry):
            now[0] = e.t
            state.book.update(Outcome(e.hotkey, e.uid, e.ok, e.reason, e.latency_s, e.attestation_accepted, e.correct, e.kind, e.latency_class), now=e.t)
            state.outcomes += 1
        elif isinstance(e, records.ReceiptEntry):
            state.receipts += 1
        elif isinstance(e, records.SnapshotEntry):
            if state.book.records:
                mine = snapshot_of(state.book.records)
                if mine != e.records:
                    differ = sorted(h for h in set(mine) | set(e.records) if mine.get(h) != e.records.get(h))
                    state.problems.append(f"entry {i}: the validator restarted from score records that its log does not give ({len(differ)} differ)")
            try:
                _load_snapshot(state.book, e)
            except ValueError as err:
                state.problems.append(f"entry {i} is malformed: {err}")
                return state
        elif isinstance(e, records.WeightsEntry):
            if e.version != WEIGHTS_VERSION:
                state.problems.append(f"entry {i}: weights by rule version {e.version}; this auditor replays version {WEIGHTS_VERSION} (use that release)")
                return state
            earning = state.book.earning_scores()
            left_out = sorted(h for h in earning if h not in e.uids and h != validator_hotkey and (registered is None or h in registered))
            if left_out:
                state.problems.append(f"entry {i} (block {e.block}): the set leaves out {len(left_out)} earning miner(s), e.g. {left_out[0]}")
            if registered is not None:
                wrong = sorted(h for h, u in e.uids.items() if h in registered and registered[h] != u)
                if wrong:
                    state.problems.append(f"entry {i} (block {e.block}): it gives {wrong[0]} uid {e.uids[wrong[0]]}, the chain {registered[wrong[0]]}")
            _, vector = weights_for(earning, e.uids, exclude=validator_hotkey, top_k=e.top_k)
            try:
                logged = {int(u): float(w) for u, w in e.weights.items()}
            except (TypeError, ValueError):
                state.problems.append(f"entry {i}: malformed weights")
                return state
            check = WeightsCheck(i, e.block, logged, vector.as_dict())
            state.checks.append(check)
            if not check.ok:
                state.problems.append(f"entry {i} (block {e.block}): the logged weights are not what its scores give")
    return state


def _normalised(w: Mapping[int, float]) -> dict[int, float]:
    total = math.fsum(v for v in w.values() if v > 0)
    return {u: v / total for u, v in w.items() if v > 0} if total > 0 else {}


def _same(a: Mapping[int, float], b: Mapping[int, float]) -> bool:
    a, b = _normalised(a), _normalised(b)
    return a.keys() == b.keys() and all(abs(a[u] - b[u]) <= CHAIN_TOLERANCE for u in a)


def audit(entries: Sequence[bytes], *, validator_hotkey: str, commitments: Sequence[tuple[int, records.AuditCommitment]],
          chain_weights: Mapping[int, float] | None = None, registered: Mapping[str, int] | None = None, log_id: str | None = None) -> AuditReport:
    """Check a validator's served ``entries`` (of log ``log_id``; default: the newest it committed) against
    its on-chain ``commitments`` ((block, commitment) pairs), replay them, and compare the chain's weights
    for it (None: not read) with its logged sets."""
    problems: list[str] = []
    ordered = sorted(commitments, key=lambda bc: bc[0])
    if log_id is not None and ordered and ordered[-1][1].log_id != log_id:
        problems.append(f"it serves log {log_id}, but its newest root on chain is of log {ordered[-1][1].log_id}")
    log_id = log_id or (ordered[-1][1].log_id if ordered else None)
    earlier = tuple(dict.fromkeys(c.log_id for _, c in ordered if c.log_id != log_id))
    commitments = [(b, c) for b, c in ordered if c.log_id == log_id]
    tree = MerkleLog()
    for data in entries:
        tree.append(data)
    if not commitments:
        problems.append("the validator committed no audit root on chain")
    for block, c in commitments:
        if c.size > len(tree):
            problems.append(f"it committed {c.size} entries at block {block} but serves {len(tree)}")
        elif tree.root(c.size) != c.root:
            problems.append(f"the entries served do not hash to the root it committed at block {block} (size {c.size})")
    committed = max((c.size for _, c in commitments), default=0)
    state = replay(entries[:committed] if committed else entries, validator_hotkey=validator_hotkey, registered=registered)
    problems.extend(state.problems)
    match = None
    if chain_weights is not None:
        if not chain_weights:
            match = None  # nothing set on chain (yet): nothing to compare
        else:
            match = next((c.index for c in reversed(state.checks) if _same(c.logged, chain_weights)), None)
            if match is None:
                problems.append("the weights it holds on chain are none of the weight sets in its log")
    return AuditReport(validator_hotkey, len(tree), tuple(state.checks), tuple(problems), match, state.outcomes, state.receipts, log_id, earlier)
