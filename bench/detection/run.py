"""Detection: recall, precision and culprit lines of loophound and its peers.

    .venv/bin/python bench/detection/run.py [--tools T ...] [--scenarios PATTERN]
        [--jobs N] [--timeout S] [--write]

Each scenario (``bench/detection/scenarios/*.py``) is labelled blocking or clean in
its own source (``LABEL``), and a blocking one marks its culprit line with a
``# culprit`` comment; labels are read here without importing the scenario, before
any tool runs. Every scenario runs in a fresh process per tool (``_child.py``), with a
timeout; everything it talks to listens on 127.0.0.1.

Labelling rule: a call to a primitive that waits for I/O, another process, another
thread or a timer (a sleep, a socket, a file, a lock held elsewhere, a child process,
a database file) is blocking whatever its duration: a 5 ms ``time.sleep`` is
blocking. Work that only computes (a Python loop, ``json.loads``, a regex, hashing,
compression) is blocking when one uninterrupted stretch of it exceeds the 100 ms
threshold, and clean below it (a 20 ms loop). Primitives that cannot wait
(``sleep(0)``, ``timeout=0``, a set event, an uncontended lock, a non-blocking socket)
are clean, and so is blocking work handed to another thread or process.

Scores per tool: recall = blocking scenarios flagged / blocking scenarios; precision =
blocking scenarios flagged / scenarios flagged; culprit right = flagged blocking
scenarios where one of the reported locations is the labelled line; for loophound,
time to report = when ``on_event`` got the event minus when the culprit returned
(``h.end()``), median and p90 over the flagged blocking scenarios.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fnmatch
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import PEERS_INSTALL, environment, missing_peers, write_section  # noqa: E402

SCENARIOS = HERE / "scenarios"
CHILD = HERE / "_child.py"
TOOLS = ("loophound", "blockbuster", "pyleak", "aiodebug", "asyncio-debug")
PEER_PACKAGES = {"blockbuster": "blockbuster", "pyleak": "pyleak", "aiodebug": "aiodebug"}
STDIN = b"a line for input()\n"
#: Targets from the issue (loophound).
TARGET_RECALL = 0.98
TARGET_LATENCY_MS = 50.0


@dataclass
class Scenario:
    name: str
    path: Path
    label: str
    doc: str
    culprit: int | None


@dataclass
class Outcome:
    scenario: Scenario
    tool: str
    flagged: bool = False
    line_right: bool = False
    lines: list[int] = field(default_factory=list)
    elsewhere: bool = False  # a location reported in another file than the scenario's
    latency_ms: float | None = None
    errors: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    failed: str | None = None  # the child timed out or wrote nothing
    stderr: str = ""  # the child's last lines of stderr
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        if self.scenario.label == "blocking":
            return "TP" if self.flagged else "FN"
        return "FP" if self.flagged else "TN"


def load_scenarios(pattern: str | None) -> list[Scenario]:
    found = []
    for path in sorted(SCENARIOS.glob("*.py")):
        if path.name.startswith("_"):
            continue
        name = path.stem
        if pattern and not fnmatch.fnmatch(name, pattern if "*" in pattern else f"*{pattern}*"):
            continue
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        label = None
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "LABEL" for t in node.targets
            ):
                label = ast.literal_eval(node.value)
        marked = [i for i, line in enumerate(source.splitlines(), 1) if "# culprit" in line]
        if label not in {"blocking", "clean"}:
            raise SystemExit(f"{path}: LABEL must be 'blocking' or 'clean', not {label!r}")
        if label == "blocking" and len(marked) != 1:
            raise SystemExit(f"{path}: a blocking scenario marks exactly one '# culprit' line")
        if label == "clean" and marked:
            raise SystemExit(f"{path}: a clean scenario has no '# culprit' line")
        doc = (ast.get_docstring(tree) or "").strip().splitlines()[0]
        found.append(Scenario(name, path, label, doc, marked[0] if marked else None))
    found.sort(key=lambda s: (s.label != "blocking", s.name))
    return found


def run_one(scenario: Scenario, tool: str, timeout: float) -> Outcome:
    outcome = Outcome(scenario, tool)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPHOUND_", "PYTHONASYNC"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    if tool == "asyncio-debug":
        env["PYTHONASYNCIODEBUG"] = "1"
    with tempfile.TemporaryDirectory(prefix="loophound-detect-out-") as tmp:
        out = Path(tmp) / "result.json"
        began = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, str(CHILD), tool, str(scenario.path), str(out)],
                input=STDIN,
                capture_output=True,
                timeout=timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            outcome.failed = f"timeout after {timeout:g} s"
            return outcome
        finally:
            outcome.seconds = time.perf_counter() - began
        if not out.exists():
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
            outcome.failed = f"exit {done.returncode}: " + " | ".join(tail)
            return outcome
        result = json.loads(out.read_text(encoding="utf-8"))
        outcome.stderr = " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-4:])
    score(outcome, result)
    return outcome


def score(outcome: Outcome, result: dict[str, Any]) -> None:
    scenario = outcome.scenario
    own = str(scenario.path)
    flags = result["flags"]
    outcome.errors = result["errors"]
    outcome.flagged = bool(flags)
    outcome.texts = [f["text"] for f in flags]
    matching = None
    for flag in flags:
        outcome.elsewhere = outcome.elsewhere or any(file != own for file, _ in flag["where"])
        lines = [line for file, line in flag["where"] if file == own]
        outcome.lines.extend(line for line in lines if line not in outcome.lines)
        if scenario.culprit is not None and scenario.culprit in lines and matching is None:
            matching = flag
    outcome.line_right = matching is not None
    if outcome.tool == "loophound" and flags and scenario.label == "blocking":
        flag = matching or flags[0]
        ends = [e for e in result["ends"] if e <= flag["at_ns"]]
        if ends:
            outcome.latency_ms = (flag["at_ns"] - ends[-1]) / 1e6


def quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def summary(tools: list[str], outcomes: dict[tuple[str, str], Outcome]) -> list[str]:
    rows = [
        (
            "| tool | recall | precision | culprit line right | time to report median ms "
            "| p90 ms | max ms |"
        ),
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for tool in tools:
        mine = [o for (_, t), o in outcomes.items() if t == tool]
        tp = sum(o.verdict == "TP" for o in mine)
        fn = sum(o.verdict == "FN" for o in mine)
        fp = sum(o.verdict == "FP" for o in mine)
        recall = f"{tp / (tp + fn):.1%} ({tp}/{tp + fn})" if tp + fn else "-"
        precision = f"{tp / (tp + fp):.1%} ({tp}/{tp + fp})" if tp + fp else "- (0 flagged)"
        detected = [o for o in mine if o.verdict == "TP"]
        if not detected:
            right = "-"
        elif not any(o.lines or o.elsewhere for o in mine):
            right = "no line"
        else:
            n = sum(o.line_right for o in detected)
            right = f"{n / len(detected):.1%} ({n}/{len(detected)})"
        latencies = [o.latency_ms for o in detected if o.latency_ms is not None]
        if tool == "loophound" and latencies:
            timing = (
                f"{statistics.median(latencies):.1f} | {quantile(latencies, 0.9):.1f} "
                f"| {max(latencies):.1f}"
            )
        else:
            timing = "- | - | -"
        rows.append(f"| {tool} | {recall} | {precision} | {right} | {timing} |")
    return rows


def against_targets(outcomes: dict[tuple[str, str], Outcome]) -> list[str]:
    """loophound's scenarios that miss a target of the issue, by name."""
    mine = [o for (_, t), o in outcomes.items() if t == "loophound"]
    if not mine:
        return []
    missed = [o.scenario.name for o in mine if o.verdict == "FN"]
    false = [o.scenario.name for o in mine if o.verdict == "FP"]
    wrong = [o.scenario.name for o in mine if o.verdict == "TP" and not o.line_right]
    late = [
        f"{o.scenario.name} ({o.latency_ms:.1f} ms)"
        for o in mine
        if o.latency_ms is not None and o.latency_ms > TARGET_LATENCY_MS
    ]
    tp = sum(o.verdict == "TP" for o in mine)
    recall = tp / max(1, tp + len(missed))

    def listed(names: list[str]) -> str:
        return ", ".join(f"`{n}`" for n in names) if names else "none"

    return [
        (
            f"loophound against the targets: recall {recall:.1%} (target ≥ "
            f"{TARGET_RECALL:.0%}); missed: {listed(missed)}. False positives (target "
            f"none): {listed(false)}. Culprit line wrong (target none): {listed(wrong)}. "
            f"Reported more than {TARGET_LATENCY_MS:.0f} ms after the culprit returned: "
            f"{listed(late)}."
        )
    ]


def cell(outcome: Outcome) -> str:
    if outcome.failed:
        return f"{outcome.verdict}!"
    verdict = outcome.verdict
    if verdict != "TP":
        return verdict
    if outcome.line_right:
        return "TP ✓"
    wrong = ",".join(map(str, outcome.lines[:3]))
    if outcome.elsewhere:
        wrong = f"{wrong}+elsewhere" if wrong else "elsewhere"
    return f"TP ✗ {wrong or 'no line'}"


def matrix(
    tools: list[str], scenarios: list[Scenario], outcomes: dict[tuple[str, str], Outcome]
) -> list[str]:
    head = "| scenario | label | culprit | " + " | ".join(tools)
    head += " | loophound ms |" if "loophound" in tools else " |"
    rows = [head, "|---|---|--:|" + "---|" * len(tools) + ("--:|" if "loophound" in tools else "")]
    for s in scenarios:
        cells = [cell(outcomes[s.name, t]) for t in tools]
        row = f"| {s.name} | {s.label} | {s.culprit or ''} | " + " | ".join(cells)
        if "loophound" in tools:
            latency = outcomes[s.name, "loophound"].latency_ms
            row += f" | {'' if latency is None else f'{latency:.1f}'}"
        rows.append(row + " |")
    return rows


def versions(tools: list[str]) -> str:
    parts = []
    for tool in tools:
        package = PEER_PACKAGES.get(tool)
        if package:
            with contextlib.suppress(metadata.PackageNotFoundError):
                parts.append(f"{package} {metadata.version(package)}")
    with contextlib.suppress(metadata.PackageNotFoundError):
        parts.append(f"uvloop {metadata.version('uvloop')}")
    with contextlib.suppress(metadata.PackageNotFoundError):
        parts.append(f"asgiref {metadata.version('asgiref')}")
    return ", ".join(parts)


HOW_DRIVEN = """\
How each tool was driven (`bench/detection/_child.py`; each reads the scenario's
module first, so names it binds at import are bound before any tool is installed,
then runs `prepare`, then installs the tool, then runs the scenario's loop):

- **loophound**: `loophound.install(threshold=0.1, sinks=(), on_event=record)`, all
  four detectors (the default), `guard.flush()` and `uninstall()` at the end. A flag
  is an event that is not `quiet` (quiet events are first-time module loads, which
  the warnings and logging sinks never show); its location is `event.culprit`.
- **blockbuster**: `BlockBuster().activate()` (every module scanned, its default),
  `deactivate()` at the end. A flag is a `BlockingError` it raised, recorded as it
  was made (so one the scenario's code swallowed still counts); its location is the
  innermost frame of the scenario's file in the stack it was raised from (with none,
  the innermost frame: "elsewhere" in the matrix). The error
  ends the scenario's coroutine, as it would a test.
- **pyleak**: each coroutine the scenario runs on a loop runs inside `async with
  no_event_loop_blocking(action="log", threshold=0.1, check_interval=0.01,
  caller_context=CallerContext(files={scenario file}))` (entered on the loop's own
  thread, so its monitor watches that thread; the caller files are the scenario's
  file, so a stack is kept whenever the scenario's code is in it, tasks and callbacks
  included). A flag is an entry of `detector.detected_blocks`; its location is the
  innermost frame of the scenario's file in the block's sampled stack.
- **aiodebug**: `aiodebug.log_slow_callbacks.enable(0.1, on_slow_callback=record)`
  (it wraps `asyncio.events.Handle._run`, so it cannot see uvloop's handles). A flag is
  a slow-callback report; its locations are every `file:line` in the handle's text (a
  task's outermost coroutine and the line it is suspended at after the step; a callback's
  definition).
- **asyncio-debug**: `PYTHONASYNCIODEBUG=1` in the child's environment (every loop,
  asyncio and uvloop, in every thread, runs in debug mode with
  `slow_callback_duration = 0.1`, the default); a handler on the `asyncio` logger
  takes its `Executing ... took ... seconds` warnings. Locations: every `file:line` in
  the message (the handle, and where it was created).

The loop has run for 50 ms when a scenario's coroutine starts, as in a service
(`first_step_*` block in the loop's very first step instead, as a test's coroutine
does), and runs 200 ms more after it returns, so tools that report from a thread or
at the end of a step have the time to. A scenario process that times out or crashes
counts as not flagged (marked `!` in the matrix).

What the matrix shows about the peers (these versions): blockbuster patches named
functions (`time.sleep`, `os.*` file calls, buffered file `read`/`write`, sockets,
`sqlite3` cursors, `threading.Lock`, `input`) and raises at the call, so it sees short
calls and never CPU stalls; it has no patch for `open()` itself, `subprocess`,
`os.system`, `select`, `getaddrinfo` or `sqlite3.connect`, misses names bound before
it was activated, and flags `time.sleep(0)`. pyleak, aiodebug and asyncio's debug
mode only see loop steps longer than the threshold, so no short blocking call;
pyleak samples the stack (its line is right when it catches the call in the act, and
a GIL-holding C call can end before its thread gets to look); aiodebug and debug mode
name the handle or task that ran long, never the line inside it; aiodebug does not
see uvloop."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--scenarios", metavar="PATTERN", help="glob or substring of names")
    parser.add_argument("--jobs", type=int, default=1, help="scenario processes at once")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per process")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.write and args.scenarios:
        parser.error("--write needs the whole scenario set (no --scenarios)")
    scenarios = load_scenarios(args.scenarios)
    if not scenarios:
        parser.error(f"no scenario matches {args.scenarios!r}")
    tools = [t for t in TOOLS if t in args.tools]
    missing = missing_peers(tools)
    if missing:
        parser.error(f"peers not installed: {', '.join(missing)}; run {PEERS_INSTALL}")
    began = time.perf_counter()
    jobs = [(s, t) for s in scenarios for t in tools]
    outcomes: dict[tuple[str, str], Outcome] = {}
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for outcome in pool.map(lambda job: run_one(job[0], job[1], args.timeout), jobs):
            outcomes[outcome.scenario.name, outcome.tool] = outcome
            line = f"{outcome.scenario.name:40} {outcome.tool:14} {cell(outcome):12}"
            if outcome.latency_ms is not None:
                line += f" {outcome.latency_ms:7.1f} ms"
            if outcome.failed:
                line += f"  [{outcome.failed}]"
            if outcome.texts:
                line += f"  {outcome.texts[:2]}"
            if outcome.errors:
                line += f"  errors: {outcome.errors[:2]}"
            if outcome.verdict in {"FN", "FP"} and outcome.stderr:
                line += f"  stderr: {outcome.stderr[-400:]}"
            print(line, flush=True)
    elapsed = time.perf_counter() - began
    blocking = sum(s.label == "blocking" for s in scenarios)
    summary_rows = summary(tools, outcomes)
    matrix_rows = matrix(tools, scenarios, outcomes)
    targets = against_targets(outcomes)
    print()
    print("\n".join(summary_rows))
    print("\n".join(targets))
    print()
    print("\n".join(matrix_rows))
    print(f"\n{len(scenarios)} scenarios x {len(tools)} tools in {elapsed:.0f} s")

    command = ".venv/bin/python bench/detection/run.py " + shlex.join(argv or sys.argv[1:])
    section = "\n".join(
        [
            "## Detection: recall, precision and culprit lines against peers",
            "",
            f"Command: `{command.strip()}` ({elapsed:.0f} s)",
            "",
            *(f"- {key}: {value}" for key, value in environment()),
            f"- peers: {versions(tools)}",
            "",
            (
                f"{len(scenarios)} scenarios ({blocking} blocking, {len(scenarios) - blocking} "
                "clean) in `bench/detection/scenarios/`, each labelled in its own source "
                "before any tool ran (`LABEL`; a blocking one marks its culprit line with "
                "`# culprit`), each run in a fresh process per tool with a 20 s timeout, "
                "talking to 127.0.0.1 only. Threshold 0.1 s wherever a tool has one."
            ),
            "",
            (
                "Labelling rule: a call to a primitive that waits (for I/O, a child "
                "process, another thread, a timer: a sleep, a socket, a file, a lock held "
                "elsewhere, a database file) is blocking whatever its duration, so a 5 ms "
                "`time.sleep` is blocking; work that only computes (a Python loop, "
                "`json.loads`, a regex, hashing, compression) is blocking when one "
                "uninterrupted stretch of it exceeds the 100 ms threshold and clean below "
                "it (a 20 ms loop). Calls that cannot wait (`sleep(0)`, `timeout=0`, a set "
                "event, an uncontended lock, a non-blocking socket) and blocking work "
                "handed to another thread or process are clean."
            ),
            "",
            (
                "Recall: blocking scenarios flagged / blocking scenarios. Precision: "
                "blocking scenarios flagged / scenarios flagged. Culprit line right: of "
                "the flagged blocking scenarios, those where one of the reported locations "
                "is the labelled line. Time to report (loophound): when `on_event` "
                "received the event minus when the culprit returned (the scenario notes "
                "`perf_counter` right after it). Targets: recall ≥ 98 %, precision 100 %, "
                "every culprit line right, report ≤ 50 ms after the stall ends."
            ),
            "",
            *summary_rows,
            "",
            *targets,
            "",
            (
                "Per scenario: TP/FN (blocking flagged/missed), FP/TN (clean "
                "flagged/passed); ✓ the labelled line was reported, ✗ the lines of the "
                "scenario's file reported instead (`elsewhere`: a location in another "
                "file, such as the harness's coroutine that wraps the scenario's); "
                "`loophound ms` is the time to report."
            ),
            "",
            *matrix_rows,
            "",
            HOW_DRIVEN,
        ]
    )
    if args.write:
        write_section("detection", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
