"""The memcached backend of the benchmarks: a server of our own (or the one at
``TRIGGERS_BENCH_MEMCACHED_URL``), ``MemcachedStorage`` on it, and its version."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.common import StorageFactory

#: A memcached to use instead of starting one (``off``: leave memcached out).
MEMCACHED_URL_ENV = "TRIGGERS_BENCH_MEMCACHED_URL"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def memcached_process() -> Iterator[str]:
    """A ``memcached`` of our own on 127.0.0.1 (1 GB, default item size); yields its URL."""
    port = _free_port()
    command = [shutil.which("memcached") or "memcached", "-l", "127.0.0.1", "-p", str(port)]
    command += ["-U", "0", "-m", "1024", "-t", "2", "-c", "1024"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command += ["-u", "root"]  # memcached refuses to run as root without -u
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"memcached did not start ({' '.join(command)})") from None
                time.sleep(0.02)
        yield f"memcached://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def memcached_backend(url: str | None) -> Iterator[StorageFactory]:
    """Sessions in memcached: the server at ``url``, or a fresh one of our own."""
    from triggers_backends.memcached import (  # noqa: PLC0415 - optional extra
        MemcachedStorage,
        close_clients,
    )

    with contextlib.ExitStack() as stack:
        if url is None:
            url = stack.enter_context(memcached_process())
        prefix = f"bench{uuid.uuid4().hex[:8]}:"
        stack.callback(close_clients)
        yield lambda session: MemcachedStorage(session, url, prefix=prefix)


def memcached_version() -> str | None:
    """The version of the memcached the benchmarks use (the server's, or the binary's)."""
    url = os.environ.get(MEMCACHED_URL_ENV)
    if url == "off":
        return None
    try:
        if url is None:
            done = subprocess.run(
                ["memcached", "-V"], capture_output=True, text=True, timeout=10, check=True
            )
            return done.stdout.strip()
        from pymemcache.client.base import Client  # noqa: PLC0415 - optional extra

        from triggers_backends.memcached import parse_url  # noqa: PLC0415
        from triggers_backends.pymemcache_client import parse_servers  # noqa: PLC0415

        client = Client(parse_servers(parse_url(url)[0])[0], connect_timeout=1, timeout=1)
        try:
            return f"memcached {client.version().decode()}"
        finally:
            client.close()
    except Exception:
        return None
