"""The configuration graph as an SVG picture: :func:`~triggers_core.tools.render.to_dot` run
through Graphviz's ``dot`` (Debian's ``graphviz`` package).

The DOT text comes from the renderer, which generates every node identifier
and quotes every label, so a stored name cannot add DOT statements; ``dot``
writes labels into the SVG as escaped XML text. The page shows the picture in
an ``<img>`` (served with a Content-Security-Policy that forbids scripts), so
even a broken escape could not run anything. Without ``dot`` installed the
page shows the DOT text instead, and says so.

``dot`` runs with a time bound (:data:`DOT_TIMEOUT`); pictures are cached by
their DOT text (:data:`CACHE_SIZE` of them), so a page reloaded while nothing
changed costs no process.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import OrderedDict

__all__ = ["CACHE_SIZE", "DOT_TIMEOUT", "GraphUnavailable", "dot_available", "svg_of"]

#: Seconds ``dot`` may take for one graph.
DOT_TIMEOUT = 20.0
#: How many pictures are kept.
CACHE_SIZE = 64
#: Graphs larger than this (DOT characters) are not drawn: the text is shown instead.
MAX_DOT_CHARS = 2_000_000

_cache: OrderedDict[str, bytes] = OrderedDict()
_lock = threading.Lock()


class GraphUnavailable(Exception):
    """The picture cannot be drawn here; the message says why."""


def dot_available() -> bool:
    """True if Graphviz's ``dot`` is on the PATH."""
    return shutil.which("dot") is not None


def svg_of(dot_text: str) -> bytes:
    """The SVG picture of ``dot_text`` (cached); :class:`GraphUnavailable` if it cannot be drawn."""
    with _lock:
        found = _cache.get(dot_text)
        if found is not None:
            _cache.move_to_end(dot_text)
            return found
    if len(dot_text) > MAX_DOT_CHARS:
        raise GraphUnavailable(f"the graph is too large to draw ({len(dot_text):,} characters)")
    program = shutil.which("dot")
    if program is None:
        raise GraphUnavailable("Graphviz's dot is not installed (apt-get install graphviz)")
    try:
        done = subprocess.run(
            [program, "-Tsvg"],
            input=dot_text.encode("utf-8", "surrogatepass"),
            capture_output=True,
            timeout=DOT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GraphUnavailable(f"dot took longer than {DOT_TIMEOUT:g} s") from None
    except OSError as exc:
        raise GraphUnavailable(f"dot could not run: {exc}") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GraphUnavailable(f"dot failed: {message[0] if message else done.returncode}")
    svg = done.stdout
    with _lock:
        _cache[dot_text] = svg
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return svg
