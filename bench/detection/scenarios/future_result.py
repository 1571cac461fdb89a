"""concurrent.futures Future.result() of work that ends 150 ms later."""

import concurrent.futures

LABEL = "blocking"


def prepare(h):
    pool = concurrent.futures.ThreadPoolExecutor(1)
    h.state["future"] = pool.submit(h.wait_go, 0.15)


async def main(h):
    h.go()
    h.state["future"].result()  # culprit
    h.end()
