"""Asynchronous replication over TCP on 127.0.0.1 with real sockets and processes."""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import replikv
from children import replica_child
from log_cuts import cut_behind_the_bulk, writes_going_on
from polling import eventually

TOKEN = "t0ken"
CHILD = Path(__file__).with_name("replica_child.py")


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[replikv.Primary]:
    store = replikv.Store(tmp_path / "primary")
    with replikv.Primary(store, token=TOKEN, ship_interval=0.01) as p:
        yield p
    store.close()


def test_replicas_receive_every_write_and_match_the_primarys_checksums(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    store = primary.store
    store.put_many("subscribers", [(f"s{i}@example.com", {"n": i}) for i in range(1000)])
    with (
        replikv.Replica(tmp_path / "eu-1", primary=primary.address, token=TOKEN) as eu,
        replikv.Replica(tmp_path / "us-1", primary=primary.address, token=TOKEN) as us,
    ):
        for i in range(100):
            with store.transaction() as tx:
                tx.put("events", i, {"type": "open"})
                tx.delete("subscribers", f"s{i}@example.com")
        last = store.last_lsn
        assert eu.wait_for(last, timeout=30) and us.wait_for(last, timeout=30)
        assert eu.store.checksum() == store.checksum() == us.store.checksum()
        assert primary.wait_for(last, replicas=2, timeout=30) == 2
        infos = {info.name: info for info in primary.status()}
        assert set(infos) == {"eu-1", "us-1"}
        assert all(i.acked_lsn == last and i.lag_lsn == 0 for i in infos.values())
        assert eu.status().state == "streaming"
        assert "eu-1" in repr(eu) and "Primary" in repr(primary)


def test_a_closed_replica_reports_itself_closed(primary: replikv.Primary, tmp_path: Path) -> None:
    replica = replikv.Replica(tmp_path / "r", primary=primary.address, token=TOKEN)
    assert replica.wait_for(primary.store.put("t", "k", 1).lsn, timeout=30)
    replica.close()
    assert replica.status().state == "closed"
    assert "state=closed" in repr(replica)


def test_wait_for_on_a_closed_replica_raises_at_once_and_a_waiter_is_woken(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    replica = replikv.Replica(tmp_path / "r", primary=primary.address, token=TOKEN)
    assert replica.wait_for(primary.store.put("t", "k", 1).lsn, timeout=30)
    outcome: list[object] = []

    def wait() -> None:
        try:
            outcome.append(replica.wait_for(10**6, timeout=30))
        except replikv.ReplikvError as err:
            outcome.append(err)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)  # most likely waiting by now; raised at once otherwise, as below
    replica.close()
    waiter.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], replikv.StoreClosed), outcome
    assert "replica 'r' is closed" in str(outcome[0])
    with pytest.raises(replikv.StoreClosed, match="replica 'r' is closed"):
        replica.wait_for(10**6, timeout=30)
    with pytest.raises(replikv.StoreClosed, match="replica 'r' is closed"):
        replica.wait_for(1)  # applied before the close: still refused, as reads are


def test_a_replica_store_is_read_only_and_serves_read_your_writes(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    with replikv.Replica(tmp_path / "r", primary=primary.address, token=TOKEN) as replica:
        with pytest.raises(replikv.ReadOnlyError):
            replica.store.put("t", "k", 1)
        with pytest.raises(replikv.ReadOnlyError):
            replica.store.transaction().put("t", "k", 1)
        receipt = primary.store.put("t", "k", {"v": 1})
        assert replica.get("t", "k", min_lsn=receipt.lsn, timeout=30) == {"v": 1}
        with pytest.raises(replikv.ReplicationTimeout) as info:
            replica.get("t", "k", min_lsn=receipt.lsn + 1000, timeout=0.2)
        assert info.value.lsn == receipt.lsn + 1000


def test_replica_readers_never_see_half_a_transaction(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    stop = threading.Event()
    torn: list[tuple[object, object]] = []
    with replikv.Replica(tmp_path / "r", primary=primary.address, token=TOKEN) as replica:

        def read() -> None:
            while not stop.is_set():
                a, b = replica.store.get("pair", "a"), replica.store.get("pair", "b")
                # b is written after a in each transaction; reading a first, b can only be
                # newer or equal: never older.
                if a is not None and (b is None or b < a):
                    torn.append((a, b))

        reader = threading.Thread(target=read)
        reader.start()
        for i in range(300):
            with primary.store.transaction() as tx:
                tx.put("pair", "a", i)
                tx.put("pair", "b", i)
        assert replica.wait_for(primary.store.last_lsn, timeout=30)
        stop.set()
        reader.join()
    assert torn == []


def test_a_replica_killed_mid_stream_resumes_without_gaps_or_repeats(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    path = tmp_path / "child"
    writer_done = threading.Event()

    def write() -> None:
        for i in range(2000):
            primary.store.put("events", i, {"i": i})
        writer_done.set()

    thread = threading.Thread(target=write)
    thread.start()
    for _ in range(3):
        with replica_child(path, primary.address) as child:
            time.sleep(0.3)
        assert child.returncode == -signal.SIGKILL
    thread.join()
    assert writer_done.is_set()
    with replikv.Replica(path, primary=primary.address, token=TOKEN, name="child") as replica:
        assert replica.wait_for(primary.store.last_lsn, timeout=60)
        assert replica.store.checksum() == primary.store.checksum()
        lsns = [c.lsn for c in replica.store.changes()]
        assert lsns == list(range(1, primary.store.last_lsn + 1)), "no entry skipped or doubled"


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def versioned_frame(version: int) -> bytes:
    body = bytes([version, 2]) + b"\x90"  # a Hello type byte and an empty payload
    return struct.pack(">I", len(body) + 4) + body + struct.pack(">I", crc32c(body))


def garbage_probes(address: str) -> list[bytes]:
    good_len = struct.pack(">I", 10)
    return [
        b"\x00\x01garbage that is not a frame\r\n" * 3,
        struct.pack(">I", 0xFFFFFFF0) + b"\x01\x02",  # an oversized length
        good_len + b"\x01\x02abc",  # a truncated frame, then the connection closes
        versioned_frame(99),  # another protocol version, with a valid checksum
        b"GET / HTTP/1.1\r\nHost: " + address.encode() + b"\r\n\r\n",
    ]


def test_garbage_on_the_primarys_port_is_refused_counted_and_harmless(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    with replikv.Replica(tmp_path / "r", primary=primary.address, token=TOKEN) as replica:
        host, port = primary.address.rsplit(":", 1)
        for probe in garbage_probes(primary.address):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.recv(4096)  # the challenge
                # The primary may hang up as soon as it has seen enough of the probe.
                with contextlib.suppress(OSError):
                    sock.sendall(probe)
                    sock.shutdown(socket.SHUT_WR)
                    while sock.recv(4096):
                        pass
        eventually("every probe to be refused", lambda: primary.rejected >= 5)
        assert primary.last_rejection is not None
        # The version probe was refused for its version, not for a bad checksum.
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.recv(4096)
            sock.sendall(versioned_frame(99))
            with contextlib.suppress(OSError):
                sock.recv(4096)
        eventually("the version refusal", lambda: "version" in str(primary.last_rejection))
        receipt = primary.store.put("t", "still", "works")
        assert replica.get("t", "still", min_lsn=receipt.lsn, timeout=30) == "works"


def test_a_port_probe_that_says_nothing_is_not_counted_as_a_refusal(
    primary: replikv.Primary,
) -> None:
    host, port = primary.address.rsplit(":", 1)
    before = primary.rejected
    # Closing at once, closing with the challenge unread (the kernel resets the
    # connection then), and closing after reading it.
    for look in (None, socket.MSG_PEEK, 0) * 3:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            if look is not None:
                sock.recv(4096, look)
    # Then one probe that does say something: it alone is counted.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.recv(4096)
        with contextlib.suppress(OSError):
            sock.sendall(b"\x00\x01garbage that is not a frame\r\n")
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
    eventually("the garbage to be refused", lambda: primary.rejected > before)
    assert primary.rejected == before + 1


def test_a_wrong_token_is_refused_with_auth_and_not_retried(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    with replikv.Replica(tmp_path / "r", primary=primary.address, token="wrong") as replica:
        eventually("the replica to give up", lambda: replica.status().state == "failed")
        assert "authentication" in str(replica.status().last_error)
    assert primary.rejected >= 1


def test_a_missing_or_unexpected_token_is_named_as_such(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary")
    with replikv.Primary(store, token=TOKEN) as guarded:
        with pytest.raises(replikv.AuthError, match="no token was given, and this side requires"):
            replikv._core.fetch_status(guarded.address)
        with pytest.raises(replikv.AuthError, match=r"wrong token$"):
            replikv._core.fetch_status(guarded.address, token="wrong")
    with (
        replikv.Primary(store) as unguarded,
        pytest.raises(replikv.AuthError, match="this side has no token, and the peer gave"),
    ):
        replikv._core.fetch_status(unguarded.address, token=TOKEN)
    store.close()


def test_replicas_reconnect_after_the_primary_restarts(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary")
    first = replikv.Primary(store, token=TOKEN, ship_interval=0.01)
    address = first.address
    with replikv.Replica(tmp_path / "r", primary=address, token=TOKEN, max_backoff=0.2) as replica:
        assert replica.wait_for(store.put("t", 1, "before").lsn, timeout=30)
        first.close()
        store.put("t", 2, "while down")
        eventually("the replica to notice", lambda: replica.status().state != "streaming")
        second = replikv.Primary(store, listen=address, token=TOKEN, ship_interval=0.01)
        try:
            receipt = store.put("t", 3, "after")
            assert replica.get("t", 3, min_lsn=receipt.lsn, timeout=30) == "after"
            assert replica.store.checksum() == store.checksum()
            assert replica.status().connections >= 2
        finally:
            second.close()
    store.close()


def test_slots_keep_the_log_for_absent_replicas_until_dropped(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary", segment_bytes=4096)
    primary = replikv.Primary(store, token=TOKEN, ship_interval=0.01)
    try:
        replica = replikv.Replica(tmp_path / "away", primary=primary.address, token=TOKEN)
        for i in range(100):
            store.put("events", i, {"pad": "x" * 60})
        assert replica.wait_for(store.last_lsn, timeout=30)
        assert primary.wait_for(store.last_lsn, replicas=1, timeout=30) == 1
        primary.retain()
        kept_from = store.oldest_lsn
        assert kept_from > 1, "segments every slot has acknowledged are dropped"
        assert kept_from <= store.last_lsn + 1
        replica.close()
        away_at = store.last_lsn
        for i in range(100, 400):
            store.put("events", i, {"pad": "x" * 60})
        primary.retain()
        assert store.oldest_lsn <= away_at + 1, "the absent replica's slot pins the log"
        assert [s.name for s in primary.slots()] == ["away"]
        assert primary.slots()[0].acked_lsn == away_at
        # The replica comes back and catches up from its slot.
        with replikv.Replica(tmp_path / "away", primary=primary.address, token=TOKEN) as back:
            assert back.wait_for(store.last_lsn, timeout=30)
            assert back.store.checksum() == store.checksum()
            assert back.status().snapshots == 0, "it caught up from its slot, not a snapshot"
        assert primary.drop_slot("away") is True
        assert primary.drop_slot("away") is False
        primary.retain()
        assert store.oldest_lsn <= away_at + 1, "without slots the log is kept (changes())"
    finally:
        primary.close()
        store.close()


def test_slots_survive_a_primary_restart(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary")
    primary = replikv.Primary(store, token=TOKEN, ship_interval=0.01)
    with primary, replikv.Replica(tmp_path / "r", primary=primary.address, token=TOKEN) as replica:
        assert replica.wait_for(store.put("t", 1, 1).lsn, timeout=30)
        assert primary.wait_for(store.last_lsn, timeout=30) == 1
    with replikv.Primary(store, token=TOKEN) as primary:
        assert [(s.name, s.acked_lsn) for s in primary.slots()] == [("r", 1)]
    store.close()


def test_a_replica_behind_the_retained_log_gets_a_snapshot_and_readers_never_see_half(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "primary", segment_bytes=4096)
    with replikv.Primary(store, token=TOKEN, retain_bytes=8192, ship_interval=0.01) as primary:
        for i in range(2000):
            with store.transaction() as tx:
                tx.put("pair", f"a{i:05d}", i)
                tx.put("pair", f"b{i:05d}", i)
        primary.retain()
        assert store.oldest_lsn > 1
        with replikv.Replica(tmp_path / "new", primary=primary.address, token=TOKEN) as replica:
            torn = []
            while replica.status().snapshots == 0:
                # Reads during the install see the old (empty) state or the whole copy.
                count = replica.store.count("pair")
                assert count in (0, 4000), count
                if count:
                    a = {k[1:] for k in replica.store.table("pair").keys(prefix="a")}  # type: ignore[index]
                    b = {k[1:] for k in replica.store.table("pair").keys(prefix="b")}  # type: ignore[index]
                    if a != b:
                        torn.append(len(a ^ b))
                time.sleep(0.001)
            assert torn == []
            receipt = store.put("pair", "after", 1)
            assert replica.get("pair", "after", min_lsn=receipt.lsn, timeout=30) == 1
            assert replica.store.checksum() == store.checksum()
            assert replica.status().snapshot_progress is None
    store.close()


def test_a_cut_link_shows_growing_lag_and_the_replica_reconnects_by_itself(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    from proxy import Proxy

    with (
        Proxy(primary.address) as proxy,
        replikv.Replica(
            tmp_path / "r", primary=proxy.address, token=TOKEN, max_backoff=0.2
        ) as replica,
    ):
        store = primary.store
        assert replica.wait_for(store.put("t", 0, 0).lsn, timeout=30)
        eventually("an idle replica at zero lag", lambda: primary.status().replicas[0].lag_lsn == 0)
        proxy.cut()
        for i in range(1, 50):
            store.put("t", i, i)
        time.sleep(0.3)
        info = primary.status().replicas[0]
        assert info.lag_lsn > 0 and info.lag_seconds > 0, info
        assert replica.applied_lsn < store.last_lsn
        proxy.restore()
        assert replica.wait_for(store.last_lsn, timeout=30)
        eventually("the lag to return to zero", lambda: primary.status().replicas[0].lag_lsn == 0)
        assert replica.status().connections >= 2
        assert replica.store.checksum() == store.checksum()


def test_a_slow_link_delays_but_loses_nothing(primary: replikv.Primary, tmp_path: Path) -> None:
    from proxy import Proxy

    with Proxy(primary.address) as proxy:
        proxy.delay = 0.05
        with replikv.Replica(tmp_path / "r", primary=proxy.address, token=TOKEN) as replica:
            for i in range(30):
                primary.store.put("t", i, i)
            assert replica.wait_for(primary.store.last_lsn, timeout=60)
            assert replica.store.checksum() == primary.store.checksum()


def test_another_store_under_a_frozen_replicas_name_gets_in_once_the_link_is_dropped(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    """A replacement replica (a fresh directory) under the name of a frozen one is refused
    while the frozen one's connection looks alive, and let in once the primary drops it."""
    with replica_child(tmp_path / "frozen", primary.address) as child:
        eventually("the child to connect", lambda: len(primary.status()) == 1)
        frozen_address = primary.status().replicas[0].address
        # A frozen process keeps its socket open: its connection is half-open.
        child.send_signal(signal.SIGSTOP)
        with replikv.Replica(
            tmp_path / "fresh", primary=primary.address, token=TOKEN, name="child"
        ) as fresh:
            receipt = primary.store.put("t", "k", 1)
            assert fresh.get("t", "k", min_lsn=receipt.lsn, timeout=30) == 1
            [info] = primary.status()
            assert info.name == "child" and info.address != frozen_address
            eventually("its ack", lambda: primary.status().replicas[0].acked_lsn == receipt.lsn)


@pytest.mark.parametrize("seeded_by_snapshot", [False, True])
def test_a_restarted_replica_replaces_its_half_open_link_without_a_refusal(
    tmp_path: Path, seeded_by_snapshot: bool
) -> None:
    """The primary knows the replica's store by its id, which a snapshot install keeps:
    the restarted process is not taken for another replica under the same name."""
    from proxy import Proxy

    store = replikv.Store(tmp_path / "primary", segment_bytes=4096)
    for i in range(200):
        store.put("t", i, "x" * 100)
    if seeded_by_snapshot:
        store.drop_log_before(store.last_lsn)  # the log no longer starts at 1
    # Heartbeats every 2 s (the most): the primary would drop the dead link only after 9 s.
    with (
        replikv.Primary(store, token=TOKEN, ship_interval=0.01, heartbeat_interval=2) as primary,
        Proxy(primary.address) as proxy,
    ):
        proxy.half_open = True
        path = tmp_path / "replica"
        with subprocess.Popen(
            [sys.executable, str(CHILD), str(path), proxy.address], stdout=subprocess.DEVNULL
        ) as child:
            try:
                eventually(
                    "the child to catch up",
                    lambda: [r.acked_lsn for r in primary.status()] == [store.last_lsn],
                )
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
        assert primary.status().replicas[0].state != "disconnected", "the link looks alive"
        with replikv.Replica(path, primary=primary.address, token=TOKEN, name="child") as back:
            assert (back.store.oldest_lsn > 1) is seeded_by_snapshot
            receipt = store.put("t", "after", 1)
            assert back.wait_for(receipt.lsn, timeout=30)
            assert back.status().connections == 1
            assert back.status().last_error is None
            assert primary.status().rejected == 0
    store.close()


def test_two_live_replicas_given_one_name_do_not_take_turns(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    """Each would replace the other's connection, for ever: the second is refused, saying
    why, and the first keeps its link; the second gets in once the first is gone."""
    with replikv.Replica(
        tmp_path / "a" / "replica", primary=primary.address, token=TOKEN, max_backoff=0.2
    ) as first:
        assert first.wait_for(primary.store.put("t", 0, 0).lsn, timeout=30)
        with replikv.Replica(
            tmp_path / "b" / "replica", primary=primary.address, token=TOKEN, max_backoff=0.2
        ) as second:
            assert first.name == second.name == "replica"
            eventually(
                "the second to be refused",
                lambda: (
                    "another replica named 'replica' is connected"
                    in (second.status().last_error or "")
                ),
            )
            for i in range(1, 20):
                receipt = primary.store.put("t", i, i)
                time.sleep(0.01)
            assert first.wait_for(receipt.lsn, timeout=30)
            assert first.status().connections == 1
            assert second.status().connections == 0 and second.applied_lsn == 0
            first.close()
            assert second.wait_for(receipt.lsn, timeout=30)
            assert second.store.checksum() == primary.store.checksum()


def test_a_stalled_link_is_dropped_and_the_replica_reconnects(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    from proxy import Proxy

    with (
        Proxy(primary.address) as proxy,
        replikv.Replica(
            tmp_path / "r", primary=proxy.address, token=TOKEN, max_backoff=0.2
        ) as replica,
    ):
        assert replica.wait_for(primary.store.put("t", 0, 0).lsn, timeout=30)
        proxy.stalled = True  # the sockets stay open; nothing gets through
        primary.store.put("t", 1, 1)
        # Behind but linked ("catching_up", from a heartbeat that got through) is not it.
        eventually(
            "the silent link to be dropped",
            lambda: replica.status().state in ("disconnected", "connecting"),
        )
        proxy.stalled = False
        receipt = primary.store.put("t", 2, 2)
        assert replica.get("t", 2, min_lsn=receipt.lsn, timeout=60) == 2
        assert replica.status().connections >= 2


def test_a_replica_drops_a_silent_link_itself(tmp_path: Path) -> None:
    """The replica's own idle timeout ends a link that stopped carrying anything, also when
    its primary would wait longer before dropping it (heartbeats every 2 s: no ack for
    9 s)."""
    from proxy import Proxy

    store = replikv.Store(tmp_path / "primary")
    with (
        replikv.Primary(store, token=TOKEN, heartbeat_interval=2) as primary,
        Proxy(primary.address) as proxy,
        replikv.Replica(
            tmp_path / "r", primary=proxy.address, token=TOKEN, max_backoff=0.2
        ) as replica,
    ):
        assert replica.wait_for(store.put("t", 0, 0).lsn, timeout=30)
        proxy.stalled = True  # the sockets stay open; nothing gets through
        # Only the session's idle timeout says this (a link the primary closes ends with
        # the stream, a stalled handshake with its own deadline).
        eventually(
            "the replica to give up on the silent link",
            lambda: "nothing from the primary" in (replica.status().last_error or ""),
        )
        proxy.stalled = False
        receipt = store.put("t", 1, 1)
        assert replica.get("t", 1, min_lsn=receipt.lsn, timeout=60) == 1
    store.close()


def test_a_closed_primary_frees_its_port_at_once(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary")
    try:
        address = "127.0.0.1:0"
        for _ in range(5):
            primary = replikv.Primary(store, listen=address, token=TOKEN)
            address = primary.address
            with replikv.Replica(tmp_path / "r", primary=address, token=TOKEN) as replica:
                assert replica.wait_for(store.put("t", 1, 1).lsn, timeout=30)
                primary.close()
    finally:
        store.close()


def test_a_snapshot_completes_while_writes_and_a_byte_cap_keep_cutting_the_log(
    tmp_path: Path,
) -> None:
    store = replikv.Store(tmp_path / "primary", segment_bytes=4096)
    store.put_many("bulk", [(i, {"pad": "x" * 40}) for i in range(20_000)])
    with replikv.Primary(store, token=TOKEN, retain_bytes=8192, ship_interval=0.01) as primary:
        cut_behind_the_bulk(store, primary)
        with (
            writes_going_on(store) as stop_writing,
            replikv.Replica(tmp_path / "r", primary=primary.address, token=TOKEN) as replica,
        ):
            eventually("the snapshot", lambda: replica.status().snapshots >= 1, timeout=60)
            stop_writing()
            assert replica.wait_for(store.last_lsn, timeout=60)
            assert replica.store.checksum() == store.checksum()
            assert replica.status().snapshots == 1, "one snapshot, not one per cut"
    store.close()


def test_lag_in_seconds_counts_from_the_oldest_missing_commit_not_from_idle_time(
    primary: replikv.Primary, tmp_path: Path
) -> None:
    from proxy import Proxy

    with (
        Proxy(primary.address) as proxy,
        replikv.Replica(tmp_path / "r", primary=proxy.address, token=TOKEN) as replica,
    ):
        assert replica.wait_for(primary.store.put("t", 0, 0).lsn, timeout=30)
        eventually("zero lag", lambda: primary.status().replicas[0].lag_lsn == 0)
        time.sleep(3.0)  # idle: the lag of an idle, caught-up replica is zero
        assert primary.status().replicas[0].lag_seconds == 0.0
        proxy.cut()
        primary.store.put("t", 1, 1)
        info = primary.status().replicas[0]
        assert info.lag_lsn == 1
        # Measured from the missing entry's commit, a moment ago: not from the idle 3 s.
        assert 0.0 <= info.lag_seconds < 2.5, info


RETAIN_BYTES = 1 << 20


@contextlib.contextmanager
def child_replica_mid_snapshot(
    tmp_path: Path,
) -> Iterator[tuple[replikv.Primary, subprocess.Popen[str], int]]:
    """A primary with a 1 MiB byte cap whose log was cut, and a replica process stopped
    (SIGSTOP) while the primary sends it a 48 MiB snapshot, larger than any socket buffer,
    through a proxy that makes the transfer last seconds (so the stop lands mid-snapshot).
    Yields the primary, the stopped child and the LSN its slot was pinned at."""
    from proxy import Proxy

    store = replikv.Store(tmp_path / "primary", segment_bytes=256 << 10)
    for i in range(48):
        store.put("bulk", i, b"\x5a" * (1 << 20))
    with replikv.Primary(
        store, token=TOKEN, retain_bytes=RETAIN_BYTES, heartbeat_interval=0.1, ship_interval=0.01
    ) as primary:
        primary.retain()
        assert store.oldest_lsn > 1, "a new replica needs a snapshot"
        pinned_at = store.last_lsn
        with Proxy(primary.address) as proxy:
            proxy.delay = 0.005  # per chunk of at most 64 KiB: 48 MiB take 4 s or more
            child = subprocess.Popen(
                [sys.executable, str(CHILD), str(tmp_path / "child"), proxy.address],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                eventually(
                    "the snapshot to start",
                    lambda: any(i.state == "snapshot" for i in primary.status()),
                )
                child.send_signal(signal.SIGSTOP)
                [info] = primary.status()
                assert info.state == "snapshot", "stopped before its snapshot was installed"
                yield primary, child, pinned_at
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
                if child.stdout is not None:
                    child.stdout.close()
    store.close()


def assert_the_byte_cap_cuts_past(primary: replikv.Primary, lsn: int) -> None:
    """Writes past the cap and applies retention until the log starts after `lsn`."""
    store = primary.store

    def cut() -> bool:
        store.put("more", store.last_lsn, b"\x11" * (512 << 10))
        primary.retain()
        return store.oldest_lsn > lsn

    eventually("the byte cap to cut the log past the snapshot's pin", cut)


def test_a_replica_killed_mid_snapshot_leaves_no_pinned_slot_and_the_byte_cap_holds(
    tmp_path: Path,
) -> None:
    with child_replica_mid_snapshot(tmp_path) as (primary, child, pinned_at):
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert_the_byte_cap_cuts_past(primary, pinned_at)


def test_a_replica_frozen_mid_snapshot_is_dropped_and_the_byte_cap_holds(tmp_path: Path) -> None:
    with child_replica_mid_snapshot(tmp_path) as (primary, _, pinned_at):
        eventually(
            "the frozen link to be dropped",
            lambda: primary.status().replicas[0].state == "disconnected",
        )
        assert_the_byte_cap_cuts_past(primary, pinned_at)


def test_a_damaged_slots_file_is_a_corruption_error(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "primary")
    try:
        with (
            replikv.Primary(store, token=TOKEN) as primary,
            replikv.Replica(tmp_path / "r", primary=primary.address, token=TOKEN, name="eu-1") as r,
        ):
            assert r.wait_for(store.put("t", 1, 1).lsn, timeout=30)
            assert primary.wait_for(store.last_lsn, timeout=30) == 1
        path = tmp_path / "primary" / "replication-slots"
        good = path.read_bytes()
        # A flip inside the name that still spells a valid name: "fu-1".
        at = good.index(b"eu-1")
        path.write_bytes(good[:at] + b"f" + good[at + 1 :])
        with pytest.raises(replikv.CorruptionError, match="replication-slots"):
            replikv.Primary(store, token=TOKEN)
        path.write_bytes(good)
        with replikv.Primary(store, token=TOKEN) as primary:
            assert [s.name for s in primary.slots()] == ["eu-1"]
    finally:
        store.close()


def test_a_collected_primary_stops_without_waiting_for_its_tasks(tmp_path: Path) -> None:
    # In a child process: a drop that blocks holds the GIL, which would hang this one.
    done = subprocess.run(
        [sys.executable, str(CHILD.with_name("primary_drop_child.py")), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,  # a bound for a hung test, far below the notifier's 600 s pause
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["collected", "port-free"]


def test_the_last_handle_of_a_store_a_primary_serves_or_a_replica_follows_into_stays_open(
    tmp_path: Path,
) -> None:
    """Closed under them, the store stopped the Primary and the Replica while their status
    still said they streamed."""
    store = replikv.Store(tmp_path / "primary")
    with (
        replikv.Primary(store) as primary,
        replikv.Replica(tmp_path / "eu-1", primary=primary.address) as replica,
    ):
        with pytest.raises(replikv.ReplicationError, match="a Primary serves it"), store:
            pass
        with (
            pytest.raises(replikv.ReplicationError, match="a Replica follows into it"),
            replica.store as read,
        ):
            assert read.get("t", "k") is None
        # Another handle of the served store may come and go.
        with replikv.Store(tmp_path / "primary") as other:
            assert other.last_lsn == 0
        receipt = store.put("t", "k", 1)
        assert replica.wait_for(receipt.lsn, timeout=30)
        assert replica.store.get("t", "k") == 1
    store.close()
    assert store.closed and replica.store.closed
