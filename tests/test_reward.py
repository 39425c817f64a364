"""The reward rule on its own (validator.reward), and the score book that applies and persists it."""

from __future__ import annotations

import pytest

from omron_tee.reasons import Reason
from omron_tee.validator import reward
from omron_tee.validator.scoring import Outcome, ScoreBook


def test_latency_target_is_one_for_the_fastest_and_falls_linearly_to_the_slowest() -> None:
    span = (0.010, 0.030)
    assert reward.latency_target(0.010, span) == 1.0
    assert reward.latency_target(0.030, span) == pytest.approx(1.0 - reward.RT_WEIGHT)
    assert reward.latency_target(0.020, span) == pytest.approx(1.0 - reward.RT_WEIGHT / 2)
    assert reward.latency_target(0.001, span) == 1.0 and reward.latency_target(9.0, span) == pytest.approx(1.0 - reward.RT_WEIGHT)  # clamped
    assert reward.latency_target(None, span) == 1.0 and reward.latency_target(0.02, None) == 1.0 and reward.latency_target(0.02, (0.02, 0.02)) == 1.0


def test_latency_range_ignores_empty_pools() -> None:
    assert reward.latency_range([[0.01, 0.03, 0.02], [], [0.05]]) == (0.02, 0.05)
    assert reward.latency_range([[], []]) is None


def test_next_score_moves_toward_the_target_decays_on_failure_and_ignores_what_is_not_scored() -> None:
    assert reward.next_score(0.5, scored=True, ok=True, correct=True, target=1.0) == pytest.approx(0.5 + reward.ALPHA * 0.5)
    assert reward.next_score(0.5, scored=True, ok=False, correct=None, target=1.0) == pytest.approx(0.5 * (1 - reward.FAILURE_DECAY))
    assert reward.next_score(0.5, scored=False, ok=False, correct=False, target=1.0) == 0.5  # relayed or validator-fault
    s = 0.0
    for _ in range(200):
        s = reward.next_score(s, scored=True, ok=True, correct=True, target=0.75)
    assert s == pytest.approx(0.75, abs=1e-6)


def test_score_book_applies_the_rule_and_survives_a_restart(tmp_path) -> None:
    path = tmp_path / "scores.sqlite"
    book = ScoreBook(path)
    fast = [Outcome("5Fast", 1, True, Reason.OK, 0.010, True, True) for _ in range(5)]
    slow = [Outcome("5Slow", 2, True, Reason.OK, 0.030, True, True) for _ in range(5)]
    for a, b in zip(fast, slow):
        book.update(a)
        book.update(b)
    book.update(Outcome("5Bad", 3, False, Reason.WRONG_OUTPUT, None, True, False))
    book.update(Outcome("5Fast", 1, False, Reason.TIMEOUT, None, None, None, kind="relay"))  # counted, not scored
    scores = book.scores()
    assert scores["5Fast"] > scores["5Slow"] > 0 and scores["5Bad"] == 0
    before = dict(book.records["5Fast"].reasons)
    book.close()
    again = ScoreBook(path)
    assert again.scores() == pytest.approx(scores)
    assert again.records["5Fast"].reasons == before == {"ok": 5, "timeout": 1}
    assert list(again.records["5Slow"].latencies) == [0.030] * 5
    again.close()
