"""The auditor against honest and lying validators, on the embedded chain, with the validator's real code."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading

import pytest

from omron_tee.attestation.validate.policy import Policy
from omron_tee.chain.embedded import EmbeddedChain
from omron_tee.config import create_wallet
from omron_tee.models.registry import ModelRegistry
from omron_tee.transparency import records
from omron_tee.transparency.records import AuditCommitment
from omron_tee.validator import audit as auditor
from omron_tee.validator import core
from omron_tee.validator.core import Validator
from omron_tee.validator.prober import Prober
from omron_tee.validator.scoring import Outcome, ScoreBook
from omron_tee.validator.neuron import build_verifiers


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path):
    clock = Clock()
    chain = EmbeddedChain(1, path=tmp_path / "chain.sqlite", clock=clock, block_time=1.0, tempo=10, weights_rate_limit=2)
    vw = create_wallet("v", "default", tmp_path / "w")
    chain.register(vw, stake=1000.0)
    miners = []
    for i in range(4):
        w = create_wallet(f"m{i}", "default", tmp_path / "w")
        miners.append((w.hotkey.ss58_address, chain.register(w)))
    policy = Policy()
    prober = Prober(None, policy=policy, verifiers=build_verifiers(policy), models=ModelRegistry.builtin())  # never probes here
    scores = ScoreBook(tmp_path / "scores.sqlite", clock=clock)
    v = Validator(chain=chain, wallet=vw, prober=prober, scores=scores, weights_interval=1)
    yield v, chain, clock, miners, tmp_path
    scores.close()
    chain.close()


def feed(v, clock, miners, n=40, seed=0):
    rng = random.Random(seed)
    for _ in range(n):
        for i, (hk, uid) in enumerate(miners):
            clock.now += 0.37
            if i == 3 and rng.random() < 0.3:
                v.record(Outcome(hk, uid, False, "wrong-output", 0.01, True, False))
            elif i == 2 and rng.random() < 0.2:
                v.record(Outcome(hk, uid, False, "timeout", None, None, None))
            else:
                v.record(Outcome(hk, uid, True, "ok", 0.004 + 0.002 * i + rng.random() * 0.001, True, True, latency_class="tee"))
        v.record(Outcome(miners[0][0], miners[0][1], False, "timeout", None, None, None, kind="relay"))  # relayed: not logged


def set_weights(v, clock):
    clock.now += 3.0  # past the rate limit
    ev = asyncio.run(v.set_weights())
    assert ev.error is None, ev.error
    return ev


def run_audit(v, chain, entries=None):
    entries = v.scores.store.audit_entries() if entries is None else entries
    commitments = [(c.block, a) for c in chain.commitments() if c.hotkey == v.hotkey and (a := AuditCommitment.from_commitment(c.data))]
    mg = chain.metagraph()
    return auditor.audit(entries, validator_hotkey=v.hotkey, commitments=commitments, chain_weights=chain.weights().get(mg.by_hotkey(v.hotkey).uid, {}),
                         registered={n.hotkey: n.uid for n in mg.neurons}, log_id=v.scores.store.log_id())


def test_an_honest_validators_weights_are_recomputed_from_its_log(world):
    v, chain, clock, miners, _ = world
    feed(v, clock, miners)
    set_weights(v, clock)
    feed(v, clock, miners, seed=1)
    set_weights(v, clock)
    report = run_audit(v, chain)
    assert report.ok, report.problems
    assert len(report.weight_sets) == 2 and all(c.ok for c in report.weight_sets)
    assert report.chain_match == report.weight_sets[-1].index
    assert report.outcomes == 2 * 40 * 4  # every benchmark outcome, no relayed one
    assert len(chain.commitments()) == 2


def test_weights_set_off_the_loop_keep_the_log_in_order(world):
    """``set_weights`` submits from a worker thread while outcomes keep arriving on the loop: those are held
    and logged after the weights entry, so the auditor's replay recomputes every weight set, and none is lost."""
    v, chain, clock, miners, _ = world
    feed(v, clock, miners)
    clock.now += 3.0  # past the rate limit
    real, submitting, release = chain.set_weights, threading.Event(), threading.Event()

    def slow(*a, **kw):  # a subtensor node including the extrinsic
        submitting.set()
        release.wait(5)
        return real(*a, **kw)

    chain.set_weights = slow

    async def go():
        task = asyncio.create_task(v.set_weights())
        while not submitting.is_set():
            await asyncio.sleep(0.01)
        logged = len(v.scores.ledger)
        feed(v, clock, miners, n=5, seed=1)  # recorded on the loop while the chain call runs
        held, unlogged = len(v._held), len(v.scores.ledger) == logged
        release.set()
        return await task, held, unlogged

    ev, held, unlogged = asyncio.run(go())
    assert ev.error is None and held == 5 * 4 and unlogged  # every benchmark outcome meanwhile held (the relayed one is not logged)
    kinds = [type(records.decode(e)).__name__ for e in v.scores.store.audit_entries()]
    weights_at = kinds.index("WeightsEntry")
    assert kinds[weights_at + 1:].count("OutcomeEntry") == held  # the held ones come after the weights entry
    report = run_audit(v, chain)
    assert report.ok, report.problems
    assert report.outcomes == (40 + 5) * 4 and report.chain_match == report.weight_sets[-1].index


def test_a_validator_setting_weights_its_log_does_not_give_is_caught(world):
    v, chain, clock, miners, _ = world
    feed(v, clock, miners)
    set_weights(v, clock)
    clock.now += 3.0
    chain.set_weights(v.wallet, [miners[3][1]], [1.0], version_key=2)  # all to its friend, outside its log
    report = run_audit(v, chain)
    assert not report.ok and any("none of the weight sets" in p for p in report.problems)


def test_a_validator_weighting_a_friend_in_its_own_log_is_caught_by_replay(world, monkeypatch):
    v, chain, clock, miners, _ = world
    feed(v, clock, miners)
    honest = core.weights_for

    def biased(earning, uid_of, **kw):
        earning = dict(earning) | {miners[3][0]: 1.0}  # the friend scores what it never earned
        return honest(earning, uid_of | {miners[3][0]: miners[3][1]}, **kw)

    monkeypatch.setattr(core, "weights_for", biased)
    set_weights(v, clock)
    report = run_audit(v, chain)
    assert report.chain_match is not None  # the chain holds what it logged ...
    assert not report.ok and any("not what its scores give" in p for p in report.problems)  # ... but its scores do not give it


def test_leaving_out_an_earning_miner_is_caught(world, monkeypatch):
    v, chain, clock, miners, _ = world
    feed(v, clock, miners)
    honest = core.weights_for
    monkeypatch.setattr(core, "weights_for", lambda earning, uid_of, **kw: honest({h: s for h, s in earning.items() if h != miners[0][0]}, uid_of, **kw))
    set_weights(v, clock)
    report = run_audit(v, chain)
    assert not report.ok and any("leaves out 1 earning miner" in p for p in report.problems)


def test_a_log_served_other_than_committed_is_caught(world):
    v, chain, clock, miners, _ = world
    feed(v, clock, miners)
    set_weights(v, clock)
    entries = v.scores.store.audit_entries()
    e = records.decode(entries[5])
    entries[5] = records.encode(records.OutcomeEntry(e.t, e.hotkey, e.uid, e.ok, e.reason, 0.0001, e.attestation_accepted, e.correct, e.kind,
                                                     e.latency_class))
    report = run_audit(v, chain, entries)
    assert not report.ok and any("do not hash to the root" in p for p in report.problems)
    short = run_audit(v, chain, v.scores.store.audit_entries()[:-3])
    assert any("serves" in p for p in short.problems)


def test_a_restart_continues_the_log_and_a_book_older_than_the_log_starts_it_with_a_snapshot(world):
    v, chain, clock, miners, tmp = world
    feed(v, clock, miners, n=20)
    v.scores.close()
    v.scores = ScoreBook(tmp / "scores.sqlite", clock=clock)  # restart: scores and log were written together
    feed(v, clock, miners, n=20, seed=3)
    set_weights(v, clock)
    assert run_audit(v, chain).ok


def test_a_book_older_than_the_log_starts_it_with_a_snapshot_the_auditor_accepts(world):
    v, chain, clock, miners, tmp = world
    v.scores.close()
    old = ScoreBook(tmp / "old.sqlite", clock=clock, audit=False)  # as a validator of the release before the log
    v.scores = old
    feed(v, clock, miners, n=30)
    old.close()
    v.scores = ScoreBook(tmp / "old.sqlite", clock=clock)
    feed(v, clock, miners, n=5, seed=4)
    set_weights(v, clock)
    entries = v.scores.store.audit_entries()
    assert isinstance(records.decode(entries[0]), records.SnapshotEntry)
    report = run_audit(v, chain)
    assert report.ok, report.problems


def test_a_validator_that_lost_its_store_is_audited_on_its_new_log_and_the_old_one_is_named(world):
    v, chain, clock, miners, tmp = world
    feed(v, clock, miners, n=20)
    set_weights(v, clock)
    old_id = v.scores.store.log_id()
    v.scores.close()
    v.scores = ScoreBook(tmp / "new-disk.sqlite", clock=clock)  # its disk died: a new store, a new log
    feed(v, clock, miners, n=20, seed=5)
    set_weights(v, clock)
    report = run_audit(v, chain)
    assert report.ok, report.problems
    assert report.earlier_logs == (old_id,) and report.log_id != old_id
    # Serving the old log while the newest root is of the new one is named.
    stale = auditor.audit([], validator_hotkey=v.hotkey, commitments=[(c.block, a) for c in chain.commitments()
                                                                      if (a := AuditCommitment.from_commitment(c.data))], log_id=old_id)
    assert any("newest root on chain is of log" in p for p in stale.problems)


def _outcome(**change):
    base = {"type": "outcome", "t": 1.0, "hotkey": "h", "uid": 1, "ok": True, "reason": "ok", "latency_s": 0.01, "attestation_accepted": True,
            "correct": True, "kind": "benchmark", "latency_class": "tee"}
    return records.canonical(base | change)


_RECORD = {"uid": 1, "score": 0.5, "requests": 1, "attestations_accepted": 1, "attestations_rejected": 0, "correct": 1, "incorrect": 0,
           "failures": 0, "reasons": {}, "latencies": [0.01]}


@pytest.mark.parametrize("data", [_outcome(latency_s="slow"), _outcome(uid="1"), _outcome(uid=True), _outcome(t=None), _outcome(ok=1),
                                  records.canonical({"type": "weights", "block": 1, "version": 2, "top_k": 16, "uids": {"h": "1"}, "weights": {}}),
                                  records.canonical({"type": "snapshot", "t": 1.0, "records": {"h": {"x": 1}}}),
                                  records.canonical({"type": "snapshot", "t": 1.0, "records": {"h": _RECORD | {"latencies": ["x"]}}}),
                                  records.canonical({"type": "snapshot", "t": 1.0, "records": {"h": _RECORD | {"reasons": {"ok": "1"}}}})])
def test_entries_of_the_wrong_kind_are_named_not_crashes(data):
    """A lying validator serves well-formed JSON with a string where a latency belongs: the auditor names it."""
    r = auditor.replay([data] * 20, validator_hotkey="v")
    assert r.problems and "entry 0 is malformed" in r.problems[0], r.problems


@pytest.mark.parametrize("data", [b"", b"{}", b'{"type":"outcome"}', b"[1]", b'{"type":"weights","block":1}', b"x" * 70000,
                                  records.canonical({"type": "receipt", "t": 1.0, "digest": "00", "miner_hotkey": "m", "model_hash": "00"}) + b" "])
def test_malformed_entries_are_named_not_crashes(data):
    r = auditor.replay([data], validator_hotkey="v")
    assert r.problems and "entry 0 is malformed" in r.problems[0]
