"""Stall detection: time from the end of a stall to its report, and the idle cost.

    python bench/stall_report.py [--stalls N] [--idle-seconds S] [--write]

Report latency: in one process, for each loop (asyncio, uvloop) and detector set
(all four detectors; the watchdog alone), a coroutine makes N stalls of 150 ms
(pure-Python CPU, ``time.sleep``, a GIL-holding backtracking regex), 100 ms apart.
The coroutine notes the wall time at which each stall ended; an ``on_event`` callback
notes when the event reached the sinks. Latency = delivery - end. Target: 50 ms.

Idle cost: a child process runs an idle asyncio loop for S seconds, with and without a
guard (all detectors), alternating 5 times; the CPU time the process used is compared
(the guard's loop tick and watchdog thread are what it pays for). Target: well under
1 % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import uvloop

import loophound
from _common import environment, write_section

STALL = 0.15
PATTERN = re.compile(r"(a+)+$")


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def regex_input(target: float) -> str:
    n = 16
    while True:
        text = "a" * n + "b"
        began = time.perf_counter()
        PATTERN.match(text)
        if time.perf_counter() - began >= target:
            return text
        n += 1


def measure(
    loop_kind: str, detectors: tuple[str, ...], kind: str, stalls: int, regex_text: str
) -> tuple[list[float], int]:
    ends: list[int] = []
    delivered: list[int] = []
    lock = threading.Lock()

    def on_event(_event: loophound.Event) -> None:
        with lock:
            delivered.append(time.time_ns())

    work: Callable[[], Any]
    if kind == "cpu":
        work = lambda: spin(STALL)  # noqa: E731
    elif kind == "sleep":
        work = lambda: time.sleep(STALL)  # noqa: E731
    else:
        work = lambda: PATTERN.match(regex_text)  # noqa: E731

    async def main() -> None:
        for _ in range(stalls):
            await asyncio.sleep(0.1)
            work()
            ends.append(time.time_ns())
        await asyncio.sleep(0.3)

    guard = loophound.install(sinks=(), on_event=on_event, detectors=detectors, imports="ignore")
    try:
        (asyncio.run if loop_kind == "asyncio" else uvloop.run)(main())
        guard.flush()
    finally:
        guard.uninstall()
    latencies = []
    for at in delivered:
        before = [e for e in ends if e <= at]
        if before:
            latencies.append((at - before[-1]) / 1e6)
    return latencies, len(delivered)


IDLE_CHILD = """
import asyncio, resource, sys, loophound
from loophound.detectors.watchdog import Watchdog
guard = loophound.install(sinks=()) if sys.argv[1].startswith("guard") else None

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

async def idle(seconds):
    if sys.argv[1] == "ticker":  # what any timer at the guard's tick rate costs here
        loop = asyncio.get_running_loop()
        interval = Watchdog.interval_for(0.1)
        def tick():
            loop.call_later(interval, tick)
        loop.call_later(interval, tick)
    await asyncio.sleep(0.2)  # settle: start-up work of the loop and the guard is done
    before = cpu()
    await asyncio.sleep(seconds)
    print(cpu() - before)  # CPU of the whole process while the service idled

if sys.argv[1] == "guard-uvloop":
    import uvloop
    uvloop.run(idle(float(sys.argv[2])))
else:
    asyncio.run(idle(float(sys.argv[2])))
"""


def idle_cpu(mode: str, seconds: float) -> float:
    """Return the CPU seconds a child process used while its loop idled ``seconds``."""
    done = subprocess.run(
        [sys.executable, "-c", IDLE_CHILD, mode, str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stalls", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    regex_text = regex_input(STALL)

    rows = []
    worst = 0.0
    for loop_kind in ("asyncio", "uvloop"):
        for label, detectors in (
            ("all four", ("audit", "patches", "watchdog", "callbacks")),
            ("watchdog", ("watchdog",)),
        ):
            for kind in ("cpu", "sleep", "gil"):
                latencies, count = measure(loop_kind, detectors, kind, args.stalls, regex_text)
                if latencies:
                    worst = max(worst, *latencies)
                    q = statistics.quantiles(latencies, n=10) if len(latencies) > 1 else latencies
                    rows.append(
                        f"| {loop_kind} | {label} | {kind} | {count}/{args.stalls} "
                        f"| {statistics.median(latencies):.1f} | {q[-1]:.1f} "
                        f"| {max(latencies):.1f} |"
                    )
                else:
                    rows.append(f"| {loop_kind} | {label} | {kind} | 0/{args.stalls} | - | - | - |")
                print(rows[-1], flush=True)

    idle: dict[str, list[float]] = {
        "baseline": [],
        "ticker": [],
        "guard": [],
        "guard-uvloop": [],
    }
    for round_ in range(5):
        order = ["baseline", "ticker", "guard", "guard-uvloop"]
        if round_ % 2:
            order.reverse()
        for mode in order:
            idle[mode].append(idle_cpu(mode, args.idle_seconds))

    def share(mode: str) -> str:
        extra = [
            100 * (m - b) / args.idle_seconds
            for m, b in zip(idle[mode], idle["baseline"], strict=True)
        ]
        return f"{statistics.median(extra):.3f} ({min(extra):.3f} … {max(extra):.3f})"

    idle_row = (
        f"| {statistics.median(idle['baseline']) * 1000:.1f} "
        f"| {statistics.median(idle['ticker']) * 1000:.1f} "
        f"| {statistics.median(idle['guard']) * 1000:.1f} "
        f"| {statistics.median(idle['guard-uvloop']) * 1000:.1f} "
        f"| {share('ticker')} | {share('guard')} | {share('guard-uvloop')} |"
    )
    print(idle_row)

    command = "python bench/stall_report.py " + shlex.join(argv or sys.argv[1:])
    section = "\n".join(
        [
            "## Stall detection: time to report, idle cost",
            "",
            f"Command: `{command.strip()}`",
            "",
            *(f"- {key}: {value}" for key, value in environment()),
            "",
            (
                f"Each row: {args.stalls} stalls of {STALL * 1000:.0f} ms, 100 ms apart, in one "
                "process; latency = when the event reached the sinks minus when the stalling "
                "call returned (ms). Target: 50 ms."
            ),
            "",
            "| loop | detectors | stall | reported | median ms | p90 ms | max ms |",
            "|---|---|---|--:|--:|--:|--:|",
            *rows,
            "",
            (
                f"An idle loop for {args.idle_seconds:g} s, 5 alternating runs per variant: "
                "nothing; a plain `call_later` ticker at the guard's tick rate (what any "
                "timer wakeup costs on this machine); the guard with every detector on "
                "an asyncio loop (its tick rests while the loop idles); the same on "
                "uvloop (no step hook, so its tick never rests). CPU time of the process "
                "while idling (ms); extra over nothing as % of one core (median, min … "
                "max). Target: well under 1 %."
            ),
            "",
            (
                "| nothing ms | ticker ms | guard ms | guard on uvloop ms "
                "| ticker extra % | guard extra % | guard on uvloop extra % |"
            ),
            "|--:|--:|--:|--:|--:|--:|--:|",
            idle_row,
        ]
    )
    if args.write:
        write_section("stall-report", section)
    return 0 if worst <= 50 else 1


if __name__ == "__main__":
    sys.exit(main())
