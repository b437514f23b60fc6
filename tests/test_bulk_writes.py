"""Writes of many keys as ONE transaction: ``Table.update``, ``Store.batch``,
``delete_prefix`` and ``drop_table``; each is one log entry that replicates, reaches caches
and the change feed, and replays after a reopen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import replikv
from polling import eventually
from test_cache_node import command
from test_sync_writes import serving

Open = Callable[..., replikv.Store]


def ops_of(store: replikv.Store, lsn: int) -> list[tuple[str, str, object]]:
    change = next(iter(store.changes(since=lsn - 1, limit=1)))
    assert change.lsn == lsn
    return [(op.kind, op.table, op.key) for op in change.ops]


def test_table_update_writes_every_row_in_one_entry(store: replikv.Store) -> None:
    subs = store.table("subscribers")
    subs.update({"ana": 1, "bo": 2}, cy=3)
    assert store.last_lsn == 1
    assert dict(subs.items()) == {"ana": 1, "bo": 2, "cy": 3}
    subs.update([("dee", 4), ("ana", 5)])
    assert store.last_lsn == 2 and subs["ana"] == 5 and len(subs) == 4
    subs.update({})
    assert store.last_lsn == 2, "an empty update takes no LSN"


def test_table_update_with_a_bad_row_writes_nothing(store: replikv.Store) -> None:
    subs = store.table("subscribers")
    with pytest.raises(TypeError):
        subs.update({"ana": 1, "bo": object()})
    with pytest.raises(ValueError):
        subs.update([("ana", 1, "extra")])  # type: ignore[list-item]
    assert store.last_lsn == 0 and len(subs) == 0


def test_a_batch_commits_every_write_as_one_entry_on_exit(store: replikv.Store) -> None:
    store.put("templates", "old", "x")
    with store.batch() as batch:
        batch.put("subscribers", "ana", {"opted_in": True})
        batch.delete("templates", "old")
        events = batch.table("events")
        events["e1"] = {"kind": "open"}
        events.update({"e2": {"kind": "click"}})
        del events["e1"]
        assert len(batch) == 5 and store.last_lsn == 1, "nothing is written before the end"
    assert batch.receipt is not None and batch.receipt.lsn == 2 == store.last_lsn
    assert ops_of(store, 2) == [
        ("put", "subscribers", "ana"),
        ("delete", "templates", "old"),
        ("put", "events", "e1"),
        ("put", "events", "e2"),
        ("delete", "events", "e1"),
    ]
    assert store.get("events", "e2") == {"kind": "click"} and store.get("events", "e1") is None
    with pytest.raises(RuntimeError, match="already committed"):
        batch.put("t", "k", 1)
    assert repr(batch).endswith(": 5 write(s) committed at LSN 2>")


def test_an_empty_batch_says_it_wrote_no_entry(store: replikv.Store) -> None:
    store.put("t", "k", 1)
    with store.batch() as batch:
        pass
    assert store.last_lsn == 1
    assert repr(batch).endswith(": committed, empty (no entry written)>")


def test_a_transaction_says_how_many_writes_it_committed_and_an_empty_one_none(
    store: replikv.Store,
) -> None:
    store.put("t", "k", 1)
    with store.transaction() as empty:
        assert empty.get("t", "k") == 1
    assert store.last_lsn == 1
    assert repr(empty).endswith(": committed, empty (no entry written)>")
    with store.transaction() as tx:
        tx.put("t", "a", 1)
        tx.delete("t", "k")
    assert repr(tx).endswith(": 2 write(s) committed at LSN 2>")


def test_a_batch_whose_block_raises_writes_nothing(store: replikv.Store) -> None:
    with pytest.raises(KeyError), store.batch() as batch:
        batch.put("subscribers", "ana", 1)
        raise KeyError("boom")
    assert store.last_lsn == 0 and batch.receipt is None and len(batch) == 0


def test_a_batch_encodes_values_when_they_are_put(store: replikv.Store) -> None:
    profile = {"opted_in": True}
    with store.batch() as batch:
        batch.put("subscribers", "ana", profile)
        profile["opted_in"] = False
        with pytest.raises(TypeError):
            batch.put("subscribers", "bo", object())
        with pytest.raises(TypeError):
            batch.put("subscribers", True, 1)
        with pytest.raises(ValueError, match="table name"):
            batch.put("__meta", "k", 1)
    assert store.get("subscribers", "ana") == {"opted_in": True}
    assert store.tables() == ["subscribers"] and store.last_lsn == 1


def test_a_batch_over_the_transaction_limit_writes_nothing(open_store: Open) -> None:
    store = open_store(max_transaction_bytes=1000)
    with pytest.raises(replikv.ValueTooLarge), store.batch() as batch:
        for i in range(100):
            batch.put("events", i, "x" * 50)
    assert store.last_lsn == 0
    assert batch.receipt is None and "failed (nothing written)" in repr(batch)
    with pytest.raises(RuntimeError, match="commit failed and wrote nothing"):
        batch.put("events", 1, "x")


def test_a_batch_table_update_with_a_bad_row_adds_none_of_its_rows(store: replikv.Store) -> None:
    with store.batch() as batch:
        view = batch.table("subscribers")
        with pytest.raises(TypeError):
            view.update({"ana": {"opted_in": True}, "bo": object()})
        assert len(batch) == 0
        view.update(cy={"opted_in": False})
    assert dict(store.scan("subscribers")) == {"cy": {"opted_in": False}}


def test_delete_prefix_deletes_the_matching_str_keys_as_one_entry(store: replikv.Store) -> None:
    subs = store.table("subscribers")
    subs.update({"ana@a.com": 1, "ana@b.com": 2, "anb@a.com": 3, b"ana@x": 4, 7: 5})
    assert subs.delete_prefix("ana@") == 2
    assert store.last_lsn == 2
    assert ops_of(store, 2) == [
        ("delete", "subscribers", "ana@a.com"),
        ("delete", "subscribers", "ana@b.com"),
    ]
    assert sorted(map(str, subs)) == ["7", "anb@a.com", "b'ana@x'"]
    assert subs.delete_prefix(b"ana") == 1 and b"ana@x" not in subs
    assert subs.delete_prefix("zzz") == 0 and store.last_lsn == 3, "nothing matched: no LSN"


def test_delete_prefix_refuses_int_and_empty_prefixes(store: replikv.Store) -> None:
    subs = store.table("subscribers")
    subs.update({1: 1, "a": 2})
    with pytest.raises(TypeError, match="int keys have no prefixes"):
        subs.delete_prefix(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="drop_table"):
        subs.delete_prefix("")
    with pytest.raises(ValueError, match="table name"):
        store.delete_prefix("bad name", "a")
    assert store.last_lsn == 1 and len(subs) == 2


def test_drop_table_removes_the_table_in_one_entry(store: replikv.Store) -> None:
    store.put_many("events", [(i, {"n": i}) for i in range(5000)])
    store.put("subscribers", "ana", 1)
    assert store.drop_table("events") == 5000
    assert store.tables() == ["subscribers"]
    assert store.count("events") == 0 and list(store.scan("events")) == []
    assert store.last_lsn == 3 and len(ops_of(store, 3)) == 5000
    assert store.drop_table("events") == 0 and store.last_lsn == 3, "dropping is idempotent"
    with pytest.raises(ValueError, match="table name"):
        store.drop_table("__meta")
    frame = store.changes(since=2).to_pandas()
    assert set(frame["op"]) == {"delete"} and len(frame) == 5000


def test_delete_prefix_and_drop_table_replay_after_a_reopen(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db") as store:
        store.table("t").update({"a1": 1, "a2": 2, "b1": 3})
        store.put("gone", "k", 1)
        store.table("t").delete_prefix("a")
        store.drop_table("gone")
        expected = store.checksum()
    with replikv.Store(tmp_path / "db", checkpoint_entries=1) as reopened:
        assert reopened.checksum() == expected
        assert dict(reopened.scan("t")) == {"b1": 3} and reopened.tables() == ["t"]


def test_delete_prefix_and_drop_table_replicate_async_and_sync(tmp_path: Path) -> None:
    with serving(tmp_path, "eu", table_modes={"consent": "sync"}) as (primary, replicas):
        store, replica = primary.store, replicas["eu"]
        store.table("consent").update({f"ana{i}": True for i in range(10)} | {"bo": False})
        store.table("events").update({f"e{i}": i for i in range(100)})
        # A sync write returns once the replica holds it: no wait needed to read it there.
        assert store.delete_prefix("consent", "ana", durability="sync") == 10
        assert replica.store.count("consent") == 1
        assert store.drop_table("events") == 100
        assert replica.wait_for(store.last_lsn, timeout=30)
        assert replica.store.checksum() == store.checksum()
        assert replica.store.tables() == ["consent"]
        assert primary.verify().ok


def test_an_in_process_cache_drops_what_delete_prefix_and_drop_table_delete(
    store: replikv.Store,
) -> None:
    with replikv.Cache(capacity=100, source=store) as cache:
        store.table("subscribers").update({"ana": 1, "bo": 2})
        store.put("events", "e1", 1)
        assert cache.get("subscribers", "ana") == 1 and cache.get("events", "e1") == 1
        store.table("subscribers").delete_prefix("an")
        store.drop_table("events")
        assert cache.get("subscribers", "ana") is None and cache.get("events", "e1") is None
        assert cache.get("subscribers", "bo") == 2


def test_a_cache_node_following_the_log_drops_a_deleted_prefix(store: replikv.Store) -> None:
    store.put("subscribers", "ana@example.com", {"opted_in": True})
    with (
        replikv.Primary(store, listen="127.0.0.1:0") as primary,
        replikv.CacheNode(follow=primary.address) as node,
    ):
        eventually("the node follows", lambda: node.stats().follow_state == "streaming")
        host, port = node.address.rsplit(":", 1)
        r = redis.Redis(host=host, port=int(port), socket_timeout=5)
        key = "subscribers:s:ana@example.com"
        value = replikv.encode_value({"opted_in": True})
        assert command(r, "RKV.FILL", key, 1, store.last_lsn, value) == 1
        assert r.get(key) == value
        store.table("subscribers").delete_prefix("ana@")
        eventually("the node processes it", lambda: node.stats().processed_lsn == 2)
        assert r.get(key) is None
        r.close()
