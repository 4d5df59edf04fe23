"""Serving the dashboard with uvicorn: in the foreground (``omniq dashboard``) or in the
background of an asyncio program (tests, screenshots, an app embedding it)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import uvicorn

from omniq.queue.base import BaseTaskQueue

from .app import create_app
from .security import LOOPBACK_NAMES, is_loopback

_START_TIMEOUT = 30.0


def default_allowed_hosts(host: str) -> list[str] | None:
    """Host headers to accept when bound to ``host``: on loopback only loopback names (so a
    web page cannot reach the dashboard by DNS rebinding); elsewhere any (the token guards)."""
    return list(dict.fromkeys([*LOOPBACK_NAMES, host])) if is_loopback(host) else None


async def serve(
    queue: BaseTaskQueue,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    token: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
    **options: Any,
) -> None:
    """Serve the dashboard for ``queue`` until interrupted (Ctrl-C or SIGTERM)."""
    if not is_loopback(host) and token is None:
        print(f"omniq dashboard: WARNING: serving {host} without a token: anyone who can reach "
              "it can cancel and purge tasks (set OMNIQ_DASHBOARD_TOKEN)", file=sys.stderr)
    hosts = allowed_hosts if allowed_hosts is not None else default_allowed_hosts(host)
    app = create_app(queue, token=token, allowed_hosts=hosts, **options)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    print(f"omniq dashboard: http://{shown}:{port}/ for {queue!r}"
          f"{' (token required)' if token else ''}; Ctrl-C stops it", file=sys.stderr)
    await server.serve()


class _Background(uvicorn.Server):
    """A server that leaves signals to the program it runs in."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: Any, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run any ASGI ``app`` (lifespan included) with uvicorn in the background; yields its
    base URL (``port=0``: a free port). Stops the server on exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = _Background(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(_START_TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()  # startup failed: raise its error
                    raise RuntimeError("the server stopped while starting")
                await asyncio.sleep(0.01)
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound}"
    finally:
        server.should_exit = True
        await task
        sock.close()
