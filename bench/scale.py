"""Scale: the guard's memory and CPU over 100 000 incidents, and the cost of a capped one.

    python bench/scale.py [--incidents N] [--rounds N] [--write]

Two measurements, each baseline and variant in this one process:

* **A capped incident.** Above its call site's rate cap (``rate_limit`` per
  ``rate_window``), a blocking call on the loop thread is still walked to its culprit
  and counted, but no event is made. Its extra cost is measured in alternating rounds
  (which side goes first alternates too) as the median of the per-round differences,
  with their interquartile range, for two calls: the ``time.sleep`` wrapper built
  around a no-op stand-in (only loophound's own work is timed; the baseline is the
  bare stand-in), and a real ``time.sleep(1e-9)`` with the guard installed against
  the same loop with it uninstalled (a ~75 µs system call here, whose jitter the
  rounds must average out).
* **A flood.** ``--incidents`` patched ``time.sleep(1e-9)`` calls from four call
  sites, ten per loop step, without a guard (baseline) and with one: capped (the
  default cap, 60 per site per minute) and uncapped (every incident an event written
  to a JSON-lines file). For each: wall time, incidents per second, extra CPU of the
  loop thread per incident against the baseline, CPU of loophound's own threads,
  events delivered, rate-capped and dropped, and the memory in use at 10 %, 50 % and
  100 % of the incidents: RSS (in the timed run) and tracemalloc's traced memory
  (in a second run, since tracing slows every allocation).

``--write`` replaces the ``scale`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import loophound
from _common import environment, write_section
from loophound import Event

TINY = 1e-9
CALLS_PER_STEP = 10
#: A window longer than any run: once over its cap, a call site stays over it.
NEVER_REOPENS = 86_400.0


def site_a() -> None:
    time.sleep(TINY)


def site_b() -> None:
    time.sleep(TINY)


def site_c() -> None:
    time.sleep(TINY)


def site_d() -> None:
    time.sleep(TINY)


SITES = (site_a, site_b, site_c, site_d)


# -- a capped incident ------------------------------------------------------------------


def _noop_sleep(secs: float, /) -> None:
    """Stands in for time.sleep: only the wrapper's own work is timed."""


def _capped_stand_in() -> Callable[[float], None]:
    """Return time.sleep's wrapper built around the no-op stand-in."""
    from loophound.detectors.patch_table import PATCHES
    from loophound.detectors.patches import _wrap

    spec = next(p for p in PATCHES if p.operation == "time.sleep")
    wrapped: Callable[[float], None] = _wrap(spec.operation, _noop_sleep, spec.may_wait)
    return wrapped


def _batch(call: Callable[[float], None], number: int) -> float:
    """Return ns per call of ``number`` calls of ``call(TINY)`` from one call site."""
    began = time.perf_counter_ns()
    for _ in range(number):
        call(TINY)
    return (time.perf_counter_ns() - began) / number


@dataclass
class Pair:
    """Per-round ns per call of a baseline and a variant, measured alternately."""

    name: str
    number: int
    baseline: list[float] = field(default_factory=list)
    variant: list[float] = field(default_factory=list)

    def extra(self) -> list[float]:
        return [v - b for b, v in zip(self.baseline, self.variant, strict=True)]


def measure_stand_in(rounds: int, number: int) -> tuple[Pair, dict[str, int]]:
    """Time the wrapper over its cap against the bare stand-in, on a loop thread."""
    wrapped = _capped_stand_in()
    pair = Pair("`time.sleep` wrapper around a no-op stand-in, over its cap", number)
    guard = loophound.install(sinks=(), rate_window=NEVER_REOPENS, imports="ignore")

    async def main() -> None:
        _batch(wrapped, 200)  # the site's admitted incidents: every later call is capped
        for index in range(rounds):
            sides = [(pair.baseline, _noop_sleep), (pair.variant, wrapped)]
            for results, call in sides if index % 2 else sides[::-1]:
                results.append(_batch(call, number))
            await asyncio.sleep(0)

    try:
        asyncio.run(main())
        guard.flush()
        stats = guard.stats.as_dict()
    finally:
        guard.uninstall()
    if stats["rate_capped"] < rounds * number:
        sys.exit(f"only {stats['rate_capped']} calls took the capped path: {stats}")
    return pair, stats


def measure_real_sleep(rounds: int, number: int) -> tuple[Pair, dict[str, int]]:
    """Time capped time.sleep(1e-9) calls with the guard installed against uninstalled."""
    pair = Pair("`time.sleep(1e-9)`, guard installed against uninstalled", number)
    capped = 0

    def variant() -> float:
        nonlocal capped
        guard = loophound.install(sinks=(), rate_window=NEVER_REOPENS, imports="ignore")
        try:
            took = asyncio.run(sleeps(number, warm_up=200))
            capped += guard.stats.rate_capped
        finally:
            guard.uninstall()
        return took

    for index in range(rounds):
        sides: list[tuple[list[float], Callable[[], float]]] = [
            (pair.baseline, lambda: asyncio.run(sleeps(number, warm_up=200))),
            (pair.variant, variant),
        ]
        for results, run in sides if index % 2 else sides[::-1]:
            results.append(run())
    if capped < rounds * number:
        sys.exit(f"only {capped} calls took the capped path")
    return pair, {"rate_capped": capped}


async def sleeps(number: int, warm_up: int) -> float:
    """Return ns per call of ``number`` time.sleep(1e-9) after ``warm_up`` untimed ones."""
    _batch(time.sleep, warm_up)
    return _batch(time.sleep, number)


# -- the flood ------------------------------------------------------------------------------


class CountingSink:
    """Counts events and the calls the rate cap suppressed."""

    name = "counting"

    def __init__(self) -> None:
        self.events = 0
        self.suppressed = 0

    def deliver(self, event: Event) -> None:
        self.events += 1
        self.suppressed += event.suppressed

    def deliver_suppressed(self, _fingerprint: str, count: int) -> None:
        self.suppressed += count

    def close(self) -> None:
        """Nothing to release."""


def memory_now(traced: bool) -> float:
    """Return what is in use: tracemalloc's traced KiB, else the RSS in MiB (after a gc)."""
    gc.collect()
    if traced:
        return tracemalloc.get_traced_memory()[0] / 2**10
    with (
        loophound.allow_blocking("the benchmark reads its own memory use"),
        open("/proc/self/statm", encoding="ascii") as statm,
    ):
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def flood(incidents: int, checkpoints: dict[int, float], traced: bool) -> int:
    """Make ``incidents`` blocking calls, CALLS_PER_STEP per loop step; return the count."""
    calls = 0
    while calls < incidents:
        for index in range(CALLS_PER_STEP):
            SITES[index % len(SITES)]()
        calls += CALLS_PER_STEP
        if calls in checkpoints:
            checkpoints[calls] = memory_now(traced)
        await asyncio.sleep(0)
    return calls


@dataclass
class Flood:
    """One flood run's figures."""

    name: str
    incidents: int
    wall: float
    loop_cpu: float
    other_cpu: float
    memory: list[float]
    stats: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    traced: list[float] = field(default_factory=list)
    traced_peak: float = 0.0


def run_flood(name: str, incidents: int, config: dict[str, Any] | None, *, traced: bool) -> Flood:
    """Run one flood; ``config`` None is the baseline without a guard."""
    marks = [incidents // 10, incidents // 2, incidents]
    checkpoints = dict.fromkeys((m - m % CALLS_PER_STEP for m in marks), 0.0)
    if traced:
        tracemalloc.start()
    guard = loophound.install(**config) if config is not None else None
    sink = CountingSink()
    if guard is not None:
        guard.add_sink(sink)
    process, loop_thread = time.process_time(), time.thread_time()
    began = time.perf_counter()
    try:
        calls = asyncio.run(flood(incidents, checkpoints, traced))
        wall = time.perf_counter() - began
        loop_cpu = time.thread_time() - loop_thread
        other_cpu = time.process_time() - process - loop_cpu
        stats: dict[str, int] = {}
        if guard is not None:
            if not guard.flush(60.0):
                sys.exit(f"{name}: the guard did not deliver within 60 s")
            stats = guard.stats.as_dict()
        peak = tracemalloc.get_traced_memory()[1] / 2**10 if traced else 0.0
    finally:
        if guard is not None:
            guard.uninstall()
        if traced:
            tracemalloc.stop()
    memory = [checkpoints[k] for k in sorted(checkpoints)]
    result = Flood(name, calls, wall, loop_cpu, other_cpu, memory, stats, sink.events)
    if traced:
        result.traced, result.traced_peak = memory, peak
    return result


def measure_floods(incidents: int, jsonl: str) -> list[Flood]:
    """Run the baseline and both guarded floods, timed, then again traced."""
    scenarios: list[tuple[str, dict[str, Any] | None]] = [
        ("no guard (baseline)", None),
        ("guard, capped (defaults)", {"sinks": (), "imports": "ignore"}),
        (
            "guard, uncapped, every incident to JSON lines",
            {"sinks": (), "jsonl": jsonl, "imports": "ignore", "rate_limit": 10_000_000},
        ),
    ]
    results = []
    for name, config in scenarios:
        timed = run_flood(name, incidents, config, traced=False)
        traced = run_flood(name, incidents, config, traced=True)
        timed.traced, timed.traced_peak = traced.traced, traced.traced_peak
        results.append(timed)
        print(f"  {name}: {timed.wall:.1f} s, {timed.stats}", file=sys.stderr)
    return results


# -- the table ----------------------------------------------------------------------------


def spread(values: list[float], scale: float = 1.0) -> str:
    """Return ``median (q1 … q3)`` of values divided by ``scale``, two decimals."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{median / scale:+.2f} ({q1 / scale:+.2f} … {q3 / scale:+.2f})"


def capped_table(pairs: list[Pair], rounds: int) -> str:
    lines = [
        (
            f"{rounds} alternating rounds per row (which side goes first alternates); "
            "µs per call, median of the rounds; extra = with guard minus baseline, median "
            "of the per-round differences (interquartile range in brackets)."
        ),
        "",
        (
            "| call (on the loop thread, over its call site's cap) | calls per round "
            "| baseline µs | with guard µs | extra µs per capped call |"
        ),
        "|---|--:|--:|--:|--:|",
    ]
    for pair in pairs:
        base = statistics.median(pair.baseline) / 1000
        variant = statistics.median(pair.variant) / 1000
        lines.append(
            f"| {pair.name} | {pair.number} | {base:.2f} | {variant:.2f} "
            f"| {spread(pair.extra(), 1000)} |"
        )
    return "\n".join(lines)


def flood_table(floods: list[Flood]) -> str:
    base = floods[0]

    def mib(values: list[float]) -> str:
        return " / ".join(f"{v:.1f}" for v in values)

    def kib(values: list[float]) -> str:
        return " / ".join(f"{v:.0f}" for v in values)

    lines = [
        (
            "Memory at 10 % / 50 % / 100 % of the incidents, after a gc: RSS in the timed "
            "run, tracemalloc's traced memory (and its peak) in a second, traced run, "
            "counted from just before the guard was installed. Loop CPU: the loop thread's "
            "CPU per incident minus the baseline's; loophound CPU: the process's CPU "
            "outside the loop thread (dispatcher and watchdog) per incident."
        ),
        "",
        (
            "| run | incidents | wall s | incidents/s | loop CPU µs/incident | loophound CPU "
            "µs/incident | events | rate-capped | dropped | RSS MiB | traced KiB "
            "| traced peak KiB |"
        ),
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|--:|",
    ]
    for run in floods:
        per = 1e6 / run.incidents
        extra = (run.loop_cpu - base.loop_cpu) * per
        stats = run.stats
        lines.append(
            f"| {run.name} | {run.incidents:,} | {run.wall:.2f} | {run.incidents / run.wall:,.0f} "
            f"| {'' if run is base else f'{extra:+.2f}'} | {run.other_cpu * per:.2f} "
            f"| {stats.get('dispatched', 0):,} | {stats.get('rate_capped', 0):,} "
            f"| {stats.get('dropped', 0):,} | {mib(run.memory)} | {kib(run.traced)} "
            f"| {run.traced_peak:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Measure, print the tables and, with --write, update docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if threading.active_count() != 1 or loophound.active_guard() is not None:
        sys.exit("run this benchmark in a process of its own")
    load_before = os.getloadavg()[0]
    print("capped incidents ...", file=sys.stderr)
    stand_in, _ = measure_stand_in(args.rounds, 20_000)
    real, _ = measure_real_sleep(args.rounds, 4_000)
    print(f"flood of {args.incidents} incidents ...", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        floods = measure_floods(args.incidents, str(Path(tmp) / "events.jsonl"))
    load = f"Load average (1 min) at the start and the end: {load_before:.2f}, "
    load += f"{os.getloadavg()[0]:.2f} (other processes share the machine's cores)."
    text = (
        f"{load}\n\n### A capped incident\n\n"
        + capped_table([stand_in, real], args.rounds)
        + f"\n\n### A flood of {args.incidents:,} incidents\n\n"
        + f"Four call sites, {CALLS_PER_STEP} patched `time.sleep(1e-9)` calls per loop "
        "step, one run each: the CPU columns are single differences without a spread "
        "(the resolved cost of a capped call is the first table's).\n\n" + flood_table(floods)
    )
    print(text)
    if args.write:
        header = "\n".join(f"- {key}: {value}" for key, value in environment())
        command = "`.venv/bin/python bench/scale.py"
        if args.incidents != 100_000:
            command += f" --incidents {args.incidents}"
        if args.rounds != 15:
            command += f" --rounds {args.rounds}"
        command += " --write`"
        write_section(
            "scale",
            f"## Scale: {args.incidents:,} incidents\n\n{command}\n\n{header}\n\n{text}\n",
        )


if __name__ == "__main__":
    main()
