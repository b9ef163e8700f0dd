"""A TCP relay that holds every chunk `delay_s` in each direction (the RTT where the kernel has no netem).

Order is kept per direction (one queue per direction, chunks released at arrival + delay), so the byte
stream is the one sent, only later. Runs in the cart namespace: python -m tests.hub.relay LISTEN_IP TARGET_IP
DELAY_S LISTEN_PORT:TARGET_PORT ...
"""

from __future__ import annotations

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def later() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    task = asyncio.create_task(later())
    try:
        while True:
            data = await reader.read(65536)
            await queue.put((loop.time() + delay, data or None))
            if not data:
                break
        await task
    except (ConnectionError, asyncio.CancelledError):
        task.cancel()
        writer.close()


async def main(listen_ip: str, target_ip: str, delay: float, pairs: list[tuple[int, int]]) -> None:
    def handler(target_port: int):
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                tr, tw = await asyncio.open_connection(target_ip, target_port)
            except OSError:
                w.close()
                return
            await asyncio.gather(pipe(r, tw, delay), pipe(tr, w, delay), return_exceptions=True)
        return handle

    servers = [await asyncio.start_server(handler(t), listen_ip, lp) for lp, t in pairs]
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    # python -m tests.hub.relay LISTEN_IP TARGET_IP DELAY_S LISTEN_PORT:TARGET_PORT ...
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]),
                     [tuple(int(x) for x in a.split(":")) for a in sys.argv[4:]]))
