"""replikv drop-slot: a running primary forgets a replica that is gone for good, so that the
log is no longer kept for it and replicas that joined while it was away count."""

from __future__ import annotations

from pathlib import Path

import replikv
from polling import eventually
from test_cli_replication import ENV
from test_cli_switchover import command

TOKEN = ENV["REPLIKV_TOKEN"]


def sync_states(primary: replikv.Primary) -> dict[str, str]:
    return {info.name: info.sync_state for info in primary.status().replicas}


def test_dropping_an_away_members_slot_lets_a_joining_replica_count(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary")
    with replikv.Primary(store, token=TOKEN, quorum=1, ship_interval=0.01) as primary:
        with replikv.Replica(tmp_path / "gone", primary=primary.address, name="gone", token=TOKEN):
            eventually("gone to count", lambda: sync_states(primary) == {"gone": "quorum"})
        # A newcomer joins while "gone" is away: it cannot count until "gone" knows of it.
        with replikv.Replica(tmp_path / "new", primary=primary.address, name="new", token=TOKEN):
            eventually("new to register", lambda: "new" in sync_states(primary))
            assert sync_states(primary)["new"] == "joining"

            dropped = command("drop-slot", primary.address, "gone")

            assert dropped.returncode == 0, dropped.stderr
            assert "dropped the slot of gone; the primary's replicas now: new" in dropped.stdout
            assert [slot.name for slot in primary.slots()] == ["new"]
            eventually("new to count", lambda: sync_states(primary) == {"new": "quorum"})
            receipt = store.put("consent", "a@example.com", True, durability="sync")
            assert receipt.acked_by == ["new"]
    store.close()


def test_drop_slot_refuses_a_connected_replica_an_unknown_name_and_a_wrong_token(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "primary")
    with (
        replikv.Primary(store, token=TOKEN, ship_interval=0.01) as primary,
        replikv.Replica(tmp_path / "eu", primary=primary.address, name="eu-1", token=TOKEN),
    ):
        eventually("eu-1 to register", lambda: [s.name for s in primary.slots()] == ["eu-1"])

        connected = command("drop-slot", primary.address, "eu-1")
        assert connected.returncode == 1
        assert "eu-1 is connected: stop it first" in connected.stderr, connected.stderr

        typo = command("drop-slot", primary.address, "eu-2")
        assert typo.returncode == 1
        assert 'no slot is named "eu-2": the slots are eu-1' in typo.stderr, typo.stderr

        stranger = command("drop-slot", primary.address, "eu-1", "--token", "wrong")
        assert stranger.returncode == 1
        assert "token" in stranger.stderr, stranger.stderr

        assert [slot.name for slot in primary.slots()] == ["eu-1"], "nothing was dropped"
        assert primary.status().rejected >= 3, "each refusal is counted"
    store.close()
