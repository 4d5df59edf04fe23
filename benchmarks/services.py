"""Fresh places on the shared servers for one measurement, and removing them afterwards.

Every measurement gets its own PostgreSQL database, its own Redis key prefix and its own
JetStream streams, and deletes exactly those: the servers are shared, so nothing here ever
flushes, restarts or touches what another namespace owns.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from benchmarks.common import NATS, POSTGRES, REDIS


def database_dsn(name: str) -> str:
    """The DSN of database ``name`` on the benchmark's PostgreSQL server."""
    parts = urlsplit(POSTGRES)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(sql: str) -> None:
    """Run one statement on the server's admin database (CREATE/DROP DATABASE)."""
    import asyncpg

    conn = await asyncpg.connect(POSTGRES)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(name: str) -> str:
    """Create an empty database for one measurement; its DSN."""
    await _admin(f'CREATE DATABASE "{name}"')
    return database_dsn(name)


async def drop_database(name: str) -> None:
    """Drop a database made by ``create_database`` (closing any connection left on it)."""
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def delete_redis_keys(patterns: list[str], url: str = REDIS) -> int:
    """Delete the keys matching these glob patterns (SCAN + UNLINK, never FLUSH); how many."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    deleted = 0
    try:
        for pattern in patterns:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += await client.unlink(*batch)
                    batch = []
            if batch:
                deleted += await client.unlink(*batch)
    finally:
        await client.aclose()
    return deleted


async def delete_nats_streams(marker: str, url: str = NATS) -> list[str]:
    """Delete the JetStream streams whose name contains ``marker`` (a run's namespace)."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jsm()
        names = [n for n in (s.config.name for s in await js.streams_info()) if n and marker in n]
        for name in names:
            await js.delete_stream(name)
    finally:
        await nc.close()
    return names


async def sweep(prefix: str) -> list[str]:
    """Remove anything a whole run left behind (its namespaces all start with ``prefix``),
    even after a measurement crashed: Redis keys, JetStream streams, databases."""
    import asyncpg

    left = [f"redis: {n} keys" for n in [await delete_redis_keys([f"*{prefix}*"])] if n]
    left += [f"nats stream {name}" for name in await delete_nats_streams(prefix)]
    conn = await asyncpg.connect(POSTGRES)
    try:
        names = [r[0] for r in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%")]
    finally:
        await conn.close()
    for name in names:
        await drop_database(name)
    return left + [f"database {name}" for name in names]
