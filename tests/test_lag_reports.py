"""What the lag figures say when a link is down or silent: a replica cut off from its
primary, or whose primary went silent (frozen) before the link times out, never looks
current, and a primary restarted while a replica is away shows where that replica stands
from its slot, not 0."""

from __future__ import annotations

import time
from pathlib import Path

import replikv
from polling import eventually

TOKEN = "t0ken"


def test_a_replica_cut_off_from_its_primary_reports_a_lag_that_grows(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary")
    primary = replikv.Primary(store, token=TOKEN, ship_interval=0.01, heartbeat_interval=0.1)
    with replikv.Replica(tmp_path / "r", primary=primary.address, token=TOKEN) as replica:
        assert replica.wait_for(store.put("consent", "a@example.com", True).lsn, timeout=30)
        eventually("a heartbeat", lambda: replica.status().lag_seconds == 0.0)
        assert replica.status().lag_lsn == 0
        primary.close()
        store.close()
        eventually("the link to drop", lambda: replica.status().state != "streaming")
        time.sleep(1.0)
        first = replica.status()
        # It knows of no entry it lacks, but it cannot know what was written since.
        assert first.lag_lsn == 0
        assert first.lag_seconds >= 1.0, first
        time.sleep(0.5)
        later = replica.status().lag_seconds
        assert later >= first.lag_seconds + 0.4, (first, later)
        assert replica.status().to_dict()["lag_seconds"] >= later


def test_a_replica_whose_primary_went_silent_reports_a_lag_before_the_link_times_out(
    tmp_path: Path,
) -> None:
    """A frozen primary keeps its sockets open: the link stays up until the replica's idle
    timeout (5 s). Its heartbeats (every 0.1 s here) stop, and from two intervals late on
    the replica cannot vouch for being current."""
    from proxy import Proxy

    store = replikv.Store(tmp_path / "primary")
    primary = replikv.Primary(store, token=TOKEN, ship_interval=0.01, heartbeat_interval=0.1)
    with (
        primary,
        Proxy(primary.address) as proxy,
        replikv.Replica(tmp_path / "r", primary=proxy.address, token=TOKEN) as replica,
    ):
        assert replica.wait_for(store.put("consent", "a@example.com", True).lsn, timeout=30)
        eventually("a heartbeat", lambda: replica.status().lag_seconds == 0.0)
        proxy.stalled = True
        time.sleep(1.5)
        silent = replica.status()
        assert silent.state == "streaming", silent  # the link has not timed out yet
        assert silent.lag_lsn == 0
        assert silent.lag_seconds >= 1.0, silent
        time.sleep(0.3)
        assert replica.status().lag_seconds >= silent.lag_seconds + 0.25
        proxy.stalled = False
        eventually("the lag to return to zero", lambda: replica.status().lag_seconds == 0.0)
    store.close()


def test_a_replica_that_never_heard_its_primary_reports_the_time_since_it_started(
    tmp_path: Path,
) -> None:
    """Restarted while its primary is down, a replica has not heard it since it started:
    an alert on `lag_seconds > N` fires, where NaN never would."""
    with replikv.Replica(tmp_path / "r", primary="127.0.0.1:9", token=TOKEN) as replica:
        time.sleep(0.5)
        status = replica.status()
        assert status.state in ("connecting", "disconnected"), status
        assert status.lag_seconds >= 0.5, status
        time.sleep(0.3)
        assert replica.status().to_dict()["lag_seconds"] >= status.lag_seconds + 0.25


def test_a_restarted_primary_shows_an_away_replica_where_its_slot_stands(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary")
    first = replikv.Primary(store, token=TOKEN, ship_interval=0.01)
    with first, replikv.Replica(tmp_path / "r", primary=first.address, token=TOKEN):
        store.put_many("events", [(i, {"type": "open"}) for i in range(10)])
        held = store.put("events", "last", {"type": "click"}).lsn
        assert first.wait_for(held, replicas=1, timeout=30) == 1
    # The replica is away; entries come while no primary serves, then one starts again.
    store.put("events", "unseen", {"type": "open"})
    with replikv.Primary(store, token=TOKEN, ship_interval=0.01) as primary:
        store.put("events", "unseen-too", {"type": "open"})
        time.sleep(0.05)  # its lag counts from this primary's start at the latest
        (away,) = primary.status().replicas
        assert away.state == "disconnected"
        assert away.acked_lsn == held, away
        assert away.lag_lsn == store.last_lsn - held == 2, away
        assert away.lag_seconds > 0.0, away
    store.close()
