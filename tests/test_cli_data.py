"""The data commands (``replikv ls/get/scan/changes/export/import``) on real stores, each
run as a subprocess: what they print, their exit codes, and a store another process holds."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import replikv
from children import ctrl_c_as_from_a_terminal, into_a_closed_pipe, rest_of_output
from polling import eventually
from replikv import _serve, cli

UTC = dt.timezone.utc
SIGNUP = dt.datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
SUBSCRIBERS = {
    "ada@example.com": {"name": "Ada", "signup": SIGNUP, "consent": {"newsletter": True}},
    "bob@example.com": {"name": "Bob", "signup": SIGNUP, "tags": ["vip", "b2b"]},
    "cy@example.org": {"name": "Cy", "signup": None, "score": 1.5},
}
EVENTS = {1: {"type": "open"}, 2: {"type": "click", "url": "https://shop.example/sale"}}
TIMEOUT = 60


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A closed store with str, int and bytes keys, datetimes, bytes, NaN and non-dicts."""
    path = tmp_path / "store"
    with replikv.Store(path) as store:
        store.put_many("subscribers", SUBSCRIBERS)
        store.put_many("events", EVENTS)
        store.put("blobs", b"\x00\xff", {"raw": b"\x01\x02", "ratio": float("nan")})
        store.put("blobs", b"\x01", 42)
    return path


def replikv_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replikv", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        check=False,
    )


def lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


# --- ls ---------------------------------------------------------------------------------------


def test_ls_lists_tables_rows_lsn_and_disk_use(store_dir: Path) -> None:
    run = replikv_cli("ls", store_dir)
    assert run.returncode == 0, run.stderr
    assert "last LSN 4" in run.stdout
    assert "disk: " in run.stdout
    rows = dict(line.split() for line in run.stdout.splitlines() if line.startswith("  "))
    assert rows == {"table": "rows", "subscribers": "3", "events": "2", "blobs": "2"}


def test_ls_json_is_one_object_with_the_stats(store_dir: Path) -> None:
    run = replikv_cli("ls", store_dir, "--json")
    assert run.returncode == 0, run.stderr
    listing = json.loads(run.stdout)
    assert listing["tables"] == {"subscribers": 3, "events": 2, "blobs": 2}
    assert listing["last_lsn"] == 4
    assert listing["total_bytes"] > 0
    assert listing["read_only"] is False


def test_ls_of_a_directory_without_a_store_fails_clearly(tmp_path: Path) -> None:
    run = replikv_cli("ls", tmp_path)
    assert run.returncode == 1
    said = f"{tmp_path} is not a replikv store (it has no tables.redb)"
    assert run.stderr == f"replikv ls: error: {said}\n"
    assert not (tmp_path / "tables.redb").exists()


def test_a_missing_directory_or_a_file_is_named_as_such_not_as_some_other_directory(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nonexistent"
    for command in (("ls", missing), ("get", missing, "t", "k"), ("changes", missing)):
        run = replikv_cli(*command)
        assert run.returncode == 1
        assert run.stderr == f"replikv {command[0]}: error: {missing} does not exist\n"
    assert not missing.exists(), "nothing created"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello")
    run = replikv_cli("scan", a_file, "t")
    assert run.stderr.endswith(f"{a_file} is not a directory, so not a replikv store\n")


# --- get --------------------------------------------------------------------------------------


def test_get_prints_the_value_as_json_with_datetimes_in_iso_form(store_dir: Path) -> None:
    run = replikv_cli("get", store_dir, "subscribers", "ada@example.com")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "name": "Ada",
        "signup": "2026-03-01T09:30:00+00:00",
        "consent": {"newsletter": True},
    }


def test_get_takes_int_and_hex_keys_as_key_type_says(store_dir: Path) -> None:
    run = replikv_cli("get", store_dir, "events", "2", "--key-type", "int")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == EVENTS[2]
    run = replikv_cli("get", store_dir, "blobs", "00ff", "--key-type", "hex")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"raw": {"$base64": "AQI="}, "ratio": "NaN"}


def test_get_of_a_missing_key_exits_1_and_says_which(store_dir: Path) -> None:
    run = replikv_cli("get", store_dir, "events", "2")  # the str "2", not the int 2
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr == (
        "replikv get: error: no key '2' in table 'events' "
        "(there is an int key 2: add --key-type int)\n"
    )
    run = replikv_cli("get", store_dir, "events", "99")  # neither a str nor an int key
    assert run.returncode == 1
    assert run.stderr == "replikv get: error: no key '99' in table 'events'\n"


def test_get_of_a_bad_int_key_is_a_usage_error(store_dir: Path) -> None:
    run = replikv_cli("get", store_dir, "events", "two", "--key-type", "int")
    assert run.returncode == 2
    assert "'two' is not an integer" in run.stderr
    assert "Traceback" not in run.stderr


def test_get_of_a_missing_table_names_the_tables_there_are(store_dir: Path) -> None:
    run = replikv_cli("get", store_dir, "templates", "welcome")
    assert run.returncode == 1
    assert "no table 'templates'" in run.stderr
    assert "(its tables: blobs, events, subscribers)" in run.stderr


# --- scan -------------------------------------------------------------------------------------


def test_scan_prints_rows_in_key_order_as_json_lines(store_dir: Path) -> None:
    run = replikv_cli("scan", store_dir, "subscribers", "--prefix", "b")
    assert run.returncode == 0, run.stderr
    assert lines(run.stdout) == [
        {
            "key": "bob@example.com",
            "value": {"name": "Bob", "signup": "2026-03-01T09:30:00+00:00", "tags": ["vip", "b2b"]},
        }
    ]
    run = replikv_cli("scan", store_dir, "subscribers", "--limit", "2")
    assert [row["key"] for row in lines(run.stdout)] == ["ada@example.com", "bob@example.com"]


def test_scan_renders_bytes_keys_and_takes_a_hex_prefix(store_dir: Path) -> None:
    run = replikv_cli("scan", store_dir, "blobs", "--prefix", "01", "--hex")
    assert run.returncode == 0, run.stderr
    assert lines(run.stdout) == [{"key": {"$base64": "AQ=="}, "value": 42}]


def test_scan_rejects_a_limit_below_one(store_dir: Path) -> None:
    run = replikv_cli("scan", store_dir, "events", "--limit", "0")
    assert run.returncode == 2
    assert "must be at least 1" in run.stderr


# --- changes ----------------------------------------------------------------------------------


def test_changes_prints_entries_after_since_as_json_lines(store_dir: Path) -> None:
    run = replikv_cli("changes", store_dir, "--since", "1")
    assert run.returncode == 0, run.stderr
    entries = lines(run.stdout)
    assert [entry["lsn"] for entry in entries] == [2, 3, 4]
    assert entries[0]["ops"] == [
        {"kind": "put", "table": "events", "key": 1, "value": {"type": "open"}},
        {"kind": "put", "table": "events", "key": 2, "value": EVENTS[2]},
    ]
    assert dt.datetime.fromisoformat(entries[0]["timestamp"]).tzinfo is not None
    run = replikv_cli("changes", store_dir, "--table", "blobs", "--limit", "1")
    assert [entry["lsn"] for entry in lines(run.stdout)] == [3]


def test_changes_follow_prints_then_ends_cleanly_on_ctrl_c(store_dir: Path) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "replikv", "changes", str(store_dir), "--follow", "--poll", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_as_from_a_terminal,
    )
    try:
        assert follower.stdout is not None
        first = [json.loads(follower.stdout.readline())["lsn"] for _ in range(4)]
        assert first == [1, 2, 3, 4]
        follower.send_signal(signal.SIGINT)
        out, err = rest_of_output(follower, TIMEOUT)
    finally:
        follower.kill()
        follower.wait(timeout=TIMEOUT)
    assert follower.returncode == 0
    assert out == ""
    assert "Traceback" not in err


def test_changes_below_the_retained_log_say_which_lsn_is_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with replikv.Store(path, segment_bytes=4096) as store:
        for i in range(300):
            store.put("t", i, "x" * 40)
        assert store.drop_log_before(200) > 0
        oldest = store.oldest_lsn
    run = replikv_cli("changes", path, "--since", "0")
    assert run.returncode == 1
    assert run.stdout == ""
    assert f"after LSN 0 are no longer retained (oldest retained LSN is {oldest})" in run.stderr
    run = replikv_cli("changes", path, "--since", str(oldest - 1), "--limit", "2")
    assert [entry["lsn"] for entry in lines(run.stdout)] == [oldest, oldest + 1]


# --- export and import --------------------------------------------------------------------------


def test_export_jsonl_then_import_gives_the_same_rows(store_dir: Path, tmp_path: Path) -> None:
    exported = tmp_path / "events.jsonl"
    run = replikv_cli("export", store_dir, "events", "-o", exported)
    assert run.returncode == 0, run.stderr
    assert lines(exported.read_text()) == [
        {"key": 1, "type": "open"},
        {"key": 2, "type": "click", "url": "https://shop.example/sale"},
    ]
    copy = tmp_path / "copy"
    run = replikv_cli("import", copy, "events", exported, "--key", "key", "--quiet")
    assert run.returncode == 0, run.stderr
    assert "imported 2 rows" in run.stderr
    with replikv.Store(copy) as store:
        assert dict(store.scan("events")) == EVENTS


def test_export_jsonl_keeps_bytes_through_import(store_dir: Path, tmp_path: Path) -> None:
    run = replikv_cli("export", store_dir, "blobs")
    assert run.returncode == 0, run.stderr
    assert lines(run.stdout) == [
        {"key": {"$base64": "AP8="}, "raw": {"$base64": "AQI="}, "ratio": "NaN"},
        {"key": {"$base64": "AQ=="}, "value": 42},
    ]
    exported = tmp_path / "blobs.jsonl"
    exported.write_text(run.stdout)
    run = replikv_cli("import", tmp_path / "copy", "blobs", exported, "--key", "key", "--quiet")
    assert run.returncode == 0, run.stderr
    with replikv.Store(tmp_path / "copy") as store:
        assert store.get("blobs", b"\x01") == {"value": 42}
        assert store.get("blobs", b"\x00\xff") == {"raw": b"\x01\x02", "ratio": "NaN"}


def test_import_says_how_many_rows_replaced_a_key_already_written(tmp_path: Path) -> None:
    # 42 and "42" are one key under --key-type str: three rows store two, the later wins.
    source = tmp_path / "mixed.jsonl"
    source.write_text('{"id": 42, "v": "int"}\n{"id": "42", "v": "str"}\n{"id": 7, "v": "x"}\n')
    argv = ("--key", "id", "--key-type", "str", "--quiet")
    run = replikv_cli("import", tmp_path / "db", "m", source, *argv)
    assert run.returncode == 0, run.stderr
    assert "imported 3 rows into 'm'" in run.stderr
    assert "2 of them added a key; 1 replaced the value of a key already written" in run.stderr
    with replikv.Store(tmp_path / "db") as store:
        assert dict(store.scan("m")) == {"42": {"v": "str"}, "7": {"v": "x"}}
    distinct = tmp_path / "distinct.jsonl"
    distinct.write_text('{"id": 1}\n{"id": 2}\n')
    run = replikv_cli("import", tmp_path / "db", "n", distinct, *argv)
    assert run.returncode == 0, run.stderr
    assert "imported 2 rows into 'n'" in run.stderr and "replaced" not in run.stderr


def test_export_csv_spells_nan_and_infinities_as_json_does(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with replikv.Store(path) as store:
        store.put("ratios", 1, {"a": float("nan"), "b": float("inf"), "c": -float("inf")})
    run = replikv_cli("export", path, "ratios", "--format", "csv")
    assert run.returncode == 0, run.stderr
    assert list(csv.DictReader(io.StringIO(run.stdout))) == [
        {"key": "1", "a": "NaN", "b": "Infinity", "c": "-Infinity"}
    ]


def test_export_csv_has_every_field_as_a_column(store_dir: Path) -> None:
    run = replikv_cli("export", store_dir, "subscribers", "--format", "csv")
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert list(rows[0]) == ["key", "name", "signup", "consent", "tags", "score"]
    assert rows[0] == {
        "key": "ada@example.com",
        "name": "Ada",
        "signup": "2026-03-01T09:30:00+00:00",
        "consent": '{"newsletter": true}',
        "tags": "",
        "score": "",
    }
    assert rows[1]["tags"] == '["vip", "b2b"]'
    assert rows[2]["score"] == "1.5"


def test_dates_print_in_iso_form_in_every_text_format(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with replikv.Store(path) as store:
        store.put("sends", "s1", {"day": dt.date(2026, 3, 1), "at": SIGNUP})
    for args in (
        ("get", path, "sends", "s1"),
        ("scan", path, "sends"),
        ("export", path, "sends"),
        ("export", path, "sends", "--format", "csv"),
        ("changes", path, "--since", "0"),
    ):
        run = replikv_cli(*args)
        assert run.returncode == 0, (args, run.stderr)
        assert "2026-03-01" in run.stdout and "2026-03-01T09:30:00+00:00" in run.stdout


def test_a_csv_export_with_a_cell_over_128_kib_imports_back(tmp_path: Path) -> None:
    path, copy, exported = tmp_path / "store", tmp_path / "copy", tmp_path / "big.csv"
    big = {"body": "x" * (512 << 10)}
    with replikv.Store(path) as store:
        store.put("templates", "welcome", big)
    run = replikv_cli("export", path, "templates", "--format", "csv", "-o", exported)
    assert run.returncode == 0, run.stderr
    run = replikv_cli("import", copy, "templates", exported, "--key", "key")
    assert run.returncode == 0, run.stderr
    with replikv.Store(copy) as store:
        assert store.get("templates", "welcome") == big


def test_import_csv_with_int_keys_one_transaction_per_batch(tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_text("id,type\n" + "".join(f"{i},open\n" for i in range(1, 6)))
    store_dir = tmp_path / "store"
    run = replikv_cli(
        "import", store_dir, "events", source, "--key", "id", "--key-type", "int",
        "--batch-rows", "2",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "5/5" in run.stderr  # the progress bar, with the file's rows as its total
    with replikv.Store(store_dir) as store:
        assert dict(store.scan("events")) == {i: {"type": "open"} for i in range(1, 6)}
        assert store.last_lsn == 3  # batches of 2, 2 and 1


BOM = "\ufeff"  # the byte order mark Excel's "CSV UTF-8" writes first


@pytest.mark.parametrize(
    ("file_name", "text"),
    [
        ("key_first.csv", f"{BOM}email,name\nana@example.com,Ana\n"),
        ("key_second.csv", f"{BOM}name,email\nAna,ana@example.com\n"),
        ("subscribers.jsonl", f'{BOM}{{"email": "ana@example.com", "name": "Ana"}}\n'),
    ],
)
def test_import_skips_a_byte_order_mark_before_the_first_column(
    tmp_path: Path, file_name: str, text: str
) -> None:
    source = tmp_path / file_name
    source.write_text(text, encoding="utf-8")
    store_dir = tmp_path / "store"
    run = replikv_cli("import", store_dir, "subs", source, "--key", "email", "--quiet")
    assert run.returncode == 0, run.stderr
    with replikv.Store(store_dir) as store:
        assert dict(store.scan("subs")) == {"ana@example.com": {"name": "Ana"}}


def test_export_parquet_then_import_keeps_datetimes(store_dir: Path, tmp_path: Path) -> None:
    exported = tmp_path / "subscribers.parquet"
    run = replikv_cli("export", store_dir, "subscribers", "--format", "parquet", "-o", exported)
    assert run.returncode == 0, run.stderr
    run = replikv_cli("import", tmp_path / "copy", "subscribers", exported, "--key", "key")
    assert run.returncode == 0, run.stderr
    with replikv.Store(tmp_path / "copy") as store:
        assert store.get("subscribers", "ada@example.com")["signup"] == SIGNUP


PREVIOUS_EXPORT = "last week's export\n"


@pytest.mark.parametrize("file_format", ["jsonl", "csv", "parquet"])
def test_a_failed_export_exits_1_and_leaves_the_previous_file_whole(
    tmp_path: Path, file_format: str
) -> None:
    path = tmp_path / "store"
    with replikv.Store(path) as store:
        store.put_many("events", [(f"e{i}", {"type": "open"}) for i in range(100)])
        store.put("events", "e99", {"key": "K1"})  # like the key column: refused on the way
    exported = tmp_path / "out" / f"events.{file_format}"
    exported.parent.mkdir()
    exported.write_text(PREVIOUS_EXPORT)
    run = replikv_cli("export", path, "events", "--format", file_format, "-o", exported)
    # 1, as import's refusal of a file without its --key column: the data does not fit.
    assert run.returncode == 1, run.stderr
    assert "has a field named 'key'" in run.stderr
    assert exported.read_text() == PREVIOUS_EXPORT
    assert list(exported.parent.iterdir()) == [exported]  # nothing half-written is left


# Ctrl-C, as from a terminal, once the export has written its first row.
INTERRUPTED_EXPORT = """
import os, signal, sys
from replikv import cli
from replikv.cli import transfer

signal.signal(signal.SIGINT, signal.default_int_handler)
records = transfer._records

def interrupted_after_one(*args):
    rows = records(*args)
    yield next(rows)
    os.kill(os.getpid(), signal.SIGINT)
    yield from rows

transfer._records = interrupted_after_one
raise SystemExit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("file_format", ["jsonl", "csv"])
def test_an_interrupted_export_leaves_the_previous_file_whole(
    tmp_path: Path, file_format: str
) -> None:
    path = tmp_path / "store"
    with replikv.Store(path) as store:
        store.put_many("events", [(i, {"type": "open"}) for i in range(10_000)])
    exported = tmp_path / "out" / f"events.{file_format}"
    exported.parent.mkdir()
    exported.write_text(PREVIOUS_EXPORT)
    argv = ["export", str(path), "events", "--format", file_format, "-o", str(exported)]
    run = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_EXPORT, *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert run.returncode == 130, run.stderr
    assert "interrupted" in run.stderr
    assert exported.read_text() == PREVIOUS_EXPORT
    assert list(exported.parent.iterdir()) == [exported]


def test_an_export_removes_what_a_killed_export_to_the_same_file_left_and_no_live_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    with replikv.Store(path) as store:
        store.put_many("events", [(i, {"type": "open", "pad": "x" * 200}) for i in range(200_000)])
    exported = tmp_path / "out" / "events.jsonl"
    exported.parent.mkdir()
    argv = [sys.executable, "-m", "replikv", "export", str(path), "events", "-o", str(exported)]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as killed:
        try:
            eventually(
                "the export to write",
                lambda: any(p.stat().st_size > 0 for p in exported.parent.glob(".*.partial")),
            )
        finally:
            killed.kill()
    [left] = exported.parent.glob(".*.partial")
    assert left.name.startswith(f".events.jsonl.{socket.gethostname()}.{killed.pid}."), left
    # Written to a moment ago, it may be another PID namespace's live export: kept.
    run = replikv_cli("export", path, "events", "-o", exported)
    assert run.returncode == 0, run.stderr
    assert left.exists()
    # Unwritten for two minutes, it is removed; another export to the file, still running
    # (this process stands for it), keeps its own however old, and odd names are left.
    host = socket.gethostname()
    running = exported.parent / f".events.jsonl.{host}.{os.getpid()}.0123abcd.partial"
    odd = exported.parent / f".events.jsonl.{host}.{'9' * 30}.0123abcd.partial"
    for old in (left, running, odd):
        old.touch()
        os.utime(old, (time.time() - 120, time.time() - 120))
    run = replikv_cli("export", path, "events", "-o", exported)
    assert run.returncode == 0, run.stderr
    assert not left.exists()
    assert sorted(exported.parent.iterdir()) == sorted([exported, running, odd])
    assert len(lines(exported.read_text())) == 200_000


def test_an_export_that_succeeds_replaces_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with replikv.Store(path) as store:
        store.put("events", 1, {"type": "open"})
    exported = tmp_path / "out" / "events.jsonl"
    exported.parent.mkdir()
    exported.write_text(PREVIOUS_EXPORT * 100)  # longer than the export: nothing of it stays
    exported.chmod(0o600)
    run = replikv_cli("export", path, "events", "-o", exported)
    assert run.returncode == 0, run.stderr
    assert lines(exported.read_text()) == [{"key": 1, "type": "open"}]
    assert exported.stat().st_mode & 0o777 == 0o600
    assert list(exported.parent.iterdir()) == [exported]


def test_export_parquet_without_pyarrow_says_what_to_install(store_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["pyarrow"] = None  # as if it were not installed
        from replikv import cli
        raise SystemExit(cli.main(["export", {str(store_dir)!r}, "subscribers",
                                   "--format", "parquet", "-o", "out.parquet"]))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=store_dir.parent,
    )
    assert run.returncode == 1
    assert "pip install 'replikv[arrow]'" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (store_dir.parent / "out.parquet").exists()


def test_import_refuses_a_file_whose_format_it_cannot_tell(tmp_path: Path) -> None:
    source = tmp_path / "events.txt"
    source.write_text("id,type\n1,open\n")
    run = replikv_cli("import", tmp_path / "store", "events", source, "--key", "id")
    assert run.returncode == 2
    assert "cannot tell the format" in run.stderr
    assert not (tmp_path / "store").exists()


def assert_import_refused(
    tmp_path: Path, file_name: str, text: str, table: str, key: str, message: str, *options: str
) -> None:
    """`replikv import` of ``text`` exits 1 saying ``message``, and writes no row."""
    source = tmp_path / file_name
    source.write_text(text)
    store_dir = tmp_path / "store"
    run = replikv_cli("import", store_dir, table, source, "--key", key, "--quiet", *options)
    assert run.returncode == 1
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    with replikv.Store(store_dir) as store:
        assert store.count(table) == 0  # the failing batch wrote nothing


def test_import_names_the_line_without_the_key_column(tmp_path: Path) -> None:
    text = '{"id": 1, "type": "open"}\n{"type": "click"}\n'
    message = "line 2 has no column 'id' (its columns: type)"
    assert_import_refused(tmp_path, "events.jsonl", text, "events", "id", message)


@pytest.mark.parametrize(
    ("line", "key_type", "message"),
    [
        (
            '{"id": 1.9}',
            "int",
            "the key 1.9 is a float; with --key-type int a key must be an integer",
        ),
        ('{"id": true}', "int", "the key True is a bool"),
        ('{"id": {"$base64": "AQI="}}', "str", "with --key-type str a key must be text"),
        # What int() forgives would merge keys that differ as text.
        ('{"id": " 12"}', "int", "the key ' 12' is not an integer"),
        ('{"id": "+5"}', "int", "the key '+5' is not an integer"),
        ('{"id": "1_000"}', "int", "the key '1_000' is not an integer"),
    ],
)
def test_import_never_changes_a_key_silently(
    tmp_path: Path, line: str, key_type: str, message: str
) -> None:
    options = ("--key-type", key_type)
    assert_import_refused(tmp_path, "events.jsonl", line + "\n", "events", "id", message, *options)


def test_import_refuses_a_line_that_is_not_json(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text('{"id": 1}\nnot json\n')
    run = replikv_cli("import", tmp_path / "store", "events", source, "--key", "id")
    assert run.returncode == 1
    assert "line 2 is not JSON" in run.stderr


def test_import_refuses_a_csv_header_that_names_a_column_twice(tmp_path: Path) -> None:
    # csv.DictReader keeps the last cell of a repeated name: the first column would vanish.
    text = "email,phone,phone\nada@example.com,111,222\n"
    message = "the header names 'phone' more than once: rename the copies"
    assert_import_refused(tmp_path, "subscribers.csv", text, "subscribers", "email", message)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_data_commands_into_a_closed_pipe_end_quietly(store_dir: Path, buffered: bool) -> None:
    # Buffered output this small fails only in the interpreter's last flush: it used to
    # print "Exception ignored ... BrokenPipeError" and exit 120.
    for args in [
        ("ls", str(store_dir)),
        ("get", str(store_dir), "subscribers", "ada@example.com"),
        ("scan", str(store_dir), "subscribers"),
        ("export", str(store_dir), "events"),
        ("changes", str(store_dir), "--since", "0"),
    ]:
        run = into_a_closed_pipe(*args, buffered=buffered, timeout=TIMEOUT)
        assert (run.returncode, run.stderr) == (0, ""), args


# --- a store another process holds --------------------------------------------------------------

HOLDER = """
import sys, time, replikv
store = replikv.Store(sys.argv[1])
print("holding", flush=True)
time.sleep(120)
"""


@pytest.fixture
def held_store(store_dir: Path) -> Iterator[tuple[Path, int]]:
    """``store_dir``, open in a child process: (its directory, the child's pid)."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "holding\n"
        yield store_dir, child.pid
    finally:
        child.kill()
        child.wait(timeout=TIMEOUT)
        if child.stdout is not None:
            child.stdout.close()


def test_store_locked_error_carries_the_holders_pid(held_store: tuple[Path, int]) -> None:
    store_dir, pid = held_store
    with pytest.raises(replikv.StoreLockedError) as raised:
        replikv.Store(store_dir)
    assert raised.value.pid == pid
    assert str(pid) in str(raised.value)


@pytest.mark.parametrize(
    "command",
    [
        ["ls"],
        ["get", "{dir}", "events", "1", "--key-type", "int"],
        ["scan", "{dir}", "events"],
        ["export", "{dir}", "events"],
        ["import", "{dir}", "events", "{file}", "--key", "id"],
        ["scrub", "{dir}"],
    ],
    ids=lambda command: command[0],
)
def test_a_command_on_a_held_store_names_the_process_holding_it(
    held_store: tuple[Path, int], command: list[str], tmp_path: Path
) -> None:
    store_dir, pid = held_store
    source = tmp_path / "rows.jsonl"
    source.write_text('{"id": 1}\n')
    args = [part.format(dir=store_dir, file=source) for part in command]
    if args == ["ls"]:
        args.append(str(store_dir))
    run = replikv_cli(*args)
    assert run.returncode == 1
    assert f"{store_dir} is open in process {pid} (" in run.stderr
    assert "time.sleep(120)" in run.stderr  # its command line, read from /proc
    assert "Traceback" not in run.stderr
    assert run.stdout == ""


@pytest.mark.parametrize("command", ["detach", "promote"])
def test_a_replication_command_on_a_held_store_names_it_without_error_numbers(
    held_store: tuple[Path, int], command: str
) -> None:
    store_dir, pid = held_store
    run = replikv_cli(command, str(store_dir))
    assert run.returncode == 1
    assert f"open in process {pid} (" in run.stderr
    # An OSError's numbers are for programs: "[Errno 11] ...: 'dir'", "(os error 11)".
    assert "[Errno" not in run.stderr and "(os error" not in run.stderr, run.stderr
    assert not run.stderr.rstrip().endswith(f"'{store_dir}'"), run.stderr


def test_status_of_an_address_nothing_listens_on_names_the_address() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    run = replikv_cli("status", address)
    assert run.returncode == 1
    assert f"cannot connect to {address}: Connection refused" in run.stderr, run.stderr
    assert "[Errno" not in run.stderr


def test_changes_reads_a_store_another_process_holds(held_store: tuple[Path, int]) -> None:
    store_dir, pid = held_store
    run = replikv_cli("changes", store_dir, "--since", "0")
    assert run.returncode == 0, run.stderr
    assert [entry["lsn"] for entry in lines(run.stdout)] == [1, 2, 3, 4]
    assert (store_dir / "LOCK").read_text() == str(pid), "the holder keeps its lock"


def test_changes_writes_nothing_in_the_store_directory(store_dir: Path) -> None:
    def files() -> dict[Path, tuple[int, int]]:
        return {
            path: (path.stat().st_size, path.stat().st_mtime_ns)
            for path in store_dir.rglob("*")
            if path.is_file()
        }

    before = files()
    run = replikv_cli("changes", store_dir, "--since", "0")
    assert run.returncode == 0, run.stderr
    assert len(lines(run.stdout)) == 4
    assert files() == before


# --- help ---------------------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from cast(dict[str, argparse.ArgumentParser], action.choices).items()


def test_every_option_of_every_command_shows_its_default_in_help() -> None:
    parser = cli._parser()
    missing = []
    commands = dict(subcommands(parser))
    assert {"ls", "get", "scan", "changes", "export", "import"} <= set(commands)
    for name, command in commands.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            shown = formatter._expand_help(action) if action.help else ""
            if "(default: " not in shown and "(required)" not in shown:
                missing.append(f"{name} {action.option_strings[0]}")
    assert missing == []


def test_help_never_shows_the_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLIKV_TOKEN", "s3cret-token")
    helps = [command.format_help() for _, command in subcommands(cli._parser())]
    assert any("$REPLIKV_TOKEN" in text for text in helps)
    assert not any("s3cret-token" in text for text in helps)


def test_status_every_prints_the_replica_header_once(capsys: pytest.CaptureFixture[str]) -> None:
    seen = dt.datetime.now(UTC)
    replica = argparse.Namespace(
        name="eu-1", kind="replica", address="127.0.0.1:7000", state="streaming",
        sync_state="async",
        sent_lsn=10, acked_lsn=9, lag_lsn=1, lag_seconds=0.01, lag_bytes=120, last_seen=seen,
    )  # fmt: skip
    replicas = cast(list[replikv.ReplicaInfo], [replica])
    header_shown = [False]
    for _ in range(3):
        _serve._print_replicas(replicas, header_shown=header_shown)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4
    assert printed[0].split()[:4] == ["name", "kind", "address", "state"]
    assert all(line.split()[0] == "eu-1" for line in printed[1:])
    assert {line.index("127.0.0.1") for line in printed[1:]} == {printed[0].index("address")}
