"""Log levels as the engine records them: plain integers, the values of :mod:`logging`.

The engine stores the highest level a task logged (``log_level``) and the level
of a failure (``logLevel``). It names those values here instead of importing
:mod:`logging`, which configures handlers and locks and so does not belong in
a pure module. The numbers are the standard ones (``logging.ERROR == 40``), so
the runtime compares them with :mod:`logging`'s constants directly; a test
checks that they stay equal.
"""

from __future__ import annotations

__all__ = ["CRITICAL", "DEBUG", "ERROR", "INFO", "NOTSET", "WARNING", "level_name"]

NOTSET = 0
DEBUG = 10
INFO = 20
WARNING = 30
ERROR = 40
CRITICAL = 50

_NAMES = {
    NOTSET: "NOTSET",
    DEBUG: "DEBUG",
    INFO: "INFO",
    WARNING: "WARNING",
    ERROR: "ERROR",
    CRITICAL: "CRITICAL",
}


def level_name(level: int) -> str:
    """The name of a standard level (``40`` -> ``"ERROR"``), else ``"Level N"``.

    The same text :func:`logging.getLevelName` gives for levels no one registered.
    """
    return _NAMES.get(level, f"Level {level}")
