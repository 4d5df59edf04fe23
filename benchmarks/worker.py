"""One worker process of one system: ``python -m benchmarks.worker SYSTEM CONCURRENCY``.

Started by the driver with the run's context in its environment; runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from benchmarks.common import Context
from benchmarks.systems import load

_GRACE = 5.0


async def main(name: str, concurrency: int) -> None:
    if os.environ.get("OMNIQ_BENCH_COUNT_IO"):
        from benchmarks import iocount

        iocount.install()
    system = load(name, Context.from_env())
    runner = asyncio.ensure_future(system.run_worker(concurrency))
    loop = asyncio.get_running_loop()

    def stop() -> None:
        runner.cancel()
        # Exiting is not measured: a worker that does not wind down promptly is just ended.
        loop.call_later(_GRACE, os._exit, 0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    with contextlib.suppress(asyncio.CancelledError):
        await runner


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
