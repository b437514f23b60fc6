"""Bad input is refused with a clear exception, takes no LSN and leaves the data intact."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import replikv


def assert_untouched(store: replikv.Store) -> None:
    assert store.last_lsn == 1
    assert store.get("t", "keep") == "kept"


@pytest.fixture
def seeded(store: replikv.Store) -> replikv.Store:
    store.put("t", "keep", "kept")
    return store


@pytest.mark.parametrize("key", [True, 1.5, None, ["k"], ("k",), bytearray(b"k")])
def test_unsupported_key_types_are_type_errors(seeded: replikv.Store, key: object) -> None:
    with pytest.raises(TypeError):
        seeded.put("t", key, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        seeded.get("t", key)  # type: ignore[arg-type]
    assert_untouched(seeded)


def put_in_a_transaction(store: replikv.Store, key: str) -> None:
    with store.transaction() as tx:
        tx.put("t", key, 1)


def get_through_a_cache(store: replikv.Store, key: str) -> object:
    with replikv.Cache(source=store) as cache:
        value = cache.get("t", key)
    return value


# Each call that takes a key; a str with a lone surrogate (as os.fsdecode leaves of an
# undecodable file name) cannot be encoded as UTF-8.
TAKE_A_KEY: dict[str, Callable[[replikv.Store, str], object]] = {
    "put": lambda store, key: store.put("t", key, 1),
    "get": lambda store, key: store.get("t", key),
    "delete": lambda store, key: store.delete("t", key),
    "in": lambda store, key: key in store.table("t"),
    "transaction": put_in_a_transaction,
    "keys": lambda store, key: list(store.table("t").keys(prefix=key)),
    "cache": get_through_a_cache,
}


@pytest.mark.parametrize("call", TAKE_A_KEY)
def test_a_key_with_a_lone_surrogate_is_a_value_error_naming_it(
    seeded: replikv.Store, call: str
) -> None:
    with pytest.raises(ValueError, match=r"^invalid key 'a\\udc80': ") as info:
        TAKE_A_KEY[call](seeded, "a\udc80")
    assert not isinstance(info.value, UnicodeError)
    assert isinstance(info.value.__cause__, UnicodeEncodeError)
    assert_untouched(seeded)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1: "int dict key"},
        {"set": {1, 2}},
        dt.datetime(2026, 1, 1),  # naive
        decimal.Decimal("1.5"),
        lambda: None,
    ],
)
def test_unsupported_values_are_type_errors_and_never_pickled(
    seeded: replikv.Store, value: object
) -> None:
    with pytest.raises(TypeError):
        seeded.put("t", "k", value)
    assert_untouched(seeded)


def test_out_of_range_ints_are_overflow_errors(seeded: replikv.Store) -> None:
    with pytest.raises(OverflowError):
        seeded.put("t", 2**63, 1)
    with pytest.raises(OverflowError):
        seeded.put("t", "k", {"n": -(2**63) - 1})
    assert_untouched(seeded)


def test_deeply_nested_values_are_refused_not_a_crash(seeded: replikv.Store) -> None:
    value: object = 1
    for _ in range(1000):
        value = [value]
    with pytest.raises(ValueError, match="nested"):
        seeded.put("t", "k", value)
    assert_untouched(seeded)


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "__meta", "café", "t/../u"])
def test_invalid_or_reserved_table_names_are_value_errors(seeded: replikv.Store, name: str) -> None:
    with pytest.raises(ValueError, match="table name"):
        seeded.put(name, "k", 1)
    with pytest.raises(ValueError, match="table name"):
        seeded.put_many(name, [("k", 1)])
    assert_untouched(seeded)


def test_values_and_keys_over_the_limit_raise_value_too_large(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db", max_value_bytes=1000, max_key_bytes=64) as s:
        s.put("t", "keep", "kept")
        with pytest.raises(replikv.ValueTooLarge, match=r"value of .* max_value_bytes"):
            s.put("t", "k", "x" * 2000)
        with pytest.raises(replikv.ValueTooLarge, match=r"key of .* max_key_bytes"):
            s.put("t", "k" * 100, 1)
        with pytest.raises(ValueError):  # ValueTooLarge is also a ValueError
            s.put("t", "k", b"\0" * 5000)
        with s.transaction() as tx, pytest.raises(replikv.ValueTooLarge):
            tx.put("t", "k", "x" * 2000)
        assert_untouched(s)


def test_a_row_written_under_a_larger_key_limit_stays_deletable(tmp_path: Path) -> None:
    long_keys = ["a" * 100, "b" * 100, "c" * 100]
    with replikv.Store(tmp_path / "db", max_key_bytes=1000) as s:
        s.put_many("t", [(k, 1) for k in long_keys])
        s.put("u", "d" * 100, 1)
    with replikv.Store(tmp_path / "db", max_key_bytes=64) as s:
        with pytest.raises(replikv.ValueTooLarge, match="max_key_bytes"):
            s.put("t", long_keys[0], 2)  # a put is still held to the limit
        s.delete("t", long_keys[0])
        del s.table("t")[long_keys[1]]
        s.delete_prefix("t", "c")
        s.drop_table("u")
        assert len(s.table("t")) == 0 and "u" not in s.tables()


def test_transactions_over_the_limit_raise_value_too_large(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db", max_transaction_bytes=10_000) as s:
        s.put("t", "keep", "kept")
        with pytest.raises(replikv.ValueTooLarge, match="max_transaction_bytes"):
            s.put_many("t", [(i, "x" * 100) for i in range(500)])
        with s.transaction() as tx:
            # The write that takes it over the limit is refused; earlier ones stay pending.
            for i in range(500):
                try:
                    tx.put("t", i, "x" * 100)
                except replikv.ValueTooLarge as refused:
                    assert "max_transaction_bytes" in str(refused)
                    assert 50 < i < 100
                    break
            else:
                raise AssertionError("the transaction never reached its limit")
            tx.abort()
        assert_untouched(s)


def test_put_many_stops_reading_rows_once_over_the_transaction_limit(tmp_path: Path) -> None:
    consumed = 0

    def rows() -> Iterator[tuple[int, str]]:
        nonlocal consumed
        for i in range(1_000_000):
            consumed += 1
            yield i, "x" * 1000

    with replikv.Store(tmp_path / "db", max_transaction_bytes=100_000) as s:
        s.put("t", "keep", "kept")
        with pytest.raises(replikv.ValueTooLarge, match="smaller batches"):
            s.put_many("t", rows())
        # It stopped at the limit (about 100 rows of 1 kB), not after buffering every row.
        assert consumed < 200
        assert_untouched(s)


class MutatingZone(dt.tzinfo):
    """A pure-Python tzinfo (as pytz's are) whose utcoffset changes a container."""

    def __init__(self, mutate: Callable[[], None]) -> None:
        self.mutate = mutate

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        self.mutate()
        return dt.timedelta(0)

    def dst(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, when: dt.datetime | None) -> str:
        return "Mutating"


@pytest.mark.parametrize("change", ["shrink", "grow"])
@pytest.mark.parametrize("kind", ["dict", "list"])
def test_a_container_changed_while_encoded_is_a_runtime_error_not_a_panic(
    seeded: replikv.Store, kind: str, change: str
) -> None:
    def fresh() -> Any:
        container: Any = {} if kind == "dict" else []

        def mutate() -> None:
            if change == "shrink":
                container.clear()
            elif kind == "dict":
                container.update(extra=1, more=2)
            else:
                container.extend([1, 2])

        when = dt.datetime(2026, 1, 1, tzinfo=MutatingZone(mutate))
        if kind == "dict":
            container.update(at=when, b=2, c=3)
        else:
            container.extend([when, 2, 3])
        return container

    with pytest.raises(RuntimeError, match="changed"):
        seeded.put("t", "k", {"nested": fresh()})
    with pytest.raises(RuntimeError, match="changed"):
        seeded.put_many("t", [("k2", 1), ("k", fresh())])
    with pytest.raises(RuntimeError, match="changed"), seeded.transaction() as tx:
        tx.put("t", "k", [fresh()])
    assert_untouched(seeded)
    assert [c.lsn for c in seeded.changes()] == [1]


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.changes(since=-1),
        lambda s: s.changes(limit=-1),
        lambda s: s.scan("t", limit=-5),
        lambda s: s.drop_log_before(-1),
    ],
)
def test_negative_positions_are_value_errors_with_a_sentence(
    seeded: replikv.Store, call: Callable[[replikv.Store], object]
) -> None:
    with pytest.raises(ValueError, match=r"cannot be negative \(got -"):
        call(seeded)
    assert_untouched(seeded)


def test_positions_beyond_64_bits_are_overflow_errors(seeded: replikv.Store) -> None:
    with pytest.raises(OverflowError):
        seeded.changes(since=2**64)
    assert list(seeded.changes(since=2**64 - 1)) == []
    assert_untouched(seeded)


def run_without_root_powers(code: str) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a child Python; as root, without the capabilities that let root
    ignore file permissions."""
    prefix = (
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
        if os.geteuid() == 0
        else []
    )
    return subprocess.run(
        [*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )


def test_a_directory_without_permission_is_permission_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code = (
        "import replikv, sys\n"
        "try:\n"
        f"    replikv.Store({str(locked / 'db')!r})\n"
        "except PermissionError as e:\n"
        "    sys.exit(3 if isinstance(e, replikv.ReplikvError) else 4)\n"
    )
    result = run_without_root_powers(code)
    assert result.returncode == 3, result.stderr


def test_a_write_the_disk_refuses_raises_the_os_error_then_the_store_is_closed(
    tmp_path: Path,
) -> None:
    # The log can no longer create its next segment: the write that needs one fails with
    # the operating system's error; the store closed itself, so the next call says so.
    path = tmp_path / "db"
    code = (
        "import os, sys, replikv\n"
        f"store = replikv.Store({str(path)!r})\n"
        "store.put('t', 'first', 1)\n"
        f"os.chmod({str(path / 'log')!r}, 0o555)\n"
        "try:\n"
        "    for i in range(64):\n"
        "        store.put_many('t', [(f'k{i}-{j}', 'x' * 1000) for j in range(1000)])\n"
        "    sys.exit(5)\n"
        "except PermissionError as e:\n"
        "    assert isinstance(e, replikv.ReplikvError), type(e)\n"
        "    assert e.errno == 13 and 'closed itself' in str(e), e\n"
        "try:\n"
        "    store.put('t', 'after', 2)\n"
        "    sys.exit(6)\n"
        "except replikv.StoreClosed as e:\n"
        "    assert 'Permission denied' in str(e), e\n"
        "sys.exit(3)\n"
    )
    result = run_without_root_powers(code)
    os.chmod(path / "log", 0o755)
    assert result.returncode == 3, result.stderr
    with replikv.Store(path) as store:
        # What returned before the failure is there; the failed write left nothing half.
        assert store.table("t")["first"] == 1
        table = store.table("t")
        assert all(sum(1 for _ in table.keys(prefix=f"k{i}-")) in (0, 1000) for i in range(64))


def test_a_path_that_is_a_file_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a store")
    with pytest.raises(OSError) as info:
        replikv.Store(tmp_path / "file")
    assert isinstance(info.value, replikv.ReplikvError)


def test_a_corrupt_redb_file_is_a_corruption_error(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db") as s:
        s.put("t", "k", 1)
    tables = tmp_path / "db" / "tables.redb"
    tables.write_bytes(os.urandom(tables.stat().st_size))
    with pytest.raises(replikv.CorruptionError):
        replikv.Store(tmp_path / "db")


def test_a_foreign_file_in_place_of_the_tables_is_refused(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "tables.redb").write_text("hello, I am a text file\n" * 100)
    with pytest.raises(replikv.ReplikvError):
        replikv.Store(tmp_path / "db")


def test_a_log_segment_damaged_before_its_tail_is_a_corruption_error(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with replikv.Store(path, segment_bytes=4096) as s:
        for i in range(200):
            s.put("t", i, "x" * 50)
    segments = sorted((path / "log").glob("*.seg"))
    assert len(segments) > 2
    first = segments[0]
    data = bytearray(first.read_bytes())
    data[100] ^= 0xFF
    first.write_bytes(bytes(data))
    with replikv.Store(path, segment_bytes=4096) as s:
        # The damage is before the checkpoint: opening does not need it, reading it fails.
        assert s.count("t") == 200
        with pytest.raises(replikv.CorruptionError, match="corrupt"):
            list(s.changes())


def test_a_torn_tail_is_cut_on_open(tmp_path: Path) -> None:
    path = tmp_path / "db"
    s = replikv.Store(path, checkpoint_entries=1_000_000, checkpoint_seconds=3600)
    for i in range(9):
        s.put("t", i, i)
    # How far the log's syncs reached before the last write: a write torn by a crash never
    # returned, so its sync never ended, and the mark never covered it.
    synced_before = (path / "log" / "synced").read_bytes()
    s.put("t", 9, 9)
    segment = next((path / "log").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    end = len(data.rstrip(b"\0"))
    s.close()
    # Simulate a torn last write: garbage in place of the final record's last bytes, and
    # tables that had only checkpointed up to a point before it (a fresh redb file).
    data[end - 3 : end] = b"\xde\xad\xbe"
    segment.write_bytes(bytes(data))
    (path / "log" / "synced").write_bytes(synced_before)
    (path / "tables.redb").unlink()
    with replikv.Store(path) as reopened:
        assert reopened.last_lsn == 9
        assert [k for k, _ in reopened.scan("t")] == list(range(9))
        assert reopened.put("t", "after", 1).lsn == 10
    with replikv.Store(path) as again:
        assert again.last_lsn == 10


def test_a_bad_last_record_whose_write_returned_is_a_corruption_error_not_a_torn_tail(
    tmp_path: Path,
) -> None:
    """Its sync ended before the write returned: no crash can have torn it since."""
    path = tmp_path / "db"
    with replikv.Store(path, checkpoint_entries=1_000_000, checkpoint_seconds=3600) as s:
        for i in range(10):
            s.put("t", i, i)
    segment = next((path / "log").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    end = len(data.rstrip(b"\0"))
    data[end - 3 : end] = b"\xde\xad\xbe"
    segment.write_bytes(bytes(data))
    (path / "tables.redb").unlink()
    with pytest.raises(replikv.CorruptionError, match="checksum"):
        replikv.Store(path)


def test_a_closed_store_is_refused_by_a_primary_before_it_listens(tmp_path: Path) -> None:
    store = replikv.Store(tmp_path / "db")
    store.close()
    with pytest.raises(replikv.StoreClosed):
        replikv.Primary(store)


def test_status_of_something_that_is_not_an_address_is_a_usage_error() -> None:
    for address in ("nonsense", "127.0.0.1:99999", ":7400"):
        run = subprocess.run(
            [sys.executable, "-m", "replikv", "status", address],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2, run.stderr
        assert "not host:port" in run.stderr and "Traceback" not in run.stderr


def test_importing_json_nested_too_deeply_is_an_error_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    source = tmp_path / "deep.jsonl"
    source.write_text('{"key": 1, "v": ' + "[" * 10_000 + "]" * 10_000 + "}\n")
    command = ["import", str(tmp_path / "db"), "t", str(source), "--key", "key"]
    run = subprocess.run(
        [sys.executable, "-m", "replikv", *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stderr
    assert "nested too deeply" in run.stderr and "Traceback" not in run.stderr


def test_put_many_names_the_row_of_a_refused_key_or_row(seeded: replikv.Store) -> None:
    bad_key: list[Any] = [("a", 1), ("b", 2), (None, 3)]
    with pytest.raises(TypeError, match=r"^t\[<row 2>\]: keys must be str, bytes or int"):
        seeded.put_many("t", bad_key)
    not_a_pair: list[Any] = [("a", 1), ["b", 2]]
    with pytest.raises(TypeError, match=r"^t\[<row 1>\]: each row must be a \(key, value\) tuple"):
        seeded.put_many("t", not_a_pair)
    for row, count in (((1,), 1), ((1, 2, 3), 3)):
        wrong_length: list[Any] = [("a", 1), row]
        with pytest.raises(TypeError, match=rf"<row 1>\]: .* tuple, not a tuple of {count} item"):
            seeded.put_many("t", wrong_length)
    assert seeded.get("t", "a") is None, "nothing of a refused put_many is written"


def test_a_put_many_key_with_a_lone_surrogate_is_a_value_error_naming_its_row(
    store: replikv.Store,
) -> None:
    with pytest.raises(ValueError, match=r"t\[<row 1>\]: .*surrogates not allowed") as info:
        store.put_many("t", [("fine", 1), ("a\udc80", 2)])
    assert isinstance(info.value.__cause__, UnicodeEncodeError)
    assert len(store.table("t")) == 0
