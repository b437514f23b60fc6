"""A TCP proxy on 127.0.0.1 for fault tests: it forwards to a target and can cut the link
(drop every connection and refuse new ones), stall it (keep the sockets, forward nothing),
delay every chunk it forwards, cap its rate, or leave a connection half-open when one side
closes (as a host that vanished without a word leaves it)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType


class Proxy:
    """Listens on 127.0.0.1:<free port> and forwards to ``target`` (``host:port``)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._cut = False
        self._closed = False
        self.delay = 0.0
        # Bytes per second each direction forwards at most (0: no limit).
        self.rate = 0.0
        self.stalled = False
        # When one side closes, the other is left open and silent, not shut down.
        self.half_open = False
        # When forwarding one way fails because its receiver is gone, the other way still
        # delivers what it holds before both close, as a peer that died after writing
        # leaves its last bytes readable before the end of its stream.
        self.drain = False
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def cut(self) -> None:
        """Drops every open connection and refuses new ones until ``restore``."""
        with self._lock:
            self._cut = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        """Lets connections through again."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self.cut()
        with self._lock:
            self._closed = True
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                refuse = self._cut
            if refuse:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                pump = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                pump.start()
                self._threads.append(pump)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        sink_gone = False
        with contextlib.suppress(OSError):
            source.settimeout(None)
            while chunk := source.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                while self.stalled:  # keep the sockets open, forward nothing
                    time.sleep(0.01)
                sink_gone = True
                sink.sendall(chunk)
                sink_gone = False
                if self.rate:
                    time.sleep(len(chunk) / self.rate)
        if self.half_open or (sink_gone and self.drain):
            return
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
