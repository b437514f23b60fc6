"""A promotion meets every membership its members recorded, not only its candidate's (DESIGN
§1, promise 3), with real replicas on 127.0.0.1: a candidate that was away while the
membership changed (a member left and another joined, or a promotion lowered the quorum)
counts by a rule that no longer covers the writes acknowledged since."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import replikv
from polling import eventually
from test_joining_members import TOKEN, free_address, role

STALE = "recorded a membership this replica never heard of"
REPLACED = "recorded another store directory under this replica's name"


def members(tmp_path: Path, names: str) -> Callable[[str, str], replikv.Replica]:
    """Opens member `name` (fsync, listening at its own fixed address) of a primary."""
    listen = {name: free_address() for name in names}

    def member(name: str, primary: str) -> replikv.Replica:
        return replikv.Replica(
            tmp_path / name, primary=primary, token=TOKEN, listen=listen[name], name=name
        )

    return member


def wait_heard(replicas: list[replikv.Replica], count: int) -> None:
    for replica in replicas:
        eventually(
            f"{replica.name} to record {count} members",
            lambda r=replica: (  # type: ignore[misc]
                r.status().primary_members == count and len(r.status().primary_peers) == count
            ),
        )


def refused_as_stale(
    member: Callable[[str, str], replikv.Replica],
    names: str,
    candidate: str,
    outbid_first: bool = False,
    reason: str = STALE,
) -> None:
    """Opens members `names` once their primary is gone: `candidate`'s promotion is refused
    for a membership it never heard of (after one refusal as outbid, if told: a member has
    seen the epoch of the promotion it missed)."""
    dead = free_address()
    opened = {name: member(name, dead) for name in names}
    try:
        if outbid_first:
            with pytest.raises(replikv.ReplicationError, match="got there first"):
                opened[candidate].promote()
        with pytest.raises(replikv.ReplicationError, match=reason):
            opened[candidate].promote()
    finally:
        for replica in opened.values():
            replica.close()


@contextmanager
def three_counting(
    tmp_path: Path, member: Callable[[str, str], replikv.Replica]
) -> Iterator[tuple[replikv.Store, replikv.Primary, tuple[replikv.Replica, ...]]]:
    """A primary (quorum 1) whose members A, B and C count and recorded one another."""
    with (
        replikv.Store(tmp_path / "primary") as store,
        replikv.Primary(
            store, token=TOKEN, quorum=1, heartbeat_interval=0.02, sync_timeout=1.0
        ) as primary,
    ):
        replicas = tuple(member(n, primary.address) for n in "ABC")
        eventually("A, B and C to count", lambda: {role(primary, n) for n in "ABC"} == {"quorum"})
        wait_heard(list(replicas), 3)
        yield store, primary, replicas


def test_a_member_dropped_before_another_joined_cannot_promote_past_the_newcomers_write(
    tmp_path: Path,
) -> None:
    member = members(tmp_path, "ABCD")
    with three_counting(tmp_path, member) as (store, primary, (a, b, c)):
        c.close()
        assert primary.drop_slot("C")
        d = member("D", primary.address)
        eventually("D to count", lambda: role(primary, "D") == "quorum")
        a.close()
        b.close()
        assert store.put("consent", "w", True, durability="sync").acked_by == ["D"]
        d.close()
    # C still counts A, B and C with quorum 1; A and B recorded A, B and D since.
    refused_as_stale(member, "ABC", "C")


def test_an_old_directory_started_under_the_name_a_new_one_took_cannot_promote_past_it(
    tmp_path: Path,
) -> None:
    """C's directory was replaced by a new one under the name C (a new disk, a new
    address), which counted once A and B recorded it. The old directory, started again,
    still counts A, B and itself, and reached all three; A and B name the new directory
    under C, so the old one does not count for them."""
    member = members(tmp_path, "ABC")
    with three_counting(tmp_path, member) as (store, primary, (a, b, c)):
        c.close()
        new_disk = replikv.Replica(
            tmp_path / "C-new-disk",
            primary=primary.address,
            token=TOKEN,
            listen=free_address(),
            name="C",
        )
        with new_disk:
            eventually("the new C to count", lambda: new_disk.status().state == "streaming")
            eventually("A and B to know it", lambda: role(primary, "C") == "quorum")
            a.close()
            b.close()
            assert store.put("consent", "w", True, durability="sync").acked_by == ["C"]
    refused_as_stale(member, "ABC", "C", reason=REPLACED)


def test_a_member_away_when_a_promotion_lowered_the_quorum_cannot_promote_past_it(
    tmp_path: Path,
) -> None:
    member = members(tmp_path, "ABCDE")
    with (
        replikv.Store(tmp_path / "primary") as store,
        replikv.Primary(store, token=TOKEN, quorum=3, heartbeat_interval=0.02) as primary,
    ):
        replicas = {n: member(n, primary.address) for n in "ABCDE"}
        eventually("all five to count", lambda: primary.sync_state == "ok")
        wait_heard(list(replicas.values()), 5)
        replicas.pop("D").close()
        replicas.pop("E").close()
    # A promotes with B and C (3 of 5) and serves with quorum 1; C records it, then goes.
    new = replicas["A"].promote(quorum=1, sync_timeout=1.0)
    try:
        eventually("B and C to count", lambda: {role(new, n) for n in "BC"} == {"quorum"})
        eventually("C to record quorum 1", lambda: replicas["C"].status().primary_quorum == 1)
        replicas.pop("C").close()
        assert new.store.put("consent", "w", True, durability="sync").acked_by == ["B"]
    finally:
        new.close()
        new.store.close()
        for replica in replicas.values():
            replica.close()
    # D still counts five members with quorum 3; C, which it reaches, recorded B and C.
    refused_as_stale(member, "CDE", "D", outbid_first=True)


def test_a_raised_quorum_is_announced_once_it_holds_what_the_lower_one_acknowledged(
    tmp_path: Path,
) -> None:
    """Quorum 1 of three members asks a promotion to reach all three; quorum 2 only two.
    A write the lower quorum acknowledged on one member is missed by a promotion of two
    others by the higher one: members are told the higher quorum only once two of them
    hold everything written before it was raised."""
    member = members(tmp_path, "ABC")
    path = tmp_path / "primary"
    with (
        replikv.Store(path) as store,
        replikv.Primary(store, token=TOKEN, quorum=1, heartbeat_interval=0.02) as primary,
    ):
        replicas = [member(n, primary.address) for n in "ABC"]
        eventually("all three to count", lambda: {role(primary, n) for n in "ABC"} == {"quorum"})
        wait_heard(replicas, 3)
        replicas[1].close()
        replicas[2].close()
        assert store.put("consent", "w", True, durability="sync").acked_by == ["A"]
        replicas[0].close()
    with (
        replikv.Store(path) as store,
        replikv.Primary(store, token=TOKEN, quorum=2, heartbeat_interval=0.02) as primary,
    ):
        last = store.last_lsn
        with member("B", primary.address) as b:
            assert b.wait_for(last, timeout=30)
            eventually("B to hear a heartbeat", lambda: b.status().primary_members == 3)
            assert b.status().primary_quorum == 1, "only B holds the write besides A"
            with member("C", primary.address):
                eventually("B to hear quorum 2", lambda: b.status().primary_quorum == 2)
