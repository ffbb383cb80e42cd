"""A TCP proxy a test starts in front of a real server, to cause faults for real.

:meth:`FreezingProxy.freeze` makes it stop forwarding in both directions
while keeping every connection open and accepting new ones: a server that
hangs. :meth:`FreezingProxy.refuse` closes its listening socket, so new
connections are refused. :meth:`FreezingProxy.thaw` restores forwarding.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

__all__ = ["FreezingProxy"]


class FreezingProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` until frozen."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener: socket.socket | None = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept_loop, self._listener)

    @property
    def address(self) -> str:
        """``host:port`` of the proxy."""
        return f"127.0.0.1:{self.port}"

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._track(client)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._track(upstream)
            self._spawn(self._pump, client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._closed.is_set():
                if not self._forwarding.is_set():
                    self._forwarding.wait(0.1)  # frozen: hold the bytes, answer nothing
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.1)
                for sock in readable:
                    if not self._forwarding.is_set():
                        break
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            # ValueError: drop() or close() closed a socket under select() (its fd is -1 now).
            return
        finally:
            for sock in (client, upstream):
                sock.close()

    def freeze(self) -> None:
        """Stop forwarding: connections stay open, requests get no answer."""
        self._forwarding.clear()

    def thaw(self) -> None:
        """Forward again."""
        self._forwarding.set()

    def drop(self) -> None:
        """Close every connection now (a network cut); new ones are accepted and forwarded."""
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def refuse(self) -> None:
        """Close the listening socket: new connections are refused."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def close(self) -> None:
        """Stop everything and close every socket."""
        self._closed.set()
        self._forwarding.set()
        self.refuse()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            sock.close()
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> FreezingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
