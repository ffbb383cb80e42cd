"""Run one page's code blocks in this (fresh) interpreter: ``python run_blocks.py blocks.json``.

The JSON holds ``{"root": repository, "blocks": [...]}`` in page order, each
block with ``page``, ``line``, ``code``, ``setup``, ``setup_line`` and
``file`` (the path the block *is*, or null). File blocks are written to the
current directory first (with ``__init__.py`` files for their packages) and
imported in order; every other block runs in one shared namespace. Code is
compiled under the Markdown file's name, padded so that tracebacks point at
the page's own line numbers. Prints ``ran PAGE:LINE`` after each block.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any


def _compile(code: str, filename: str, line: int) -> Any:
    return compile("\n" * (line - 1) + code, filename, "exec")


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    root = Path(spec["root"])
    here = Path.cwd()
    sys.path.insert(0, str(here))
    for block in spec["blocks"]:
        if block["file"]:
            target = here / block["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block["code"], encoding="utf-8")
            for package in target.relative_to(here).parents:
                if package != Path("."):
                    (here / package / "__init__.py").touch(exist_ok=True)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in spec["blocks"]:
        filename = str(root / block["page"])
        if block["setup"]:
            exec(_compile(block["setup"], filename, block["setup_line"]), namespace)
        if block["file"]:
            module = block["file"].removesuffix(".py").replace("/", ".")
            importlib.import_module(module.removesuffix(".__init__"))
        else:
            exec(_compile(block["code"], filename, block["line"]), namespace)
        print(f"ran {block['page']}:{block['line']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
