"""Network failures reach Python as OSError subclasses that carry the errno."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest
import replikv
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
