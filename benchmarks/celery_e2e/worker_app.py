"""What the benchmark's workers load: ``celery -A benchmarks.celery_e2e.worker_app worker``.

Configured by :class:`~benchmarks.celery_e2e.app.Settings` in the environment.
Besides the app, it hooks Celery's signals:

* ``worker_ready``: writes ``ready-<node>`` in the output directory.
* ``worker_process_init`` (each pool process): starts the counters of
  :mod:`~benchmarks.celery_e2e.instrument` from zero and, on the first node
  when profiling, prepares a cProfile profiler.
* ``task_prerun`` / ``task_postrun``: attribute the counts to the measured run
  the message's session belongs to; the profiler starts after the first message
  of a measured run (so every profiled task is whole) and runs until the
  process exits.
* ``worker_process_shutdown`` (a pool process leaving on a warm shutdown):
  writes ``counts-<node>-<pid>.json`` and the profile.
"""

from __future__ import annotations

import cProfile
import os
import time
from typing import Any

from celery import bootsteps, signals

from benchmarks.celery_e2e import instrument
from benchmarks.celery_e2e.app import NODE_ENV, SETTINGS_ENV, Settings, make_app, setup_django
from benchmarks.celery_e2e.workload import WARMUP_LABEL, label_of

#: Profile clocks: the wall clock shows waits (round trips, the 5 ms sleep); the CPU clock
#: shows what the process computes. Pool process ``i`` of the first node uses clock ``i % 2``.
PROFILE_CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}

_settings = Settings.from_env()
if _settings is None:
    raise RuntimeError(
        f"{SETTINGS_ENV} is not set: this module is the app of the benchmark's workers, "
        "started by python -m benchmarks.celery_e2e"
    )
settings: Settings = _settings
setup_django()
app = make_app(settings)


class WakeUp(bootsteps.StartStopStep):  # type: ignore[misc] # celery is untyped
    """Wake the event loop twice a second, so a warm shutdown is noticed at once (AMQP)."""

    requires = ("celery.worker.components:Hub",)

    def start(self, worker: Any) -> None:
        if getattr(worker, "hub", None) is not None:
            worker.hub.call_repeatedly(0.5, _noop)


def _noop() -> None:
    pass


app.steps["worker"].add(WakeUp)


class _Process:
    """What this pool process knows about itself."""

    node = ""
    index = -1
    clock = ""
    profiler: cProfile.Profile | None = None
    profiling = False
    profiled_tasks = 0


@signals.worker_ready.connect
def _ready(**_kwargs: Any) -> None:
    (settings.out_path / f"ready-{os.environ.get(NODE_ENV, 'node')}").write_text(str(os.getpid()))


@signals.worker_process_init.connect
def _process_init(**_kwargs: Any) -> None:
    from billiard.process import current_process  # noqa: PLC0415 - a pool process only

    instrument.reset()
    instrument.install(settings.counting)
    _Process.node = os.environ.get(NODE_ENV, "")
    _Process.index = int(getattr(current_process(), "index", -1) or 0)
    clocks = [c for c in settings.profile.split(",") if c]
    if clocks and _Process.node == "node-1":
        _Process.clock = clocks[_Process.index % len(clocks)]
        _Process.profiler = cProfile.Profile(PROFILE_CLOCKS[_Process.clock])


@signals.task_prerun.connect
def _prerun(kwargs: Any = None, **_kwargs: Any) -> None:
    label = label_of(str((kwargs or {}).get("session", "")))
    instrument.begin(label)
    if _Process.profiling:
        _Process.profiled_tasks += 1


@signals.task_postrun.connect
def _postrun(kwargs: Any = None, **_kwargs: Any) -> None:
    instrument.end(tasks=1)
    label = label_of(str((kwargs or {}).get("session", "")))
    profiler = _Process.profiler
    measured = label is not None and not label.startswith(WARMUP_LABEL)
    # Start between two tasks, after the first measured one: every task profiled is whole.
    if profiler is not None and not _Process.profiling and measured:
        _Process.profiling = True
        profiler.enable()


@signals.worker_process_shutdown.connect
def _process_shutdown(**_kwargs: Any) -> None:
    node = _Process.node or "node"
    pid = os.getpid()
    profile = None
    if _Process.profiler is not None and _Process.profiling:
        _Process.profiler.disable()
        path = settings.out_path / f"profile-{node}-{_Process.index}-{_Process.clock}.prof"
        _Process.profiler.dump_stats(str(path))
        profile = {"path": str(path), "clock": _Process.clock, "tasks": _Process.profiled_tasks}
    instrument.dump(
        settings.out_path / f"counts-{node}-{pid}.json",
        node=node,
        index=_Process.index,
        profile=profile,
    )
