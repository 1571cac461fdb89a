"""asyncio.Queue between a producer and a consumer task."""

import asyncio

LABEL = "clean"


async def produce(q):
    for i in range(20):
        await q.put(i)
        await asyncio.sleep(0.005)
    await q.put(None)


async def main(_h):
    q = asyncio.Queue(maxsize=2)
    producer = asyncio.create_task(produce(q))
    got = []
    while (item := await q.get()) is not None:
        got.append(item)
    await producer
    assert len(got) == 20
