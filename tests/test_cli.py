"""The ``replikv`` command: ``replikv demo`` end to end, in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import replikv
from children import into_a_closed_pipe
from replikv import cli
from replikv._roles import Stop, stops_on_sigterm

SUBSCRIBERS, EVENTS, BATCH = 300, 2_000, 500
SMALL = ["--subscribers", f"{SUBSCRIBERS}", "--events", f"{EVENTS}", "--batch-size", f"{BATCH}"]
SMALL += ["--seed", "7"]
# What the demo writes after loading: one template is deleted; one consent_changed event and
# 200 latency-probe events are added.
# The replication step writes 2,000 transactions of 5 events while two replicas follow, then
# one sync write of a subscriber's profile. The cache step changes one profile's consent.
EXPECTED_ROWS = {"subscribers": SUBSCRIBERS, "templates": 5, "events": EVENTS + 1 + 200 + 10_000}
EXPECTED_LOADED = {"subscribers": SUBSCRIBERS, "templates": 6, "events": EVENTS}
# One put_many per batch, a put, a delete, the transaction, then 200 single puts.
EXPECTED_LAST_LSN = 1 + 1 + EVENTS // BATCH + 3 + 200 + 2_000 + 1 + 1

SUMMARY_ROW = re.compile(
    r"^  (?P<table>[a-z]+)\s+(?P<loaded>[\d,]+)\s+(?P<rate>[\d,]+|-)\s+(?P<rows>[\d,]+)"
    r"\s+(?P<checksum>0x[0-9a-f]{16})$",
    re.MULTILINE,
)


@dataclass(frozen=True)
class SummaryRow:
    loaded: int
    rows: int
    checksum: int


@dataclass(frozen=True)
class Run:
    result: subprocess.CompletedProcess[str]
    tmpdir: Path

    @property
    def summary(self) -> str:
        assert "\nSummary\n" in self.result.stdout, self.result.stdout
        return self.result.stdout.split("\nSummary\n", 1)[1]

    def tables(self) -> dict[str, SummaryRow]:
        return {
            match["table"]: SummaryRow(
                loaded=_number(match["loaded"]),
                rows=_number(match["rows"]),
                checksum=int(match["checksum"], 16),
            )
            for match in SUMMARY_ROW.finditer(self.summary)
        }

    def last_lsn(self) -> int:
        match = re.search(r"^  last LSN\s+([\d,]+)$", self.summary, re.MULTILINE)
        assert match, self.summary
        return _number(match[1])


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def replikv_cli(*args: str | Path, tmpdir: Path) -> Run:
    """Runs ``python -m replikv ARGS`` with its temporary files under ``tmpdir``."""
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    result = subprocess.run(
        [sys.executable, "-m", "replikv", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return Run(result, tmpdir)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One ``replikv demo`` at small sizes in a temporary store, with progress bars."""
    return replikv_cli("demo", *SMALL, tmpdir=tmp_path_factory.mktemp("tmpdir"))


@pytest.fixture(scope="module")
def kept_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    """The same demo in ``--dir`` with ``--keep`` and ``--quiet``."""
    root = tmp_path_factory.mktemp("kept")
    store_dir = root / "store"
    run = replikv_cli("demo", *SMALL, "--dir", store_dir, "--keep", "--quiet", tmpdir=root)
    return run, store_dir


def test_demo_exits_zero_and_summarises_the_rows_it_loaded(demo: Run) -> None:
    assert demo.result.returncode == 0, demo.result.stderr
    tables = demo.tables()
    assert {name: row.loaded for name, row in tables.items()} == EXPECTED_LOADED
    assert {name: row.rows for name, row in tables.items()} == EXPECTED_ROWS
    assert demo.last_lsn() == EXPECTED_LAST_LSN
    for fact in ("durable put", "median", "p99", "get", "reopen", "total time"):
        assert fact in demo.summary


def test_demo_shows_a_cache_its_hit_ratio_and_a_write_reaching_it(demo: Run) -> None:
    out = demo.result.stdout
    cache = out[out.index("10. A cache in front of the store") : out.index("11. Failover")]
    assert cache.count("<CacheNode 127.0.0.1:") == 3
    ratio = re.search(r"hit ratio (\d+\.\d)%", cache)
    assert ratio is not None and float(ratio.group(1)) > 0, cache
    assert "1 value(s) dropped" in cache
    before, after = re.findall(r"\{'newsletter': (True|False)", cache)
    assert before != after, cache


def test_demo_shows_reads_a_transaction_a_scan_and_the_change_log(demo: Run) -> None:
    out = demo.result.stdout
    for shown in (
        ">>> store.get('subscribers', ",
        ">>> with store.transaction() as tx:",
        "'consent_changed'",
        ".items(prefix=",
        ">>> len(subscribers)",
        ">>> for change in store.changes(since=",
        "delete templates['spring-sale']",
        "store.checksum() == checksum_before_close          # True",
    ):
        assert shown in out


def test_demo_leaves_no_temporary_directory_behind(demo: Run) -> None:
    assert demo.result.returncode == 0, demo.result.stderr
    assert str(demo.tmpdir) in demo.result.stdout  # the store really was created there
    assert list(demo.tmpdir.iterdir()) == []


def test_demo_writes_only_progress_bars_to_stderr(demo: Run) -> None:
    lines = [line for line in re.split(r"[\r\n]+", demo.result.stderr) if line.strip()]
    assert lines
    assert all(re.search(r"\d+/\d+ \[", line) for line in lines), demo.result.stderr
    assert "100%" in demo.result.stderr
    assert "\r" not in demo.result.stdout
    assert "100%|" not in demo.result.stdout


def test_quiet_demo_writes_nothing_to_stderr(kept_demo: tuple[Run, Path]) -> None:
    run, _ = kept_demo
    assert run.result.returncode == 0, run.result.stderr
    assert run.result.stderr == ""


def test_kept_store_opens_with_the_counts_and_checksums_the_demo_printed(
    kept_demo: tuple[Run, Path],
) -> None:
    run, store_dir = kept_demo
    assert run.result.returncode == 0, run.result.stderr
    assert f"kept in {store_dir}" in run.result.stdout
    printed = run.tables()
    with replikv.Store(store_dir) as store:
        assert store.last_lsn == run.last_lsn() == EXPECTED_LAST_LSN
        assert {name: store.count(name) for name in printed} == EXPECTED_ROWS
        assert {name: row.rows for name, row in printed.items()} == EXPECTED_ROWS
        assert store.checksum().tables == {name: row.checksum for name, row in printed.items()}
        profile = next(iter(store.table("subscribers").values()))
        assert set(profile) == {"name", "email", "country", "signup", "consent", "tags"}
        assert profile["signup"].tzinfo is not None


def test_the_same_seed_generates_the_same_data(demo: Run, kept_demo: tuple[Run, Path]) -> None:
    kept, _ = kept_demo
    assert demo.tables() == kept.tables()


def test_demo_refuses_a_dir_that_is_not_empty(tmp_path: Path) -> None:
    store_dir = tmp_path / "existing"
    store_dir.mkdir()
    (store_dir / "subscribers.csv").write_text("email\nana@example.com\n")
    run = replikv_cli("demo", *SMALL, "--dir", store_dir, tmpdir=tmp_path)
    assert run.result.returncode != 0
    assert f"--dir {store_dir} is not empty" in run.result.stderr
    assert "Traceback" not in run.result.stderr
    assert run.result.stdout == ""
    assert [p.name for p in store_dir.iterdir()] == ["subscribers.csv"]


def test_demo_in_a_dir_without_keep_removes_what_it_created(tmp_path: Path) -> None:
    new_dir, empty_dir = tmp_path / "new", tmp_path / "empty"
    empty_dir.mkdir()
    for store_dir in (new_dir, empty_dir):
        run = replikv_cli("demo", *SMALL, "--quiet", "--dir", store_dir, tmpdir=tmp_path)
        assert run.result.returncode == 0, run.result.stderr
    assert not new_dir.exists()
    assert list(empty_dir.iterdir()) == []


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_demo_into_a_closed_pipe_stops_quietly_and_removes_its_store(
    tmp_path: Path, buffered: bool
) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    run = into_a_closed_pipe("demo", *SMALL, "--quiet", buffered=buffered, env=env, timeout=120)
    assert (run.returncode, run.stderr) == (0, "")
    assert list(tmp_path.iterdir()) == []


def test_help_lists_the_demo_command(tmp_path: Path) -> None:
    run = replikv_cli("--help", tmpdir=tmp_path)
    assert run.result.returncode == 0
    assert re.search(r"^\s+demo\s", run.result.stdout, re.MULTILINE), run.result.stdout


def test_main_returns_exit_codes_instead_of_raising(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--help"]) == 0
    assert "--subscribers" in capsys.readouterr().out
    assert cli.main(["demo", "--subscribers", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err
    assert cli.main([]) == 2


@pytest.mark.parametrize("command", ["status", "follow", "switchover", "verify"])
@pytest.mark.parametrize("timeout", ["nan", "-1", "0", "inf"])
def test_a_timeout_that_is_no_duration_is_a_usage_error(
    command: str, timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    needs = {"follow": ["--primary", "127.0.0.1:2"], "switchover": ["--to", "r"]}
    args = [command, "127.0.0.1:1", *needs.get(command, []), "--timeout", timeout]
    assert cli.main(args) == 2
    assert "--timeout: must be above 0 and at most 3600" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--capacity", "--max-bytes"])
def test_a_cache_node_bound_beyond_64_bits_is_an_error_not_a_traceback(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["cache-node", "--listen", "127.0.0.1:0", option, str(2**70)]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "must fit in 64 bits" in err and "Traceback" not in err
    # The node's SIGTERM handler lasts as long as it runs: a process that forks later
    # (a multiprocessing pool) must not hand its workers a handler that only raises.
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_sigterm_while_a_server_stops_does_not_interrupt_its_cleanup() -> None:
    before = signal.getsignal(signal.SIGTERM)

    @stops_on_sigterm
    def serve() -> str:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises Stop here
        except Stop:
            os.kill(os.getpid(), signal.SIGTERM)  # a supervisor's second SIGTERM
            time.sleep(0.05)  # where its handler would run
            return "closed what was open"
        return "not stopped"

    assert serve() == "closed what was open"
    assert signal.getsignal(signal.SIGTERM) is before


def test_demo_help_says_what_the_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    listed = " ".join(capsys.readouterr().out.split())
    line = re.search(r" demo (.*?) primary serve ", listed)
    assert line and re.search(r"replica.*cache.*failover", line[1]), listed
    assert cli.main(["demo", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    acts = ["put_many", "transaction", "prefix scan", "change log", "latency", "reopen"]
    acts += ["two replicas", "sync write", "three cache nodes", "SIGKILL", "promoted", "127.0.0.1"]
    assert [act for act in acts if act not in shown] == [], shown
