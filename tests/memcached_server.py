"""Real memcached servers for tests: each test session starts its own and stops it.

``memcached`` must be installed (``.ci/run`` installs Debian's package); a
missing binary skips on a laptop and fails when ``CI=true``. Servers listen on
127.0.0.1 on a free port, so runs of several engineers never share one.

Fixtures (made available to every test by ``tests/conftest.py``):

* ``memcached``: a server with memcached's defaults (1 MB item size limit).
* ``memcached_small``: ``-I 64k``, so chunking is exercised with small payloads.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from services import unavailable

__all__ = ["SMALL_ITEM_SIZE", "MemcachedServer", "free_port", "memcached", "memcached_small"]

#: ``-I`` of the small-item server: the smallest memcached accepts with its default slab settings.
SMALL_ITEM_SIZE = 64 * 1024


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MemcachedServer:
    """One ``memcached`` process on 127.0.0.1; :meth:`start` waits until it answers."""

    def __init__(self, *, item_size: int | None = None, memory_mb: int = 256) -> None:
        self.item_size = item_size
        self.memory_mb = memory_mb
        self.host = "127.0.0.1"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port``, as the memcached URL and ``PymemcacheClient`` take it."""
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        binary = shutil.which("memcached")
        if binary is None:
            raise FileNotFoundError("memcached")
        command = [binary, "-l", self.host, "-p", str(self.port), "-U", "0"]
        command += ["-m", str(self.memory_mb), "-t", "2", "-c", "1024"]
        if self.item_size is not None:
            # The default slab chunk (512 KiB) may not exceed the item size.
            chunk = min(self.item_size // 2, 512 * 1024)
            command += ["-I", str(self.item_size), "-o", f"slab_chunk_max={chunk}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command += ["-u", "root"]  # memcached refuses to run as root without -u
        return command

    def start(self, attempts: int = 5) -> None:
        """Start on a free port (retrying if another process takes it first)."""
        last = ""
        for _ in range(attempts):
            self.port = free_port()
            self.process = subprocess.Popen(
                self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    with socket.create_connection((self.host, self.port), timeout=0.5):
                        return
                except OSError:
                    time.sleep(0.02)
            last = self._stop_and_read()
        raise RuntimeError(f"memcached did not start: {last}")

    def _stop_and_read(self) -> str:
        process, self.process = self.process, None
        if process is None:
            return ""
        if process.poll() is None:
            process.terminate()
        try:
            _, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        return err.decode(errors="replace").strip()

    def stop(self) -> None:
        """Terminate the process (everything it held is gone)."""
        self._stop_and_read()


def _serve(item_size: int | None) -> Iterator[MemcachedServer]:
    if shutil.which("memcached") is None:
        unavailable("memcached", "the memcached binary is not installed (apt install memcached)")
    server = MemcachedServer(item_size=item_size)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def memcached() -> Iterator[MemcachedServer]:
    """A memcached with default settings for the whole test session."""
    yield from _serve(None)


@pytest.fixture(scope="session")
def memcached_small() -> Iterator[MemcachedServer]:
    """A memcached with a 64 KiB item size limit for the whole test session."""
    yield from _serve(SMALL_ITEM_SIZE)
