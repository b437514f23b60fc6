"""replikv primary / replica / status as real processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import replikv
from children import into_a_closed_pipe
from replikv.cli import main
from test_replication import crc32c

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


def replikv_primary(data: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``replikv primary --data DATA OPTIONS`` run to its end (one that fails to start)."""
    return replikv_cli_run("primary", "--data", data, *options)


def replikv_cli_run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``replikv ARGS`` run to its end (a server that fails to start)."""
    return subprocess.run(
        [sys.executable, "-m", "replikv", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )


@contextmanager
def port_in_use() -> Iterator[str]:
    """An address on 127.0.0.1 that a listening socket holds."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        yield f"127.0.0.1:{taken.getsockname()[1]}"


@pytest.mark.parametrize("failure", ["quorum 0", "port in use"])
def test_a_primary_that_fails_to_start_leaves_no_new_store_behind(
    tmp_path: Path, failure: str
) -> None:
    mistyped = tmp_path / "mistyped" / "primary"  # its parent is new too
    with port_in_use() as taken:
        if failure == "quorum 0":
            run = replikv_primary(mistyped, "--listen", "127.0.0.1:0", "--quorum", "0")
        else:
            run = replikv_primary(mistyped, "--listen", taken)
    assert run.returncode == 1, run.stderr
    assert "replikv primary: error:" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_replica_that_fails_to_start_leaves_no_new_store_behind_but_a_held_one_alone(
    tmp_path: Path,
) -> None:
    mistyped = tmp_path / "mistyped" / "replica"
    with port_in_use() as taken:
        run = replikv_cli_run(
            "replica", "--data", mistyped, "--primary", "127.0.0.1:9", "--listen", taken
        )
    assert run.returncode == 1, run.stderr
    assert "replikv replica: error:" in run.stderr
    assert list(tmp_path.iterdir()) == []
    # A store another process holds is that process's, even one it just created.
    with replikv.Store(tmp_path / "held") as held:
        held.put("subscribers", "ana@example.com", {"name": "Ana"})
        run = replikv_cli_run("replica", "--data", held.path, "--primary", "127.0.0.1:9")
        assert run.returncode == 1, run.stderr
        assert "replikv replica: error:" in run.stderr
        assert held.get("subscribers", "ana@example.com") == {"name": "Ana"}
    assert (tmp_path / "held" / "tables.redb").is_file()


def test_a_primary_that_fails_to_start_leaves_a_given_store_or_empty_directory_as_it_was(
    tmp_path: Path,
) -> None:
    with replikv.Store(tmp_path / "store") as store:
        store.put("subscribers", "ana@example.com", {"name": "Ana"})
    (tmp_path / "empty").mkdir()
    for data in (tmp_path / "store", tmp_path / "empty"):
        run = replikv_primary(data, "--listen", "127.0.0.1:0", "--quorum", "0")
        assert run.returncode == 1, run.stderr
    with replikv.Store(tmp_path / "store") as store:
        assert dict(store.scan("subscribers")) == {"ana@example.com": {"name": "Ana"}}
    assert list((tmp_path / "empty").iterdir()) == []


BUFFERING = pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])


@BUFFERING
def test_verify_and_status_into_a_closed_pipe_end_quietly_with_their_exit_codes(
    tmp_path: Path, buffered: bool
) -> None:
    token = ENV["REPLIKV_TOKEN"]
    with (
        replikv.Store(tmp_path / "p") as store,
        replikv.Primary(store, listen="127.0.0.1:0", token=token) as primary,
        replikv.CacheNode(token=token) as node,
    ):
        for args, code in [
            # verify's code is what it found: 3, no replica to compare (1 is "differs").
            (("verify", primary.address), 3),
            (("status", primary.address), 0),
            (("status", node.address), 0),
        ]:
            run = into_a_closed_pipe(*args, buffered=buffered, env=ENV)
            assert (run.returncode, run.stderr) == (code, ""), args


@BUFFERING
def test_servers_into_a_closed_pipe_stop_quietly(tmp_path: Path, buffered: bool) -> None:
    quiet = ("--log-level", "off")
    token = ENV["REPLIKV_TOKEN"]
    with (
        replikv.Store(tmp_path / "p") as store,
        replikv.Primary(store, listen="127.0.0.1:0", token=token) as primary,
    ):
        for args in [
            ("primary", "--data", str(tmp_path / "p2"), "--listen", "127.0.0.1:0", *quiet),
            ("replica", "--data", str(tmp_path / "r"), "--primary", primary.address, *quiet),
            ("cache-node", "--listen", "127.0.0.1:0", *quiet),
        ]:
            run = into_a_closed_pipe(*args, buffered=buffered, env=ENV)
            assert (run.returncode, run.stderr) == (0, ""), args


STATUS_FRAME = 9
LAST_SEEN_OUT_OF_RANGE = (1 << 64) - 1


def read_exactly(sock: socket.socket, count: int) -> bytes:
    """``count`` bytes, or b"" if the connection ends first."""
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def read_frame(sock: socket.socket) -> bytes:
    """One whole frame (its length field, body and CRC), or b"" at the end."""
    header = read_exactly(sock, 4)
    body = read_exactly(sock, int.from_bytes(header, "big")) if header else b""
    return header + body if body else b""


def with_last_seen_out_of_range(frame: bytes) -> bytes:
    """A status frame whose replicas were last seen 2^64-1 ms after 1970 (every MessagePack
    uint64 within a day of now is a last_seen), its CRC made good again."""
    if frame[5] != STATUS_FRAME:
        return frame
    body = bytearray(frame[4:-4])
    now = time.time() * 1000
    for at in range(len(body) - 8):
        if body[at] == 0xCF and abs(int.from_bytes(body[at + 1 : at + 9], "big") - now) < 86.4e6:
            body[at + 1 : at + 9] = LAST_SEEN_OUT_OF_RANGE.to_bytes(8, "big")
    return frame[:4] + bytes(body) + crc32c(bytes(body)).to_bytes(4, "big")


@contextmanager
def relay_with_last_seen_out_of_range(target: str) -> Iterator[str]:
    """A relay on 127.0.0.1 to the primary at ``target`` that rewrites its status reports as
    a primary with a broken clock, or a forged frame (frames carry a CRC, not a MAC), could
    send them. Yields the relay's address."""
    listener = socket.create_server(("127.0.0.1", 0))
    host, port = target.rsplit(":", 1)

    def forward(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
            sink.shutdown(socket.SHUT_WR)

    def relay(client: socket.socket) -> None:
        with client, socket.create_connection((host, int(port)), timeout=30) as upstream:
            asking = threading.Thread(target=forward, args=(client, upstream), daemon=True)
            asking.start()
            with contextlib.suppress(OSError):
                while frame := read_frame(upstream):
                    client.sendall(with_last_seen_out_of_range(frame))
                client.shutdown(socket.SHUT_WR)
            asking.join(timeout=30)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                threading.Thread(target=relay, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_status_shows_a_last_seen_no_date_can_hold_as_unknown(tmp_path: Path) -> None:
    token = ENV["REPLIKV_TOKEN"]
    store = replikv.Store(tmp_path / "p")
    with (
        replikv.Primary(store, token=token) as primary,
        replikv.Replica(tmp_path / "eu-1", primary=primary.address, token=token) as replica,
    ):
        assert replica.wait_for(store.put("t", "k", 1).lsn, timeout=30)
        with relay_with_last_seen_out_of_range(primary.address) as relay:
            status = replikv_status(relay)
            assert status.returncode == 0, status.stderr
            assert re.search(r"eu-1 .* unknown\s*$", status.stdout, re.MULTILINE), status.stdout
            info = replikv._core.fetch_status(relay, token=token).replicas[0]
            assert info.last_seen is None and info.to_dict()["last_seen"] is None
    store.close()


@pytest.mark.parametrize("command", ["status", "verify"])
def test_status_and_verify_at_a_replicas_member_port_point_to_its_primary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    token = ENV["REPLIKV_TOKEN"]
    store = replikv.Store(tmp_path / "p")
    with (
        replikv.Primary(store, token=token) as primary,
        replikv.Replica(
            tmp_path / "eu-1", primary=primary.address, token=token, listen="127.0.0.1:0"
        ) as replica,
    ):
        member_port = replica.listen_address
        assert member_port is not None
        assert main([command, member_port, "--token", token, "--timeout", "10"]) != 0
        told = capsys.readouterr().err
        assert "the member port of replica 'eu-1'" in told, told
        assert f"point replikv {command} at its primary's address instead, {primary.address}" in (
            told
        )
        # Without the token it is told what the port is, and not where the primary is.
        assert main([command, member_port, "--token", "wrong", "--timeout", "10"]) != 0
        told = capsys.readouterr().err
        assert f"point replikv {command} at its primary's address instead" in told, told
        assert primary.address not in told and "eu-1" not in told
    store.close()
