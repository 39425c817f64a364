"""The incentive rule on its own (validator.reward, validator.weights, chain.yuma), one property per test,
and the score book that applies and persists it (docs/SCORING.md)."""

from __future__ import annotations

import numpy as np
import pytest

from omron_tee.chain import yuma
from omron_tee.reasons import NOT_CHARGED, Reason
from omron_tee.validator import reward
from omron_tee.validator.reward import Verdict
from omron_tee.validator.scoring import Outcome, ScoreBook
from omron_tee.validator.weights import MIN_SCORE, compute_weights, cosine


# The per-answer quality ---------------------------------------------------------------


def test_quality_is_the_capped_ratio_to_the_reference() -> None:
    assert reward.quality(0.010, 0.010) == 1.0
    assert reward.quality(0.005, 0.010) == 1.0  # faster than the reference: capped, no runaway reward
    assert reward.quality(0.020, 0.010) == pytest.approx(0.5)
    assert reward.quality(0.040, 0.010) == pytest.approx(0.25)
    assert reward.quality(None, 0.010) == 1.0 and reward.quality(0.02, None) == 1.0  # nothing to compare with


def test_quality_falls_monotonically_with_latency() -> None:
    qs = [reward.quality(lat, 0.012) for lat in np.linspace(0.001, 0.2, 200)]
    assert all(a >= b for a, b in zip(qs, qs[1:]))


def test_the_reference_is_the_25th_percentile_of_every_pooled_latency() -> None:
    pools = [[0.010] * 10, [0.020] * 10, [0.030] * 10, [0.040] * 10]
    assert reward.reference_latency(pools) == pytest.approx(float(np.quantile(np.concatenate(pools), 0.25)))
    assert reward.reference_latency([[], []]) is None
    assert reward.quantile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_a_small_difference_in_latency_is_a_small_difference_in_quality() -> None:
    """The old rule mapped the fastest and the slowest of two near-equal miners to 1 and 0.5."""
    ref = 0.010
    assert abs(reward.quality(0.0120, ref) - reward.quality(0.0121, ref)) < 0.01


# Verdicts and the score ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, ok, attested, correct, charged, verdict",
    [
        ("benchmark", True, True, True, True, Verdict.VERIFIED),
        ("benchmark", False, True, False, True, Verdict.STRIKE),  # wrong output
        ("benchmark", False, False, None, True, Verdict.STRIKE),  # evidence rejected
        ("benchmark", False, None, None, True, Verdict.UNAVAILABLE),  # timeout, unreachable
        ("benchmark", False, True, None, True, Verdict.UNAVAILABLE),  # a broken stream after attesting
        ("benchmark", False, False, None, False, Verdict.NOT_SCORED),  # collateral the validator could not fetch
        ("relay", False, True, False, True, Verdict.NOT_SCORED),
        ("validator-fault", False, None, None, True, Verdict.NOT_SCORED),
    ],
)
def test_each_outcome_has_one_verdict(kind, ok, attested, correct, charged, verdict) -> None:
    assert reward.verdict_of(kind=kind, ok=ok, attestation_accepted=attested, correct=correct, charged=charged) is verdict


def test_the_score_is_an_ema_of_quality() -> None:
    s = 0.0
    for _ in range(1500):
        s = reward.next_score(s, Verdict.VERIFIED, 0.75)
    assert s == pytest.approx(0.75, abs=1e-6)
    assert reward.next_score(0.5, Verdict.VERIFIED, 1.0) == pytest.approx(0.5 + reward.ALPHA * 0.5)


def test_a_new_miner_is_scored_on_the_mean_of_its_first_answers() -> None:
    s = reward.next_score(0.0, Verdict.VERIFIED, 0.8, n=1)
    assert s == pytest.approx(0.8)  # no ramp from zero
    s = reward.next_score(s, Verdict.VERIFIED, 0.4, n=2)
    assert s == pytest.approx(0.6)
    far = round(1 / reward.ALPHA) * 4
    assert reward.next_score(0.5, Verdict.VERIFIED, 1.0, n=far) == pytest.approx(0.5 + reward.ALPHA * 0.5)  # then the EMA


def test_availability_failures_decay_and_strikes_zero() -> None:
    assert reward.next_score(0.5, Verdict.UNAVAILABLE) == pytest.approx(0.5 * (1 - reward.FAILURE_DECAY))
    assert reward.next_score(0.9, Verdict.STRIKE) == 0.0
    assert reward.next_score(0.5, Verdict.NOT_SCORED) == 0.5


def test_an_offline_miner_fades_within_a_few_probes() -> None:
    s = 1.0
    for _ in range(14):
        s = reward.next_score(s, Verdict.UNAVAILABLE)
    assert s < MIN_SCORE


def test_a_new_miner_earns_only_after_min_samples() -> None:
    assert not reward.earns(reward.MIN_SAMPLES - 1, 0)
    assert reward.earns(reward.MIN_SAMPLES, 0)


def test_probation_grows_with_each_strike_up_to_a_bound() -> None:
    assert not reward.earns(reward.PROBATION_SAMPLES - 1, 1) and reward.earns(reward.PROBATION_SAMPLES, 1)
    assert not reward.earns(reward.PROBATION_SAMPLES * 3 - 1, 3) and reward.earns(reward.PROBATION_SAMPLES * 3, 3)
    longest = reward.PROBATION_SAMPLES * reward.MAX_PROBATION_STRIKES
    assert reward.earns(longest, 10_000)
    assert reward.next_streak(500, Verdict.STRIKE) == 0 and reward.next_streak(5, Verdict.UNAVAILABLE) == 5


def test_a_miner_wrong_one_time_in_twenty_never_earns() -> None:
    rng = np.random.default_rng(0)
    streak = strikes = earned = 0
    for _ in range(20_000):
        v = Verdict.STRIKE if rng.random() < 0.05 else Verdict.VERIFIED
        strikes += v is Verdict.STRIKE
        streak = reward.next_streak(streak, v)
        earned += reward.earns(streak, strikes)
    assert earned == 0


# Weights --------------------------------------------------------------------------------


def test_equal_scores_get_equal_weight_whatever_the_order() -> None:
    a = compute_weights({3: 0.8, 1: 0.8, 2: 0.4}).as_dict()
    b = compute_weights({2: 0.4, 1: 0.8, 3: 0.8}).as_dict()
    assert a == b and a[1] == a[3]


def test_weights_are_a_smooth_increasing_function_of_score() -> None:
    base = {1: 0.6, 2: 0.7, 3: 0.8}
    w = compute_weights(base).as_dict()
    assert w[1] < w[2] < w[3] and sum(w.values()) == pytest.approx(1.0)
    nudged = compute_weights({**base, 2: 0.7 + 1e-6}).as_dict()
    assert max(abs(nudged[u] - w[u]) for u in w) < 1e-5  # continuous: no jump for a tiny change


def test_only_the_top_k_above_the_floor_earn() -> None:
    w = compute_weights({u: 1.0 - u / 100 for u in range(30)} | {99: MIN_SCORE / 2}, top_k=16).as_dict()
    assert sorted(w) == list(range(16))
    assert compute_weights({1: MIN_SCORE / 2}).uids == ()


def test_cosine_says_how_alike_two_weight_vectors_are() -> None:
    assert cosine({1: 0.5, 2: 0.5}, {1: 0.25, 2: 0.25}) == pytest.approx(1.0)
    assert cosine({1: 1.0}, {2: 1.0}) == 0.0
    assert cosine({}, {1: 1.0}) is None and cosine({1: 0.0}, {1: 1.0}) is None


# Yuma ----------------------------------------------------------------------------------


def test_consensus_is_the_stake_weighted_median() -> None:
    assert yuma.consensus_of([(0.6, 0.2), (0.4, 0.9)], 0.5) == 0.2  # the majority's view, not the average
    assert yuma.consensus_of([(0.3, 0.2), (0.7, 0.9)], 0.5) == 0.9


def test_a_minority_cannot_raise_a_miner_above_consensus() -> None:
    stakes = {0: 70.0, 1: 30.0}
    agree = yuma.epoch(stakes, {0: {2: 0.5, 3: 0.5}, 1: {2: 0.5, 3: 0.5}}, {})
    boosted = yuma.epoch(stakes, {0: {2: 0.5, 3: 0.5}, 1: {3: 1.0}}, {})
    assert boosted.incentive[3] <= agree.incentive[3] + 0.2  # the minority's extra weight is clipped to consensus
    assert boosted.validator_trust[1] == pytest.approx(0.5) and boosted.validator_trust[0] == pytest.approx(1.0)


def test_a_validator_setting_weight_on_itself_gets_no_incentive_from_it() -> None:
    r = yuma.epoch({0: 1.0}, {0: {0: 0.5, 1: 0.5}}, {})
    assert r.incentive == {1: 1.0}


def test_bonds_move_as_an_ema() -> None:
    stakes = {0: 50.0, 1: 50.0}
    first = yuma.epoch(stakes, {0: {2: 1.0}, 1: {2: 1.0}}, {})
    assert first.bonds[0][2] == pytest.approx(0.5)
    late = yuma.epoch(stakes, {0: {2: 1.0}, 1: {3: 1.0}}, first.bonds)  # 1 moves away from 2
    assert late.bonds[0][2] == pytest.approx(0.1 * 1.0 + 0.9 * 0.5)


# The score book ------------------------------------------------------------------------


def test_score_book_applies_the_rule_and_survives_a_restart(tmp_path) -> None:
    path = tmp_path / "scores.sqlite"
    book = ScoreBook(path)
    for _ in range(20):
        book.update(Outcome("5Fast", 1, True, Reason.OK, 0.010, True, True))
        book.update(Outcome("5Slow", 2, True, Reason.OK, 0.030, True, True))
    book.update(Outcome("5Bad", 3, False, Reason.WRONG_OUTPUT, None, True, False))
    book.update(Outcome("5Fast", 1, False, Reason.TIMEOUT, None, None, None, kind="relay"))  # counted, not scored
    scores = book.scores()
    assert scores["5Fast"] > scores["5Slow"] > 0 and scores["5Bad"] == 0
    assert set(book.earning_scores()) == {"5Fast", "5Slow"}
    assert book.records["5Bad"].strikes == 1
    before = dict(book.records["5Fast"].reasons)
    book.close()
    again = ScoreBook(path)
    assert again.scores() == pytest.approx(scores)
    assert again.records["5Fast"].reasons == before == {"ok": 20, "timeout": 1}
    assert list(again.records["5Slow"].latencies) == [0.030] * 20
    assert again.records["5Bad"].strikes == 1 and again.records["5Fast"].streak == 20
    again.close()


def test_equal_miners_converge_to_equal_scores(tmp_path) -> None:
    book = ScoreBook(tmp_path / "s.sqlite")
    rng = np.random.default_rng(3)
    seen: dict[str, list[float]] = {"5A": [], "5B": [], "5Fast": []}
    for i in range(1000):
        for hk, uid, base in (("5A", 1, 0.012), ("5B", 2, 0.012), ("5Fast", 3, 0.008)):
            book.update(Outcome(hk, uid, True, Reason.OK, base * float(rng.lognormal(0, 0.2)), True, True))
            if i >= 400:
                seen[hk].append(book.scores()[hk])
    mean = {hk: float(np.mean(v)) for hk, v in seen.items()}
    # No bias between twins (the noise around it is bench/bench_incentives.py's figure), and speed pays.
    assert abs(mean["5A"] - mean["5B"]) / mean["5A"] < 0.02
    assert mean["5Fast"] > mean["5A"] * 1.2
    book.close()


def test_failures_that_are_no_ones_fault_are_never_charged(tmp_path) -> None:
    book = ScoreBook(tmp_path / "s.sqlite")
    book.record("5M", 1).score = 0.7
    for reason in sorted(NOT_CHARGED):
        book.update(Outcome("5M", 1, False, reason, None, False, None))
    assert book.scores()["5M"] == 0.7 and book.records["5M"].strikes == 0
    book.close()


def test_latencies_are_compared_only_among_recent_miners(tmp_path) -> None:
    now = [1000.0]
    book = ScoreBook(tmp_path / "s.sqlite", clock=lambda: now[0])
    for _ in range(10):
        book.update(Outcome("5Gone", 1, True, Reason.OK, 0.001, True, True))
    now[0] += 10_000  # 5Gone has not been probed for hours
    for _ in range(10):
        book.update(Outcome("5Here", 2, True, Reason.OK, 0.010, True, True))
    assert book.reference() == pytest.approx(0.010)
    book.close()


def test_the_score_books_kept_reference_equals_the_rules_at_every_step() -> None:
    """The sorted pool the score book keeps gives exactly ``reward.reference_latency`` of the recent pools,
    through evictions, miners going quiet past the window, returning, and re-registering on a new uid."""
    import random

    from omron_tee.validator.scoring import ACTIVE_WINDOW_S, Outcome, ScoreBook

    rng = random.Random(5)
    now = [1.8e9]
    book = ScoreBook(":memory:", clock=lambda: now[0], audit=False)
    uids = {f"hk{i}": i for i in range(12)}
    for step in range(6000):
        hk = f"hk{rng.randrange(12)}"
        if rng.random() < 0.002:
            uids[hk] += 100  # re-registered: its record starts again
        now[0] += rng.choice([0.01, 0.5, 3.0]) if rng.random() > 0.001 else ACTIVE_WINDOW_S / 2
        cls = rng.choice(["tee", "tee", "zk", "llm"])
        since = now[0] - ACTIVE_WINDOW_S
        want = reward.reference_latency(r.pool(cls) for r in book.records.values() if r.last_seen >= since)
        assert book.reference(cls, now=now[0]) == want, step
        book.update(Outcome(hk, uids[hk], True, "ok", rng.choice([0.004, 0.005, rng.random() * 0.01]), True, True, latency_class=cls), now=now[0])
