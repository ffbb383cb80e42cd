"""Issue 25: what watching costs a fire on memory storage (metrics and traces, no exporter).

Three modes fire the same workload in one process, in interleaved rounds (one
block of fires per mode per round, the order rotating), so that a neighbour's
load hits every mode alike:

* ``off``: no observer (``configure(metrics=False, tracing=False)``: the fire
  path of a process where neither extra is installed);
* ``metrics``: ``prometheus_client`` counting into its default registry;
* ``both``: metrics and ``opentelemetry-api`` with no tracer provider
  configured (no SDK, no exporter: traces are left out until one is set);
* ``traced``: both, with the SDK's tracer provider and no span processor
  (every span recorded and dropped: the cost of tracing itself).

Each fire schedules one new instance of an ``andEvery`` task, handed to a
runner that records it (the fire is timed, not the task). The report gives the
median microseconds per fire of each mode over all rounds and the ratios to
``off``; the target is ``both`` <= 1.05 x ``off``. Nothing here asserts a
timing. ``python -m benchmarks.observability [--rounds N --fires N]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Sequence

from benchmarks.common import recording_manager, uid
from triggers_core.runtime import observe
from triggers_core.runtime.memory import MemoryStorage

MODES = ("off", "metrics", "both", "traced")
CONFIG = {"t_tick": {"after": ["tick"], "andEvery": "tick", "run": "bench_task"}}
TARGET = 1.05


def _configure(mode: str) -> None:
    provider = None
    if mode == "traced":
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 - optional

        provider = TracerProvider()
    observe.configure(
        metrics=mode != "off", tracing=mode in ("both", "traced"), tracer_provider=provider
    )


def _block(fires: int) -> float:
    """CPU seconds of this thread per fire, over ``fires`` fires into a fresh session.

    CPU time, not wall time: on a shared machine a neighbour's load would
    otherwise be most of the difference between the modes.
    """
    manager, runner = recording_manager(MemoryStorage(uid("observe")))
    manager.update_configuration(CONFIG)
    for _ in range(10):  # warm the session's working set
        manager.fire("tick")
    began = time.thread_time()
    for _ in range(fires):
        manager.fire("tick")
    took = time.thread_time() - began
    assert len(runner.dispatched) == fires + 10, runner.dispatched[-3:]
    return took / fires


def measure(rounds: int, fires: int) -> dict[str, list[float]]:
    """Seconds per fire of each mode, one sample per round."""
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    gc_was = gc.isenabled()
    try:
        for index in range(rounds):
            shift = index % len(MODES)
            order = MODES[shift:] + MODES[:shift]
            for mode in order:
                _configure(mode)
                gc.collect()
                gc.disable()
                try:
                    samples[mode].append(_block(fires))
                finally:
                    gc.enable()
    finally:
        observe.configure()
        if not gc_was:
            gc.disable()
    return samples


def report(samples: dict[str, list[float]], rounds: int, fires: int) -> str:
    base = statistics.median(samples["off"])
    lines = [
        f"### Fire on memory storage, watched and not ({rounds} rounds of {fires} fires)",
        "",
        "| observers | median us (CPU) per fire | ratio to off |",
        "| --- | --- | --- |",
    ]
    for mode in MODES:
        median = statistics.median(samples[mode])
        lines.append(f"| {mode} | {median * 1e6:.1f} | {median / base:.3f} |")
    both = statistics.median(samples["both"]) / base
    verdict = "met" if both <= TARGET else "NOT met"
    lines += ["", f"Target both <= {TARGET:.2f} x off: {verdict} ({both:.3f})."]
    return "\n".join(lines)


def fire_only(mode: str, fires: int) -> None:
    """Configure ``mode``, warm a session up, then fire ``fires`` times, timing nothing.

    For an instruction count, which no neighbour's load changes: run it under
    ``valgrind --tool=callgrind`` with ``fires`` = 0 and 1,000 and divide the
    difference of the two totals by 1,000 (see BENCHMARKS.md).
    """
    _configure(mode)
    manager, runner = recording_manager(MemoryStorage(uid("observe")))
    manager.update_configuration(CONFIG)
    for _ in range(50):
        manager.fire("tick")
    gc.disable()
    for _ in range(fires):
        manager.fire("tick")
    assert len(runner.dispatched) == fires + 50


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--fires", type=int, default=100)
    parser.add_argument(
        "--fire-only",
        choices=MODES,
        help="configure this mode and only fire --fires times (for valgrind's instruction count)",
    )
    args = parser.parse_args(argv)
    if args.fire_only:
        fire_only(args.fire_only, args.fires)
        return 0
    samples = measure(args.rounds, args.fires)
    print(report(samples, args.rounds, args.fires))
    return 0


if __name__ == "__main__":
    sys.exit(main())
