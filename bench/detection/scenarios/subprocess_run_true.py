"""subprocess.run(['true']): a short child process."""

import subprocess

LABEL = "blocking"


async def main(h):
    subprocess.run(["true"], check=True)  # culprit  # noqa: ASYNC221
    h.end()
