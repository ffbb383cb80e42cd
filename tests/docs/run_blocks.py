"""Run one page's blocks in this (fresh) interpreter: ``python run_blocks.py blocks.json``.

The JSON holds ``{"root": repository, "blocks": [...]}`` in page order, each
block with ``page``, ``line``, ``language``, ``code``, ``file`` (the path a
Python block *is*, or null) and ``test_file``. The current directory is the
page's working directory. In page order:

* a file block is written there (with ``__init__.py`` files for its packages),
  then imported; a ``test_*.py`` file is run with pytest instead;
* any other Python block runs in one namespace shared by the page;
* a shell block's commands run, are applied or are checked
  (``shell_commands.py``).

Python code is compiled under the Markdown file's name, padded so that
tracebacks point at the page's own line numbers. Prints ``ran PAGE:LINE``
after each block (and what each shell command did), and stops the servers the
page started when it ends.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shell_commands import Servers, commands, run_command


def _compile(code: str, filename: str, line: int) -> Any:
    return compile("\n" * (line - 1) + code, filename, "exec")


def _write_file(here: Path, relative: str, code: str) -> Path:
    target = here / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(code, encoding="utf-8")
    for package in target.relative_to(here).parents:
        if package != Path("."):
            (here / package / "__init__.py").touch(exist_ok=True)
    return target


def _run_pytest(here: Path, target: Path, location: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", target],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0 or " passed" not in done.stdout or "skipped" in done.stdout:
        raise RuntimeError(f"{location}: pytest did not pass\n{done.stdout}\n{done.stderr}")


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    root = Path(spec["root"])
    here = Path.cwd()
    sys.path.insert(0, str(here))
    namespace: dict[str, Any] = {"__name__": "__main__"}
    servers = Servers()
    try:
        for block in spec["blocks"]:
            location = f"{block['page']}:{block['line']}"
            if block["language"] == "shell":
                for command in commands(block["code"]):
                    print(f"  $ {command}: {run_command(command, here, servers)}", flush=True)
            elif block["file"]:
                target = _write_file(here, block["file"], block["code"])
                if block["test_file"]:
                    _run_pytest(here, target, location)
                else:
                    module = block["file"].removesuffix(".py").replace("/", ".")
                    importlib.import_module(module.removesuffix(".__init__"))
            else:
                filename = str(root / block["page"])
                exec(_compile(block["code"], filename, block["line"]), namespace)
            print(f"ran {location}", flush=True)
    finally:
        servers.stop()


if __name__ == "__main__":
    main(sys.argv[1])
