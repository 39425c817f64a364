"""The validator's heartbeat: stalls of its own event loop are seen, whether or not the heartbeat ran since."""

from __future__ import annotations

import asyncio
import contextlib
import time

from omron_tee.validator.loopwatch import LoopWatch


@contextlib.asynccontextmanager
async def beating():
    """A fast heartbeat running on this loop for the block's duration (a threshold well above a loaded CI
    machine's scheduling hiccups, well below the stalls made here)."""
    watch = LoopWatch(period=0.01, threshold=0.15)
    stop = asyncio.Event()
    task = asyncio.create_task(watch.run(stop))
    await asyncio.sleep(0.05)
    try:
        yield watch
    finally:
        stop.set()
        await task


def test_a_stall_of_the_loop_is_noted_and_only_where_it_was() -> None:
    async def go():
        async with beating() as watch:
            before = watch.clock()
            await asyncio.sleep(0.1)
            a = watch.clock()
            time.sleep(0.4)  # what a blocking chain call does to the loop
            b = watch.clock()
            await asyncio.sleep(0.1)
            after = watch.clock()
        return watch, before, a, b, after

    watch, before, a, b, after = asyncio.run(go())
    assert 0.35 <= watch.stalled_during(a - 0.01, b + 0.05) <= 0.8
    assert watch.stalled_during(before, a - 0.02) == 0.0  # a window before it saw none
    assert watch.stalled_during(b + 0.03, after) == 0.0  # nor one after it


def test_a_stall_is_seen_before_the_heartbeat_runs_again() -> None:
    """The probe's own task may resume before the heartbeat's: the heartbeat's silence counts as a stall in progress."""

    async def go():
        async with beating() as watch:
            since = watch.clock()
            time.sleep(0.4)
            seen = watch.stalled_during(since)  # no await since the stall: the heartbeat has not run
        return seen, watch.stalled_during(since)

    in_progress, noted = asyncio.run(go())
    assert 0.35 <= in_progress <= 0.8
    assert 0.35 <= noted <= 0.8  # and noted once it ran


def test_without_a_heartbeat_nothing_is_a_stall() -> None:
    watch = LoopWatch()
    assert watch.stalled_during(watch.clock() - 100) == 0.0


def test_a_stall_excuses_only_what_it_may_have_decided(tmp_path) -> None:
    """A verified answer's latency counts the stall (never scored then); a timeout is excused only when the stall
    took half its deadline or more; a wrong output or rejected evidence is the miner's whatever the loop did."""
    from omron_tee.attestation.validate.policy import Policy
    from omron_tee.chain.embedded import EmbeddedChain
    from omron_tee.config import create_wallet
    from omron_tee.models.registry import ModelRegistry
    from omron_tee.validator.core import Validator
    from omron_tee.validator.neuron import build_verifiers
    from omron_tee.validator.prober import DEADLINE_SLACK_S, Prober
    from omron_tee.validator.scoring import Outcome, ScoreBook

    chain = EmbeddedChain(1, path=tmp_path / "chain.sqlite")
    policy = Policy()
    prober = Prober(None, policy=policy, verifiers=build_verifiers(policy), models=ModelRegistry.builtin(), timeout=2.0)
    v = Validator(chain=chain, wallet=create_wallet("v", "default", tmp_path / "w"), prober=prober, scores=ScoreBook(tmp_path / "s.sqlite"))
    try:
        half = (2.0 + DEADLINE_SLACK_S) / 2
        verified = Outcome("5M", 1, True, "ok", 0.004, True, True)
        timeout = Outcome("5M", 1, False, "timeout", None, None, None)
        assert v._stall_decided(verified, 0.1)
        assert v._stall_decided(timeout, half) and not v._stall_decided(timeout, half - 0.01)
        for reason, accepted, correct in (("wrong-output", True, False), ("measurement-not-allowed", False, None), ("stream-tampered", True, None)):
            assert not v._stall_decided(Outcome("5M", 1, False, reason, 0.004, accepted, correct), 30.0), reason
    finally:
        v.scores.close()
        chain.close()
