"""A hypothesis state machine checks Store against a dict model: puts, deletes, put_many,
transactions that commit or abort, and reopening."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import replikv
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

TABLES = st.sampled_from(["subscribers", "events", "templates"])
KEYS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=8),
    st.binary(max_size=8),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)
WRITES = st.lists(
    st.tuples(
        TABLES,
        KEYS,
        st.one_of(st.none().map(lambda _: ("delete",)), VALUES.map(lambda v: ("put", v))),
    ),
    max_size=6,
)


def sort_key(key: int | str | bytes) -> tuple[int, Any]:
    if isinstance(key, int):
        return (0, key)
    if isinstance(key, str):
        return (1, key.encode())
    return (2, key)


class StoreMatchesADict(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="replikv-model-"))
        self.store = self.open()
        self.model: dict[str, dict[int | str | bytes, Any]] = {}
        self.lsn = 0

    def open(self) -> replikv.Store:
        # Durable checkpoints every few entries, so that the overlay of recent writes moves
        # into redb often and reads cross both.
        return replikv.Store(self.dir / "db", checkpoint_entries=3)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir)

    def apply(self, writes: list[tuple[str, Any, tuple[Any, ...]]]) -> None:
        for table, key, op in writes:
            rows = self.model.setdefault(table, {})
            if op[0] == "put":
                rows[key] = op[1]
            else:
                rows.pop(key, None)

    @rule(table=TABLES, key=KEYS, value=VALUES)
    def put(self, table: str, key: int | str | bytes, value: Any) -> None:
        self.lsn += 1
        assert self.store.put(table, key, value).lsn == self.lsn
        self.apply([(table, key, ("put", value))])

    @rule(table=TABLES, key=KEYS)
    def delete(self, table: str, key: int | str | bytes) -> None:
        self.lsn += 1
        assert self.store.delete(table, key).lsn == self.lsn
        self.apply([(table, key, ("delete",))])

    @rule(table=TABLES, rows=st.dictionaries(KEYS, VALUES, min_size=1, max_size=10))
    def put_many(self, table: str, rows: dict[int | str | bytes, Any]) -> None:
        self.lsn += 1
        assert self.store.put_many(table, list(rows.items())).lsn == self.lsn
        self.apply([(table, k, ("put", v)) for k, v in rows.items()])

    @rule(writes=WRITES, commit=st.booleans())
    def transaction(self, writes: list[tuple[str, Any, tuple[Any, ...]]], commit: bool) -> None:
        class Abort(Exception):
            pass

        try:
            with self.store.transaction() as tx:
                for table, key, op in writes:
                    if op[0] == "put":
                        tx.put(table, key, op[1])
                    else:
                        tx.delete(table, key)
                if not commit:
                    raise Abort
        except Abort:
            assert tx.receipt is None
            return
        if writes:
            self.lsn += 1
        assert tx.receipt is not None and tx.receipt.lsn == self.lsn
        self.apply(writes)

    @precondition(lambda self: self.lsn > 0)
    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self.open()
        assert self.store.last_lsn == self.lsn

    @rule(table=TABLES, key=KEYS)
    def get(self, table: str, key: int | str | bytes) -> None:
        missing = object()
        expected = self.model.get(table, {}).get(key, missing)
        got = self.store.get(table, key, default=missing)
        assert got is missing if expected is missing else got == expected

    @invariant()
    def tables_scan_like_the_model(self) -> None:
        for table, rows in self.model.items():
            assert self.store.count(table) == len(rows)
            ordered = sorted(rows, key=sort_key)
            assert [k for k, _ in self.store.scan(table)] == ordered
            assert [k for k, _ in self.store.scan(table, reverse=True, limit=3)] == ordered[::-1][
                :3
            ]

    @invariant()
    def last_lsn_is_dense(self) -> None:
        assert self.store.last_lsn == self.lsn


StoreMatchesADict.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_store_matches_a_dict = StoreMatchesADict.TestCase
