"""The core's events reach Python's logging, and the server commands print them."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import replikv
from polling import eventually
from test_cli_replication import first_line, running


def records(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and text in r.getMessage()]


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[replikv.Primary]:
    with (
        replikv.Store(tmp_path / "p") as store,
        replikv.Primary(store, listen="127.0.0.1:0") as serving,
    ):
        yield serving


def test_a_replica_connecting_is_an_info_record_that_names_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, primary: replikv.Primary
) -> None:
    caplog.set_level(logging.INFO, logger="replikv")
    with replikv.Replica(tmp_path / "r", primary=primary.address, name="eu-1"):
        logger = "replikv.replication.primary.admit"
        eventually("the connection logged", lambda: bool(records(caplog, logger, "connected")))
    (record,) = records(caplog, logger, "replica connected")
    assert record.levelno == logging.INFO
    assert "replica=eu-1" in record.getMessage()


def test_garbage_on_a_primary_port_is_a_warning_that_names_the_peer(
    caplog: pytest.LogCaptureFixture, primary: replikv.Primary
) -> None:
    caplog.set_level(logging.WARNING, logger="replikv")
    host, port = primary.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as peer:
        peer.sendall(b"GET / HTTP/1.1\r\n\r\n" * 8)
        peer_address = "{}:{}".format(*peer.getsockname())
        logger = "replikv.replication.primary"
        eventually("the refusal logged", lambda: bool(records(caplog, logger, "refused")))
    (record,) = records(caplog, logger, "refused")
    assert record.levelno == logging.WARNING
    assert f"peer={peer_address}" in record.getMessage()


def skipped_of(record: logging.LogRecord) -> int:
    """The count of lines a rated log line says it left out."""
    found = re.search(r"skipped=(\d+)", record.getMessage())
    assert found is not None, record.getMessage()
    return int(found.group(1))


def test_a_flood_of_garbage_connections_is_counted_each_and_logged_once_a_second(
    caplog: pytest.LogCaptureFixture, primary: replikv.Primary
) -> None:
    """A port fuzzer's thousands of connections must not write thousands of log lines:
    every refusal is counted in the primary's status, and logged at most once a second
    with the number left out since."""
    caplog.set_level(logging.WARNING, logger="replikv")
    host, port = primary.address.rsplit(":", 1)
    logger = "replikv.replication.primary"
    before = primary.rejected

    def refuse(count: int) -> None:
        for _ in range(count):
            with socket.create_connection((host, int(port)), timeout=10) as peer:
                peer.sendall(b"GET / HTTP/1.1\r\n\r\n" * 8)

    refuse(40)
    eventually("every probe refused", lambda: primary.rejected >= before + 40)
    flood = records(caplog, logger, "refused")
    # Within a second or two of connections: one line, maybe two.
    assert 1 <= len(flood) <= 3, [r.getMessage() for r in flood]
    time.sleep(1.1)
    refuse(1)
    eventually("the next line", lambda: len(records(caplog, logger, "refused")) > len(flood))
    lines = records(caplog, logger, "refused")
    assert skipped_of(lines[-1]) >= 1
    # Each line stands for itself and the ones it says it left out: every refusal.
    assert sum(1 + skipped_of(line) for line in lines) == primary.rejected - before


def test_warnings_show_on_stderr_with_pythons_defaults(tmp_path: Path) -> None:
    # Nothing configured: Python's last-resort handler prints WARNING and above.
    script = textwrap.dedent(
        f"""
        import socket, time, replikv
        with replikv.Store({str(tmp_path / "p")!r}) as store, replikv.Primary(store) as p:
            host, port = p.address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as peer:
                peer.sendall(b"not a replikv peer" * 64)
                time.sleep(1.0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "refused a replication connection" in done.stderr


def test_replikv_primary_prints_replicas_coming_and_going_on_stderr(tmp_path: Path) -> None:
    with running("primary", "--data", str(tmp_path / "p"), "--listen", "127.0.0.1:0") as p:
        match = re.search(r"on (127\.0\.0\.1:\d+)", first_line(p))
        assert match
        with running("replica", "--data", str(tmp_path / "r"), "--primary", match.group(1)):
            assert p.stderr is not None
            lines = iter(p.stderr.readline, "")
            connected = next((line for line in lines if "replica connected" in line), "")
        p.terminate()
        p.communicate(timeout=60)
    pattern = r"INFO replikv\.replication\.primary\.admit: replica connected .*replica="
    assert re.search(pattern, connected)


def test_log_level_warning_keeps_info_records_off_stderr(tmp_path: Path) -> None:
    args = ("--data", str(tmp_path / "p"), "--listen", "127.0.0.1:0", "--log-level", "warning")
    with running("primary", *args) as p:
        assert "on 127.0.0.1:" in first_line(p)
        p.terminate()
        _, stderr = p.communicate(timeout=60)
    assert "primary listening" not in stderr
