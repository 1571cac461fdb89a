"""Waits that cannot wait: a done Future, a finished thread and process."""

import concurrent.futures
import subprocess
import threading

LABEL = "clean"


def prepare(h):
    future = concurrent.futures.Future()
    future.set_result(7)
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    proc = subprocess.Popen(["true"])
    proc.wait()
    h.state.update(future=future, thread=thread, proc=proc)


async def main(h):
    assert h.state["future"].result() == 7
    h.state["thread"].join()
    assert h.state["proc"].wait() == 0
