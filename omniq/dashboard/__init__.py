"""The OmniQ web dashboard: queues, tasks and actions in the browser, over any backend.

Needs ``pip install 'omniq[dashboard]'``; ``import omniq`` never imports it. Run it with
``omniq dashboard --backend URL``, or build the ASGI app yourself::

    from omniq.dashboard import create_app
    app = create_app(queue, token="...")     # queue connected by you
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        f"the OmniQ dashboard needs the {exc.name!r} package: pip install 'omniq[dashboard]'"
    ) from exc

from omniq.dashboard.app import create_app
from omniq.dashboard.server import serve, serving

__all__ = ["create_app", "serve", "serving"]
