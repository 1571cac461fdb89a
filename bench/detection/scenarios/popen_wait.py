"""Popen.wait() for a child that a helper thread ends 150 ms later."""

import subprocess

LABEL = "blocking"


def prepare(h):
    proc = subprocess.Popen(["sleep", "30"])
    h.state["proc"] = proc

    def end_it():
        h.wait_go(0.15)
        proc.terminate()

    h.thread(end_it)


async def main(h):
    h.go()
    h.state["proc"].wait()  # culprit
    h.end()
