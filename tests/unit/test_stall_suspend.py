"""A process that is stopped and continued is not a stalled loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import loophound

    def emit(event):
        print(json.dumps({"kind": event.kind, "operation": event.operation}), flush=True)

    async def main(mode):
        print("ready", flush=True)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            if mode == "cooperative":
                t = time.perf_counter() + 0.005
                while time.perf_counter() < t:
                    pass
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.05)

    guard = loophound.install(sinks=(), on_event=emit, threshold=0.1)
    asyncio.run(main(sys.argv[1]))
    guard.uninstall()
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("mode", ["idle", "cooperative"])
def test_sigstop_and_sigcont_report_nothing(mode: str) -> None:
    """Stopping the whole process for 500 ms, idle or busy in short steps, reports no stall."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(0.5)
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert out.strip().splitlines() == ["done"]
