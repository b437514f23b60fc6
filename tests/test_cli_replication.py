"""replikv primary / replica / status as real processes on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import replikv

ENV = {**os.environ, "REPLIKV_TOKEN": "cli-t0ken", "PYTHONUNBUFFERED": "1"}


@contextmanager
def running(*args: str) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-m", "replikv", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=30)


def first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else "no output"
    return line


def test_primary_replica_and_status_commands_work_together(tmp_path: Path) -> None:
    with replikv.Store(tmp_path / "primary") as store:
        store.put_many("subscribers", [(f"s{i}", {"n": i}) for i in range(500)])
        checksum = store.checksum()
    with running("primary", "--data", str(tmp_path / "primary"), "--listen", "127.0.0.1:0") as p:
        line = first_line(p)
        match = re.search(r"on (127\.0\.0\.1:\d+)", line)
        assert match, line
        address = match.group(1)
        with running(
            "replica",
            "--data",
            str(tmp_path / "eu-1"),
            "--primary",
            address,
            "--status-every",
            "0.1",
        ) as r:
            assert "following" in first_line(r)
            deadline = time.monotonic() + 60
            while True:
                progress = first_line(r)
                if "streaming" in progress and "applied LSN          1" in progress:
                    break
                assert time.monotonic() < deadline, progress
            status = replikv_status(address)
            assert status.returncode == 0, status.stderr
            assert "eu-1" in status.stdout and "streaming" in status.stdout
            r.send_signal(signal.SIGTERM)
            assert r.wait(timeout=30) == 0
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
    with replikv.Store(tmp_path / "eu-1") as copy:
        assert copy.checksum() == checksum


def replikv_status(address: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Runs `replikv status ADDRESS [OPTIONS]` as a user would, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "replikv", "status", address, *options],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )


def test_status_with_a_wrong_token_fails_clearly(tmp_path: Path) -> None:
    with running("primary", "--data", str(tmp_path / "p"), "--listen", "127.0.0.1:0") as p:
        address = re.search(r"on (127\.0\.0\.1:\d+)", first_line(p)).group(1)  # type: ignore[union-attr]
        status = replikv_status(address, "--token", "wrong")
        assert status.returncode == 1
        assert "replikv status: error" in status.stderr


def test_status_gets_in_while_strangers_hold_hundreds_of_sockets_open(tmp_path: Path) -> None:
    with running("primary", "--data", str(tmp_path / "p"), "--listen", "127.0.0.1:0") as p:
        address = re.search(r"on (127\.0\.0\.1:\d+)", first_line(p)).group(1)  # type: ignore[union-attr]
        host, port = address.rsplit(":", 1)
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(300)]
        try:
            status = replikv_status(address)
            assert status.returncode == 0, status.stderr
            assert "early eof" not in status.stderr
        finally:
            for sock in idle:
                sock.close()


def test_primary_sync_options_show_in_its_banner_and_in_status(tmp_path: Path) -> None:
    sync = ("--quorum", "1", "--sync-tables", "subscribers,consent", "--on-timeout", "degrade")
    args = ("primary", "--data", str(tmp_path / "p"), "--listen", "127.0.0.1:0", *sync)
    with running(*args, "--ship-ahead") as p:
        banner = first_line(p)
        assert "quorum 1, sync tables subscribers, consent, shipping ahead" in banner, banner
        address = re.search(r"on (127\.0\.0\.1:\d+)", banner).group(1)  # type: ignore[union-attr]
        assert "sync writes unavailable" in replikv_status(address).stdout
        with running("replica", "--data", str(tmp_path / "eu-1"), "--primary", address) as r:
            assert "following" in first_line(r)
            deadline = time.monotonic() + 60
            while "sync writes ok" not in (status := replikv_status(address).stdout):
                assert time.monotonic() < deadline, status
            assert re.search(r"eu-1 .* quorum ", status), status


def test_primary_refuses_a_quorum_below_one_clearly(tmp_path: Path) -> None:
    args = ("primary", "--data", str(tmp_path / "p"), "--listen", "127.0.0.1:0", "--quorum", "0")
    with running(*args) as p:
        assert p.wait(timeout=60) == 1
        assert p.stderr is not None
        assert "quorum must be 1 or more" in p.stderr.read()
