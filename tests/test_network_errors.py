"""Network failures reach Python as OSError subclasses that carry the errno."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest
import replikv
from polling import eventually
from replikv import exceptions
from replikv._core import fetch_status


def test_listening_on_a_port_in_use_is_an_os_error_with_its_errno(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with replikv.Store(tmp_path / "s") as store, pytest.raises(replikv.NetworkError) as info:
            replikv.Primary(store, listen=address)
    assert isinstance(info.value, OSError)
    assert info.value.errno == errno.EADDRINUSE
    assert address in str(info.value)


def test_asking_a_closed_port_for_status_is_a_connection_error_not_a_timeout() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(replikv.NetworkError) as info:
        fetch_status(f"127.0.0.1:{port}", timeout=5.0)
    assert info.value.errno == errno.ECONNREFUSED
    assert not isinstance(info.value, TimeoutError)


def test_a_peer_that_never_answers_is_a_network_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(replikv.NetworkTimeout) as info:
            fetch_status(address, timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert info.value.errno == errno.ETIMEDOUT


def test_the_port_of_another_service_is_named_as_not_a_replikv_one() -> None:
    # A cache node answers the Redis protocol: it waits for a command, as the client waits
    # for a challenge.
    with replikv.CacheNode() as node, pytest.raises(replikv.NetworkTimeout) as info:
        fetch_status(node.address, timeout=0.3)
    assert f"{node.address} took the connection but sent no replikv challenge" in str(info.value)
    assert "is it a replikv primary's" in str(info.value)


def test_a_replica_aimed_at_another_service_says_so_in_its_status(tmp_path: Path) -> None:
    # It waits for a challenge a replikv server sends at once, not for the whole handshake.
    with (
        replikv.CacheNode() as node,
        replikv.Replica(tmp_path / "replica", primary=node.address) as replica,
    ):
        eventually(
            "the replica to give up on the cache node",
            lambda: replica.status().last_error is not None,
        )
        error = replica.status().last_error
        assert error is not None
        assert f"{node.address} took the connection but sent no replikv challenge" in error
        # It gave up after the challenge's own wait, not the whole 10 s handshake's.
        assert "within 3s" in error
        assert replica.status().state != "streaming"


@pytest.mark.parametrize(
    "address", ["localhost", "http://127.0.0.1:7400", "127.0.0.1:7400:1", "127.0.0.1:99999"]
)
def test_an_address_that_is_not_host_and_port_is_refused_before_anything_starts(
    tmp_path: Path, address: str
) -> None:
    with pytest.raises(ValueError, match="not an address to connect to"):
        replikv.Replica(tmp_path / "r", primary=address)
    assert not (tmp_path / "r").exists(), "no store was opened for nothing"
    with pytest.raises(ValueError, match="not an address to connect to"):
        replikv.CacheNode(follow=address)
    with (
        replikv.Store(tmp_path / "p") as store,
        replikv.Primary(store) as primary,
        replikv.Replica(tmp_path / "ok", primary=primary.address) as replica,
    ):
        with pytest.raises(ValueError, match="not an address to connect to"):
            replica.follow(address)
        assert replica.wait_for(store.put("t", 1, 1).lsn, timeout=30), "it follows on"


def test_an_os_failure_without_an_errno_does_not_claim_errno_0(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("in the way")
    with pytest.raises(OSError) as info:
        replikv.Store(tmp_path / "a-file" / "store")
    assert "Errno 0" not in str(info.value)
    assert info.value.errno != 0
    # A file given as the store's directory: what is wrong, and where, in the message.
    with pytest.raises(OSError) as info:
        replikv.Store(tmp_path / "a-file")
    assert "None" not in str(info.value), str(info.value)
    assert info.value.errno == errno.ENOTDIR and "Not a directory" in str(info.value)
    assert info.value.filename == str(tmp_path / "a-file")


def test_strangers_holding_a_replicas_member_port_open_hold_few_descriptors(
    tmp_path: Path,
) -> None:
    """Idle connections to a replica's member port displace each other (16 at most wait
    for their hello), as at a primary's port: each held a descriptor for 10 s, and a
    thousand of them left the store no descriptor for its next log segment."""
    fds = Path("/proc/self/fd")
    with (
        replikv.Store(tmp_path / "p") as store,
        replikv.Primary(store) as primary,
        replikv.Replica(tmp_path / "r", primary=primary.address, listen="127.0.0.1:0") as replica,
    ):
        assert replica.listen_address is not None
        host, port = replica.listen_address.rsplit(":", 1)
        before = len(list(fds.iterdir()))
        strangers = [socket.create_connection((host, int(port)), timeout=10) for _ in range(64)]
        try:
            # Ours are 64; the replica's side keeps at most 16 of theirs (well before the
            # 10 s a connection has for its hello).
            eventually(
                "the oldest strangers to be displaced",
                lambda: len(list(fds.iterdir())) <= before + 64 + 16 + 4,
                timeout=8,
            )
            assert replica.wait_for(store.put("t", 1, 1).lsn, timeout=30)
        finally:
            for sock in strangers:
                sock.close()


def test_an_os_failure_derives_from_the_os_error_subclass_python_gives_its_errno(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("in the way")
    with pytest.raises(NotADirectoryError) as info:
        replikv.Store(tmp_path / "a-file" / "store")
    assert isinstance(info.value, replikv.StoreNotADirectoryError)
    assert info.value.errno == errno.ENOTDIR
    assert info.value.filename == str(tmp_path / "a-file" / "store")
    (tmp_path / "odd" / "LOCK").mkdir(parents=True)  # the lock file is a directory
    with pytest.raises(IsADirectoryError) as held_as_a_file:
        replikv.Store(tmp_path / "odd")
    assert isinstance(held_as_a_file.value, replikv.StoreIsADirectoryError)
    # Each errno gets the class OSError(errno, ...) gets, as a ReplikvOSError too; an
    # errno it leaves plain (a full disk) stays a plain ReplikvOSError.
    for code in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.EEXIST):
        raised = exceptions._os_error(code, "a failure", "/some/path")
        assert isinstance(raised, type(OSError(code, "a failure")))
        assert isinstance(raised, replikv.ReplikvOSError) and raised.errno == code
    assert type(exceptions._os_error(errno.ENOSPC, "full")) is replikv.ReplikvOSError


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1", "127.0.0.1:99999", ":0"])
def test_a_listen_address_that_is_not_host_and_port_is_a_value_error(
    tmp_path: Path, address: str
) -> None:
    refused = "not an address to listen on"
    with replikv.Store(tmp_path / "s") as store:
        with pytest.raises(ValueError, match=refused):
            replikv.Primary(store, listen=address)
        # The refused one started nothing: another serves the store.
        with replikv.Primary(store) as primary:
            assert primary.store.put("t", 1, 1).lsn == 1
    with pytest.raises(ValueError, match=refused):
        replikv.CacheNode(address)
    with pytest.raises(ValueError, match=refused):
        replikv.Replica(tmp_path / "r", primary="127.0.0.1:1", listen=address)
    assert not (tmp_path / "r").exists(), "no store was opened for nothing"
