"""The Store API of DESIGN §4: reads, writes, scans, transactions, the change log."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import replikv

UTC = dt.timezone.utc


def test_put_get_delete_round_trip(store: replikv.Store) -> None:
    profile = {"name": "Ana", "opted_in": True, "lists": ["news", "promo"], "score": 4.5}
    receipt = store.put("subscribers", "ana@example.com", profile)
    assert receipt.lsn == 1
    assert receipt.durability == "local"
    assert receipt.acked_by == []
    assert receipt.degraded is False
    assert store.get("subscribers", "ana@example.com") == profile
    assert store.delete("subscribers", "ana@example.com").lsn == 2
    assert store.get("subscribers", "ana@example.com") is None
    assert store.get("subscribers", "ana@example.com", default="gone") == "gone"
    assert store.last_lsn == 2


def test_get_of_a_table_never_written_returns_the_default(store: replikv.Store) -> None:
    assert store.get("nowhere", "k") is None
    assert store.get("nowhere", "k", default=0) == 0
    assert store.tables() == []


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**63),
        2**63 - 1,
        3.25,
        float("inf"),
        "",
        "héllo ✉",
        b"",
        b"\x00\xff",
        [],
        [1, "two", None, [b"3"]],
        {},
        {"nested": {"deep": [{"x": 1}]}},
        dt.datetime(2026, 11, 22, 9, 30, 15, 123456, tzinfo=UTC),
        dt.datetime(1901, 1, 1, tzinfo=UTC),
        dt.datetime(2500, 1, 1, tzinfo=UTC),
    ],
)
def test_every_supported_value_type_round_trips(store: replikv.Store, value: object) -> None:
    store.put("values", "v", value)
    assert store.get("values", "v") == value


def test_tuples_come_back_as_lists_and_datetimes_as_utc(store: replikv.Store) -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    sent = dt.datetime(2026, 5, 1, 10, 0, tzinfo=paris)
    store.put("values", "v", {"pair": (1, 2), "sent": sent})
    back = store.get("values", "v")
    assert back["pair"] == [1, 2]
    assert back["sent"] == sent
    assert back["sent"].tzinfo == UTC


def test_keys_come_back_as_the_type_they_went_in_as(store: replikv.Store) -> None:
    store.put("t", 42, "int")
    store.put("t", "42", "str")
    store.put("t", b"42", "bytes")
    assert store.get("t", 42) == "int"
    assert store.get("t", "42") == "str"
    assert store.get("t", b"42") == "bytes"
    assert [(type(k), v) for k, v in store.scan("t")] == [
        (int, "int"),
        (str, "str"),
        (bytes, "bytes"),
    ]


def test_int_keys_scan_in_numeric_order(store: replikv.Store) -> None:
    keys = [5, -3, 0, 2**40, -(2**63), 2**63 - 1, 17]
    store.put_many("n", [(k, k) for k in keys])
    assert [k for k, _ in store.scan("n")] == sorted(keys)
    assert [k for k, _ in store.scan("n", reverse=True)] == sorted(keys, reverse=True)


def test_scan_prefix_start_end_reverse_and_limit(store: replikv.Store) -> None:
    emails = [f"user{i:03d}@example.com" for i in range(300)] + ["ana@example.com"]
    store.put_many("subscribers", [(e, {"email": e}) for e in emails])
    users = [k for k, _ in store.scan("subscribers", prefix="user")]
    assert users == sorted(e for e in emails if e.startswith("user"))
    window = [k for k, _ in store.scan("subscribers", start="user010", end="user020")]
    assert window == [f"user{i:03d}@example.com" for i in range(10, 20)]
    last3 = [k for k, _ in store.scan("subscribers", prefix="user", reverse=True, limit=3)]
    assert last3 == ["user299@example.com", "user298@example.com", "user297@example.com"]
    assert len(list(store.scan("subscribers", limit=1000))) == 301
    # Scans cross internal batch boundaries without repeating or skipping a key.
    everything = [k for k, _ in store.scan("subscribers")]
    assert everything == sorted(emails)
    with pytest.raises(TypeError):
        store.scan("subscribers", prefix=5)  # type: ignore[arg-type]


def test_table_is_a_mutable_mapping(store: replikv.Store) -> None:
    subs = store.table("subscribers")
    subs["ana@example.com"] = {"opted_in": True}
    subs["bo@example.com"] = {"opted_in": False}
    assert len(subs) == 2
    assert "ana@example.com" in subs
    assert "nobody" not in subs
    assert True not in subs
    assert subs["bo@example.com"] == {"opted_in": False}
    assert list(subs) == ["ana@example.com", "bo@example.com"]
    assert dict(subs.items()) == {
        "ana@example.com": {"opted_in": True},
        "bo@example.com": {"opted_in": False},
    }
    assert list(subs.keys(prefix="bo")) == ["bo@example.com"]
    assert list(subs.values(reverse=True, limit=1)) == [{"opted_in": False}]
    del subs["bo@example.com"]
    assert len(subs) == 1
    with pytest.raises(KeyError):
        del subs["bo@example.com"]
    with pytest.raises(KeyError):
        subs["bo@example.com"]
    assert subs.get("bo@example.com", "none") == "none"
    assert "subscribers" in repr(subs)


def test_a_tables_views_behave_as_a_dicts_and_clear_is_one_entry(store: replikv.Store) -> None:
    subs = store.table("subscribers")
    subs.update({"ana@example.com": 1, "bo@example.com": 2})
    same = {"ana@example.com": 1, "bo@example.com": 2}
    keys, items, values = subs.keys(), subs.items(), subs.values()
    assert (len(keys), len(items), len(values)) == (2, 2, 2)
    assert keys == same.keys() and items == same.items()
    assert keys & {"bo@example.com", "cy@example.com"} == {"bo@example.com"}
    assert ("ana@example.com", 1) in items and ("ana@example.com", 2) not in items
    assert list(values) == list(values) == [1, 2], "read again on each iteration"
    subs["cy@example.com"] = 3
    assert len(keys) == 3, "a view, not a copy"
    # A range is a view too: of the rows it selects.
    ranged = subs.keys(prefix="bo")
    assert len(ranged) == 1 and list(ranged) == list(ranged) == ["bo@example.com"]
    assert "bo@example.com" in ranged and "ana@example.com" not in ranged
    assert ("cy@example.com", 3) in subs.items(start="c") and len(subs.values(limit=2)) == 2
    assert list(subs.values(reverse=True, limit=1)) == [3]
    # What is no key (a float or a bool equal to an int key) is in no view, ranged or not.
    subs[1] = "one"
    for view in (subs.keys(), subs.keys(start=0)):
        assert 1 in view and 1.0 not in view and True not in view
    for items in (subs.items(), subs.items(start=0)):
        assert (1, "one") in items and (1.0, "one") not in items and (1.5, "x") not in items
    before = store.last_lsn
    subs.clear()
    assert len(subs) == 0 and store.last_lsn == before + 1


def test_transaction_commits_on_exit_as_one_entry(store: replikv.Store) -> None:
    store.put("templates", "old", "<p>old</p>")
    with store.transaction() as tx:
        tx.put("subscribers", "ana@example.com", {"opted_in": True})
        tx.put("events", 1, {"type": "open"})
        tx.delete("templates", "old")
    assert tx.receipt is not None
    assert tx.receipt.lsn == 2
    changes = list(store.changes(since=1))
    assert len(changes) == 1
    assert [(op.kind, op.table, op.key) for op in changes[0].ops] == [
        ("put", "subscribers", "ana@example.com"),
        ("put", "events", 1),
        ("delete", "templates", "old"),
    ]
    assert store.get("templates", "old") is None


def test_transaction_aborts_on_exception_and_takes_no_lsn(store: replikv.Store) -> None:
    store.put("t", "k", 1)
    with pytest.raises(RuntimeError, match="boom"), store.transaction() as tx:
        tx.put("t", "k", 2)
        raise RuntimeError("boom")
    assert tx.receipt is None
    assert store.get("t", "k") == 1
    assert store.last_lsn == 1
    store.put("t", "k", 3)
    assert store.last_lsn == 2, "an aborted transaction took no LSN"


def test_transaction_reads_its_own_pending_writes(store: replikv.Store) -> None:
    store.put("t", "a", 1)
    with store.transaction() as tx:
        assert tx.get("t", "a") == 1
        tx.put("t", "a", 2)
        assert tx.get("t", "a") == 2
        assert store.get("t", "a") == 1, "others do not see uncommitted writes"
        tx.delete("t", "a")
        assert tx.get("t", "a", default="deleted") == "deleted"
    assert store.get("t", "a") is None


def test_read_only_or_empty_transaction_appends_nothing(store: replikv.Store) -> None:
    store.put("t", "a", 1)
    with store.transaction() as tx:
        assert tx.get("t", "a") == 1
    assert store.last_lsn == 1
    assert len(list(store.changes())) == 1
    assert tx.receipt is not None and tx.receipt.lsn == 1


def test_transactions_are_serializable_under_concurrent_increments(
    store: replikv.Store,
) -> None:
    store.put("counters", "sends", 0)
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(25):
                with store.transaction() as tx:
                    tx.put("counters", "sends", tx.get("counters", "sends") + 1)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get("counters", "sends") == 100


def test_writing_through_the_store_inside_own_transaction_is_refused(
    store: replikv.Store,
) -> None:
    with store.transaction() as tx:
        tx.put("t", "a", 1)
        with pytest.raises(RuntimeError, match="transaction"):
            store.put("t", "b", 2)
    assert store.get("t", "a") == 1
    assert store.get("t", "b") is None


def test_a_finished_transaction_cannot_be_reused(store: replikv.Store) -> None:
    with store.transaction() as tx:
        tx.put("t", "a", 1)
    with pytest.raises(RuntimeError, match="committed"):
        tx.put("t", "b", 2)


def test_put_many_is_one_transaction_and_reports_progress(store: replikv.Store) -> None:
    seen: list[int] = []
    rows = [(f"e{i:06d}", {"type": "click", "n": i}) for i in range(20_000)]
    receipt = store.put_many("events", rows, progress=seen.append)
    assert receipt.lsn == 1
    assert store.count("events") == 20_000
    assert seen[-1] == 20_000
    assert seen == sorted(seen) and len(seen) >= 3
    assert store.get("events", "e012345") == {"type": "click", "n": 12345}
    receipt = store.put_many("events", {"a": 1, "b": 2})
    assert receipt.lsn == 2
    assert store.get("events", "b") == 2


def test_put_many_with_a_bad_row_writes_nothing(store: replikv.Store) -> None:
    rows: list[object] = [("a", 1), ("b", object())]
    with pytest.raises(TypeError):
        store.put_many("t", rows)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tuple"):
        store.put_many("t", [("a", 1), "not a pair"])  # type: ignore[list-item]
    assert store.last_lsn == 0
    assert store.count("t") == 0


def test_put_many_progress_bar_goes_to_stderr(
    store: replikv.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    store.put_many("t", [(i, i) for i in range(10_000)], progress=True)
    assert "10000" in capsys.readouterr().err
    assert store.count("t") == 10_000


def test_changes_lists_entries_after_since_in_order(store: replikv.Store) -> None:
    before = dt.datetime.now(UTC) - dt.timedelta(seconds=1)
    for i in range(10):
        store.put("events", i, {"n": i})
    store.delete("events", 3)
    changes = list(store.changes(since=4))
    assert [c.lsn for c in changes] == list(range(5, 12))
    assert all(c.epoch == 1 for c in changes)
    assert all(before <= c.timestamp <= dt.datetime.now(UTC) for c in changes)
    op = changes[0].ops[0]
    assert (op.kind, op.table, op.key, op.value) == ("put", "events", 4, {"n": 4})
    delete = changes[-1].ops[0]
    assert (delete.kind, delete.key, delete.value) == ("delete", 3, None)
    assert [c.lsn for c in store.changes(since=0, limit=3)] == [1, 2, 3]
    assert list(store.changes(since=11)) == []
    assert "lsn=5" in repr(changes[0])


def test_replaying_changes_into_an_empty_store_reproduces_data_and_checksums(
    open_store: Callable[..., replikv.Store],
) -> None:
    source = open_store("source")
    source.put_many("subscribers", [(f"s{i}", {"opted_in": i % 2 == 0}) for i in range(500)])
    for i in range(50):
        with source.transaction() as tx:
            tx.put("events", i, {"type": "open"})
            tx.delete("subscribers", f"s{i}")
    source.put("templates", "welcome", "<h1>Hi</h1>")
    copy = open_store("copy")
    for change in source.changes():
        with copy.transaction() as tx:
            for op in change.ops:
                if op.kind == "put":
                    tx.put(op.table, op.key, op.value)
                else:
                    tx.delete(op.table, op.key)
    assert copy.checksum() == source.checksum()
    for table in source.tables():
        assert list(copy.scan(table)) == list(source.scan(table))


def test_checksums_track_content_not_history(open_store: Callable[..., replikv.Store]) -> None:
    a, b = open_store("a"), open_store("b")
    a.put("t", "x", 1)
    a.put("t", "y", 2)
    b.put("t", "y", 2)
    b.put("t", "x", 1)
    assert a.checksum().tables == b.checksum().tables
    assert a.checksum().rows == {"t": 2}
    b.put("t", "x", 3)
    assert a.checksum().tables != b.checksum().tables
    b.put("t", "x", 1)
    assert a.checksum().tables == b.checksum().tables
    b.put("t", "z", None)
    assert a.checksum().tables != b.checksum().tables
    b.delete("t", "z")
    assert a.checksum().tables == b.checksum().tables
    assert a.checksum().lsn == 2 and b.checksum().lsn == 6


def test_a_store_whose_tables_emptied_sums_as_one_that_never_had_them(
    open_store: Callable[..., replikv.Store],
) -> None:
    a, b = open_store("a"), open_store("b")
    for table in ("dropped", "emptied", "kept"):
        a.put(table, "k", 1)
    a.drop_table("dropped")
    a.delete("emptied", "k")
    b.put("kept", "k", 1)
    assert a.checksum().tables == b.checksum().tables
    assert set(a.checksum().rows) == set(a.tables()) == {"kept"}
    assert a.stats().tables == {"kept": 1}


def test_close_releases_files_so_the_same_process_can_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    for round_ in range(3):
        with replikv.Store(path) as s:
            s.put("t", round_, round_)
            assert s.last_lsn == round_ + 1
    with replikv.Store(path) as s:
        assert [k for k, _ in s.scan("t")] == [0, 1, 2]
    assert "closed" in repr(s)
    assert s.closed
    s.close()  # closing twice is harmless


def test_use_after_close_raises_store_closed(store: replikv.Store) -> None:
    store.put("t", "a", 1)
    store.close()
    with pytest.raises(replikv.StoreClosed):
        store.put("t", "a", 2)
    with pytest.raises(replikv.StoreClosed):
        store.get("t", "a")
    with pytest.raises(replikv.StoreClosed):
        list(store.scan("t"))
    with pytest.raises(replikv.StoreClosed):
        store.checksum()
    with pytest.raises(replikv.StoreClosed), store:  # refused as the block begins
        pytest.fail("a with block on a closed store ran")


def test_a_second_process_gets_an_error_naming_the_owner_pid_and_command(
    store: replikv.Store, tmp_path: Path
) -> None:
    import os

    code = (
        "import replikv, sys\n"
        "try:\n"
        f"    replikv.Store({str(tmp_path / 'db')!r})\n"
        "except replikv.StoreLockedError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stderr
    assert f"process {os.getpid()}" in result.stdout
    # ... and its command line, so that the user knows which process to stop
    with open(f"/proc/{os.getpid()}/cmdline", "rb") as cmdline:
        program = cmdline.read().split(b"\0")[0].decode()
    assert f"process {os.getpid()} ({program}" in result.stdout
    assert "stop it first" in result.stdout


def test_concurrent_readers_and_writers_from_threads(store: replikv.Store) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        try:
            for i in range(40):
                store.put("t", f"w{n}-{i}", {"i": i})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        try:
            while not stop.is_set():
                for value in store.table("t").values():
                    assert isinstance(value["i"], int)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert store.count("t") == 320
    assert store.last_lsn == 320
    assert [c.lsn for c in store.changes()] == list(range(1, 321)), "LSNs are dense"


def test_repr_shows_path_lsn_and_epoch(store: replikv.Store) -> None:
    store.put("t", 1, 1)
    text = repr(store)
    assert str(store.path) in text
    assert "last_lsn=1" in text and "epoch=1" in text
    assert store.epoch == 1


def test_fsync_false_store_still_round_trips_and_reopens(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "scratch", fsync=False) as s:
        s.put_many("t", [(i, i) for i in range(100)])
    with replikv.Store(tmp_path / "scratch", fsync=False) as s:
        assert s.count("t") == 100


def test_dropped_log_segments_raise_log_truncated_for_older_changes(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db", segment_bytes=4096) as s:
        for i in range(300):
            s.put("events", i, {"n": i, "pad": "x" * 40})
        assert s.oldest_lsn == 1
        removed = s.drop_log_before(200)
        assert removed > 0
        oldest = s.oldest_lsn
        assert 1 < oldest <= 200
        with pytest.raises(replikv.LogTruncated, match=f"oldest retained LSN is {oldest}"):
            s.changes(since=0)
        assert [c.lsn for c in s.changes(since=oldest - 1)] == list(range(oldest, 301))
        assert s.count("events") == 300, "dropping the log never drops table rows"
    with replikv.Store(tmp_path / "db", segment_bytes=4096) as s:
        assert s.oldest_lsn == oldest
        assert s.count("events") == 300


def test_bulk_loads_and_small_writes_interleave_like_a_dict(tmp_path: Path) -> None:
    # Small writes live in an in-memory overlay until it is moved into redb; a bulk load
    # (thousands of rows) goes to redb directly. Reads must see one consistent table.
    model: dict[int, object] = {}
    with replikv.Store(tmp_path / "db", checkpoint_entries=7) as s:
        for round_ in range(3):
            for i in range(300):
                key = (i * 7919 + round_) % 9000
                if i % 5 == 0:
                    s.delete("t", key)
                    model.pop(key, None)
                else:
                    s.put("t", key, {"r": round_, "i": i})
                    model[key] = {"r": round_, "i": i}
            bulk = {k: {"bulk": round_} for k in range(round_ * 1000, round_ * 1000 + 5000)}
            s.put_many("t", bulk)
            model.update(bulk)
            assert s.count("t") == len(model)
            assert dict(s.scan("t")) == model
            assert [k for k, _ in s.scan("t", start=2500, end=2600)] == sorted(
                k for k in model if 2500 <= k < 2600
            )
            assert [k for k, _ in s.scan("t", reverse=True, limit=5)] == sorted(model)[::-1][:5]
        checksum = s.checksum()
    with replikv.Store(tmp_path / "db") as s:
        assert dict(s.scan("t")) == model
        assert s.checksum() == checksum


def test_reads_of_invalid_or_reserved_table_names_are_value_errors(store: replikv.Store) -> None:
    for name in ["__meta", "a b", ""]:
        with pytest.raises(ValueError, match="table name"):
            store.get(name, "k")
        with pytest.raises(ValueError, match="table name"):
            list(store.scan(name))


def test_a_changes_iterator_stays_exhausted_once_it_ends(store: replikv.Store) -> None:
    store.put("t", 1, 1)
    changes = store.changes()
    assert [c.lsn for c in changes] == [1]
    store.put("t", 2, 2)
    assert list(changes) == [], "an exhausted iterator does not come back to life"
    assert [c.lsn for c in store.changes(since=1)] == [2]


# Each waits for the writer lock: put and transaction() to write, scrub to take its
# snapshot, compact to checkpoint.
WAITS_FOR_THE_WRITER: dict[str, Callable[[replikv.Store], object]] = {
    "put": lambda store: store.put("t", "blocked", 1),
    "transaction": lambda store: store.transaction().put("t", "blocked", 1),
    "scrub": lambda store: store.scrub(),
    "compact": lambda store: store.compact(),
}


@pytest.mark.usefixtures("ctrl_c")
@pytest.mark.parametrize("call", WAITS_FOR_THE_WRITER)
def test_ctrl_c_interrupts_a_call_waiting_for_another_threads_transaction(
    store: replikv.Store, call: str
) -> None:
    import os
    import signal

    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.transaction() as tx:
            tx.put("t", "held", 1)
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            WAITS_FOR_THE_WRITER[call](store)
        # Raised while the transaction still runs, not once it ends.
        assert time.monotonic() - started < 10
    finally:
        release.set()
        holder.join()
    assert store.get("t", "held") == 1
    assert store.get("t", "blocked") is None
    assert store.put("t", "after", 1).lsn == 2


@pytest.mark.usefixtures("ctrl_c")
def test_ctrl_c_interrupts_a_compaction_waiting_for_a_transaction_between_its_attempts(
    store: replikv.Store,
) -> None:
    import os
    import signal

    store.put_many("t", [(i, i) for i in range(100)])
    # A stream still referenced holds the tables: each attempt of compact() gives up and
    # it tries again, taking the writer lock anew each time.
    streams = [store.table("t").to_arrow_batches()]
    release = threading.Event()
    ended = threading.Event()

    def hold() -> None:
        with store.transaction() as tx:
            tx.put("t", "held", 1)
            os.kill(os.getpid(), signal.SIGINT)
            release.wait(20)
        ended.set()
        streams.clear()  # the compaction can finish (if Ctrl-C did not stop it)

    # Begun once compact() has made its first attempt: the transaction holds the lock
    # between two of them.
    holder = threading.Timer(0.3, hold)
    holder.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            store.compact()
        assert not ended.is_set(), "raised while the transaction still ran, not once it ended"
    finally:
        release.set()
        holder.join()
    assert store.get("t", "held") == 1
