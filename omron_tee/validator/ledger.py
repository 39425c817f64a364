"""The validator's audit log: every entry that moved its scores, in order, in an RFC 9162 Merkle log.

The score book appends an ``outcome`` entry for each exchange it scores, the validator a
``weights`` entry for each weight set and a ``receipt`` entry for each receipt a client
records; entries reach SQLite in the same transaction as the scores they moved
(``validator.store``). After each weight set the validator commits the log's size and
root on chain, and serves the committed entries (``/v1/audit/entries``) so anyone can
replay them (``validator.audit``). What is not committed yet is not served: benchmark
timings are published only after the weights they produced.
"""

from __future__ import annotations

import threading

from omron_tee.transparency import records
from omron_tee.transparency.merkle import MerkleLog


class Ledger:
    """The log's hashes in memory (32 bytes an entry), its entries in the score store."""

    def __init__(self, persisted: list[bytes]) -> None:
        self.tree = MerkleLog()
        for data in persisted:
            self.tree.append(data)
        self._pending: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.tree)

    def append(self, entry: records.Entry) -> int:
        data = records.encode(entry)
        with self._lock:
            index = self.tree.append(data)
            self._pending.append((index, data))
            return index

    def take_pending(self) -> list[tuple[int, bytes]]:
        """The entries appended since the last call (the score book writes them with its rows)."""
        with self._lock:
            out, self._pending = self._pending, []
            return out
