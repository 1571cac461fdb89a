"""subprocess.run(['sleep', '0.15'])."""

import subprocess

LABEL = "blocking"


async def main(h):
    subprocess.run(["sleep", "0.15"], check=True)  # culprit  # noqa: ASYNC221
    h.end()
