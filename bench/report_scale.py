"""`loophound report` over a large event log: time and peak memory, against a parse-only floor.

    .venv/bin/python bench/report_scale.py [--events 1000000] [--repeats 3] [--write]

Writes a synthetic log of realistic records (500 call sites, 50 routes, a fifth of
them stalls with sampled stacks, module loads and request records mixed in), then
runs, alternately and each in a fresh process:

- the floor: read the file and ``json.loads`` every line, nothing else;
- ``loophound report FILE --format json`` (the whole aggregation and output);
- ``loophound report FILE --folded OUT`` (the flame-graph stacks as well).

Reports wall time and peak RSS (``ru_maxrss`` of the child) per run, the ratio to the
floor, and the spread over the repeats. ``--write`` puts the table into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import environment, write_section

FLOOR = """
import json, sys
n = 0
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        json.loads(line)
        n += 1
"""


def make_log(path: Path, events: int, seed: int = 7) -> None:
    """Write ``events`` records in the jsonl sink's schema."""
    rng = random.Random(seed)
    sites = [(f"/srv/app/shop/views_{i % 40}.py", 10 + i, f"view_{i}") for i in range(500)]
    routes = [f"api/items/{i}/<int:pk>/" for i in range(50)]
    operations = ["time.sleep", "open", "socket.recv", "subprocess.run", "sqlite3.connect"]
    base = time.time_ns() - 86_400 * 10**9
    with path.open("w", encoding="utf-8") as handle:
        for n in range(events):
            file, line, function = sites[int(rng.paretovariate(1.2)) % len(sites)]
            route = routes[rng.randrange(len(routes))]
            started = base + n * 80_000_000
            loop_frame = {"file": "/usr/lib/python3.12/asyncio/events.py", "line": 84}
            frames = [
                {**loop_frame, "function": "Handle._run"},
                {"file": file, "line": line, "function": function},
            ]
            request = {"id": str(n), "type": "http", "method": "GET", "path": "/x", "route": route}
            roll = rng.random()
            if roll < 0.05:
                hops = {"count": 2, "wait": 0.001, "run": 0.002}
                record = {
                    "schema": 1,
                    "kind": "request",
                    "request": request,
                    "pid": 1,
                    "started_at": started,
                    "duration": 0.01,
                    "thread_hops": hops,
                }
            else:
                stall = roll < 0.25
                record = {
                    "schema": 1,
                    "kind": "stall" if stall else "call",
                    "operation": "cpu" if stall else operations[line % len(operations)],
                    "detail": None,
                    "started_at": started,
                    "duration": rng.expovariate(8.0),
                    "culprit": {"file": file, "line": line, "function": function},
                    "frames": frames,
                    "fingerprint": f"{line:016x}",
                    "thread": {"id": 1, "name": "MainThread"},
                    "task": "Task-1",
                    "detectors": ["watchdog"] if stall else ["patches"],
                    "request": request,
                    "quiet": roll > 0.98,
                    "suppressed": 0,
                    "pid": 1 + n % 4,
                    "primitives": [],
                    "samples": {f"Handle._run;{function}\u00a0({file}:{line})": 12}
                    if stall
                    else None,
                    "loop_cpu": 0.1 if stall else None,
                    "victims": [],
                }
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")


def measure(log: Path, repeats: int, out: Path) -> dict[str, list[tuple[float, float]]]:
    """Run the variants alternately; return their (wall, MiB) runs."""
    python = sys.executable
    loophound = [python, "-m", "loophound.cli"]
    variants = {
        "parse only (floor)": [python, "-c", FLOOR, str(log)],
        "report --format json": [*loophound, "report", str(log), "--format", "json"],
        "report --folded": [*loophound, "report", str(log), "--folded", str(out)],
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, command in variants.items():
            results[name].append(run_child(command))
    return results


def run_child(command: list[str]) -> tuple[float, float]:
    """Run ``command`` in a fresh parent, so its peak RSS is its own: (wall s, MiB)."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "wall = time.perf_counter() - start\n"
        "print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True
    )
    wall, mib = done.stdout.split()
    return float(wall), float(mib)


def table(results: dict[str, list[tuple[float, float]]], events: int, size_mib: float) -> str:
    """Return the markdown table."""
    floor = statistics.median(w for w, _ in results["parse only (floor)"])
    lines = [
        f"Log: {events:,} records, {size_mib:.0f} MiB. Median of the runs; spread is min to max.",
        "",
        "| variant | wall s | x floor | peak RSS MiB | events/s |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        walls = [w for w, _ in runs]
        rss = [m for _, m in runs]
        median = statistics.median(walls)
        lines.append(
            f"| {name} | {median:.2f} ({min(walls):.2f} to {max(walls):.2f}) | "
            f"{median / floor:.2f} | {statistics.median(rss):.0f} ({min(rss):.0f} to "
            f"{max(rss):.0f}) | {events / median:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, make the log, measure, print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "events.jsonl"
        make_log(log, args.events)
        size = os.path.getsize(log) / 2**20
        results = measure(log, args.repeats, Path(tmp) / "stacks.txt")
    text = table(results, args.events, size)
    print(text)
    if args.write:
        header = "\n".join(f"- {key}: {value}" for key, value in environment())
        command = f"`.venv/bin/python bench/report_scale.py --events {args.events} --write`"
        write_section(
            "report-scale",
            f"## `loophound report` over a large log\n\n{command}\n\n{header}\n\n{text}\n",
        )


if __name__ == "__main__":
    main()
