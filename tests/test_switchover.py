"""Planned switchover with real sockets on 127.0.0.1, under a steady write load (issue 8):
no write whose call returned is lost, no write is refused except with the retryable
WritesPausedError while the log changes hands, the old primary follows the new one
without a resync, and the other replica is told to follow the new primary."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

import pytest
import replikv
from polling import eventually
from proxy import Proxy


class Writer:
    """A client that writes sync consent changes and async events to whichever store is
    the primary's now, retrying a paused write, until stopped."""

    def __init__(self, store: replikv.Store) -> None:
        self.store = store
        self.returned: list[str] = []
        self.paused = 0
        self.failure: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        try:
            while not self.stop.is_set():
                key = f"user{i}@example.com"
                try:
                    self.store.put("consent", key, {"opted_in": i % 2 == 0})
                    self.store.put("events", i, {"type": "open"})
                except replikv.WritesPausedError:
                    self.paused += 1
                    time.sleep(0.001)
                    continue
                except replikv.ReadOnlyError:
                    # The old primary follows the new one now: the test points us there.
                    time.sleep(0.001)
                    continue
                self.returned.append(key)
                i += 1
        except BaseException as failure:  # reported by the test
            self.failure = failure


def both_stream(primary: replikv.Primary) -> bool:
    """Whether `primary`'s two replicas stream (its status also lists the slots it kept
    from an earlier term, disconnected until those replicas come back)."""
    return sum(r.state == "streaming" for r in primary.status()) == 2


@pytest.mark.timeout(120)
def test_switchovers_under_load_lose_nothing_and_the_old_primary_follows(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "a")
    primary = replikv.Primary(
        store, quorum=1, table_modes={"consent": "sync"}, heartbeat_interval=0.02
    )
    replica = replikv.Replica(tmp_path / "b", primary=primary.address, listen="127.0.0.1:0")
    other = replikv.Replica(tmp_path / "c", primary=primary.address, listen="127.0.0.1:0")
    eventually("both replicas", lambda: len(primary.status()) == 2)
    writer = Writer(store)
    writer.thread.start()
    switchovers = []
    try:
        for _ in range(3):
            eventually("some writes", lambda: len(writer.returned) > 20)
            switched = primary.switchover(replica.name)
            switchovers.append(switched)
            new = replica.promoted
            assert new is not None and new.address == switched.address
            writer.store = new.store
            assert new.store.epoch_history[-1] == (switched.epoch, switched.last_lsn + 1)
            primary, replica = new, switched.replica
            # The old primary's store follows the new one from its position: no resync.
            eventually("the old primary to follow", functools.partial(both_stream, primary))
            assert replica.status().resyncs == 0
            assert replica.status().snapshots == 0
    finally:
        writer.stop.set()
        writer.thread.join(timeout=30)
    assert writer.failure is None, f"a write failed: {writer.failure!r}"
    assert [s.epoch for s in switchovers] == [2, 3, 4]
    assert [s.to for s in switchovers] == ["b", "a", "b"]
    assert switchovers[0].paused < 5, repr(switchovers[0])

    final = primary.store
    missing = [key for key in writer.returned if final.get("consent", key) is None]
    assert missing == [], f"returned writes lost: {missing[:5]}"
    # Every store holds the same log: the other replica was led to each new primary.
    last = final.put("events", "last", {"type": "click"}).lsn
    for follower in (replica, other):
        assert follower.wait_for(last, timeout=30)
        assert follower.store.checksum() == final.checksum()
    other.close()
    replica.close()
    primary.close()


def test_a_switchover_to_a_replica_that_does_not_listen_is_refused_and_writes_go_on(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "a")
    with replikv.Primary(store) as primary:
        replica = replikv.Replica(tmp_path / "b", primary=primary.address)
        eventually("the replica", lambda: len(primary.status()) == 1)
        with pytest.raises(replikv.ReplicationError, match="listen"):
            primary.switchover("b")
        store.put("t", "k", 1)
        replica.close()
    store.close()


@pytest.mark.timeout(60)
def test_a_member_cut_off_from_the_old_primary_is_led_to_the_new_one(tmp_path: Path) -> None:
    """The old primary leads only the replicas connected to it when the switchover ends
    (none, if it dies right after the takeover): the new primary tells every member it
    heard of from the old one's heartbeats, so a member cut off then follows it too."""
    store = replikv.Store(tmp_path / "a")
    primary = replikv.Primary(store, heartbeat_interval=0.02)
    target = replikv.Replica(tmp_path / "b", primary=primary.address, listen="127.0.0.1:0")
    proxy = Proxy(primary.address)
    cut_off = replikv.Replica(tmp_path / "c", primary=proxy.address, listen="127.0.0.1:0")
    try:
        eventually("both replicas", functools.partial(both_stream, primary))
        heard = target.status
        eventually("the target to know both members", lambda: len(heard().primary_peers) == 2)
        proxy.cut()
        eventually("the member to lose its primary", lambda: cut_off.status().state != "streaming")
        switched = primary.switchover(target.name)
        new = target.promoted
        assert new is not None
        lsn = new.store.put("t", "after", 1).lsn
        assert cut_off.wait_for(lsn, timeout=30), cut_off.status()
        assert cut_off.store.get("t", "after") == 1
        switched.replica.close()
        new.close()
    finally:
        cut_off.close()
        target.close()
        primary.close()
        proxy.close()


@pytest.mark.timeout(60)
def test_a_second_switchover_while_one_runs_is_refused_and_only_one_replica_takes_over(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "a")
    primary = replikv.Primary(store)
    proxy = Proxy(primary.address)
    slow = replikv.Replica(tmp_path / "b", primary=proxy.address, listen="127.0.0.1:0")
    other = replikv.Replica(tmp_path / "c", primary=primary.address, listen="127.0.0.1:0")
    first: list[replikv.Switchover] = []
    running = threading.Thread(target=lambda: first.append(primary.switchover("b", timeout=30)))
    try:
        eventually("both replicas", functools.partial(both_stream, primary))
        # b lags behind a stalled link: the first switchover waits for it to catch up.
        proxy.stalled = True
        store.put("t", "k", 1)
        running.start()
        # It starts at once, then waits for b (up to its timeout): well within this.
        time.sleep(1.0)
        with pytest.raises(replikv.ReplicationError, match=r"another switchover .* under way"):
            primary.switchover("c", timeout=30)
        proxy.stalled = False
        running.join(timeout=40)
        assert len(first) == 1, "the first switchover ended"
        assert slow.promoted is not None and other.promoted is None
        # c never took over: every epoch it knows is b's (once the switchover ends it may
        # already follow b, in b's epoch).
        history = other.store.epoch_history
        assert history == slow.promoted.store.epoch_history[: len(history)], "c never took over"
        assert other.store.epoch <= slow.promoted.store.epoch
        first[0].replica.close()
        slow.promoted.close()
    finally:
        proxy.stalled = False
        running.join(timeout=40)
        other.close()
        slow.close()
        primary.close()
        proxy.close()
