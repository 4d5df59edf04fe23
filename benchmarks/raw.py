"""The servers' own limits from Python, measured in the same run as the queues:

- Redis: pipelined commands per second (redis-py, 1,000 INCRs per pipeline);
- PostgreSQL: jobs claimed and completed per second, 100 at a time, with
  ``FOR UPDATE SKIP LOCKED`` (asyncpg, one connection, one statement per claim and per
  completion);
- NATS: JetStream messages fetched and acknowledged per second from a pull consumer
  (nats-py, fetch batches of 100);
- NATS, one by one: ``js.publish`` awaited for its acknowledgement, one message at a time, on
  one connection, three ways taken in turns, a slice of messages each, so the machine's swings
  touch them alike: to one subject of a plain stream (what Taskiq's enqueue does), to a new key
  of a key-value bucket each time, and the same create-only (with the expected-last-sequence
  header an OmniQ enqueue sends, so an existing id is never overwritten) — the floors of a
  single enqueue, and the paired ratio create-only ÷ stream (the median over the turns).

    python -m benchmarks.raw \
        redis|postgres|nats|nats-publish --ns NS [--size N]

Runs in the project's .venv; prints one ``RESULT`` JSON line like the driver (``nats-publish``:
a rate per way and the ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from contextlib import suppress
from typing import Any

from benchmarks import services
from benchmarks.common import NATS, REDIS, median, print_result

#: The ways ``nats-publish`` measures: subject (with {ns}, {i}) and headers. Each sends headers,
#: as Taskiq sends its labels (an empty set) and OmniQ its expected sequence.
PUBLISH_WAYS = {
    "stream": ("{ns}.pub", {}),
    "kv": ("$KV.{ns}_pub.k{i}", {}),
    "kv-create": ("$KV.{ns}_pub.c{i}", {"Nats-Expected-Last-Subject-Sequence": "0"}),
}


async def redis_ceiling(ns: str, seconds: float) -> float:
    """Pipelined commands per second."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS)
    key = f"{ns}:raw"
    done = 0
    try:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            pipe = client.pipeline(transaction=False)
            for _ in range(1000):
                pipe.incr(key)
            await pipe.execute()
            done += 1000
        return done / (time.perf_counter() - started)
    finally:
        await client.delete(key)
        await client.aclose()


_CLAIM = """UPDATE jobs SET status = 1 WHERE id IN (
    SELECT id FROM jobs WHERE status = 0 ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED
) RETURNING id"""


async def postgres_ceiling(ns: str, jobs: int) -> float:
    """Jobs claimed and completed per second, 100 at a time."""
    import asyncpg

    dsn = await services.create_database(ns)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "CREATE TABLE jobs (id bigserial PRIMARY KEY, status smallint NOT NULL DEFAULT 0,"
                " payload bytea NOT NULL)")
            await conn.execute("CREATE INDEX jobs_ready ON jobs (id) WHERE status = 0")
            await conn.execute("INSERT INTO jobs (payload) SELECT '\\x00'::bytea"
                               " FROM generate_series(1, $1)", jobs)
            await conn.execute("VACUUM ANALYZE jobs")
            done = 0
            started = time.perf_counter()
            while True:
                ids = [r[0] for r in await conn.fetch(_CLAIM)]
                if not ids:
                    break
                await conn.execute("UPDATE jobs SET status = 2 WHERE id = ANY($1::bigint[])", ids)
                done += len(ids)
            return done / (time.perf_counter() - started)
        finally:
            await conn.close()
    finally:
        await services.drop_database(ns)


async def nats_ceiling(ns: str, messages: int) -> float:
    """JetStream messages fetched and acknowledged per second (pull consumer, batches of 100)."""
    import nats

    nc = await nats.connect(NATS)
    js = nc.jetstream()
    stream, subject = f"{ns}_raw", f"{ns}.raw"
    try:
        await js.add_stream(name=stream, subjects=[subject])
        for i in range(0, messages, 1000):
            acks = [await js.publish_async(subject, b"x") for _ in range(min(1000, messages - i))]
            await asyncio.gather(*acks)
        sub = await js.pull_subscribe(subject, durable=f"{ns}_c", stream=stream)
        done = 0
        started = time.perf_counter()
        while done < messages:
            for msg in await sub.fetch(100, timeout=10):
                await msg.ack()
                done += 1
        await nc.flush()
        return done / (time.perf_counter() - started)
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def nats_publish(ns: str, messages: int, turns: int = 10) -> dict[str, Any]:
    """Acknowledged publishes per second, one at a time, each way of ``PUBLISH_WAYS`` in turns
    of ``messages / turns``; and the median over the turns of create-only ÷ stream."""
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(NATS)
    js = nc.jetstream()
    payload = b"x" * 112  # an OmniQ enqueue's stored no-op task
    per_turn = max(1, messages // turns)
    taken: dict[str, list[float]] = {way: [] for way in PUBLISH_WAYS}
    count = 0
    try:
        await js.create_key_value(bucket=f"{ns}_pub", history=1, direct=True)
        await js.add_stream(name=f"{ns}_pub", subjects=[f"{ns}.pub"])
        for turn in range(turns + 1):
            for way, (subject, headers) in PUBLISH_WAYS.items():
                started = time.perf_counter()
                for _ in range(per_turn):
                    count += 1
                    await js.publish(subject.format(ns=ns, i=count), payload, headers=headers)
                if turn:  # the first turn warms up
                    taken[way].append(per_turn / (time.perf_counter() - started))
        out: dict[str, Any] = {way: median(rates) for way, rates in taken.items()}
        out["ratio"] = median([c / s for c, s in zip(taken["kv-create"], taken["stream"],
                                                     strict=True)])
        return out
    finally:
        for stream in (f"{ns}_pub", f"KV_{ns}_pub"):
            with suppress(NotFoundError):  # not made: an error above says why
                await js.delete_stream(stream)
        await nc.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.server == "redis":
        return {"rate": await redis_ceiling(args.ns, args.size / 20_000)}
    if args.server == "postgres":
        return {"rate": await postgres_ceiling(args.ns, args.size)}
    if args.server == "nats-publish":
        return await nats_publish(args.ns, args.size // 5)
    return {"rate": await nats_ceiling(args.ns, args.size)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.raw")
    p.add_argument("server", choices=("redis", "postgres", "nats", "nats-publish"))
    p.add_argument("--ns", required=True)
    p.add_argument("--size", type=int, default=50_000,
                   help="jobs/messages (Redis: runs size/20,000 seconds)")
    print_result(run(p.parse_args()))


if __name__ == "__main__":
    main()
