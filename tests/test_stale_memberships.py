"""A promotion meets every membership its members recorded, not only its candidate's (DESIGN
§1, promise 3), with real replicas on 127.0.0.1: a candidate that was away while the
membership changed (a member left and another joined, or a promotion lowered the quorum)
counts by a rule that no longer covers the writes acknowledged since."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import replikv
from polling import eventually
from test_joining_members import TOKEN, free_address, role

STALE = "recorded a membership this replica never heard of"


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


def test_a_member_dropped_before_another_joined_cannot_promote_past_the_newcomers_write(
    tmp_path: Path,
) -> None:
    member = members(tmp_path, "ABCD")
    with (
        replikv.Store(tmp_path / "primary") as store,
        replikv.Primary(
            store, token=TOKEN, quorum=1, heartbeat_interval=0.02, sync_timeout=1.0
        ) as primary,
    ):
        a, b, c = (member(n, primary.address) for n in "ABC")
        eventually("A, B and C to count", lambda: {role(primary, n) for n in "ABC"} == {"quorum"})
        wait_heard([a, b, c], 3)
        c.close()
        assert primary.drop_slot("C")
        d = member("D", primary.address)
        eventually("D to count", lambda: role(primary, "D") == "quorum")
        a.close()
        b.close()
        assert store.put("consent", "w", True, durability="sync").acked_by == ["D"]
        d.close()
    # C still counts A, B and C with quorum 1; A and B recorded A, B and D since.
    dead = free_address()
    a, b, c = (member(n, dead) for n in "ABC")
    try:
        with pytest.raises(replikv.ReplicationError, match=STALE):
            c.promote()
    finally:
        for replica in (a, b, c):
            replica.close()


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
    dead = free_address()
    c, d, e = member("C", dead), member("D", dead), member("E", dead)
    try:
        with pytest.raises(replikv.ReplicationError):
            d.promote()  # C has seen the promotion's epoch: outbid
        with pytest.raises(replikv.ReplicationError, match=STALE):
            d.promote()
    finally:
        for replica in (c, d, e):
            replica.close()
