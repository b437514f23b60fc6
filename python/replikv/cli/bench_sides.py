"""The two sides ``replikv bench`` compares, doing the same work with the same durability,
and the profiles they store.

The sqlite3 side is written as a user would write it: one ``profiles`` table keyed by the
email, each profile stored as its JSON text (``json.dumps`` on the way in, ``json.loads``
on the way out, both timed, as replikv's MessagePack encoding is), in WAL mode with
``synchronous=FULL`` so that a commit returns only once its WAL is fsync'ed, as a replikv
put returns only once its log record is fdatasync'ed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from .._core import Store

TABLE = "profiles"
COUNTRIES = ("DE", "FR", "ES", "IT", "NL", "PL", "SE", "US")

Row = tuple[str, dict[str, Any]]

SQLITE_DURABILITY = "journal_mode=WAL, synchronous=FULL: a commit returns once its WAL is fsync'ed"
REPLIKV_DURABILITY = "fsync=True (the default): a put returns once its log record is fdatasync'ed"

SQL_CREATE = f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
SQL_PUT = f"INSERT OR REPLACE INTO {TABLE} (key, value) VALUES (?, ?)"
SQL_GET = f"SELECT value FROM {TABLE} WHERE key = ?"
# No ORDER BY: reading the table in its own (rowid) order is sqlite3's fastest full read;
# replikv's scan gives key order at no extra cost.
SQL_SCAN = f"SELECT key, value FROM {TABLE}"
SQL_COUNT = f"SELECT count(*) FROM {TABLE}"


def profile_key(number: int) -> str:
    """The key of profile ``number``: its email address."""
    return f"user{number:08d}@example.com"


def profile(number: int) -> dict[str, Any]:
    """A subscriber profile of six fields, about 150 bytes as JSON."""
    return {
        "email": profile_key(number),
        "name": f"Subscriber {number}",
        "country": COUNTRIES[number % len(COUNTRIES)],
        "opted_in": number % 4 != 0,
        "score": number * 7919 % 1000,
        "tags": ["newsletter", "promo"] if number % 3 else ["newsletter"],
    }


def profiles(count: int) -> list[Row]:
    """``count`` rows of (key, profile)."""
    return [(profile_key(number), profile(number)) for number in range(count)]


class Side(Protocol):
    """What each side does, one call per scenario's unit of work."""

    name: str

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Writes one row durably: returns once a crash cannot take it back."""

    def load(self, rows: Sequence[Row]) -> None:
        """Writes every row in one durable transaction."""

    def get_each(self, keys: Sequence[str]) -> int:
        """Reads the value of every key, decoded to a dict; returns how many."""

    def get(self, key: str) -> Any:
        """The decoded value of one key, or ``None``."""

    def scan_all(self) -> int:
        """Reads every row, values decoded; returns how many."""

    def count(self) -> int:
        """How many rows the table holds."""

    def close(self) -> None: ...


class ReplikvSide:
    """A replikv ``Store``, durable by default."""

    name = "replikv"

    def __init__(self, path: Path) -> None:
        self.store = Store(path)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.store.put(TABLE, key, value)

    def load(self, rows: Sequence[Row]) -> None:
        self.store.put_many(TABLE, rows)

    def get_each(self, keys: Sequence[str]) -> int:
        get = self.store.get
        for key in keys:
            get(TABLE, key)
        return len(keys)

    def get(self, key: str) -> Any:
        return self.store.get(TABLE, key)

    def scan_all(self) -> int:
        rows = 0
        for _row in self.store.scan(TABLE):
            rows += 1
        return rows

    def count(self) -> int:
        return self.store.count(TABLE)

    def close(self) -> None:
        self.store.close()


class SqliteSide:
    """A sqlite3 file database in WAL mode with ``synchronous=FULL``."""

    name = "sqlite3"

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path)
        try:
            journal = self.connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self.connection.execute("PRAGMA synchronous=FULL")
            synchronous = self.connection.execute("PRAGMA synchronous").fetchone()[0]
            if journal != "wal" or synchronous != 2:
                # Anything less durable would make the comparison a lie.
                raise OSError(
                    f"sqlite3 refused WAL mode with synchronous=FULL in {path.parent} "
                    f"(journal_mode={journal}, synchronous={synchronous})"
                )
            self.connection.execute(SQL_CREATE)
            self.connection.commit()
        except BaseException:
            self.connection.close()
            raise

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.connection.execute(SQL_PUT, (key, json.dumps(value)))
        self.connection.commit()

    def load(self, rows: Sequence[Row]) -> None:
        with self.connection:  # one transaction, committed (its WAL fsync'ed) at the end
            self.connection.executemany(SQL_PUT, ((key, json.dumps(v)) for key, v in rows))

    def get_each(self, keys: Sequence[str]) -> int:
        execute, loads = self.connection.execute, json.loads
        for key in keys:
            loads(execute(SQL_GET, (key,)).fetchone()[0])
        return len(keys)

    def get(self, key: str) -> Any:
        found = self.connection.execute(SQL_GET, (key,)).fetchone()
        return None if found is None else json.loads(found[0])

    def scan_all(self) -> int:
        loads = json.loads
        rows = 0
        for _key, text in self.connection.execute(SQL_SCAN):
            loads(text)
            rows += 1
        return rows

    def count(self) -> int:
        return int(self.connection.execute(SQL_COUNT).fetchone()[0])

    def close(self) -> None:
        self.connection.close()
