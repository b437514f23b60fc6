"""A replica that joins a running primary counts toward the quorum only once every member
knows it joined (DESIGN §1, promise 3), with real replicas on 127.0.0.1: a promotion by
members that were away when it joined counts one member too few, so a sync write that its
ack alone completed would be lost by that promotion."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import replikv
from polling import eventually

TOKEN = "t0ken"


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def role(primary: replikv.Primary, name: str) -> str | None:
    return next((r.sync_state for r in primary.status().replicas if r.name == name), None)


def streaming(primary: replikv.Primary, name: str) -> bool:
    return any(r.name == name and r.state == "streaming" for r in primary.status().replicas)


@contextmanager
def members_away_while_ap1_joins(
    tmp_path: Path,
) -> Iterator[tuple[replikv.Store, replikv.Primary, replikv.Replica, dict[str, str]]]:
    """A primary (quorum 1) whose two members eu-1 and us-1 stopped after it told them
    they are the members, and a third replica, ap-1, that registered with it since and so
    does not count."""
    listen = {name: free_address() for name in ("eu-1", "us-1", "ap-1")}
    store = replikv.Store(tmp_path / "primary")
    primary = replikv.Primary(
        store, token=TOKEN, quorum=1, heartbeat_interval=0.02, sync_timeout=1.0
    )
    try:
        members = [
            replikv.Replica(
                tmp_path / name, primary=primary.address, token=TOKEN, listen=listen[name]
            )
            for name in ("eu-1", "us-1")
        ]
        eventually(
            "both members to count",
            lambda: role(primary, "eu-1") == role(primary, "us-1") == "quorum",
        )
        store.put("consent", "before", True, durability="sync")
        for member in members:
            eventually(
                "a heartbeat naming both members",
                lambda m=member: (  # type: ignore[misc]
                    m.status().primary_members == 2 and len(m.status().primary_peers) == 2
                ),
            )
            member.close()
        ap1 = replikv.Replica(
            tmp_path / "ap-1", primary=primary.address, token=TOKEN, listen=listen["ap-1"]
        )
        try:
            eventually("ap-1 to register", lambda: role(primary, "ap-1") is not None)
            # eu-1 and us-1 have not recorded that it joined.
            assert role(primary, "ap-1") == "joining"
            yield store, primary, ap1, listen
        finally:
            ap1.close()
    finally:
        primary.close()
        store.close()


def test_a_replica_that_joined_while_the_members_were_away_completes_no_sync_write(
    tmp_path: Path,
) -> None:
    with members_away_while_ap1_joins(tmp_path) as (store, primary, ap1, listen):
        with pytest.raises(replikv.ReplicationTimeout) as raised:
            store.put("consent", "after", True, durability="sync")
        lsn = raised.value.lsn
        assert lsn is not None
        assert raised.value.acked_by == []
        assert primary.wait_for(lsn, replicas=1, timeout=0.0) == 0
        # ap-1 holds the write durably all the same: its ack just does not count.
        assert ap1.wait_for(lsn, timeout=30)
        assert ap1.store.get("consent", "after") is True
    # Why it must not count: the primary is gone, and the two members that were away
    # promote one of them by the rule they know (2 members, quorum 1: reach both).
    eu1, us1 = (
        replikv.Replica(tmp_path / n, primary=free_address(), token=TOKEN, listen=listen[n])
        for n in ("eu-1", "us-1")
    )
    try:
        new = eu1.promote()
        assert new.promotion is not None and sorted(new.promotion.reached) == ["eu-1", "us-1"]
        assert new.store.get("consent", "before") is True
        assert new.store.get("consent", "after") is None, "the write nobody acknowledged"
        new.close()
        new.store.close()
    finally:
        us1.close()
        eu1.close()


def test_a_joining_replica_counts_once_the_members_are_back_and_know_it_joined(
    tmp_path: Path,
) -> None:
    with members_away_while_ap1_joins(tmp_path) as (store, primary, _ap1, listen):
        eu1 = replikv.Replica(
            tmp_path / "eu-1", primary=primary.address, token=TOKEN, listen=listen["eu-1"]
        )
        try:
            eventually("eu-1 to reconnect", lambda: primary.sync_state == "ok")
            assert role(primary, "ap-1") == "joining", "us-1 has not heard of ap-1 yet"
            us1 = replikv.Replica(
                tmp_path / "us-1", primary=primary.address, token=TOKEN, listen=listen["us-1"]
            )
            try:
                eventually("ap-1 to count", lambda: role(primary, "ap-1") == "quorum")
                assert us1.status().primary_members == 3
                receipt = store.put("consent", "after", True, durability="sync")
                assert primary.wait_for(receipt.lsn, replicas=3, timeout=30) == 3
            finally:
                us1.close()
        finally:
            eu1.close()


def test_a_replica_still_joining_when_its_primary_restarts_is_joining_after_it(
    tmp_path: Path,
) -> None:
    with members_away_while_ap1_joins(tmp_path) as (store, primary, ap1, _listen):
        path = store.path
        ap1.close()
        primary.close()
        store.close()
        # Its slot says it was joining: the restarted primary does not count it either.
        with (
            replikv.Store(path) as store,
            replikv.Primary(store, token=TOKEN, quorum=1, sync_timeout=1.0) as primary,
            replikv.Replica(tmp_path / "ap-1", primary=primary.address, token=TOKEN),
        ):
            eventually("ap-1 to reconnect", lambda: role(primary, "ap-1") is not None)
            assert {r.name: r.sync_state for r in primary.status().replicas} == {
                "eu-1": "quorum",
                "us-1": "quorum",
                "ap-1": "joining",
            }
            with pytest.raises(replikv.ReplicationTimeout):
                store.put("consent", "after", True, durability="sync")


def test_a_directory_replaced_under_a_members_name_joins_anew_after_a_primary_restart(
    tmp_path: Path,
) -> None:
    """The slot remembers which store directory held it: a new directory under the name
    of a member that is away (its disk replaced) is a newcomer, not that member."""
    store = replikv.Store(tmp_path / "primary")
    first = replikv.Primary(store, token=TOKEN, quorum=1, heartbeat_interval=0.02)
    with (
        first,
        replikv.Replica(tmp_path / "eu-1", primary=first.address, token=TOKEN),
        replikv.Replica(tmp_path / "us-1", primary=first.address, token=TOKEN),
    ):
        eventually("both to count", lambda: role(first, "eu-1") == role(first, "us-1") == "quorum")
    with replikv.Primary(store, token=TOKEN, quorum=1, sync_timeout=1.0) as primary:
        # The member's own directory returns as itself, and counts at once.
        with replikv.Replica(tmp_path / "eu-1", primary=primary.address, token=TOKEN):
            eventually("eu-1 to return", lambda: role(primary, "eu-1") == "quorum")
        replaced = tmp_path / "eu-1-new-disk"
        with replikv.Replica(replaced, primary=primary.address, name="eu-1", token=TOKEN):
            eventually("eu-1 to reconnect", lambda: streaming(primary, "eu-1"))
            assert role(primary, "eu-1") == "joining", "us-1, away, has not heard of it"
            with pytest.raises(replikv.ReplicationTimeout):
                store.put("consent", "after", True, durability="sync")
    store.close()


def test_a_replica_still_joining_at_a_switchover_is_joining_under_the_new_primary(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "a")
    primary = replikv.Primary(store, token=TOKEN, quorum=1, heartbeat_interval=0.02)
    opened: list[replikv.Replica] = []

    def replica(name: str, listen: str | None = None) -> replikv.Replica:
        opened.append(
            replikv.Replica(tmp_path / name, primary=primary.address, token=TOKEN, listen=listen)
        )
        return opened[-1]

    new_primary: replikv.Primary | None = None
    try:
        b = replica("b", listen="127.0.0.1:0")
        away = replica("away")
        eventually(
            "b and away to count",
            lambda: role(primary, "b") == role(primary, "away") == "quorum",
        )
        away.close()
        replica("new")
        eventually("new to register", lambda: role(primary, "new") == "joining")
        switched = primary.switchover("b", timeout=30)
        opened.append(switched.replica)
        new_primary = b.promoted
        assert new_primary is not None
        promoted = new_primary
        eventually("new to follow b", lambda: streaming(promoted, "new"))
        # "away" has still not recorded that it joined: it counts no more under b.
        assert role(promoted, "new") == "joining"
    finally:
        for follower in opened:
            follower.close()
        primary.close()
        if new_primary is not None:
            new_primary.close()
            new_primary.store.close()
        store.close()


def test_a_quorum_lowered_across_a_restart_counts_once_every_member_knows_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Members that recorded quorum 2 promote by it: `n - 2 + 1` of them. A write that
    quorum 1 acknowledged on one member only could be missed by such a promotion."""
    caplog.set_level(logging.WARNING, logger="replikv")
    listen = {name: free_address() for name in ("eu-1", "us-1")}
    path = tmp_path / "primary"

    def member(name: str, primary: replikv.Primary) -> replikv.Replica:
        return replikv.Replica(
            tmp_path / name, primary=primary.address, token=TOKEN, listen=listen[name]
        )

    with (
        replikv.Store(path) as store,
        replikv.Primary(store, token=TOKEN, quorum=2, heartbeat_interval=0.02) as primary,
        member("eu-1", primary) as eu1,
        member("us-1", primary),
    ):
        eventually("both members to count", lambda: primary.sync_state == "ok")
        store.put("consent", "before", True, durability="sync")
        eventually("eu-1 to record quorum 2", lambda: eu1.status().primary_quorum == 2)
    with (
        replikv.Store(path) as store,
        replikv.Primary(store, token=TOKEN, quorum=1, sync_timeout=1.0) as primary,
    ):
        eventually(
            "the warning",  # logged from the core's thread, as it happens
            lambda: "the quorum is lower than this primary last served with" in caplog.text,
        )
        with member("eu-1", primary) as eu1:
            eventually("eu-1 to reconnect", lambda: role(primary, "eu-1") is not None)
            eventually("eu-1 to record quorum 1", lambda: eu1.status().primary_quorum == 1)
            assert role(primary, "eu-1") == "joining", "us-1 still promotes by quorum 2"
            with pytest.raises(replikv.ReplicationTimeout):
                store.put("consent", "after", True, durability="sync")
            with member("us-1", primary):
                eventually("both to count", lambda: primary.sync_state == "ok")
                assert store.put("consent", "after", True, durability="sync").acked_by


def test_a_replica_that_followed_without_fsync_does_not_count_itself_once_it_fsyncs(
    tmp_path: Path,
) -> None:
    """ap-1 followed with fsync=False, so no sync write waited for it; restarted with
    fsync=True after the primary and the one member holding the last write are gone, it
    counted itself toward the two members a promotion must reach, and adopted a log
    without that write."""
    listen = {name: free_address() for name in ("eu-1", "us-1", "ap-1")}

    def replica(name: str, primary: str, fsync: bool = True) -> replikv.Replica:
        return replikv.Replica(
            tmp_path / name, primary=primary, token=TOKEN, listen=listen[name], fsync=fsync
        )

    with (
        replikv.Store(tmp_path / "primary") as store,
        replikv.Primary(
            store, token=TOKEN, quorum=1, heartbeat_interval=0.02, sync_timeout=1.0
        ) as primary,
    ):
        eu1, us1 = replica("eu-1", primary.address), replica("us-1", primary.address)
        ap1 = replica("ap-1", primary.address, fsync=False)
        eventually("both members to count", lambda: primary.sync_state == "ok")
        eventually("ap-1 to record the members", lambda: ap1.status().primary_members == 2)
        us1.close()
        ap1.close()
        assert store.put("consent", "last", True, durability="sync").acked_by == ["eu-1"]
        eu1.close()
    dead = free_address()
    us1, ap1 = replica("us-1", dead), replica("ap-1", dead, fsync=True)
    try:
        with pytest.raises(replikv.ReplicationError, match="only 1 of the 2 members"):
            ap1.promote()
    finally:
        ap1.close()
        us1.close()
