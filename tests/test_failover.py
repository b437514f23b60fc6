"""Failover with real processes on 127.0.0.1 (DESIGN guarantees 3, 4 and 6): a primary child
process is SIGKILLed at a random point while sync consent writes and async events flow; its
replica is promoted; every sync write whose call returned is on the promoted store, and the
old primary's directory, when it then tries to follow, reports exactly the entries its log
holds beyond the promoted store's position."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import replikv
from polling import eventually
from proxy import Proxy
from replikv._demo_failover import follow_until_killed

TOKEN = "t0ken"
ROUNDS = 20


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_promoted_replica_holds_every_acknowledged_sync_write_and_the_loss_is_exact(
    tmp_path: Path, round_: int
) -> None:
    rng = random.Random(round_)
    old = tmp_path / "old"
    # The demo's primary child: sync consent writes (quorum 1 of two replicas, so either
    # may hold the last acknowledged one), a steady stream of async opens; every other
    # round it ships each sync write's entry while its own fsync runs (the replicas then
    # may hold entries it never confirmed to them when it dies).
    acked, replicas = follow_until_killed(
        old, [tmp_path / "eu-1", tmp_path / "us-1"], rng.uniform(0.3, 1.2), round_ % 2 == 1
    )
    assert acked, "the primary acknowledged sync writes before it was killed"
    for replica in replicas:
        status = replica.status()
        assert (status.primary_quorum, status.primary_members) == (1, 2)
    replica, other = replicas if rng.random() < 0.5 else replicas[::-1]

    new = replica.promote()
    promotion = new.promotion
    assert promotion is not None and not promotion.forced
    assert replica.status().state == "promoted"
    assert (promotion.epoch, sorted(promotion.reached)) == (2, ["eu-1", "us-1"])
    store = new.store
    missing = [k for k in acked if store.get("consent", k) is None]
    assert missing == [], f"acknowledged sync writes lost: {missing}"
    position = store.last_lsn
    assert position == promotion.start_lsn - 1
    replica.close()
    assert not store.closed, "the promoted store belongs to the new primary"
    # The other member granted the epoch and follows the promoted replica, which serves
    # with the old primary's settings: consent writes stay sync, acknowledged by it.
    assert new.settings["table_modes"] == {"consent": "sync"}
    receipt = store.put("consent", "after-failover", {"opted_in": True})
    assert (receipt.durability, receipt.acked_by) == ("sync", [other.name])
    assert other.wait_for(store.last_lsn, timeout=30)
    other.close()

    # What the old primary's log holds beyond the promoted store's position.
    with replikv.Store(old) as dead:
        beyond = list(dead.changes(since=position))
        dead_last = dead.last_lsn
    expected: dict[str, list[object]] = {}
    for change in beyond:
        for op in change.ops:
            keys = expected.setdefault(op.table, [])
            if op.key not in keys:
                keys.append(op.key)
    # A sync write the old primary committed but whose call had not returned may be lost.
    lost_consent = set(map(str, expected.get("consent", [])))
    assert not lost_consent & set(acked), "an acknowledged sync write is beyond the position"

    with replikv.Replica(old, primary=new.address, name="old") as rejoining:
        if beyond:
            with pytest.raises(replikv.DivergedError) as raised:
                rejoining.wait_for(dead_last + 1, timeout=30)
            error = raised.value
            assert (error.fork_lsn, error.entries) == (position + 1, len(beyond))
            assert {t: sorted(map(str, k)) for t, k in error.tables.items()} == {
                t: sorted(map(str, k)) for t, k in expected.items()
            }
        else:
            # Nothing was lost: the old primary simply follows the new one.
            store.put("events", "after", {"type": "click"})
            assert rejoining.wait_for(store.last_lsn, timeout=30)
    new.close()
    store.close()


def test_the_other_replica_re_pointed_at_the_promoted_one_follows_it(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary")
    primary = replikv.Primary(store, token=TOKEN, quorum=2, heartbeat_interval=0.02)
    eu1, us1 = (
        replikv.Replica(tmp_path / n, primary=primary.address, token=TOKEN, listen="127.0.0.1:0")
        for n in ("eu-1", "us-1")
    )
    # ap-1 does not fsync: no member, so no promotion re-points it; it is re-pointed by hand.
    ap1 = replikv.Replica(tmp_path / "ap-1", primary=primary.address, token=TOKEN, fsync=False)
    eventually("both members", lambda: primary.sync_state == "ok")
    for i in range(10):
        store.put("consent", f"c{i}", True, durability="sync")
    # Quorum 2 of 2: a promotion must reach both members (a majority).
    eventually(
        "a heartbeat naming both members",
        lambda: len(eu1.status().primary_peers) == 2 and eu1.status().primary_members == 2,
    )
    assert ap1.wait_for(10, timeout=30)
    primary.close()
    store.close()
    new = eu1.promote(quorum=1)
    assert new.promotion is not None and new.promotion.needed == 2
    assert "Promotion(epoch=2, start_lsn=11, reached=['eu-1', 'us-1']" in repr(new.promotion)
    ap1.follow(new.address)
    eventually("both to register with the new primary", lambda: len(new.status()) == 2)
    receipt = new.store.put("consent", "after", True, durability="sync")
    assert receipt.acked_by == ["us-1"]
    assert ap1.wait_for(receipt.lsn, timeout=30)
    assert ap1.store.checksum() == new.store.checksum()
    assert ap1.store.epoch_history == [(1, 1), (2, 11)]
    with pytest.raises(replikv.ReplicationError, match="was promoted"):
        eu1.follow(new.address)
    ap1.close()
    us1.close()
    eu1.close()
    new.close()
    new.store.close()


@contextmanager
def replica_behind_a_link(
    tmp_path: Path, sync_timeout: float
) -> Iterator[tuple[replikv.Store, replikv.Primary, Proxy, replikv.Replica]]:
    """A primary taking sync writes (quorum 1) and its replica eu-1 over a proxy, the
    replica registered and told the membership (the caller closes them)."""
    store = replikv.Store(tmp_path / "old")
    old = replikv.Primary(
        store, token=TOKEN, quorum=1, sync_timeout=sync_timeout, heartbeat_interval=0.02
    )
    with Proxy(old.address) as link:
        eu1 = replikv.Replica(tmp_path / "eu-1", primary=link.address, token=TOKEN, name="eu-1")
        eventually("eu-1", lambda: old.sync_state == "ok")
        eventually("a heartbeat", lambda: eu1.status().primary_members == 1)
        yield store, old, link, eu1


def test_split_brain_the_cut_off_primary_never_acknowledges_and_is_fenced_when_the_link_returns(
    tmp_path: Path,
) -> None:
    with replica_behind_a_link(tmp_path, sync_timeout=0.5) as (store, old, link, eu1):
        acked = [store.put("consent", f"c{i}", True, durability="sync") for i in range(5)]
        link.cut()
        # Cut off, the old primary keeps running: no sync write of its succeeds.
        for i in range(3):
            with pytest.raises(replikv.ReplicationTimeout):
                store.put("consent", f"cut{i}", True, durability="sync")
        new = eu1.promote(token=TOKEN)
        with pytest.raises(replikv.ReplicationTimeout):
            store.put("consent", "still-cut", True, durability="sync")
        # The link returns: the promotion's announcement reaches the old primary.
        link.restore()
        eventually("the old primary to be deposed", lambda: store.epoch == 2)
        with pytest.raises(replikv.FencedError) as fenced:
            store.put("consent", "after", True)
        assert fenced.value.epoch == 2
    assert all(new.store.get("consent", f"c{i}") for i in range(5)), acked
    old.close()
    local_only = store.last_lsn - new.store.last_lsn
    store.close()
    # Its divergence is reported, not merged: the four timed-out sync writes.
    with (
        replikv.Replica(tmp_path / "old", primary=new.address, token=TOKEN, name="old") as back,
        pytest.raises(replikv.DivergedError) as diverged,
    ):
        back.wait_for(new.store.last_lsn + local_only + 1, timeout=30)
    assert diverged.value.entries == local_only == 4
    assert diverged.value.tables == {"consent": ["cut0", "cut1", "cut2", "still-cut"]}
    assert new.store.get("consent", "cut0") is None
    eu1.close()
    new.close()
    new.store.close()


def test_a_sync_writer_waiting_when_its_primary_is_deposed_is_told_the_lsn_it_committed(
    tmp_path: Path,
) -> None:
    with replica_behind_a_link(tmp_path, sync_timeout=60) as (store, old, link, eu1):
        store.put("consent", "c0", True, durability="sync")
        link.cut()
        errors: list[replikv.FencedError] = []

        def write() -> None:
            try:
                store.put("consent", "cut", True, durability="sync")
            except replikv.FencedError as err:
                errors.append(err)

        writer = threading.Thread(target=write)
        writer.start()
        eventually("the write committed here", lambda: store.last_lsn == 2)
        new = eu1.promote(token=TOKEN)
        link.restore()
        writer.join(timeout=30)
        assert not writer.is_alive(), "the deposition fails the waiting writer at once"
        [fenced] = errors
        # Committed here only: the loss account of the promotion names the same LSN.
        assert (fenced.epoch, fenced.lsn, fenced.acked_by) == (2, 2, [])
        assert "sync write at LSN 2" in str(fenced)
    old.close()
    store.close()
    eu1.close()
    new.close()
    new.store.close()


def test_replikv_promote_says_a_stopped_replica_reaches_no_other_member(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two members that listen, quorum 1: a promotion must reach both, and a stopped
    # replica asks none (the other one listened: it is not what is missing).
    store = replikv.Store(tmp_path / "primary")
    with replikv.Primary(store, token=TOKEN, heartbeat_interval=0.02) as primary:
        replicas = [
            replikv.Replica(
                tmp_path / name, primary=primary.address, token=TOKEN, listen="127.0.0.1:0"
            )
            for name in ("eu-1", "us-1")
        ]
        try:
            status = replicas[0].status
            eventually("both to be named", lambda: len(status().primary_peers) == 2)
            eventually("two members", lambda: status().primary_members == 2)
        finally:
            for replica in replicas:
                replica.close()
    store.close()
    from replikv import cli

    assert cli.main(["promote", str(tmp_path / "eu-1")]) == 1
    told = capsys.readouterr().err
    assert "must reach 2 members that fsync" in told, told
    assert "replikv promote reaches no member but this stopped replica" in told, told
    assert "do not listen" not in told and "replikv promote --force" in told
    with replikv.Store(tmp_path / "eu-1") as unchanged:
        assert unchanged.read_only and unchanged.epoch == 1


def stopped_replica_of_a_sync_consent_primary(tmp_path: Path) -> int:
    """A replica in ``tmp_path/eu-1``, stopped after its primary (consent written sync, gone
    too) acknowledged one consent write and told it its members; returns that write's LSN."""
    store = replikv.Store(tmp_path / "primary")
    with (
        replikv.Primary(
            store, token=TOKEN, heartbeat_interval=0.02, table_modes={"consent": "sync"}
        ) as primary,
        replikv.Replica(tmp_path / "eu-1", primary=primary.address, token=TOKEN) as eu1,
    ):
        eventually("eu-1", lambda: primary.sync_state == "ok")
        lsn = store.put("consent", "ana", True, durability="sync").lsn
        eventually("a heartbeat", lambda: eu1.status().primary_members == 1)
    store.close()
    return lsn


def test_replikv_promote_promotes_a_stopped_replica_by_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lsn = stopped_replica_of_a_sync_consent_primary(tmp_path)
    from replikv import cli

    assert cli.main(["promote", str(tmp_path / "missing")]) == 1
    assert cli.main(["promote", str(tmp_path / "eu-1")]) == 0
    # It says how to serve it as its old primary served (sync consent writes, quorum 1).
    said = capsys.readouterr().out
    assert f"replikv primary --data {tmp_path / 'eu-1'} --sync-tables consent\n" in said
    with replikv.Store(tmp_path / "eu-1") as promoted:
        assert promoted.epoch_history == [(1, 1), (2, lsn + 1)]
        assert promoted.put("consent", "bob", True).lsn == lsn + 1
    # Promoting it again: it is no replica's store any more.
    with pytest.raises(replikv.ReplicationError, match="is not a replica's directory"):
        replikv.promote_stopped(tmp_path / "eu-1")


def test_a_promotion_serves_with_the_old_primarys_settings_remembered_across_a_restart(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "primary")
    settings = {
        "ship_interval": 0.02,
        "max_batch_bytes": 1 << 20,
        "heartbeat_interval": 0.02,
        "retain_bytes": None,
        "retain_seconds": 3600.0,
        "quorum": 2,
        "sync_timeout": 7.0,
        "on_timeout": "degrade",
        "table_modes": {"consent": "sync", "templates": "async"},
        "default_durability": "async",
        "ship_ahead": True,
    }
    primary = replikv.Primary(store, token=TOKEN, **settings)  # type: ignore[arg-type]
    assert primary.settings == settings
    eu1, us1 = (
        replikv.Replica(tmp_path / n, primary=primary.address, token=TOKEN, listen="127.0.0.1:0")
        for n in ("eu-1", "us-1")
    )
    eventually("both members", lambda: primary.sync_state == "ok")
    store.put("consent", "ana", True)
    eventually("a heartbeat naming both members", lambda: len(eu1.status().primary_peers) == 2)
    primary.close()
    store.close()
    # Restarted after its primary died, eu-1 still knows how it served (from its directory).
    eu1.close()
    eu1 = replikv.Replica(tmp_path / "eu-1", primary="127.0.0.1:9", token=TOKEN)
    new = eu1.promote(quorum=1, sync_timeout=3)
    assert new.promotion is not None and new.promotion.settings == settings
    new.promotion.settings["quorum"] = 99  # a copy: the promotion's report stays as it was
    assert new.promotion.settings == settings
    assert new.settings == {**settings, "quorum": 1, "sync_timeout": 3.0}
    receipt = new.store.put("consent", "bob", False)
    assert (receipt.durability, receipt.acked_by) == ("sync", ["us-1"])
    assert new.store.put("templates", "welcome", "hi").durability == "async"
    # A second failover passes on what the first primary's successor served with, but for
    # what is given again: table_modes={} clears the table modes.
    eventually("a heartbeat of the new primary", lambda: us1.status().primary_quorum == 1)
    new.close()
    new.store.close()
    eu1.close()
    third = us1.promote(table_modes={})
    assert third.settings == {**settings, "quorum": 1, "sync_timeout": 3.0, "table_modes": {}}
    assert third.store.put("consent", "cy", True).durability == "async"
    third.close()
    us1.close()
    third.store.close()


def test_damaged_settings_of_the_old_primary_never_make_a_promotion_serve_weaker(
    tmp_path: Path,
) -> None:
    stopped_replica_of_a_sync_consent_primary(tmp_path)
    # One bit of a table's name flipped: the file still decodes, to other table modes.
    saved = tmp_path / "eu-1" / "primary_settings"
    data = bytearray(saved.read_bytes())
    data[data.index(b"consent") + 6] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(replikv.ReplicationError, match="primary_settings is damaged"):
        replikv.promote_stopped(tmp_path / "eu-1")
    eu1 = replikv.Replica(tmp_path / "eu-1", primary="127.0.0.1:9", token=TOKEN)
    try:
        for partial in ({}, {"quorum": 1, "table_modes": {"consent": "sync"}}):
            with pytest.raises(replikv.ReplicationError, match="pass quorum=, table_modes="):
                eu1.promote(**partial)  # type: ignore[arg-type]
        assert eu1.store.epoch == 1, "refused before anything changed"
        new = eu1.promote(quorum=1, table_modes={"consent": "sync"}, default_durability="async")
        assert new.settings["table_modes"] == {"consent": "sync"}
        assert new.store.epoch == 2
        new.close()
        new.store.close()
    finally:
        eu1.close()


def test_a_promotion_to_an_address_it_cannot_listen_on_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "primary")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    in_use = f"127.0.0.1:{taken.getsockname()[1]}"
    with (
        taken,
        replikv.Primary(store, quorum=1, table_modes={"consent": "sync"}) as primary,
        replikv.Replica(tmp_path / "eu-1", primary=primary.address, listen="127.0.0.1:0") as eu1,
    ):
        eventually("its member", lambda: primary.sync_state == "ok")
        first = store.put("consent", "c0", True)
        assert first.acked_by == ["eu-1"]
        # A heartbeat told it its members: the rule could be met, only the address fails.
        eventually("a heartbeat naming it", lambda: eu1.status().primary_members == 1)
        for address, refusal in [("nope", ValueError), (in_use, OSError)]:
            with pytest.raises(refusal, match=address):
                eu1.promote(listen=address)
            # Still its primary's replica, in its epoch: the next sync write counts it.
            assert eu1.store.epoch == store.epoch == 1
            receipt = store.put("consent", address, True)
            assert receipt.acked_by == ["eu-1"] and not receipt.degraded
            assert eu1.wait_for(receipt.lsn, timeout=30)
            assert eu1.status().state == "streaming"


def test_a_deposed_primary_says_sync_writes_are_unavailable(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary")
    with (
        replikv.Primary(store, quorum=1, table_modes={"consent": "sync"}) as primary,
        replikv.Replica(tmp_path / "eu-1", primary=primary.address, listen="127.0.0.1:0") as eu1,
    ):
        eventually("its member", lambda: primary.sync_state == "ok")
        store.put("consent", "c0", True)
        eventually("a heartbeat naming it", lambda: eu1.status().primary_members == 1)
        new = eu1.promote()
        try:
            # Told by the promotion: it is deposed, and says so rather than "degraded".
            eventually("deposed", lambda: primary.status().sync_state == "unavailable")
            assert primary.sync_state == "unavailable"
            # The promoted replica's status names the primary it became, not the old one.
            promoted = eu1.status()
            assert promoted.state == "promoted"
            assert (promoted.primary, promoted.epoch) == (new.address, new.status().epoch)
            with pytest.raises(replikv.FencedError):
                store.put("consent", "c1", True)
        finally:
            new.close()
    store.close()
    # Served again after a restart, it is still deposed, and still says so.
    with (
        replikv.Store(tmp_path / "primary") as reopened,
        replikv.Primary(reopened, quorum=1) as again,
    ):
        assert again.sync_state == again.status().sync_state == "unavailable"
        with pytest.raises(replikv.FencedError):
            reopened.put("consent", "c2", True, durability="async")
