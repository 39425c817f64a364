"""Miner records in SQLite (WAL), so a validator restart keeps its scores."""

from __future__ import annotations

import json
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
        self._db.commit()
        self._lock = threading.Lock()

    def load(self) -> list[tuple[str, int, float, dict[str, Any]]]:
        """(hotkey, uid, score, record fields) for every stored miner."""
        return [(h, uid, score, json.loads(record)) for h, uid, score, record in self._db.execute("SELECT hotkey, uid, score, record FROM miners")]

    def save(self, rows: list[tuple[str, int, float, dict[str, Any]]]) -> None:
        if not rows:
            return
        now = time.time()
        encoded = [(h, uid, score, json.dumps({k: list(v) if isinstance(v, deque) else v for k, v in fields.items()}), now) for h, uid, score, fields in rows]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO miners VALUES (?, ?, ?, ?, ?)", encoded)

    def close(self) -> None:
        self._db.close()
