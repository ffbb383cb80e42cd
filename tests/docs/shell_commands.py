"""Shell blocks of the docs: which commands the executed-docs test runs, and which it checks.

Each command of a ``bash`` block (continuation lines joined, ``a && b`` split,
comments dropped) is one of these, decided by the command alone:

``pip install ...``
    **Checked, not run** (installing would change the environment the test
    runs in): every requirement must be a checkout of this project
    (``-e '.[extras]'``) with extras ``pyproject.toml`` declares, or a package
    of :data:`TOOLS`. The distribution ``celery-triggers`` is not on PyPI yet
    (:data:`PUBLISHED`), so a line naming it would fail for a reader.
``nox -s SESSION ...``
    **Checked**: each session exists in ``noxfile.py``. The README's first
    command, ``pip install nox && nox -s example``, is run for real, in a fresh
    virtualenv, by ``test_readme_first_screen.py``; ``nox -s tests`` would run
    this whole suite.
``export NAME=VALUE``
    **Applied**: the page's later blocks (Python and shell) see the variable.
a server the page starts (``memcached ...``)
    **Started** in the background, in the page's working directory, waited
    for on its port, and stopped when the page ends.
anything else
    **Run** with bash in the page's working directory (``python`` is this
    interpreter); it must exit 0.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

__all__ = ["TOOLS", "Servers", "check_pip_install", "commands", "run_command"]

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "celery-triggers"
#: Whether ``pip install celery-triggers`` works for a reader (the package index has it).
PUBLISHED = False
#: Packages the docs tell a reader to install besides this project (tools, test
#: libraries, a cache's client).
TOOLS = {"nox", "pytest", "hypothesis", "redis", "django-redis", "opentelemetry-sdk", "httpx"}
#: Programs that are servers: started in the background for the rest of the page.
SERVER_PORTS = {"memcached": ("-p", 11211)}
TIMEOUT = 120
_REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9._-]+|\.)(?:\[(?P<extras>[^\]]*)\])?$")


def commands(code: str) -> list[str]:
    """The commands of a shell block, in order."""
    joined = re.sub(r"\\\n", " ", code)
    out: list[str] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        out.extend(part.strip() for part in line.split("&&") if part.strip())
    return out


def declared_extras() -> set[str]:
    """The extras ``pyproject.toml`` declares."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(pyproject["project"]["optional-dependencies"])


def nox_sessions() -> set[str]:
    """The sessions ``noxfile.py`` defines (functions decorated with ``nox.session``)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if ast.unparse(target) == "nox.session":
                    found.add(node.name)
    return found


def check_pip_install(command: str) -> str:
    """Raise ``ValueError`` unless every requirement of ``pip install ...`` is one we know."""
    argv = shlex.split(command, comments=True)
    editable = False
    checked = []
    for arg in argv[2:]:
        if arg in ("-e", "--editable"):
            editable = True
            continue
        if arg.startswith("-"):
            raise ValueError(f"{command!r}: the test does not know the option {arg!r}")
        match = _REQUIREMENT.match(arg)
        if match is None:
            raise ValueError(f"{command!r}: {arg!r} is no requirement the test can check")
        name, extras = match["name"], match["extras"]
        wanted = {e.strip() for e in extras.split(",")} if extras else set()
        if name == ".":
            if not editable:
                raise ValueError(f"{command!r}: install a checkout with -e '.[...]'")
        elif name in TOOLS and not wanted:
            pass
        elif name != DISTRIBUTION:
            raise ValueError(f"{command!r}: {name!r} is not this project ({DISTRIBUTION!r})")
        elif not PUBLISHED:
            raise ValueError(
                f"{command!r}: {DISTRIBUTION!r} is not on PyPI yet, so pip finds no such "
                "distribution; install the checkout: pip install -e '.[EXTRAS]'"
            )
        unknown = wanted - declared_extras()
        if unknown:
            raise ValueError(f"{command!r}: pyproject.toml declares no extra {sorted(unknown)}")
        editable = False
        checked.append(arg)
    if not checked:
        raise ValueError(f"{command!r} installs nothing")
    return f"checked: {', '.join(checked)} (distribution and extras in pyproject.toml)"


def check_nox(command: str) -> str:
    """Raise ``ValueError`` unless ``nox -s a b`` names sessions of ``noxfile.py``."""
    argv = shlex.split(command, comments=True)
    if len(argv) < 3 or argv[1] != "-s":
        raise ValueError(f"{command!r}: expected nox -s SESSION...")
    missing = set(argv[2:]) - nox_sessions()
    if missing:
        raise ValueError(f"{command!r}: noxfile.py has no session {sorted(missing)}")
    return f"checked: noxfile.py has the sessions {', '.join(argv[2:])}"


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Servers:
    """Servers a page started; :meth:`stop` ends them (the runner calls it at the end)."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], cwd: Path, env: dict[str, str]) -> str:
        flag, port = SERVER_PORTS[argv[0]]
        if flag in argv:
            port = int(argv[argv.index(flag) + 1])
        if _port_open(port):
            raise RuntimeError(f"{shlex.join(argv)}: something already listens on port {port}")
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.processes.append(process)
        deadline = time.monotonic() + 10
        while not _port_open(port):
            if process.poll() is not None:
                error = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RuntimeError(f"{shlex.join(argv)} exited with {process.returncode}: {error}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{shlex.join(argv)} does not listen on port {port}")
            time.sleep(0.05)
        return f"started in the background on port {port}"

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def run_command(command: str, cwd: Path, servers: Servers) -> str:
    """Run, apply or check one command (see the module docstring); say which."""
    argv = shlex.split(command, comments=True)
    if argv[:2] == ["pip", "install"]:
        return check_pip_install(command)
    if argv[0] == "nox":
        return check_nox(command)
    if argv[0] == "export":
        for assignment in argv[1:]:
            name, sep, value = assignment.partition("=")
            if not sep:
                raise ValueError(f"{command!r}: expected export NAME=VALUE")
            os.environ[name] = value
        return "applied to the page's environment"
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if argv[0] in SERVER_PORTS:
        return servers.start(argv, cwd, env)
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{command!r} exited with {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return "ran" + (f": {done.stdout.strip().splitlines()[-1]}" if done.stdout.strip() else "")
