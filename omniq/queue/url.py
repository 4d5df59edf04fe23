"""``connect(url)``: choose and configure a backend from a URL, importing only its driver."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from omniq.queue.base import BaseTaskQueue

SCHEMES = {
    "memory": ("omniq.queue.memory", "MemoryTaskQueue"),
    "file": ("omniq.queue.file", "FileTaskQueue"),
    "sqlite": ("omniq.queue.sqlite", "SQLiteTaskQueue"),
    "postgresql": ("omniq.queue.postgres", "PostgreSQLTaskQueue"),
    "postgres": ("omniq.queue.postgres", "PostgreSQLTaskQueue"),
    "redis": ("omniq.queue.redis", "RedisTaskQueue"),
    "rediss": ("omniq.queue.redis", "RedisTaskQueue"),
    "nats": ("omniq.queue.nats", "NATSTaskQueue"),
}
# Options every queue takes, with their types; they may ride in the query string.
_COMMON: dict[str, type] = {"namespace": str, "lease_timeout": float, "max_payload": int}
# Extras each backend declares for its drivers; pip install 'omniq[<extra>]'.
EXTRAS = {
    "aiosqlite": "sqlite",
    "asyncpg": "postgres",
    "redis": "redis",
    "nats": "nats",
    "fsspec": "file",
}


def import_driver(name: str) -> Any:
    """Import a backend's driver, or say which extra installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        extra = EXTRAS.get(name.split(".")[0], "all")
        raise ImportError(
            f"this backend needs the {name.split('.')[0]!r} package: pip install 'omniq[{extra}]'"
        ) from exc


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def connect(url: str, **options: Any) -> BaseTaskQueue:
    """A queue (not yet connected) for ``url``; keyword options override the query string.

    ``memory://``, ``file:///abs/dir``, ``sqlite:///relative.db`` / ``sqlite:////abs/path.db``,
    ``postgresql://…``, ``redis://…``, ``nats://host:port[,host:port…]``.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        supported = ", ".join(f"{s}://" for s in SCHEMES)
        raise ValueError(f"unknown backend URL scheme {scheme or url!r}; supported: {supported}")
    base, _, query = url.partition("?")
    kept: list[tuple[str, str]] = []
    opts: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _COMMON:
            try:
                opts[key] = _COMMON[key](value)
            except ValueError:
                raise ValueError(f"invalid {key} {value!r} in backend URL") from None
        else:
            kept.append((key, value))
    opts.update(options)
    module_name, class_name = SCHEMES[scheme]
    cls = getattr(importlib.import_module(module_name), class_name)
    rest = base + ("?" + urlencode(kept) if kept else "")
    if scheme in ("postgresql", "postgres"):
        return cls(rest, **opts)  # type: ignore[no-any-return]
    if scheme in ("redis", "rediss"):
        return cls(url=rest, **opts)  # type: ignore[no-any-return]
    if kept:
        raise ValueError(f"unknown option(s) {', '.join(k for k, _ in kept)} for {scheme}://")
    target = unquote(base.split("://", 1)[1])
    if scheme == "memory":
        return cls(**opts)  # type: ignore[no-any-return]
    if scheme == "sqlite":
        return cls(target[1:] if target.startswith("/") else target, **opts)  # type: ignore[no-any-return]
    if scheme == "file":
        return cls(target or ".", **opts)  # type: ignore[no-any-return]
    servers = [f"nats://{s}" for s in target.split(",") if s]
    return cls(servers or ["nats://localhost:4222"], **opts)  # type: ignore[no-any-return]
