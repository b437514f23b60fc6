"""Synchronous writes (DESIGN guarantee 3) over real sockets on 127.0.0.1: a sync write
returns only once a quorum of replicas that fsync hold it durably, and never weakens
silently."""

from __future__ import annotations

import _thread
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import replikv
from polling import eventually
from proxy import Proxy
from test_replication import CHILD, TOKEN


@contextmanager
def serving(
    tmp_path: Path, *names: str, **primary_options: Any
) -> Iterator[tuple[replikv.Primary, dict[str, replikv.Replica]]]:
    """A primary with in-process replicas `names`, each connected and counted."""
    store = replikv.Store(tmp_path / "primary")
    with ExitStack() as stack:
        stack.callback(store.close)
        primary = stack.enter_context(
            replikv.Primary(store, token=TOKEN, ship_interval=0.0, **primary_options)
        )
        replicas = {
            name: stack.enter_context(
                replikv.Replica(tmp_path / name, primary=primary.address, token=TOKEN, name=name)
            )
            for name in names
        }
        # Connected, and counted: a replica counts once every member recorded it joined.
        eventually("every replica to count", lambda: counted(primary) == set(names))
        yield primary, replicas


def connected(primary: replikv.Primary) -> set[str]:
    return {info.name for info in primary.status() if info.state in ("catching_up", "streaming")}


def counted(primary: replikv.Primary) -> set[str]:
    return {info.name for info in primary.status() if info.sync_state == "quorum"} & connected(
        primary
    )


def disconnect(primary: replikv.Primary, replica: replikv.Replica) -> None:
    replica.close()
    eventually(f"{replica.name} to be seen gone", lambda: replica.name not in connected(primary))


@pytest.mark.parametrize("ship_ahead", [True, False], ids=["ship_ahead", "ship_when_durable"])
def test_sync_write_returns_only_after_quorum_acks_with_one_of_three_replicas_down(
    tmp_path: Path, ship_ahead: bool
) -> None:
    with serving(tmp_path, "a", "b", "c", quorum=2, ship_ahead=ship_ahead) as (primary, replicas):
        assert primary.sync_state == "ok" and primary.ship_ahead == ship_ahead
        disconnect(primary, replicas.pop("c"))
        assert primary.sync_state == "ok"
        for i in range(20):
            receipt = primary.store.put(
                "consent", f"user{i}", {"opted_in": True}, durability="sync"
            )
            assert receipt.durability == "sync" and not receipt.degraded
            assert len(receipt.acked_by) >= 2 and set(receipt.acked_by) <= {"a", "b"}
            for name in receipt.acked_by:
                # Acknowledged means durable in that replica's log already: no waiting.
                replica = replicas[name]
                assert replica.status().flushed_lsn >= receipt.lsn
                key = f"user{i}"
                if ship_ahead:
                    # Shipped before the primary's own fsync ended, it is shown there once
                    # the replica hears it is durable here: a frame later.
                    eventually(
                        f"{key} shown on {name}",
                        lambda: replica.store.get("consent", key) is not None,  # noqa: B023 (called here)
                    )
                # Durably applied there, shown to its readers.
                assert replica.store.get("consent", key) == {"opted_in": True}


def test_sync_write_raises_replication_timeout_with_its_lsn_when_the_quorum_is_down(
    tmp_path: Path,
) -> None:
    with serving(tmp_path, "a", "b", "c", quorum=2, sync_timeout=0.3) as (primary, replicas):
        disconnect(primary, replicas.pop("b"))
        disconnect(primary, replicas.pop("c"))
        assert primary.sync_state == "degraded"
        with pytest.raises(replikv.ReplicationTimeout) as timeout:
            primary.store.put("consent", "ana", {"opted_in": False}, durability="sync")
        assert timeout.value.lsn == primary.store.last_lsn, "committed locally, at that LSN"
        assert set(timeout.value.acked_by) <= {"a"}
        assert primary.store.get("consent", "ana") == {"opted_in": False}
        assert primary.wait_for(timeout.value.lsn, replicas=1, timeout=30) == 1


def test_a_sync_write_whose_primary_stops_raises_with_its_lsn_and_acked_by(
    tmp_path: Path,
) -> None:
    # The timeout is far longer than the test: the write fails because its primary closes.
    with serving(tmp_path, "a", sync_timeout=600) as (primary, replicas):
        disconnect(primary, replicas.pop("a"))
        store = primary.store

        def close_once_committed() -> None:
            eventually("the write to commit", lambda: store.last_lsn == 1)
            primary.close()

        closing = threading.Thread(target=close_once_committed)
        closing.start()
        try:
            with pytest.raises(replikv.ReplicationError, match="primary stopped") as stopped:
                store.put("consent", "ana", True, durability="sync")
        finally:
            closing.join(timeout=60)
        assert type(stopped.value) is replikv.ReplicationError
        assert (stopped.value.lsn, stopped.value.acked_by) == (1, [])
        assert store.get("consent", "ana") is True, "committed here"


def test_sync_write_degrades_visibly_when_the_quorum_is_down_and_degrade_was_chosen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="replikv")
    options: dict[str, Any] = {
        "quorum": 2,
        "sync_timeout": 0.3,
        "on_timeout": "degrade",
        "table_modes": {"consent": "sync"},
    }
    with serving(tmp_path, "a", "b", **options) as (primary, replicas):
        disconnect(primary, replicas.pop("b"))
        receipt = primary.store.put("consent", "ana", True, durability="sync")
        assert (receipt.durability, receipt.degraded) == ("sync", True)
        assert receipt.lsn == primary.store.last_lsn
        assert set(receipt.acked_by) <= {"a"}
        # Writes that return no receipt degrade visibly too: a warning each, with its LSN.
        consent = primary.store.table("consent")
        consent["bob"] = True
        del consent["ana"]
        assert primary.store.delete_prefix("consent", "b") == 1

        def warned() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.levelno == logging.WARNING
                and "not acknowledged by its quorum" in r.getMessage()
            ]

        # Records reach Python's logging from the core's threads: a moment later.
        eventually("a warning per degraded write", lambda: len(warned()) >= 4)
        assert [f"(lsn={receipt.lsn + i}," in w for i, w in enumerate(warned())] == [True] * 4


def test_a_stalled_replica_slows_sync_writers_only_when_the_quorum_needs_it(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "primary")
    with ExitStack() as stack:
        stack.callback(store.close)
        primary = stack.enter_context(
            replikv.Primary(store, token=TOKEN, ship_interval=0.0, quorum=1)
        )
        proxy = stack.enter_context(Proxy(primary.address))
        stack.enter_context(
            replikv.Replica(tmp_path / "fast", primary=primary.address, token=TOKEN)
        )
        slow = stack.enter_context(
            replikv.Replica(tmp_path / "slow", primary=proxy.address, token=TOKEN)
        )
        eventually("both replicas to connect", lambda: connected(primary) == {"fast", "slow"})
        proxy.delay = 0.2
        proxy.stalled = True  # the slowest a link gets: it can ack nothing now
        for i in range(20):
            assert store.put("events", i, {"type": "open"}, durability="async").acked_by == []
            receipt = store.put("consent", i, True, durability="sync")
            assert receipt.acked_by == ["fast"], "the quorum of 1 never waited for 'slow'"
        assert slow.applied_lsn < store.last_lsn, "every call returned before 'slow' had it"
        proxy.stalled = False
    # With a quorum of 2 the same replica must be waited for.
    store = replikv.Store(tmp_path / "primary")
    with ExitStack() as stack:
        stack.callback(store.close)
        primary = stack.enter_context(
            replikv.Primary(store, token=TOKEN, ship_interval=0.0, quorum=2, sync_timeout=60)
        )
        proxy = stack.enter_context(Proxy(primary.address))
        for name, address in (("fast", primary.address), ("slow", proxy.address)):
            stack.enter_context(
                replikv.Replica(tmp_path / name, primary=address, token=TOKEN, name=name)
            )
        eventually("both replicas to connect", lambda: connected(primary) == {"fast", "slow"})
        proxy.stalled = True
        receipts: list[replikv.Receipt] = []
        writer = threading.Thread(
            target=lambda: receipts.append(store.put("consent", "x", 1, durability="sync"))
        )
        lsn = store.last_lsn + 1
        writer.start()
        eventually("'fast' to ack", lambda: primary.wait_for(lsn, replicas=1, timeout=0) == 1)
        assert writer.is_alive(), "one ack of the two the quorum needs"
        proxy.stalled = False
        writer.join(timeout=60)
        assert [r.acked_by for r in receipts] == [["fast", "slow"]]


def test_every_returned_sync_write_is_on_the_surviving_quorums_disks_after_a_sigkill(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "primary")
    children: dict[str, subprocess.Popen[str]] = {}
    returned: list[tuple[str, replikv.Receipt, bool]] = []  # and started after the kill
    lock = threading.Lock()
    stop = threading.Event()
    killed = threading.Event()
    try:
        primary = replikv.Primary(store, token=TOKEN, ship_interval=0.0, quorum=2, sync_timeout=60)
        for name in ("r0", "r1", "r2"):
            children[name] = subprocess.Popen(
                [sys.executable, str(CHILD), str(tmp_path / name), primary.address, name],
                stdout=subprocess.DEVNULL,
                text=True,
            )
        eventually("the replicas to connect", lambda: connected(primary) == set(children), 60)

        def write(writer: int) -> None:
            i = 0
            while not stop.is_set():
                key = f"w{writer}-{i}"
                after = killed.is_set()
                receipt = store.put("consent", key, {"i": i}, durability="sync")
                with lock:
                    returned.append((key, receipt, after))
                i += 1

        writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in writers:
            thread.start()
        eventually("some sync writes", lambda: len(returned) >= 40)
        children["r0"].send_signal(signal.SIGKILL)
        children["r0"].wait(timeout=30)
        killed.set()
        after_kill = len(returned)
        eventually("sync writes after the kill", lambda: len(returned) >= after_kill + 40)
        stop.set()
        for thread in writers:
            thread.join(timeout=60)
        primary.close()
    finally:
        stop.set()
        for child in children.values():
            child.kill()
            child.wait(timeout=30)
        store.close()
    assert killed.is_set()
    stored = {}
    for name in children:
        with replikv.Store(tmp_path / name) as copy:  # a replica's directory: read-only
            stored[name] = {key for key, _ in copy.scan("consent")}
    assert sum(after for _, _, after in returned) >= 40 - len(writers)
    for key, receipt, after in returned:
        assert len(receipt.acked_by) >= 2 and not receipt.degraded
        for name in receipt.acked_by:
            assert key in stored[name], f"{key} was acked by {name} but is not on its disk"
        if after:
            assert set(receipt.acked_by) == {"r1", "r2"}
            assert key in stored["r1"] and key in stored["r2"]


def test_sync_is_refused_before_commit_without_a_primary_or_enough_replicas(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "primary")
    try:
        store.put("t", "before", 1)
        with pytest.raises(replikv.ReplicationError, match="no Primary serves"):
            store.put("consent", "ana", True, durability="sync")
        with (
            pytest.raises(replikv.ReplicationError, match="no Primary serves"),
            store.transaction(durability="sync") as tx,
        ):
            tx.put("consent", "ana", True)
        assert store.last_lsn == 1, "a refused sync write takes no LSN"
    finally:
        store.close()
    with serving(tmp_path, "a", quorum=2) as (primary, _):
        assert primary.sync_state == "unavailable"
        attempts: list[Callable[[], object]] = [
            lambda: primary.store.put("consent", "ana", True, durability="sync"),
            lambda: primary.store.delete("consent", "ana", durability="sync"),
            lambda: primary.store.put_many("consent", [("ana", True)], durability="sync"),
        ]
        for attempt in attempts:
            with pytest.raises(replikv.ReplicationError, match="quorum is 2 but only 1"):
                attempt()
        assert primary.store.last_lsn == 1
        assert primary.store.get("consent", "ana") is None
        primary.close()
        with pytest.raises(replikv.ReplicationError, match="no Primary serves"):
            primary.store.put("consent", "ana", True, durability="sync")


def test_a_restarted_primary_makes_sync_writes_wait_for_its_registered_replicas(
    tmp_path: Path,
) -> None:
    """Slots remember which replicas fsync: after a restart, before any replica is back,
    a sync write waits for its quorum instead of being refused."""
    store = replikv.Store(tmp_path / "primary")
    options: dict[str, Any] = {"token": TOKEN, "name": "eu-1", "max_backoff": 0.2}
    try:
        first = replikv.Primary(store, token=TOKEN, ship_interval=0.0)
        address = first.address
        with replikv.Replica(tmp_path / "eu-1", primary=address, **options):
            eventually("the replica to connect", lambda: connected(first) == {"eu-1"})
            assert store.put("consent", "ana", True, durability="sync").acked_by == ["eu-1"]
            first.close()
        assert [(s.name, s.fsync) for s in first.slots()] == [("eu-1", True)]
        with replikv.Primary(
            store, listen=address, token=TOKEN, ship_interval=0.0, sync_timeout=60.0
        ) as second:
            assert second.sync_state == "degraded", "registered, not connected yet"
            receipts: list[replikv.Receipt] = []
            writer = threading.Thread(
                target=lambda: receipts.append(store.put("consent", "bob", True, durability="sync"))
            )
            before = store.last_lsn
            writer.start()
            eventually("the sync write to commit", lambda: store.last_lsn > before)
            assert writer.is_alive(), "it waits for the replica"
            with replikv.Replica(tmp_path / "eu-1", primary=address, **options) as replica:
                writer.join(timeout=60)
                [receipt] = receipts
                assert receipt.acked_by == ["eu-1"]
                assert not receipt.degraded
                assert repr(receipt) == (
                    f"Receipt(lsn={receipt.lsn}, durability='sync', acked_by=['eu-1'], "
                    "degraded=False)"
                )
                replica.wait_for(receipt.lsn, timeout=30)
                assert replica.get("consent", "bob") is True
    finally:
        store.close()


def test_replicas_without_fsync_never_count_toward_the_quorum_or_wait_for(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "primary")
    with (
        replikv.Primary(store, token=TOKEN, ship_interval=0.0) as primary,
        replikv.Replica(
            tmp_path / "scratch", primary=primary.address, token=TOKEN, fsync=False
        ) as scratch,
    ):
        receipt = store.put("events", 1, {"type": "open"})
        assert scratch.wait_for(receipt.lsn, timeout=30)
        assert [(i.name, i.sync_state) for i in primary.status()] == [("scratch", "async")]
        assert primary.wait_for(receipt.lsn, replicas=1, timeout=0.2) == 0
        assert primary.sync_state == "unavailable"
        with pytest.raises(replikv.ReplicationError, match="fsync"):
            store.put("consent", "ana", True, durability="sync")
        status = scratch.status()
        assert status.flushed_lsn == status.applied_lsn == receipt.lsn
    store.close()


def test_table_modes_and_default_durability_pick_each_writes_durability(
    tmp_path: Path,
) -> None:
    options: dict[str, Any] = {"table_modes": {"consent": "sync"}, "default_durability": "async"}
    with serving(tmp_path, "a", **options) as (primary, _):
        store = primary.store
        sync = store.put("consent", "ana", True)
        assert (sync.durability, sync.acked_by) == ("sync", ["a"])
        assert store.put("events", 1, "open").durability == "async"
        assert store.put("consent", "bo", True, durability="async").durability == "async"
        assert store.put("events", 2, "open", durability="sync").durability == "sync"
        with store.transaction() as tx:  # one sync table makes the transaction sync
            tx.put("events", 3, "click")
            tx.delete("consent", "bo")
        assert tx.receipt is not None and tx.receipt.durability == "sync"
        with store.transaction(durability="async") as tx:
            tx.put("consent", "cy", True)
        assert tx.receipt is not None and tx.receipt.durability == "async"
        [info] = primary.status()
        assert (info.name, info.sync_state) == ("a", "quorum")
        assert replikv._core.fetch_status(primary.address, token=TOKEN).sync_state == "ok"
        assert "sync_state=ok" in repr(primary)
        primary.close()
        assert store.put("events", 4, "open").durability == "local"
        restarted = replikv.Primary(
            store, listen=primary.address, token=TOKEN, default_durability="sync"
        )
        with restarted as again:
            eventually("'a' to reconnect", lambda: connected(again) == {"a"})
            assert store.put("events", 5, "open").durability == "sync"
            assert store.put("events", 6, "open", durability="async").durability == "async"


def test_ctrl_c_during_a_sync_wait_raises_with_the_committed_writes_receipt(
    tmp_path: Path,
) -> None:
    with serving(tmp_path, "a", sync_timeout=600) as (primary, replicas):
        disconnect(primary, replicas.pop("a"))
        lsn = primary.store.last_lsn + 1

        def interrupt_once_committed() -> None:
            eventually("the local commit", lambda: primary.store.last_lsn == lsn)
            _thread.interrupt_main()

        interrupter = threading.Thread(target=interrupt_once_committed)
        interrupter.start()
        with pytest.raises(KeyboardInterrupt) as interrupted:
            primary.store.put("consent", "ana", True, durability="sync")
        interrupter.join()
        receipt = interrupted.value.receipt  # type: ignore[attr-defined]
        assert (receipt.lsn, receipt.durability, receipt.degraded) == (lsn, "sync", True)
        assert primary.store.get("consent", "ana") is True


def test_sync_settings_and_durability_arguments_are_checked(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary")
    try:
        settings: list[dict[str, Any]] = [
            {"quorum": 0},
            {"on_timeout": "retry"},
            {"table_modes": {"t": "fast"}},
            {"table_modes": {"__meta": "sync"}},
            {"default_durability": "local"},
            {"sync_timeout": -1.0},
        ]
        for bad in settings:
            with pytest.raises(ValueError):
                replikv.Primary(store, **bad)
        with pytest.raises(TypeError):
            replikv.Primary(store, table_modes={"t": 1})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="'async' or 'sync'"):
            store.put("t", "k", 1, durability="maybe")
        with pytest.raises(TypeError):
            store.put("t", "k", 1, durability=1)  # type: ignore[arg-type]
        assert store.last_lsn == 0
        with (
            replikv.Primary(store),
            pytest.raises(replikv.ReplicationError, match="already served"),
        ):
            replikv.Primary(store)
    finally:
        store.close()
