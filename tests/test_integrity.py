"""Issue 6, items 2 and 3: a replica's directory is read-only outside its replica, and damage
to the tables file is reported (naming table and key) instead of being returned as data."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
import replikv
from replikv import cli

TOKEN = "t0ken"
CANARY = "consent-granted-2026-11-25-canary!"


def flip_inside(path: Path, needle: bytes) -> int:
    """Flips one bit in the middle of every copy of `needle` in the file; returns how many.

    redb may keep stale copies in free pages; one of the copies is the live row.
    """
    data = bytearray(path.read_bytes())
    copies = 0
    at = data.find(needle)
    while at >= 0:
        data[at + len(needle) // 2] ^= 0x01
        copies += 1
        at = data.find(needle, at + 1)
    path.write_bytes(bytes(data))
    return copies


def damaged_store(directory: Path) -> None:
    with replikv.Store(directory) as store:
        store.put("subscribers", "ana@example.com", {"consent": CANARY})
        store.put("subscribers", "bob@example.com", {"consent": "no"})
        store.put("events", 1, {"type": "open"})
    assert flip_inside(directory / "tables.redb", CANARY.encode()) >= 1


def test_a_byte_flipped_in_a_stored_value_is_a_corruption_error_naming_table_and_key(
    tmp_path: Path,
) -> None:
    damaged_store(tmp_path / "db")
    with replikv.Store(tmp_path / "db") as store:
        with pytest.raises(replikv.CorruptionError, match=r"'subscribers'.*'ana@example\.com'"):
            store.get("subscribers", "ana@example.com")
        with pytest.raises(replikv.CorruptionError, match=r"ana@example\.com"):
            list(store.scan("subscribers"))
        with pytest.raises(replikv.CorruptionError, match=r"ana@example\.com"):
            dict(store.table("subscribers"))
        assert store.get("subscribers", "bob@example.com") == {"consent": "no"}
        assert store.get("events", 1) == {"type": "open"}
        # An existence check reads no value: the damaged row still exists.
        assert store.contains("subscribers", "ana@example.com")
        assert "ana@example.com" in store.table("subscribers")

        report = store.scrub()
        assert not report.ok
        assert report.rows_checked == 3
        assert report.tables == {"events": 1, "subscribers": 2}
        [damage] = report.damaged
        assert (damage.table, damage.key) == ("subscribers", "ana@example.com")
        assert "CRC" in damage.reason
        assert "DAMAGED" in repr(report) and "ana@example.com" in repr(report)
        assert json.loads(json.dumps(report.to_dict()))["damaged"][0]["key"] == "ana@example.com"


def test_a_damaged_row_fails_an_export_built_on_every_core_naming_its_key(
    tmp_path: Path,
) -> None:
    """More rows than one Arrow batch: the export is decoded on several threads, which check
    each row's CRC there."""
    with replikv.Store(tmp_path / "db") as store:
        store.put_many("events", [(i, {"n": i, "note": "sent"}) for i in range(70_000)])
        store.put("events", 40_000, {"n": 40_000, "note": CANARY})
    assert flip_inside(tmp_path / "db" / "tables.redb", CANARY.encode()) >= 1
    with replikv.Store(tmp_path / "db") as store:
        events = store.table("events")
        with pytest.raises(replikv.CorruptionError, match=r"'events'.*\b40000\b"):
            events.to_arrow()
        with pytest.raises(replikv.CorruptionError, match=r"'events'.*\b40000\b"):
            events.to_pandas()
        # A stream finds its schema from every row first, on every core too.
        with pytest.raises(replikv.CorruptionError, match=r"'events'.*\b40000\b"):
            pa.table(events.to_arrow_batches())
        # The rows before it export.
        assert events.to_arrow(end=40_000).num_rows == 40_000


def test_scrub_of_a_sound_store_reports_every_table_and_calls_progress(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "db") as store:
        store.put_many("events", [(i, {"n": i}) for i in range(70_000)])
        store.put("subscribers", "ana@example.com", {"n": 1})  # still in memory, not in redb
        seen: list[int] = []
        report = store.scrub(progress=seen.append)
        assert report.ok and report.damaged == []
        assert report.tables == {"events": 70_000, "subscribers": 1}
        assert report.rows_checked == 70_001 and report.lsn == store.last_lsn
        assert seen[0] == 65_536 and seen[-1] == 70_001, "progress during the scan and at its end"
        assert str(tmp_path / "db") in repr(report) and " ok:" in repr(report)
        assert report.to_dict()["ok"] is True

        def interrupt(_: int) -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            store.scrub(progress=interrupt)


def test_replikv_scrub_exits_nonzero_on_damage_and_zero_when_sound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with replikv.Store(tmp_path / "sound") as store:
        store.put("t", "k", 1)
    assert cli.main(["scrub", "--quiet", str(tmp_path / "sound")]) == 0
    assert "no damage found" in capsys.readouterr().out

    damaged_store(tmp_path / "db")
    assert cli.main(["scrub", "--quiet", str(tmp_path / "db")]) == 1
    out = capsys.readouterr().out
    assert "subscribers, key 'ana@example.com'" in out and "re-seed" in out
    assert cli.main(["scrub", "--json", str(tmp_path / "db")]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False

    assert cli.main(["scrub", str(tmp_path / "missing")]) == 1
    assert "missing does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists(), "scrub never creates a store"


def test_replikv_scrub_reports_damage_once_without_the_cores_log_line(tmp_path: Path) -> None:
    damaged_store(tmp_path / "db")
    for flags in (["--quiet"], ["--json"]):
        run = subprocess.run(
            [sys.executable, "-m", "replikv", "scrub", *flags, str(tmp_path / "db")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 1, run.stderr
        assert "ana@example.com" in run.stdout
        assert "scrub found damage" not in run.stderr, "the report on stdout says it already"


def test_a_replicas_directory_opened_as_a_store_is_read_only_until_detached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with replikv.Store(tmp_path / "primary") as source:
        source.put("subscribers", "ana@example.com", {"opted_in": True})
        with (
            replikv.Primary(source, token=TOKEN, ship_interval=0.01) as primary,
            replikv.Replica(tmp_path / "replica", primary=primary.address, token=TOKEN) as replica,
        ):
            assert replica.wait_for(source.last_lsn, timeout=30)
    with replikv.Store(tmp_path / "replica") as store:
        assert store.get("subscribers", "ana@example.com") == {"opted_in": True}
        writes: list[Callable[[], object]] = [
            lambda: store.put("subscribers", "bob@example.com", {}),
            lambda: store.delete("subscribers", "ana@example.com"),
            lambda: store.put_many("subscribers", [("bob@example.com", {})]),
            lambda: store.transaction().put("subscribers", "bob@example.com", {}),
        ]
        for write in writes:
            with pytest.raises(replikv.ReadOnlyError, match="belongs to a replica") as refused:
                write()
            assert "replikv detach" in str(refused.value)
            assert "Store.detach" in str(refused.value)
        assert store.last_lsn == 1
        assert store.read_only

    # A replica that never reached its primary is marked too: its tables were created so.
    with replikv.Replica(tmp_path / "never", primary="127.0.0.1:1", token=TOKEN):
        pass
    with replikv.Store(tmp_path / "never") as store:
        assert store.read_only

    with (
        replikv.Replica(tmp_path / "replica", primary="127.0.0.1:1", token=TOKEN),
        pytest.raises(replikv.StoreLockedError),
    ):
        replikv.Store.detach(tmp_path / "replica")
    assert cli.main(["detach", str(tmp_path / "replica")]) == 0
    assert "can never follow" in capsys.readouterr().out
    assert replikv.Store.detach(tmp_path / "replica") is False, "already detached"
    with replikv.Store(tmp_path / "replica") as store:
        assert not store.read_only
        assert store.put("subscribers", "bob@example.com", {}).lsn == 2
    with pytest.raises(replikv.StoreNotFoundError):
        replikv.Store.detach(tmp_path / "missing")


def test_replikv_replica_on_a_diverged_directory_exits_nonzero_and_says_how_to_recover(
    tmp_path: Path,
) -> None:
    with replikv.Store(tmp_path / "other") as other:
        other.put("t", "k", "a write the primary never had")
    with replikv.Store(tmp_path / "primary") as source:
        source.put("t", "k", "the primary's")
        with replikv.Primary(source, token=TOKEN) as primary:
            command = ["replica", "--data", str(tmp_path / "other"), "--primary", primary.address]
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "replikv",
                    *command,
                    "--token",
                    TOKEN,
                    "--status-every",
                    "0",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
    assert result.returncode == 1, result
    assert "diverged" in result.stderr and "1 local-only entries" in result.stderr
    assert f"replikv replica --data {tmp_path / 'other'} --resync" in result.stderr
    assert "replikv.read_diverged(path)" in result.stderr


WRITE_OVER_DAMAGE = """
import sys, replikv
def attempt(name, call):
    try:
        call()
        print(name, "ok", flush=True)
    except replikv.ReplikvError as err:
        print(name, type(err).__name__, flush=True)
try:
    store = replikv.Store(sys.argv[1])
except replikv.CorruptionError:
    print("open CorruptionError")
    sys.exit(0)
attempt("put_many", lambda: store.put_many("t", [(f"k{i:05d}", {"v": 0}) for i in range(3000)]))
attempt("put", lambda: store.put("u", "z", 1))
attempt("close", store.close)
"""


def test_writes_over_damaged_tables_fail_clearly_and_never_hang(tmp_path: Path) -> None:
    # redb panics on some damaged pages: the write that met one must fail (and close the
    # store), never leave the next writer waiting for a leader that is gone.
    base = tmp_path / "base"
    with replikv.Store(base) as store:
        store.put_many("t", [(f"k{i:05d}", {"v": i, "pad": "x" * 50}) for i in range(3000)])
        store.compact()
    pristine = (base / "tables.redb").read_bytes()
    for seed in range(8):
        data = bytearray(pristine)
        rng = random.Random(seed)
        for _ in range(200):
            data[rng.randrange(4096, len(data))] = rng.randrange(256)
        (base / "tables.redb").write_bytes(data)
        run = subprocess.run(
            [sys.executable, "-c", WRITE_OVER_DAMAGE, str(base)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        lines = run.stdout.split("\n")
        allowed = {"ok", "CorruptionError", "StoreClosed"}
        assert all(line.split()[1] in allowed for line in lines if line), (seed, lines)
        if "put_many CorruptionError" in lines:
            assert "put StoreClosed" in lines, (seed, lines)


# Every page of the tables file zeroed in turn (a disk that lost a block): prints what each
# read raised. It runs in a process of its own so that its stderr can be read.
ZEROED_PAGES = """
import json, sys
from pathlib import Path
import pyarrow as pa
import replikv
base = Path(sys.argv[1])
rows = [(f"k{i:05d}", {"i": i, "s": "v" * (i % 50)}) for i in range(2000)]
with replikv.Store(base) as store:
    for at in range(0, len(rows), 100):
        store.put_many("t", rows[at : at + 100])
pristine = (base / "tables.redb").read_bytes()
reads = [
    lambda s: list(s.scan("t")),
    lambda s: [s.get("t", key) for key, _ in rows[::97]],
    lambda s: s.table("t").to_arrow().num_rows,
    lambda s: pa.table(s.table("t").to_arrow_batches()).num_rows,
]
outcomes = set()
for page in range(1, len(pristine) // 4096):
    damaged = bytearray(pristine)
    damaged[page * 4096 : (page + 1) * 4096] = bytes(4096)
    (base / "tables.redb").write_bytes(damaged)
    try:
        with replikv.Store(base) as store:  # closing moves replayed writes in: it may fail
            for read in reads:
                try:
                    read(store)
                except replikv.CorruptionError as err:
                    outcomes.add(str(err))
    except replikv.CorruptionError as err:
        outcomes.add(str(err))
print(json.dumps(sorted(outcomes)))
"""


def test_reads_of_a_damaged_page_raise_corruption_and_never_a_panic(tmp_path: Path) -> None:
    # Each read returns the stored rows or raises CorruptionError. redb panics on some such
    # pages; that panic reached Python as "a bug in replikv", or as a PanicException from
    # exports, and once caught it still printed "panicked at" and a backtrace on stderr.
    run = subprocess.run(
        [sys.executable, "-c", ZEROED_PAGES, str(tmp_path / "base")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RUST_BACKTRACE": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    outcomes = json.loads(run.stdout)
    engine_stopped = [o for o in outcomes if "the storage engine stopped while" in o]
    assert engine_stopped, f"no page made the engine panic: {outcomes}"
    assert "panicked" not in run.stderr, run.stderr[-2000:]


UNCLEAN_WRITER = """
import os, sys, replikv
store = replikv.Store(sys.argv[1], checkpoint_entries=100_000, checkpoint_seconds=1000)
for i in range(150):
    store.put("t", i, {"v": i, "pad": "x" * 200})
store.compact()
for i in range(150, 300):
    store.put("t", i, {"v": i})
os._exit(0)  # as a kill -9 would: the tables file is not closed cleanly
"""


def test_a_tables_file_cut_short_is_a_corruption_error_not_an_os_error(tmp_path: Path) -> None:
    # A page pointer past the end of the file reads short: redb says "failed to fill whole
    # buffer", an I/O error, which reached Python as an OSError of no errno.
    base = tmp_path / "store"
    subprocess.run([sys.executable, "-c", UNCLEAN_WRITER, str(base)], check=True, timeout=60)
    tables = base / "tables.redb"
    tables.write_bytes(tables.read_bytes()[: tables.stat().st_size // 2])
    with pytest.raises(replikv.CorruptionError) as raised:
        replikv.Store(base).close()
    assert not isinstance(raised.value, OSError), raised.value


def test_damage_to_the_index_above_the_rows_never_reads_as_absent_unreported(
    tmp_path: Path,
) -> None:
    """A byte flipped in a branch page of redb's B-tree (the pages that route a lookup to
    a leaf) may send lookups of some keys to the wrong leaf: they read as absent while
    every leaf, so every CRC and every scan, is sound. Whatever the damage does, a key a
    read misses is one a scrub reports (or the store refuses it as corrupt)."""
    sound = tmp_path / "sound"
    rows = {f"user-{i:05}@example.com": {"n": i, "consent": i % 3 == 0} for i in range(3000)}
    with replikv.Store(sound) as store:
        store.put_many("subscribers", list(rows.items()))
    data = (sound / "tables.redb").read_bytes()
    page = 4096
    branch_pages = [at for at in range(0, len(data), page) if data[at] == 2]
    assert branch_pages, "a table of 3000 rows has branch pages"
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    for trial in range(48):
        damaged = shutil.copytree(sound, tmp_path / f"trial-{trial}")
        copy = bytearray(data)
        copy[rng.choice(branch_pages) + rng.randrange(1, page)] ^= 0x5A
        (damaged / "tables.redb").write_bytes(bytes(copy))
        try:
            with replikv.Store(damaged) as store:
                missed = [k for k, v in rows.items() if store.get("subscribers", k) != v]
                report = store.scrub()
        except replikv.CorruptionError:
            outcome = "refused"
        else:
            if missed:
                reported = {d.key for d in report.damaged}
                assert not report.ok, f"trial {trial}: {len(missed)} keys missed, scrub ok"
                assert set(missed) <= reported, f"trial {trial}: {missed[:3]} unreported"
            outcome = "unchanged" if report.ok else "reported"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        shutil.rmtree(damaged)
    assert outcomes.get("reported", 0) > 0, outcomes
