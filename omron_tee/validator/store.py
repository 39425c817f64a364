"""Miner records and the audit log in SQLite (WAL), so a validator restart keeps both, in step.

The score rows and the audit entries that produced them are written in one transaction,
so a crash never leaves a log whose replay disagrees with the scores it left
(``validator.audit``)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any


class ScoreStore:
    """One row per hotkey: uid, score, and the record's counters and latency windows as JSON."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS miners (hotkey TEXT PRIMARY KEY, uid INTEGER, score REAL, record TEXT, updated REAL)")
        # idx: the entry's 0-based position in the log; data: its canonical bytes (transparency.records)
        self._db.execute("CREATE TABLE IF NOT EXISTS audit (idx INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        # What was committed on chain after each weight set: the log's size and root then, and the block.
        self._db.execute("CREATE TABLE IF NOT EXISTS audit_commits (size INTEGER PRIMARY KEY, root BLOB NOT NULL, block INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        # A log's name, made once with it: a validator that loses its store starts a log of another name.
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('log_id', ?)", (os.urandom(8).hex(),))
        self._db.commit()
        self._lock = threading.Lock()

    def load(self) -> list[tuple[str, int, float, dict[str, Any]]]:
        """(hotkey, uid, score, record fields) for every stored miner."""
        return [(h, uid, score, json.loads(record)) for h, uid, score, record in self._db.execute("SELECT hotkey, uid, score, record FROM miners")]

    def save(self, rows: list[tuple[str, int, float, dict[str, Any]]], entries: list[tuple[int, bytes]] = ()) -> None:
        """Score rows and the audit entries (index, bytes) since the last save, in one transaction."""
        if not rows and not entries:
            return
        now = time.time()
        encoded = [(h, uid, score, json.dumps({k: list(v) if isinstance(v, deque) else v for k, v in fields.items()}), now) for h, uid, score, fields in rows]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO miners VALUES (?, ?, ?, ?, ?)", encoded)
            self._db.executemany("INSERT INTO audit VALUES (?, ?)", entries)

    def log_id(self) -> str:
        with self._lock:
            return self._db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0]

    def audit_entries(self, offset: int = 0, limit: int | None = None) -> list[bytes]:
        """The audit log's entries from ``offset``, in order (at most ``limit``)."""
        with self._lock:
            rows = self._db.execute("SELECT data FROM audit WHERE idx >= ? ORDER BY idx LIMIT ?", (offset, -1 if limit is None else limit)).fetchall()
        return [bytes(d) for (d,) in rows]

    def save_commit(self, size: int, root: bytes, block: int) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO audit_commits VALUES (?, ?, ?)", (size, root, block))

    def commits(self) -> list[tuple[int, bytes, int]]:
        """(size, root, block) of each commitment made, oldest first."""
        with self._lock:
            return [(int(s), bytes(r), int(b)) for s, r, b in self._db.execute("SELECT size, root, block FROM audit_commits ORDER BY size")]

    def close(self) -> None:
        self._db.close()
