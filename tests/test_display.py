"""Rich display and one status shape: every report is a typed object with a one-line repr,
a ``to_dict()`` that JSON holds as it is, and a ``_repr_html_()`` table that Jupyter shows,
in which every user-provided string is escaped. Real stores and sockets on 127.0.0.1."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import replikv
from polling import eventually
from replikv._plain import jsonable

TOKEN = "t0ken"
# A directory name that would run script if it reached the page unescaped.
HOSTILE = "x<img src=x onerror=alert(1)>&\"'"
# The only tags the tables use: anything else came from a value.
TAGS = {"div", "strong", "table", "thead", "tbody", "tr", "th", "td", "p", "pre"}


class _Page(HTMLParser):
    """Collects a page's tags and text, and checks that each tag closes in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.open: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def shown(obj: Any) -> str:
    """The text of ``obj``'s HTML table, once it parsed with only the tables' own tags."""
    markup = obj._repr_html_()
    page = _Page()
    page.feed(markup)
    page.close()
    assert page.open == [], f"unclosed tags {page.open}"
    assert set(page.tags) <= TAGS, f"unexpected tags {set(page.tags) - TAGS}"
    return " ".join(page.text)


def plain(obj: Any) -> dict[str, Any]:
    """``obj.to_dict()``, checked to survive a strict JSON round trip unchanged."""
    as_dict: dict[str, Any] = obj.to_dict()
    assert json.loads(json.dumps(as_dict, allow_nan=False)) == as_dict
    return as_dict


def one_line(obj: Any) -> str:
    text = repr(obj)
    assert "\n" not in text and len(text) < 300, text
    return text


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[replikv.Primary]:
    store = replikv.Store(tmp_path / "primary")
    with replikv.Primary(store, token=TOKEN, ship_interval=0.01) as p:
        yield p
    store.close()


def test_a_stores_table_shows_its_tables_rows_lsn_and_disk_use_and_escapes_its_path(
    tmp_path: Path,
) -> None:
    with replikv.Store(tmp_path / HOSTILE) as store:
        store.put_many("subscribers", [(f"s{i}@example.com", {"n": i}) for i in range(1234)])
        store.put("events", 1, {"type": "open"})
        text = shown(store)
        assert HOSTILE in text, "the path is shown as text"
        assert "subscribers" in text and "1,234" in text and "events" in text
        assert f"{store.last_lsn:,}" in text and "disk use" in text and "KiB" in text
        stats = store.stats()
        assert HOSTILE in shown(stats)
        assert plain(stats)["tables"] == {"subscribers": 1234, "events": 1}
        assert isinstance(plain(stats)["oldest_time"], str)
        one_line(store)
        one_line(stats)
        subscribers = store.table("subscribers")
        assert repr(subscribers).endswith(": 1234 rows>")
    assert "closed" in shown(store), "a closed store says so instead of raising"
    assert repr(subscribers) == f"<Table 'subscribers' of {store!r}>", "nor does its table"


def test_a_primary_and_its_replica_show_lag_and_sync_state_as_typed_status(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    store = primary.store
    store.put("subscribers", "ana@example.com", {"opted_in": True})
    with replikv.Replica(tmp_path / "eu-1", primary=primary.address, token=TOKEN) as replica:
        assert replica.wait_for(store.last_lsn, timeout=30)
        eventually("its ack", lambda: primary.status().replicas[0].acked_lsn == store.last_lsn)

        status = primary.status()
        assert isinstance(status, replikv.PrimaryStatus)
        assert (status.last_lsn, status.epoch, status.address) == (1, 1, primary.address)
        assert len(status) == 1 and [info.name for info in status] == ["eu-1"]
        info = status.replicas[0]
        assert isinstance(info, replikv.ReplicaInfo) and info.sync_state == "quorum"
        assert info.kind == "replica"
        described = plain(status)
        assert described["sync_state"] == primary.sync_state
        assert described["replicas"][0]["name"] == "eu-1"
        assert info.last_seen is not None
        assert described["replicas"][0]["last_seen"] == info.last_seen.isoformat()
        assert plain(info) == described["replicas"][0]
        for replicas in (status, info):
            text = shown(replicas)
            assert "eu-1" in text and "quorum" in text and "lag (entries)" in text
            one_line(replicas)
        text = shown(primary)
        assert primary.address in text and "eu-1" in text and "quorum" in text

        [slot] = primary.slots()
        assert isinstance(slot, replikv.Slot) and (slot.name, slot.fsync) == ("eu-1", True)
        assert plain(slot)["created"] == slot.created.isoformat()
        assert "eu-1" in shown(slot) and "Slot(name='eu-1'" in one_line(slot)

        mine = replica.status()
        assert isinstance(mine, replikv.ReplicaStatus)
        assert (mine.name, mine.primary, mine.applied_lsn) == ("eu-1", primary.address, 1)
        assert plain(mine)["applied_lsn"] == 1 and plain(mine)["primary_peers"] == []
        assert "ReplicaStatus(name='eu-1'" in one_line(mine)
        for follower in (mine, replica):
            text = shown(follower)
            assert primary.address in text and "applied LSN" in text
        fetched = replikv._core.fetch_status(primary.address, token=TOKEN)
        assert isinstance(fetched, replikv.PrimaryStatus) and fetched.replicas[0].name == "eu-1"

        report = primary.verify()
        text = shown(report)
        assert "eu-1" in text and "subscribers" in text and "ok" in text
        assert "equal" in shown(report.replicas[0])
        one_line(report)
        one_line(report.replicas[0])
    eventually("the primary to show it gone", lambda: "disconnected" in shown(primary))
    assert "closed" in shown(replica), "a closed replica says so"


def test_reprs_and_messages_quote_strings_as_python_does(tmp_path: Path) -> None:
    path = tmp_path / "it's \\ here"
    with replikv.Store(path) as store:
        assert one_line(store).startswith(f"<Store {str(path)!r} last_lsn=0 ")
        assert f"path={str(path)!r}" in one_line(store.stats())
        with store.transaction() as tx:
            assert one_line(tx).startswith(f"<Transaction on {str(path)!r}: open")
        assert "tables=['consent', 'events']" in one_line(
            store.changes(tables=["events", "consent"])
        )
        with pytest.raises(ValueError, match="must be 'async' or 'sync', not 'eventually'"):
            store.put("t", "k", 1, durability="eventually")
        with replikv.Primary(store, token=TOKEN) as primary:
            text = one_line(primary.status())
            assert f"address={primary.address!r}" in text
            assert f"sync_state={primary.sync_state!r}" in text


def test_a_closed_primary_says_so_and_its_store_stays_open(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db") as store:
        primary = replikv.Primary(store, token=TOKEN)
        address = primary.address
        assert not primary.closed and "closed" not in one_line(primary)
        primary.close()
        assert primary.closed
        assert one_line(primary) == f"<Primary {address} closed>"
        assert "closed" in shown(primary)
        assert not store.closed


def test_a_replica_known_only_from_its_slot_shows_no_last_seen_time(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db") as store:
        with (
            replikv.Primary(store, token=TOKEN) as first,
            replikv.Replica(tmp_path / "r", primary=first.address, token=TOKEN) as replica,
        ):
            store.put("t", "k", 1)
            assert replica.wait_for(store.last_lsn, timeout=30)
        # Restarted, the primary knows the replica from its slot, and has not heard from it.
        with replikv.Primary(store, token=TOKEN) as again:
            (info,) = again.status().replicas
            assert (info.name, info.state, info.last_seen) == ("r", "disconnected", None)
            assert plain(info)["last_seen"] is None


def test_a_scan_shows_its_table_arguments_and_progress(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db") as store:
        store.put_many("users", [("ab1", 1), ("ab2", 2), ("b", 3)])
        assert one_line(store.scan("users")) == "<Scan of 'users': 0 rows so far>"
        scan = store.scan("users", prefix="ab", reverse=True, limit=5)
        assert one_line(scan) == "<Scan of 'users' prefix='ab' reverse=True limit=5: 0 rows so far>"
        next(scan)
        assert one_line(scan).endswith(": 1 row so far>")
        assert list(scan) == [("ab1", 1)]
        assert one_line(scan).endswith(": done, 2 rows>")
        bounded = store.scan("users", start=1, end="a")  # ints sort before str
        assert one_line(bounded) == "<Scan of 'users' start=1 end='a': 0 rows so far>"
        assert "start=b'\\x00'" in one_line(store.scan("users", start=b"\x00"))
        assert list(bounded) == [] and one_line(bounded).endswith(": done, no rows>")


def test_a_replica_that_cannot_connect_still_shows_its_status(tmp_path: Path) -> None:
    with replikv.Replica(tmp_path / "r", primary="127.0.0.1:9", token=TOKEN) as replica:
        status = replica.status()
        assert plain(status)["state"] == status.state != "streaming"
        assert "127.0.0.1:9" in shown(status) and "127.0.0.1:9" in shown(replica)


def test_to_dict_values_follow_one_json_rule() -> None:
    when = datetime.datetime(2026, 12, 2, 11, 0, tzinfo=datetime.timezone.utc)
    fields = {"lag": math.nan, "at": when, "key": b"\x00\xff", "pair": (1, "a"), "n": None}
    assert jsonable(fields) == {
        "lag": None,
        "at": "2026-12-02T11:00:00+00:00",
        "key": {"$base64": "AP8="},
        "pair": [1, "a"],
        "n": None,
    }


def test_a_promotion_shows_its_epoch_and_the_members_it_reached(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    primary.store.put("subscribers", "ana@example.com", {"opted_in": True})
    with replikv.Replica(tmp_path / "eu-1", primary=primary.address, token=TOKEN) as replica:
        assert replica.wait_for(primary.store.last_lsn, timeout=30)
    promotion = replikv.promote_stopped(tmp_path / "eu-1", force=True)
    assert promotion.reached == ["eu-1"], "named as the replica was, not by its path"
    text = shown(promotion)
    assert "eu-1" in text and "epoch" in text and f"{promotion.start_lsn:,}" in text
    one_line(promotion)


def test_a_divergence_report_escapes_the_keys_it_lists(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    path = tmp_path / "replica"
    with replikv.Store(path) as other:
        other.put("subscribers", HOSTILE, {"opted_in": False})
        other.put("events", b"<script>", 1)
    with replikv.Replica(
        path, primary=primary.address, token=TOKEN, name="eu-1", on_diverge="resync"
    ) as replica:
        eventually("the resync", lambda: replica.status().resyncs > 0)
        status = replica.status()
        assert status.last_resync is not None
        assert plain(status)["last_resync"]["tables"]["events"] == [{"$base64": "PHNjcmlwdD4="}]
        report = replikv.read_diverged(status.last_resync["report"])
    text = shown(report)
    assert repr(HOSTILE) in text and "b'<script>'" in text and "2" in text
    one_line(report)


def test_cache_stats_are_typed_and_shown_for_the_cache_and_a_node(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db") as store:
        store.put("subscribers", "ana@example.com", {"opted_in": True})
        with replikv.Cache(capacity=10, source=store) as cache:
            cache.get("subscribers", "ana@example.com")
            cache.get("subscribers", "ana@example.com")
            stats = cache.stats()
            assert isinstance(stats, replikv.CacheStats)
            assert (stats.hits, stats.misses, stats.keys, stats.nodes) == (1, 1, 1, {})
            assert plain(stats)["hit_ratio"] == 0.5
            assert "50.0%" in shown(stats) and "50.0%" in shown(cache)
            one_line(stats)
        with replikv.CacheNode(capacity=10) as node:
            with replikv.Cache([node.address], source=store) as over_nodes:
                over_nodes.get("subscribers", "ana@example.com")
                stats = over_nodes.stats()
                assert list(stats.nodes) == [node.address] and stats.keys == 1
                assert plain(stats)["nodes"][node.address]["state"] == "up"
                assert node.address in shown(stats)
            node_stats = node.stats()
            assert isinstance(node_stats, replikv.CacheNodeStats)
            assert (node_stats.address, node_stats.keys) == (node.address, 1)
            assert plain(node_stats)["follow_state"] == "none"
            assert node.address in shown(node) and node.address in shown(node_stats)
            one_line(node_stats)
        assert "closed" in shown(node), "a closed node says so instead of raising"


def test_a_scrub_report_shows_as_a_table_in_jupyter(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "s") as store:
        store.put_many("subscribers", [(f"u{i}", {"n": i}) for i in range(3)])
        page = store.scrub()._repr_html_()
    assert "<strong>ScrubReport</strong>" in page
    assert "<td>ok</td>" in page
    assert "<td>subscribers</td><td>3</td>" in page
