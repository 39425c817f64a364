"""One epoch of Yuma consensus, as a pure function: the embedded chain's emission rule.

Follows subtensor's ``epoch`` (pallets/subtensor/src/epoch/run_epoch.rs) closely enough to show
what consensus does to a validator that disagrees. For validators ``V`` (permit holders that have
set weights) with stake ``S`` normalised over ``V``, and row-normalised weights ``W`` (a
validator's weight on itself is masked, as subtensor does):

* **Consensus** ``C_j``: the stake-weighted ``kappa``-quantile of the weights on ``j``, i.e. the
  largest ``c`` such that validators holding at least ``kappa`` of the stake weigh ``j`` at ``c``
  or more.
* **Clipping**: ``Wc_ij = min(W_ij, C_j)``: weight above consensus counts for nothing.
* **Rank and incentive**: ``R_j = sum_i S_i Wc_ij``, ``I_j = R_j / sum R``; miner trust
  ``T_j = R_j / sum_i S_i W_ij`` (the share of its weight that survived clipping).
* **Validator trust** ``VT_i = sum_j Wc_ij``: how much of a validator's weight agreed.
* **Bonds**: ``dB_ij = S_i Wc_ij`` normalised per miner; ``B = a dB + (1 - a) B_prev``,
  normalised per miner again (``a = 1 - bonds_moving_avg``).
* **Dividends** ``D_i = sum_j B_ij I_j``, normalised over validators.

Emission: half to miners by incentive, half to validators by dividends.

Simplified (written down in docs/SCORING.md): one mechanism, no liquid alpha, no Yuma 3
bond fixes, no weights-outdated masking (a weight set before a uid was registered still counts),
no owner cut, and emission is TAO, not the subnet's alpha.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_KAPPA = 0.5
DEFAULT_BONDS_MOVING_AVG = 0.9  # subtensor's default 900_000 / 1_000_000


@dataclass(frozen=True)
class EpochResult:
    incentive: dict[int, float]  # miners (any uid with weight on it)
    consensus: dict[int, float]
    trust: dict[int, float]
    validator_trust: dict[int, float]
    dividends: dict[int, float]
    ranks: dict[int, float]  # R_j: unnormalised, exact shares of the miners' pool come from these
    bonds: dict[int, dict[int, float]]  # validator -> miner -> bond, after this epoch


def consensus_of(column: list[tuple[float, float]], kappa: float) -> float:
    """The stake-weighted ``kappa``-quantile of one miner's weights: ``column`` is (stake, weight)."""
    acc = 0.0
    for stake, w in sorted(column, key=lambda sw: -sw[1]):
        acc += stake
        if acc >= kappa - 1e-12:
            return w
    return 0.0


def epoch(
    stakes: Mapping[int, float],
    weights: Mapping[int, Mapping[int, float]],
    bonds: Mapping[int, Mapping[int, float]],
    *,
    kappa: float = DEFAULT_KAPPA,
    bonds_moving_avg: float = DEFAULT_BONDS_MOVING_AVG,
) -> EpochResult:
    """One epoch. ``stakes``: the validators (permit holders) and their stake; ``weights``: each one's
    latest revealed weights; ``bonds``: the previous epoch's. Uids missing from ``stakes`` are not
    validators, whatever weights they once set."""
    rows: dict[int, dict[int, float]] = {}
    for i, row in weights.items():
        if i not in stakes or stakes[i] <= 0:
            continue
        clean = {j: float(w) for j, w in row.items() if j != i and w > 0}
        total = sum(clean.values())
        if total > 0:
            rows[i] = {j: w / total for j, w in clean.items()}
    total_stake = sum(stakes[i] for i in rows)
    if not rows or total_stake <= 0:
        return EpochResult({}, {}, {}, {}, {}, {}, {i: dict(b) for i, b in bonds.items() if i in stakes})
    s = {i: stakes[i] / total_stake for i in rows}
    miners = sorted({j for row in rows.values() for j in row})
    consensus = {j: consensus_of([(s[i], rows[i].get(j, 0.0)) for i in rows], kappa) for j in miners}
    clipped = {i: {j: min(w, consensus[j]) for j, w in row.items()} for i, row in rows.items()}
    ranks = {j: sum(s[i] * clipped[i].get(j, 0.0) for i in rows) for j in miners}
    pre = {j: sum(s[i] * rows[i].get(j, 0.0) for i in rows) for j in miners}
    total_rank = sum(ranks.values())
    incentive = {j: (r / total_rank if total_rank > 0 else 0.0) for j, r in ranks.items()}
    trust = {j: (ranks[j] / pre[j] if pre[j] > 0 else 0.0) for j in miners}
    validator_trust = {i: sum(row.values()) for i, row in clipped.items()}

    a = 1.0 - bonds_moving_avg
    new_bonds: dict[int, dict[int, float]] = {i: {} for i in set(rows) | {i for i in bonds if i in stakes}}
    for j in miners:
        delta = {i: s[i] * clipped[i].get(j, 0.0) for i in rows}
        dsum = sum(delta.values())
        fresh = {i: (delta.get(i, 0.0) / dsum if dsum > 0 else 0.0) for i in new_bonds}
        prev = {i: bonds.get(i, {}).get(j, 0.0) for i in new_bonds}
        psum = sum(prev.values())
        # The first epoch with bonds on j starts the EMA at its first value.
        ema = fresh if psum <= 0 else {i: a * fresh[i] + (1.0 - a) * prev[i] / psum for i in new_bonds}
        esum = sum(ema.values())
        for i, b in ema.items():
            if esum > 0 and b > 0:
                new_bonds[i][j] = b / esum
    raw_div = {i: sum(b * incentive.get(j, 0.0) for j, b in new_bonds[i].items()) for i in new_bonds}
    dsum = sum(raw_div.values())
    dividends = {i: d / dsum for i, d in raw_div.items() if dsum > 0 and d > 0}
    return EpochResult(incentive, consensus, trust, validator_trust, dividends, ranks, new_bonds)
