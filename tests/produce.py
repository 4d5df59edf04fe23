"""A producer process: ``python -m tests.produce URL BOOK PREFIX COUNT [options]``.

Enqueues COUNT ledger tasks with ids ``<PREFIX><n>`` in batches and logs ``enqueued`` for each
once the queue acknowledged it. A batch that fails with BackendError (server away) is sent
again, unchanged, until acknowledged: enqueue is idempotent on the id, so nothing is doubled.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from omniq import BackendError, Task, connect
from tests import ledger


async def produce(args: argparse.Namespace) -> None:
    async with connect(args.url) as queue:
        retried = 0
        for start in range(0, args.count, args.batch):
            batch = [
                Task(func=ledger.record, id=f"{args.prefix}{n}",
                     args=(args.book, f"{args.prefix}{n}", args.seconds))
                for n in range(start, min(start + args.batch, args.count))
            ]
            deadline = time.monotonic() + args.patience
            while True:
                try:
                    await queue.enqueue_many(batch)
                    break
                except BackendError:
                    if time.monotonic() > deadline:
                        raise
                    retried += 1
                    await asyncio.sleep(0.1)
            for task in batch:
                ledger.append(args.book, "enqueued", task.id)
            if args.pause:
                await asyncio.sleep(args.pause)
        print(f"enqueued {args.count}, {retried} batch(es) sent again", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.produce")
    parser.add_argument("url")
    parser.add_argument("book")
    parser.add_argument("prefix")
    parser.add_argument("count", type=int)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between batches")
    parser.add_argument("--seconds", type=float, default=0.0, help="each task's run time")
    parser.add_argument("--patience", type=float, default=60.0,
                        help="seconds a batch may keep failing before giving up")
    asyncio.run(produce(parser.parse_args()))


if __name__ == "__main__":
    main()
