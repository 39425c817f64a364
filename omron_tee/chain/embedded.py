"""A development chain in one SQLite file, shared by every local process.

``EmbeddedChain`` is not a blockchain: it has no blocks to produce, no
consensus and no signatures. It is the subnet state a miner, a validator and
the localnet supervisor need to agree on, kept in a file they all open:

* **Block clock.** ``block = floor((now - genesis) / block_time)``, with the
  genesis timestamp and ``block_time`` stored in the file, so every process
  computes the same block without anyone producing blocks.
* **Registration.** Hotkeys get uids 0, 1, 2, ... in order of registration;
  registering again is a no-op returning the same uid. No deregistration:
  a full subnet (``max_uids``) refuses new hotkeys.
* **Stake and permits.** Stake (TAO) comes only from the dev faucet
  (``add_stake`` / ``register(stake=...)``); emission is tallied, not
  restaked. The ``max_validators`` hotkeys with the most stake (> 0; ties to
  the lower uid) hold validator permits, recomputed from current stake.
* **Weights.** Only permit holders may set weights; each hotkey must wait
  ``weights_rate_limit`` blocks between sets, and a set whose ``version_key`` is below the
  subnet's ``weights_version`` is refused (subtensor's ``IncorrectWeightVersionKey``).
  Weights are normalised to sum to 1 and replace the hotkey's previous row.
* **Commit-reveal.** With ``commit_reveal`` on (as ``SetWeights`` finds it on a real subnet),
  weights set during epoch ``k`` are committed and take effect when epoch
  ``k + reveal_period`` starts; until then ``weights()`` and emission do not see them, so a
  validator cannot copy another's current weights. The real chain hides a commit behind a drand
  timelock; this file is readable by any local process, so here the hiding is only that of
  the read interface.
* **Emission (Yuma consensus, ``chain.yuma``).** Each epoch ends every ``tempo`` blocks after
  the subnet was created and emits ``emission_per_block * tempo``: half to miners by
  incentive (stake-weighted median consensus, weights clipped to it), half to validators by
  dividends (bonds, an EMA of their clipped weights). With no validator weights the epoch's
  emission is undistributed. Amounts are integer rao, so ``sum(emission) + undistributed ==
  epochs * tempo * emission_per_block`` exactly.

Epochs are settled lazily: every read or write first settles the epochs that
ended since the last settlement, inside a ``BEGIN IMMEDIATE`` transaction that
records how many epochs are done, so two processes can never pay an epoch
twice. Every write settles first, so the state between an epoch's end and its
settlement is exactly the state the epoch saw, and missed epochs (a chain file
left idle for a week) are paid in one step.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from omron_tee.chain.base import (
    Chain,
    Commitment,
    check_commitment,
    Emissions,
    Endpoint,
    Metagraph,
    Neuron,
    check_netuid,
    coldkey_address,
    hotkey_address,
)
from omron_tee.chain import yuma
from omron_tee.chain.yuma import DEFAULT_BONDS_MOVING_AVG, DEFAULT_KAPPA
from omron_tee.errors import ChainError, ConfigError, RateLimited
from omron_tee.reasons import Reason

if TYPE_CHECKING:
    import bittensor as bt

log = logging.getLogger(__name__)

RAO_PER_TAO = 10**9
SCHEMA_VERSION = 3  # 2: Yuma (bonds, consensus), commit-reveal, weights version; 3: commitments, owner; older files are migrated
# The Commitments pallet's space rule: a hotkey may use this many bytes of commitments per epoch,
# each commitment counting at least COMMITMENT_MIN_COST (subtensor: MaxSpace, UsedSpaceOf).
COMMITMENT_SPACE = 3100
COMMITMENT_MIN_COST = 100
DEFAULT_PATH = "~/.omron-tee/embedded-chain.sqlite"


@dataclass(frozen=True)
class EmbeddedParams:
    """Chain and subnet parameters, fixed when the file / subnet is created."""

    block_time: float = 1.0  # seconds per block (chain-wide)
    tempo: int = 20  # blocks per epoch
    weights_rate_limit: int = 10  # blocks between a hotkey's weight sets
    max_validators: int = 64  # permits go to this many top-stake hotkeys
    max_uids: int = 256
    emission_per_block: float = 1.0  # TAO
    commit_reveal: bool = False  # weights take effect reveal_period epochs after they are set
    reveal_period: int = 1  # epochs
    weights_version: int = 0  # set_weights with a lower version_key is refused
    kappa: float = DEFAULT_KAPPA  # consensus quantile
    bonds_moving_avg: float = DEFAULT_BONDS_MOVING_AVG

    def __post_init__(self) -> None:
        if not isinstance(self.commit_reveal, bool):
            raise ConfigError(f"commit_reveal {self.commit_reveal!r} must be true or false")
        for name in ("reveal_period", "weights_version"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "reveal_period" else 0):
                raise ConfigError(f"{name} {value!r} must be an integer >= {1 if name == 'reveal_period' else 0}")
        for name in ("kappa", "bonds_moving_avg"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0 or (name == "kappa" and value <= 0):
                raise ConfigError(f"{name} {value!r} must be a number in (0, 1)" if name == "kappa" else f"{name} {value!r} must be in [0, 1)")
        if not (
            isinstance(self.block_time, (int, float))
            and math.isfinite(self.block_time)
            and self.block_time > 0
        ):
            raise ConfigError(
                f"block_time {self.block_time!r} must be a positive number of seconds"
            )
        for name in ("tempo", "max_validators", "max_uids"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} {value!r} must be a positive integer")
        if (
            isinstance(self.weights_rate_limit, bool)
            or not isinstance(self.weights_rate_limit, int)
            or self.weights_rate_limit < 0
        ):
            raise ConfigError(
                f"weights_rate_limit {self.weights_rate_limit!r} must be an integer >= 0"
            )
        if not (
            isinstance(self.emission_per_block, (int, float))
            and math.isfinite(self.emission_per_block)
            and self.emission_per_block >= 0
        ):
            raise ConfigError(
                f"emission_per_block {self.emission_per_block!r} must be a number >= 0"
            )


PARAM_NAMES = tuple(f.name for f in fields(EmbeddedParams))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chain (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    genesis REAL NOT NULL,          -- unix time of block 0
    block_time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS subnets (
    netuid INTEGER PRIMARY KEY,
    created_block INTEGER NOT NULL,
    tempo INTEGER NOT NULL,
    weights_rate_limit INTEGER NOT NULL,
    max_validators INTEGER NOT NULL,
    max_uids INTEGER NOT NULL,
    emission_per_block_rao INTEGER NOT NULL,
    epochs_done INTEGER NOT NULL DEFAULT 0,
    undistributed_rao INTEGER NOT NULL DEFAULT 0,
    commit_reveal INTEGER NOT NULL DEFAULT 0,
    reveal_period INTEGER NOT NULL DEFAULT 1,
    weights_version INTEGER NOT NULL DEFAULT 0,
    kappa REAL NOT NULL DEFAULT 0.5,
    bonds_moving_avg REAL NOT NULL DEFAULT 0.9,
    owner_hotkey TEXT
);
CREATE TABLE IF NOT EXISTS neurons (
    netuid INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    hotkey TEXT NOT NULL,
    coldkey TEXT NOT NULL,
    stake_rao INTEGER NOT NULL DEFAULT 0,
    registered_at INTEGER NOT NULL,
    weights_set_at INTEGER,         -- NULL until the first weight set
    ip TEXT,
    port INTEGER,
    protocol TEXT,
    incentive REAL NOT NULL DEFAULT 0,   -- as of the last settled epoch
    dividends REAL NOT NULL DEFAULT 0,
    emission_rao INTEGER NOT NULL DEFAULT 0,   -- cumulative
    consensus REAL NOT NULL DEFAULT 0,
    trust REAL NOT NULL DEFAULT 0,
    validator_trust REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (netuid, uid),
    UNIQUE (netuid, hotkey)
);
CREATE TABLE IF NOT EXISTS weights (
    netuid INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    dest INTEGER NOT NULL,
    weight REAL NOT NULL,
    PRIMARY KEY (netuid, uid, dest)
);
CREATE TABLE IF NOT EXISTS bonds (
    netuid INTEGER NOT NULL,
    uid INTEGER NOT NULL,          -- validator
    dest INTEGER NOT NULL,         -- miner
    bond REAL NOT NULL,
    PRIMARY KEY (netuid, uid, dest)
);
CREATE TABLE IF NOT EXISTS commits (
    netuid INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    committed_at INTEGER NOT NULL,   -- block
    reveal_at INTEGER NOT NULL,      -- block: the start of epoch k + reveal_period
    weights TEXT NOT NULL,           -- JSON {dest: weight}, normalised
    seq INTEGER PRIMARY KEY AUTOINCREMENT
);
CREATE TABLE IF NOT EXISTS commitments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    netuid INTEGER NOT NULL,
    hotkey TEXT NOT NULL,
    block INTEGER NOT NULL,
    data TEXT NOT NULL           -- every commitment is kept: the history is what releases are judged by
);
"""

# Version 1 files lack these columns: added with their defaults when such a file is opened.
_MIGRATIONS = [
    ("neurons", "consensus", "REAL NOT NULL DEFAULT 0"),
    ("neurons", "trust", "REAL NOT NULL DEFAULT 0"),
    ("neurons", "validator_trust", "REAL NOT NULL DEFAULT 0"),
    ("subnets", "commit_reveal", "INTEGER NOT NULL DEFAULT 0"),
    ("subnets", "reveal_period", "INTEGER NOT NULL DEFAULT 1"),
    ("subnets", "weights_version", "INTEGER NOT NULL DEFAULT 0"),
    ("subnets", "kappa", f"REAL NOT NULL DEFAULT {DEFAULT_KAPPA}"),
    ("subnets", "bonds_moving_avg", f"REAL NOT NULL DEFAULT {DEFAULT_BONDS_MOVING_AVG}"),
    ("subnets", "owner_hotkey", "TEXT"),
]


class _Busy(ChainError):
    """The file stayed locked past the busy timeout (``__cause__`` is SQLite's error)."""


def _is_busy(error: sqlite3.DatabaseError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _to_rao(tao: float) -> int:
    return int(round(tao * RAO_PER_TAO))


def _to_tao(rao: int) -> float:
    return rao / RAO_PER_TAO


@dataclass(frozen=True)
class _Payout:
    """One epoch's outcome: Yuma's result, rao paid per uid, and whether the bonds have converged."""

    result: yuma.EpochResult
    paid: dict[int, int]
    undistributed: int
    converged: bool


def _permits(stakes: dict[int, int], max_validators: int) -> set[int]:
    ranked = sorted(
        (uid for uid, s in stakes.items() if s > 0), key=lambda uid: (-stakes[uid], uid)
    )
    return set(ranked[:max_validators])


def _shares(pool: int, values: dict[int, float]) -> dict[int, int]:
    """``pool`` rao split in proportion to ``values``, floored with exact rationals so it never sums past the pool."""
    exact = {k: Fraction(v) for k, v in values.items() if v > 0}
    total = sum(exact.values(), Fraction(0))
    if total <= 0:
        return {}
    return {k: math.floor(pool * v / total) for k, v in exact.items()}


def _epoch_payout(
    stakes: dict[int, int],
    weights: dict[int, dict[int, float]],
    bonds: dict[int, dict[int, float]],
    params: EmbeddedParams,
    emission: int,
) -> _Payout:
    """Split one epoch's ``emission`` rao by Yuma consensus (``chain.yuma``)."""
    permitted = _permits(stakes, params.max_validators)
    validators = {uid: float(stakes[uid]) for uid in permitted}
    live = {i: {j: w for j, w in row.items() if j in stakes} for i, row in weights.items()}  # uids are never reused, but stay safe
    result = yuma.epoch(validators, live, bonds, kappa=params.kappa, bonds_moving_avg=params.bonds_moving_avg)
    paid: dict[int, int] = {}
    if result.incentive:
        miner_pool = emission // 2
        for uid, rao in _shares(miner_pool, result.ranks).items():
            paid[uid] = paid.get(uid, 0) + rao
        for uid, rao in _shares(emission - miner_pool, result.dividends).items():
            paid[uid] = paid.get(uid, 0) + rao
    keys = {(i, j) for i, row in result.bonds.items() for j in row} | {(i, j) for i, row in bonds.items() for j in row}
    converged = all(abs(result.bonds.get(i, {}).get(j, 0.0) - bonds.get(i, {}).get(j, 0.0)) < 1e-9 for i, j in keys)
    return _Payout(result, paid, emission - sum(paid.values()), converged)


class EmbeddedChain(Chain):
    """A development subnet persisted in SQLite; safe for several processes at once.

    Parameters left as None take the stored value (or the default when the file
    or subnet is new); a value that contradicts the stored one is a ConfigError,
    since parameters are fixed at creation. ``clock`` returns unix seconds and
    exists so tests can move time.
    """

    network = "embedded"

    def __init__(
        self,
        netuid: int = 1,
        *,
        path: str | os.PathLike[str] | None = None,
        block_time: float | None = None,
        tempo: int | None = None,
        weights_rate_limit: int | None = None,
        max_validators: int | None = None,
        max_uids: int | None = None,
        emission_per_block: float | None = None,
        commit_reveal: bool | None = None,
        reveal_period: int | None = None,
        weights_version: int | None = None,
        kappa: float | None = None,
        bonds_moving_avg: float | None = None,
        busy_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.netuid = check_netuid(netuid)
        self.path = Path(
            os.path.expanduser(str(path) if path is not None else DEFAULT_PATH)
        )
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        requested = {
            "block_time": block_time,
            "tempo": tempo,
            "weights_rate_limit": weights_rate_limit,
            "max_validators": max_validators,
            "max_uids": max_uids,
            "emission_per_block": emission_per_block,
            "commit_reveal": commit_reveal,
            "reveal_period": reveal_period,
            "weights_version": weights_version,
            "kappa": kappa,
            "bonds_moving_avg": bonds_moving_avg,
        }
        defaults = EmbeddedParams(
            **{k: v for k, v in requested.items() if v is not None}
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(
                f"cannot open embedded chain file {self.path}: {error}"
            ) from None
        try:
            self._open_retrying(defaults)
        except sqlite3.DatabaseError as error:
            self.close()
            if _is_busy(error):
                raise ChainError(
                    f"embedded chain file {self.path} stayed locked by another process for "
                    f"{busy_timeout:g}s ({error}): is a process stuck holding it?"
                ) from error
            raise ConfigError(
                f"{self.path} is not an embedded chain file ({error}): pass another "
                "--chain.path or delete the file to start a fresh chain"
            ) from None
        except BaseException:
            self.close()
            raise
        stored = self.params
        conflicts = [
            f"{name}={requested[name]!r} (file has {getattr(stored, name)!r})"
            for name in PARAM_NAMES
            if requested[name] is not None and requested[name] != getattr(stored, name)
        ]
        if conflicts:
            self.close()
            raise ConfigError(
                f"embedded chain {self.path} (netuid {self.netuid}) was created with other "
                f"parameters: {', '.join(conflicts)}; omit these options, or delete the file "
                "to create a fresh chain"
            )

    # Opening -----------------------------------------------------------------

    def _open_retrying(self, defaults: EmbeddedParams) -> None:
        # While the file is new (still in rollback-journal mode) SQLite can answer
        # SQLITE_BUSY at once, without waiting, to processes racing to create it
        # and switch it to WAL; retrying until the busy timeout absorbs that race.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                self._open(defaults)
                return
            except (sqlite3.OperationalError, _Busy) as error:
                cause = error.__cause__ if isinstance(error, _Busy) else error
                if not isinstance(cause, sqlite3.OperationalError) or not _is_busy(
                    cause
                ):
                    raise
                if time.monotonic() >= deadline:
                    raise cause from None
                time.sleep(0.02)

    def _open(self, defaults: EmbeddedParams) -> None:
        db = self._conn()
        db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        # WAL lets readers proceed while one process writes; switching modes
        # needs a brief exclusive lock, which the busy timeout waits out.
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning(
                "embedded chain %s: journal mode is %s, not WAL", self.path, mode
            )
        db.execute("PRAGMA synchronous = NORMAL")
        with self._write() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute(
                "SELECT schema_version, genesis, block_time FROM chain WHERE id = 1"
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO chain (id, schema_version, genesis, block_time) VALUES (1, ?, ?, ?)",
                    (SCHEMA_VERSION, float(self._clock()), float(defaults.block_time)),
                )
                row = db.execute(
                    "SELECT schema_version, genesis, block_time FROM chain WHERE id = 1"
                ).fetchone()
            if row[0] in (1, 2):
                self._migrate(db, row[0])
                row = (SCHEMA_VERSION, *row[1:])
            if row[0] != SCHEMA_VERSION:
                raise ConfigError(
                    f"embedded chain {self.path} has schema version {row[0]}, this code "
                    f"reads version {SCHEMA_VERSION}: delete the file to start a fresh chain"
                )
            self._genesis = float(row[1])
            self._block_time = float(row[2])
            subnet = self._subnet_row(db)
            if subnet is None:
                db.execute(
                    "INSERT INTO subnets (netuid, created_block, tempo, weights_rate_limit, "
                    "max_validators, max_uids, emission_per_block_rao, commit_reveal, reveal_period, "
                    "weights_version, kappa, bonds_moving_avg) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        self.netuid,
                        self._block_now(),
                        defaults.tempo,
                        defaults.weights_rate_limit,
                        defaults.max_validators,
                        defaults.max_uids,
                        _to_rao(defaults.emission_per_block),
                        int(defaults.commit_reveal),
                        defaults.reveal_period,
                        defaults.weights_version,
                        float(defaults.kappa),
                        float(defaults.bonds_moving_avg),
                    ),
                )
                subnet = self._subnet_row(db)
            assert subnet is not None
        # Subnet parameters never change after creation, so caching them is
        # safe across processes; only epochs_done is re-read each time.
        self._created_block, tempo, rate, max_v, max_uids, epb_rao, cr, rp, wv, kappa, bma = subnet
        self._emission_per_block_rao = int(epb_rao)
        self.params = EmbeddedParams(
            block_time=self._block_time,
            tempo=int(tempo),
            weights_rate_limit=int(rate),
            max_validators=int(max_v),
            max_uids=int(max_uids),
            emission_per_block=_to_tao(int(epb_rao)),
            commit_reveal=bool(cr),
            reveal_period=int(rp),
            weights_version=int(wv),
            kappa=float(kappa),
            bonds_moving_avg=float(bma),
        )

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        """A file of schema 1 (no bonds, no commit-reveal) or 2 (no commitments, no owner): add the
        columns (the tables exist already); its weights keep counting."""
        for table, column, decl in _MIGRATIONS:
            have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        db.execute("UPDATE chain SET schema_version = ? WHERE id = 1", (SCHEMA_VERSION,))
        log.info("embedded chain %s: migrated from schema %d to %d", self.path, version, SCHEMA_VERSION)

    def _subnet_row(self, db: sqlite3.Connection) -> tuple | None:
        return db.execute(
            "SELECT created_block, tempo, weights_rate_limit, max_validators, max_uids, "
            "emission_per_block_rao, commit_reveal, reveal_period, weights_version, kappa, "
            "bonds_moving_avg FROM subnets WHERE netuid = ?",
            (self.netuid,),
        ).fetchone()

    # Plumbing ------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ChainError(f"embedded chain {self.path} is closed")
        return self._db

    @contextmanager
    def _txn(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._conn()
            try:
                db.execute(begin)
            except sqlite3.OperationalError as error:
                raise self._failed(error) from error
            try:
                yield db
            except sqlite3.OperationalError as error:
                self._rollback(db)
                raise self._failed(error) from error
            except BaseException:
                self._rollback(db)
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.OperationalError as error:
                self._rollback(db)
                raise self._failed(error) from error

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:  # no transaction left to roll back (sqlite already did)
            pass

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so read-then-write
        # sequences (settling, uid assignment) cannot interleave across processes.
        return self._txn("BEGIN IMMEDIATE")

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._txn("BEGIN")

    def _failed(self, error: sqlite3.OperationalError) -> ChainError:
        if not _is_busy(error):  # disk full, I/O error, read-only file...
            return ChainError(f"embedded chain file {self.path} failed: {error}")
        return _Busy(
            f"embedded chain file {self.path} is busy ({error}) after waiting "
            f"{self._busy_timeout:.0f}s: another process holds it; retry, or look for a stuck process"
        )

    def _block_now(self) -> int:
        # Unix times near 1.7e9 carry ~2e-7s of float error; 10us of slack keeps an
        # exact block boundary (genesis + 0.3s at 0.1s blocks) from flooring one short.
        return max(
            0, math.floor((self._clock() - self._genesis + 1e-5) / self._block_time)
        )

    def _epoch_of(self, block: int) -> int:
        """The epoch ``block`` falls in (epoch k runs from ``_epoch_start(k)``); also how many have ended by it."""
        return max(0, (block - self._created_block) // self.params.tempo)

    def _epoch_start(self, epoch: int) -> int:
        return self._created_block + epoch * self.params.tempo

    def _settle(self, db: sqlite3.Connection, block: int) -> None:
        """Reveal the commits due by ``block`` and pay every epoch that ended by it (inside a write txn)."""
        (done,) = db.execute(
            "SELECT epochs_done FROM subnets WHERE netuid = ?", (self.netuid,)
        ).fetchone()
        due = self._epoch_of(block)
        if due > done:
            self._pay_epochs(db, done, due)
        self._reveal(db, block)

    def _commits_due(self, db: sqlite3.Connection, block: int) -> int:
        """How many commits reveal by ``block``."""
        (n,) = db.execute(
            "SELECT COUNT(*) FROM commits WHERE netuid = ? AND reveal_at <= ?", (self.netuid, block)
        ).fetchone()
        return int(n)

    def _weights(self, db: sqlite3.Connection) -> dict[int, dict[int, float]]:
        """Every validator's revealed weights: uid -> uid -> weight."""
        out: dict[int, dict[int, float]] = {}
        for uid, dest, w in db.execute("SELECT uid, dest, weight FROM weights WHERE netuid = ?", (self.netuid,)):
            out.setdefault(int(uid), {})[int(dest)] = float(w)
        return out

    def _reveal(self, db: sqlite3.Connection, block: int) -> int:
        """Commits whose reveal block has come replace their validator's weights, oldest first; how many did."""
        due = db.execute(
            "SELECT seq, uid, weights FROM commits WHERE netuid = ? AND reveal_at <= ? ORDER BY seq",
            (self.netuid, block),
        ).fetchall()
        for seq, uid, payload in due:
            self._replace_weights(db, uid, {int(k): float(v) for k, v in json.loads(payload).items()})
            db.execute("DELETE FROM commits WHERE seq = ?", (seq,))
        return len(due)

    def _replace_weights(self, db: sqlite3.Connection, uid: int, weights: dict[int, float]) -> None:
        db.execute("DELETE FROM weights WHERE netuid = ? AND uid = ?", (self.netuid, uid))
        db.executemany(
            "INSERT INTO weights (netuid, uid, dest, weight) VALUES (?, ?, ?, ?)",
            [(self.netuid, uid, dest, w) for dest, w in weights.items() if w > 0],
        )

    def _pay_epochs(self, db: sqlite3.Connection, done: int, due: int) -> None:
        """Pay epochs ``done .. due-1`` in order: each first sees the commits revealed by its start."""
        stakes = {
            uid: stake
            for uid, stake in db.execute(
                "SELECT uid, stake_rao FROM neurons WHERE netuid = ?", (self.netuid,)
            )
        }
        bonds: dict[int, dict[int, float]] = {}
        for uid, dest, bond in db.execute(
            "SELECT uid, dest, bond FROM bonds WHERE netuid = ?", (self.netuid,)
        ):
            bonds.setdefault(uid, {})[dest] = bond
        paid_total: dict[int, int] = {}
        undistributed = 0
        payout: _Payout | None = None
        epoch = done
        weights = self._weights(db)
        while epoch < due:
            if self._reveal(db, self._epoch_start(epoch)):
                weights = self._weights(db)
            payout = _epoch_payout(stakes, weights, bonds, self.params, self._emission_per_block_rao * self.params.tempo)
            bonds = payout.result.bonds
            # Nothing changes between missed epochs once no commit is left to reveal in them and the
            # bonds have converged (their EMA is within 1e-9 after at most a few hundred epochs):
            # the rest of a long idle stretch pays the same as this epoch, in one step.
            count = 1
            if payout.converged and not self._commits_due(db, self._epoch_start(due - 1)):
                count = due - epoch
            for uid, rao in payout.paid.items():
                paid_total[uid] = paid_total.get(uid, 0) + rao * count
            undistributed += payout.undistributed * count
            epoch += count
        assert payout is not None
        db.executemany(
            "UPDATE neurons SET incentive = ?, dividends = ?, consensus = ?, trust = ?, validator_trust = ?, "
            "emission_rao = emission_rao + ? WHERE netuid = ? AND uid = ?",
            [
                (
                    payout.result.incentive.get(uid, 0.0),
                    payout.result.dividends.get(uid, 0.0),
                    payout.result.consensus.get(uid, 0.0),
                    payout.result.trust.get(uid, 0.0),
                    payout.result.validator_trust.get(uid, 0.0),
                    paid_total.get(uid, 0),
                    self.netuid,
                    uid,
                )
                for uid in stakes
            ],
        )
        db.execute("DELETE FROM bonds WHERE netuid = ?", (self.netuid,))
        db.executemany(
            "INSERT INTO bonds (netuid, uid, dest, bond) VALUES (?, ?, ?, ?)",
            [(self.netuid, i, j, b) for i, row in bonds.items() for j, b in row.items() if b > 0],
        )
        db.execute(
            "UPDATE subnets SET epochs_done = ?, undistributed_rao = undistributed_rao + ? WHERE netuid = ?",
            (due, undistributed, self.netuid),
        )

    def _settled_block(self) -> int:
        """The current block, after settling due epochs (a write only when one is due)."""
        with self._lock:
            block = self._block_now()
            with self._read() as db:
                (done,) = db.execute(
                    "SELECT epochs_done FROM subnets WHERE netuid = ?", (self.netuid,)
                ).fetchone()
                reveals = self._commits_due(db, block)
            if self._epoch_of(block) > done or reveals:
                with self._write() as db:
                    self._settle(db, block)
            return block

    def _uid_row(self, db: sqlite3.Connection, hotkey: str) -> tuple | None:
        return db.execute(
            "SELECT uid, coldkey, stake_rao, weights_set_at FROM neurons WHERE netuid = ? AND hotkey = ?",
            (self.netuid, hotkey),
        ).fetchone()

    def _require_uid(self, db: sqlite3.Connection, hotkey: str, action: str) -> tuple:
        row = self._uid_row(db, hotkey)
        if row is None:
            raise ChainError(
                f"cannot {action}: hotkey {hotkey} is not registered on embedded netuid "
                f"{self.netuid}; register it first"
            )
        return row

    # Chain interface -----------------------------------------------------------

    def block(self) -> int:
        return self._block_now()

    def block_time(self) -> float:
        return self._block_time

    def metagraph(self) -> Metagraph:
        block = self._settled_block()
        with self._read() as db:
            rows = db.execute(
                "SELECT uid, hotkey, coldkey, stake_rao, registered_at, weights_set_at, ip, port, "
                "protocol, incentive, dividends, emission_rao, consensus, trust, validator_trust "
                "FROM neurons WHERE netuid = ? ORDER BY uid",
                (self.netuid,),
            ).fetchall()
        permitted = _permits(
            {row[0]: row[3] for row in rows}, self.params.max_validators
        )
        neurons = tuple(
            Neuron(
                uid=uid,
                hotkey=hotkey,
                coldkey=coldkey,
                stake=_to_tao(stake),
                validator_permit=uid in permitted,
                endpoint=Endpoint(ip, port, protocol) if ip is not None else None,
                incentive=incentive,
                dividends=dividends,
                emission=_to_tao(emission),
                last_update=weights_set_at
                if weights_set_at is not None
                else registered_at,
                consensus=consensus,
                trust=trust,
                validator_trust=validator_trust,
            )
            for (
                uid,
                hotkey,
                coldkey,
                stake,
                registered_at,
                weights_set_at,
                ip,
                port,
                protocol,
                incentive,
                dividends,
                emission,
                consensus,
                trust,
                validator_trust,
            ) in rows
        )
        return Metagraph(netuid=self.netuid, block=block, neurons=neurons)

    def register(self, wallet: bt.Wallet, *, stake: float = 0.0) -> int:
        """Give the wallet's hotkey a uid (idempotent). ``stake`` (TAO, dev faucet)
        is credited only when the hotkey is newly registered; use add_stake for more."""
        hotkey, coldkey = hotkey_address(wallet), coldkey_address(wallet)
        stake_rao = self._amount_rao(stake, "stake", allow_zero=True)
        with self._write() as db:
            block = self._block_now()
            self._settle(db, block)
            row = self._uid_row(db, hotkey)
            if row is not None:
                if row[1] != coldkey:
                    raise ChainError(
                        f"hotkey {hotkey} is already registered on embedded netuid {self.netuid} "
                        f"under coldkey {row[1]}, not {coldkey}: use that wallet's coldkey or a new hotkey"
                    )
                return int(row[0])
            (count,) = db.execute(
                "SELECT COUNT(*) FROM neurons WHERE netuid = ?", (self.netuid,)
            ).fetchone()
            if count >= self.params.max_uids:
                raise ChainError(
                    f"embedded netuid {self.netuid} is full ({self.params.max_uids} uids) and the "
                    "embedded chain never deregisters: use another --chain.path or netuid"
                )
            db.execute(
                "INSERT INTO neurons (netuid, uid, hotkey, coldkey, stake_rao, registered_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self.netuid, count, hotkey, coldkey, stake_rao, block),
            )
            log.info(
                "embedded chain: registered %s as uid %d on netuid %d",
                hotkey,
                count,
                self.netuid,
            )
            return int(count)

    def add_stake(self, wallet: bt.Wallet, amount: float) -> float:
        """Dev faucet: add ``amount`` TAO of stake to the wallet's (registered) hotkey; returns the new stake."""
        hotkey = hotkey_address(wallet)
        amount_rao = self._amount_rao(amount, "amount", allow_zero=False)
        with self._write() as db:
            self._settle(db, self._block_now())
            row = self._require_uid(db, hotkey, "add stake")
            db.execute(
                "UPDATE neurons SET stake_rao = stake_rao + ? WHERE netuid = ? AND uid = ?",
                (amount_rao, self.netuid, row[0]),
            )
            return _to_tao(row[2] + amount_rao)

    def serve(self, wallet: bt.Wallet, endpoint: Endpoint) -> None:
        hotkey = hotkey_address(wallet)
        with self._write() as db:
            self._settle(db, self._block_now())
            row = self._require_uid(db, hotkey, "serve an endpoint")
            db.execute(
                "UPDATE neurons SET ip = ?, port = ?, protocol = ? WHERE netuid = ? AND uid = ?",
                (endpoint.ip, endpoint.port, endpoint.protocol, self.netuid, row[0]),
            )

    def set_weights(
        self, wallet: bt.Wallet, uids: list[int], weights: list[float], *, version_key: int = 0
    ) -> None:
        hotkey = hotkey_address(wallet)
        normalised = self._normalise(uids, weights)
        if isinstance(version_key, bool) or not isinstance(version_key, int) or version_key < self.params.weights_version:
            raise ChainError(
                f"weights refused (IncorrectWeightVersionKey): version_key {version_key!r} is below the subnet's "
                f"weights_version {self.params.weights_version}; this validator is older than the subnet requires: upgrade it"
            )
        with self._write() as db:
            block = self._block_now()
            self._settle(db, block)
            uid, _coldkey, _stake, weights_set_at = self._require_uid(
                db, hotkey, "set weights"
            )
            stakes = {
                u: s
                for u, s in db.execute(
                    "SELECT uid, stake_rao FROM neurons WHERE netuid = ?",
                    (self.netuid,),
                )
            }
            if uid not in _permits(stakes, self.params.max_validators):
                raise ChainError(
                    f"hotkey {hotkey} (uid {uid}) has no validator permit on embedded netuid "
                    f"{self.netuid}: permits go to the top {self.params.max_validators} hotkeys by "
                    "stake (> 0); add stake with register(stake=...) or add_stake",
                    reason=Reason.NO_VALIDATOR_PERMIT,
                )
            self._check_rate_limit(hotkey, uid, weights_set_at, block)
            unknown = sorted(set(normalised) - set(stakes))
            if unknown:
                raise ChainError(
                    f"weights name uids {unknown} that are not registered on embedded netuid "
                    f"{self.netuid} (uids 0..{len(stakes) - 1} exist): read the metagraph again"
                )
            if self.params.commit_reveal:
                epoch = self._epoch_of(block)
                db.execute(
                    "INSERT INTO commits (netuid, uid, committed_at, reveal_at, weights) VALUES (?, ?, ?, ?, ?)",
                    (self.netuid, uid, block, self._epoch_start(epoch + self.params.reveal_period),
                     json.dumps({str(k): v for k, v in normalised.items()})),
                )
            else:
                self._replace_weights(db, uid, normalised)
            db.execute(
                "UPDATE neurons SET weights_set_at = ? WHERE netuid = ? AND uid = ?",
                (block, self.netuid, uid),
            )

    def weights_rate_limit(self) -> int:
        return self.params.weights_rate_limit

    def commit(self, wallet: bt.Wallet, data: str) -> None:
        raw = check_commitment(data)
        hotkey = hotkey_address(wallet)
        with self._write() as db:
            block = self._block_now()
            self._settle(db, block)
            if self._uid_row(db, hotkey) is None:
                raise ChainError(
                    f"commitment refused (AccountNotAllowedCommit): hotkey {hotkey} is not registered on embedded "
                    f"netuid {self.netuid}: register it first"
                )
            start = self._epoch_start(self._epoch_of(block))
            used = sum(max(COMMITMENT_MIN_COST, len(d.encode())) for (d,) in db.execute(
                "SELECT data FROM commitments WHERE netuid = ? AND hotkey = ? AND block >= ?", (self.netuid, hotkey, start)))
            cost = max(COMMITMENT_MIN_COST, len(raw))
            if used + cost > COMMITMENT_SPACE:
                left = self._epoch_start(self._epoch_of(block) + 1) - block
                raise RateLimited(
                    f"commitment refused (SpaceLimitExceeded): hotkey {hotkey} used {used} of its {COMMITMENT_SPACE} "
                    f"bytes this epoch; wait {left} block(s) for the next epoch"
                )
            db.execute("INSERT INTO commitments (netuid, hotkey, block, data) VALUES (?, ?, ?, ?)", (self.netuid, hotkey, block, data))

    def commitments(self) -> tuple[Commitment, ...]:
        with self._read() as db:
            rows = db.execute("SELECT hotkey, block, data FROM commitments WHERE netuid = ? ORDER BY seq", (self.netuid,)).fetchall()
        return tuple(Commitment(h, int(b), d) for h, b, d in rows)

    def claim_owner(self, wallet: bt.Wallet) -> None:
        """Make the wallet's registered hotkey the subnet's owner (dev chain: the first claim wins;
        on subtensor the owner is whoever registered the subnet)."""
        hotkey = hotkey_address(wallet)
        with self._write() as db:
            self._require_uid(db, hotkey, "own the subnet")
            (owner,) = db.execute("SELECT owner_hotkey FROM subnets WHERE netuid = ?", (self.netuid,)).fetchone()
            if owner not in (None, hotkey):
                raise ChainError(f"embedded netuid {self.netuid} already has an owner ({owner})")
            db.execute("UPDATE subnets SET owner_hotkey = ? WHERE netuid = ?", (hotkey, self.netuid))

    def subnet_owner(self) -> str | None:
        with self._read() as db:
            (owner,) = db.execute("SELECT owner_hotkey FROM subnets WHERE netuid = ?", (self.netuid,)).fetchone()
        return owner

    def weights(self) -> dict[int, dict[int, float]]:
        """Every validator's revealed weights (uid -> uid -> weight); committed, unrevealed ones are not shown."""
        self._settled_block()
        with self._read() as db:
            return self._weights(db)

    def next_epoch_boundary(self, block: int) -> int:
        """The first block after ``block`` at which an epoch ends (and is paid)."""
        return self._epoch_start(self._epoch_of(block) + 1)

    def pending_reveals(self) -> dict[int, int]:
        """uid -> the block its oldest unrevealed commit reveals at (what a validator may know of its own commit)."""
        self._settled_block()
        with self._read() as db:
            rows = db.execute("SELECT uid, MIN(reveal_at) FROM commits WHERE netuid = ? GROUP BY uid", (self.netuid,)).fetchall()
        return {int(u): int(b) for u, b in rows}

    def blocks_until_weights_allowed(self, hotkey: str) -> int:
        with self._read() as db:
            row = self._require_uid(db, hotkey, "check the weights rate limit")
        return self._blocks_left(row[3], self._block_now())

    def emissions(self) -> Emissions:
        block = self._settled_block()
        with self._read() as db:
            rows = db.execute(
                "SELECT hotkey, emission_rao FROM neurons WHERE netuid = ?",
                (self.netuid,),
            ).fetchall()
            done, undistributed = db.execute(
                "SELECT epochs_done, undistributed_rao FROM subnets WHERE netuid = ?",
                (self.netuid,),
            ).fetchone()
        return Emissions(
            netuid=self.netuid,
            block=block,
            cumulative=True,
            by_hotkey={hotkey: _to_tao(rao) for hotkey, rao in rows},
            undistributed=_to_tao(undistributed),
            epochs=int(done),
        )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # Helpers ---------------------------------------------------------------------

    def _blocks_left(self, weights_set_at: int | None, block: int) -> int:
        if weights_set_at is None:
            return 0
        return max(0, self.params.weights_rate_limit - (block - weights_set_at))

    def _check_rate_limit(
        self, hotkey: str, uid: int, weights_set_at: int | None, block: int
    ) -> None:
        left = self._blocks_left(weights_set_at, block)
        if left:
            raise RateLimited(
                f"hotkey {hotkey} (uid {uid}) set weights {block - weights_set_at} blocks ago; "
                f"the rate limit is {self.params.weights_rate_limit} blocks: wait {left} more "
                f"block(s) (~{left * self._block_time:.1f}s)"
            )

    @staticmethod
    def _amount_rao(amount: float, name: str, *, allow_zero: bool) -> int:
        if (
            isinstance(amount, bool)
            or not isinstance(amount, (int, float))
            or not math.isfinite(amount)
        ):
            raise ConfigError(f"{name} {amount!r} is not a number of TAO")
        if amount < 0 or (amount == 0 and not allow_zero):
            raise ConfigError(
                f"{name} {amount!r} must be {'>= 0' if allow_zero else '> 0'} TAO"
            )
        return _to_rao(float(amount))

    @staticmethod
    def _normalise(uids: list[int], weights: list[float]) -> dict[int, float]:
        # numpy scalars are welcome (validators often score with numpy), bools are not.
        clean_uids: list[int] = []
        for uid in uids:
            if (
                isinstance(uid, bool)
                or not isinstance(uid, numbers.Integral)
                or operator.index(uid) < 0
            ):
                raise ChainError(
                    f"weights refused: uid {uid!r} is not a non-negative integer"
                )
            clean_uids.append(operator.index(uid))
        clean: list[float] = []
        for w in weights:
            if (
                isinstance(w, bool)
                or not isinstance(w, numbers.Real)
                or not math.isfinite(w)
                or w < 0
            ):
                raise ChainError(
                    f"weights refused: weight {w!r} is not a finite number >= 0"
                )
            clean.append(float(w))
        uids, weights = clean_uids, clean
        if len(uids) != len(weights):
            raise ChainError(
                f"weights refused: {len(uids)} uids but {len(weights)} weights"
            )
        if not uids:
            raise ChainError("weights refused: no uids given")
        if len(set(uids)) != len(uids):
            raise ChainError(f"weights refused: duplicate uids in {uids}")
        total = math.fsum(weights)
        if total <= 0:
            raise ChainError("weights refused: all weights are zero")
        return {uid: w / total for uid, w in zip(uids, weights)}

    def __repr__(self) -> str:
        return f"EmbeddedChain(netuid={self.netuid}, path={str(self.path)!r})"
