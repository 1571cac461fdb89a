"""Loophound's run-time cost in one server process, switched on and off in turn.

    python bench/load/toggle.py [--rounds N] [--windows W] [--duration S] [--write]

The same Django project, uvicorn and wrk load as ``run.py``, but loophound's cost is
measured inside one process: the server (``loadsite/toggle.py``) serves Django alone or
``LoophoundMiddleware`` around it (every detector), and the runner switches between the
two with a signal between windows (SIGUSR1 on, SIGUSR2 off; ``/probe/`` confirms the
switch before each window). The same for OTel's middleware with and without loophound
inside. Two processes of the same code differ by up to 10 % in CPU per request (their
hash seed and memory layout: the noise-floor row of ``run.py``); one process compared
with itself has no such difference, so this ratio is loophound's run-time cost alone.
What it leaves out: what loophound costs by being loaded at all (its modules, the
audit hook and asgiref's thread-handler descriptor, which stay while off and return at
their first check). ``run.py`` counts those too.

Each round starts one server per variant, with the round's hash seed, and warms each up
in both states; then ``--windows`` windows per server take the servers in turn, each
window in one state, in the order on, off, off, on (repeated), so that a drift in the
machine's speed over a round lands on both states alike. A state's CPU per request in
a round is the server's CPU seconds (``/proc/<pid>/stat``) over that state's windows
divided by their requests; the round's ratio is on over off. The table gives medians
over rounds, with the min-max spread of the per-round ratios.

Targets (as ``run.py``'s): loophound <= 1.03 x Django alone, OTel + loophound <= 1.05 x
OTel alone. Exit status 1 when one is missed, 2 when a run failed.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from run import (  # noqa: E402 - run.py's server, wrk and /proc helpers
    RunError,
    check_args,
    cpu_seconds,
    free_port,
    get_json,
    prepare,
    run_wrk,
    start_server,
    stop_server,
    wait_ready,
)

from _common import environment, write_section  # noqa: E402

VARIANTS = ("loophound", "otel+loophound")
LABELS = {"loophound": ("no tool", "loophound"), "otel+loophound": ("OTel", "OTel + loophound")}
TARGETS = {"loophound": 1.03, "otel+loophound": 1.05}
APP = "loadsite.toggle:application"
#: The state of window ``i`` of a round: on, off, off, on, and again.
PATTERN = (True, False, False, True)
DETECTORS = {"audit", "patches", "watchdog", "callbacks"}


@dataclass
class Server:
    variant: str
    proc: subprocess.Popen
    port: int
    log: Path
    cpu: dict[bool, float] = field(default_factory=lambda: {True: 0.0, False: 0.0})
    requests: dict[bool, int] = field(default_factory=lambda: {True: 0, False: 0})
    p50: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})


@dataclass
class Round:
    variant: str
    off_us: float
    on_us: float
    p50_off: float
    p50_on: float
    incidents: int

    @property
    def ratio(self) -> float:
        return self.on_us / self.off_us


def probe_state(server: Server) -> bool | None:
    """Return True when loophound is on (every detector), False when off."""
    facts = get_json(server.port, "/probe/")
    want_sdk = server.variant == "otel+loophound"
    if (facts["tracer_provider"] == "TracerProvider") != want_sdk:
        raise RunError(f"{server.variant}: OTel's SDK {'missing' if want_sdk else 'present'}")
    lh = facts["loophound"]
    if lh is None:
        return False
    if set(lh["detectors"]) != DETECTORS or ("otel" in lh["sinks"]) != want_sdk:
        raise RunError(f"{server.variant}: loophound runs {lh}")
    return True


def switch(server: Server, *, on: bool) -> None:
    """Signal the server and wait until its probe shows the state (10 s at most)."""
    server.proc.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while probe_state(server) != on:
        if time.monotonic() > deadline:
            tail = server.log.read_text(errors="replace")[-2000:]
            raise RunError(f"{server.variant}: still {'off' if on else 'on'} after 10 s:\n{tail}")
        time.sleep(0.05)


def incidents(server: Server) -> int:
    facts = get_json(server.port, "/probe/")
    lh = facts["loophound"]
    return 0 if lh is None else int(lh["stats"]["incidents"])


def one_round(round_: int, args: argparse.Namespace, work: Path) -> list[Round]:
    server_cpu, client_cpu = (0, 1) if args.pin else (None, None)
    servers: list[Server] = []
    try:
        for variant in VARIANTS:
            port = free_port()
            log = work / f"{variant}-{round_}.log"
            proc = start_server(
                "asyncio", variant, port, work / "db.sqlite3", log, server_cpu,
                seed=round_ + 1, app=APP,
            )  # fmt: skip
            servers.append(Server(variant, proc, port, log))
            wait_ready(proc, port, log)
        mix = work / "mix.lua"
        for server in servers:
            for on in (True, False):
                switch(server, on=on)
                run_wrk(server.port, args.connections, args.warmup, mix, client_cpu)
        found = 0
        for window in range(args.windows):
            on = PATTERN[window % len(PATTERN)]
            order = servers if window % 2 == 0 else servers[::-1]
            for server in order:
                switch(server, on=on)
                before = cpu_seconds(server.proc.pid)
                result = run_wrk(server.port, args.connections, args.duration, mix, client_cpu)
                server.cpu[on] += cpu_seconds(server.proc.pid) - before
                server.requests[on] += result["requests"]
                server.p50[on].append(result["50"])
                if on:
                    found += incidents(server)
                    switch(server, on=False)  # uninstall: the incidents count starts anew
        rounds = []
        for server in servers:
            if not server.requests[True] or not server.requests[False]:
                raise RunError(f"{server.variant}: a state served no request")
            rounds.append(
                Round(
                    server.variant,
                    server.cpu[False] / server.requests[False] * 1e6,
                    server.cpu[True] / server.requests[True] * 1e6,
                    statistics.median(server.p50[False]),
                    statistics.median(server.p50[True]),
                    found,
                )
            )
    except (OSError, ValueError, KeyError) as error:
        raise RunError(f"round {round_ + 1}: {error!r}") from error
    else:
        return rounds
    finally:
        for server in servers:
            stop_server(server.proc)


def spread(values: list[float], fmt: str) -> str:
    return (
        f"{format(statistics.median(values), fmt)} "
        f"({format(min(values), fmt)} to {format(max(values), fmt)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--windows", type=int, default=8, help="windows per server (of 4)")
    parser.add_argument("--duration", type=int, default=2, help="seconds per window (whole)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds per state")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    check_args(parser, args, ("rounds", "windows", "duration", "warmup", "connections"))
    if args.windows % len(PATTERN):
        parser.error(f"--windows: {args.windows}; expected a multiple of {len(PATTERN)}")

    began = time.monotonic()
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="loophound-toggle-") as tmp:
        work = prepare(Path(tmp))
        try:
            for round_ in range(args.rounds):
                for done in one_round(round_, args, work):
                    rounds.append(done)
                    print(
                        f"round {round_ + 1} {done.variant:15} off {done.off_us:6.0f} us/req  "
                        f"on {done.on_us:6.0f} us/req  ratio {done.ratio:.3f}",
                        flush=True,
                    )
        except RunError as failure:
            print(f"run failed: {failure}", file=sys.stderr)
            return 2
    took = time.monotonic() - began

    rows, verdicts = [], []
    for variant in VARIANTS:
        mine = [r for r in rounds if r.variant == variant]
        ratios = [r.ratio for r in mine]
        ratio = statistics.median(ratios)
        off_label, on_label = LABELS[variant]
        met = ratio <= TARGETS[variant]
        verdicts.append((variant, ratio, met))
        rows.append(
            f"| {on_label} vs {off_label} | {spread([r.off_us for r in mine], '.0f')} "
            f"| {spread([r.on_us for r in mine], '.0f')} | {spread(ratios, '.3f')} "
            f"| {statistics.median(r.p50_off for r in mine):.2f} "
            f"| {statistics.median(r.p50_on for r in mine):.2f} |"
        )
        print(f"{on_label} / {off_label} = {ratio:.3f} (target {TARGETS[variant]}): "
              f"{'met' if met else 'MISSED'}")  # fmt: skip
    print("\n".join(rows))
    print(f"took {took / 60:.1f} min")
    found = sum(r.incidents for r in rounds)

    if args.write:
        command = "python bench/load/toggle.py " + shlex.join(argv or sys.argv[1:])
        section = "\n".join(
            [
                "## Overhead in one process: loophound switched on and off",
                "",
                f"Command: `{command.strip()}` ({took / 60:.0f} min)",
                "",
                *(f"- {key}: {value}" for key, value in environment()),
                "",
                (
                    "The load site and load of the table above, but each server compares "
                    "itself with itself: `loadsite/toggle.py` serves Django alone, or "
                    "`LoophoundMiddleware` (every detector, default sinks) around it, and "
                    "the runner switches with a signal between windows (the guard is "
                    "installed or uninstalled on the loop before the next request; the "
                    "probe view confirms the state before each window). The second server "
                    "does the same inside OTel's middleware and SDK, loophound with its "
                    "`otel` sink. "
                    f"{args.rounds} rounds of fresh servers, each with the round's hash "
                    f"seed; {args.windows} windows of `wrk -t1 -c{args.connections} "
                    f"-d{args.duration}s` per server in the order on, off, off, on, the "
                    "two servers in turn"
                    + (", servers pinned to CPU 0 and wrk to CPU 1" if args.pin else "")
                    + ". CPU per request: the process's user + system time over a state's "
                    "windows divided by their requests. Medians over rounds with the "
                    "min-max spread; the ratio is the median of the per-round ratios. "
                    f"Loophound reported {found} incidents while on (the app is clean)."
                ),
                "",
                (
                    "What this leaves out, and the table above keeps: what loophound costs "
                    "by being loaded at all. Its modules stay imported while off, and two "
                    "hooks cannot be taken back: the audit hook (it returns at its first "
                    "check) and the descriptor on asgiref's `SyncToAsync.thread_handler` "
                    "(it returns the plain handler when loophound serves no request). "
                    "What it removes: the process-to-process difference (the noise-floor "
                    "row above), which is as large as the targets."
                ),
                "",
                (
                    "| comparison | off: CPU µs per request | on: CPU µs per request "
                    "| ratio (per-round spread) | p50 ms off | p50 ms on |"
                ),
                "|---|--:|--:|--:|--:|--:|",
                *rows,
                "",
                "Targets (CPU per request):",
                "",
                *(
                    f"- {LABELS[v][1]} / {LABELS[v][0]} = {ratio:.3f} (target ≤ "
                    f"{TARGETS[v]}): {'met' if met else 'missed'}"
                    for v, ratio, met in verdicts
                ),
            ]
        )
        write_section("load-toggle", section)
    return 0 if all(met for _, _, met in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
