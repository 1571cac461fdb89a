"""A library (in a site-packages directory) sleeps inside: the app's line calling it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_site" / "site-packages"))
import detlib

LABEL = "blocking"


async def main(h):
    rates = detlib.fetch_rates()  # culprit
    h.end()
    assert rates
