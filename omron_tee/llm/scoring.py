"""What counts as a correct completion: the validator's rule (see docs/LLM.md).

Validator and miner both decode greedily with the pinned settings, so an
honest miner reproduces the validator's reference completion token for token.
Two honest runs can still part late: llama.cpp picks different matrix kernels
on different CPUs (AVX2, AVX-512, ARM), and a near-tie between the two most
likely tokens can flip; from there on the texts differ. So a completion is
**correct** when

* its first ``EXACT_PREFIX`` tokens (or all of them, if the reference is
  shorter) equal the reference's exactly, and
* the common prefix covers at least ``MIN_PREFIX_SHARE`` of the longer of the
  two completions, and
* it has no more tokens than were asked for.

Anything else is a wrong output, scored like a wrong tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EXACT_PREFIX = 8
MIN_PREFIX_SHARE = 0.9


@dataclass(frozen=True)
class Judgement:
    correct: bool
    common_prefix: int
    reference_len: int
    got_len: int
    reason: str  # "ok", or why not

    @property
    def share(self) -> float:
        longest = max(self.reference_len, self.got_len)
        return self.common_prefix / longest if longest else 1.0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def judge(reference: list[int], got: list[int], max_tokens: int) -> Judgement:
    cp = common_prefix(reference, got)
    longest = max(len(reference), len(got))
    if len(got) > max_tokens:
        return Judgement(False, cp, len(reference), len(got), f"{len(got)} tokens returned, {max_tokens} asked for")
    need_exact = min(EXACT_PREFIX, len(reference))
    if cp < need_exact:
        return Judgement(False, cp, len(reference), len(got), f"diverges from the reference at token {cp} (the first {need_exact} must match)")
    if cp < math.ceil(MIN_PREFIX_SHARE * longest):
        return Judgement(False, cp, len(reference), len(got), f"common prefix {cp}/{longest} is under {MIN_PREFIX_SHARE:.0%}")
    return Judgement(True, cp, len(reference), len(got), "ok")
