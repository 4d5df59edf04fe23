"""The dashboard as an ASGI application: routes, authentication, forms and rendering."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from omniq.exceptions import BackendError, InvalidTaskError, OmniQError, TaskNotFoundError
from omniq.models.task import TaskStatus, check_id, check_queue_name
from omniq.queue.base import BaseTaskQueue

from . import views
from .security import CSRF_COOKIE, SESSION_COOKIE, SESSION_SECONDS, Guard, Protect, safe_next
from .throughput import Throughput, sample_forever

log = logging.getLogger("omniq.dashboard")
Handler = Callable[[Request], Awaitable[Response]]

FLASH_COOKIE = "omniq_flash"
MAX_FORM = 64 * 1024
MAX_PAGE_SIZE = 500
_ERRORS: list[tuple[type[Exception], int]] = [
    (InvalidTaskError, 400), (ValueError, 400), (TaskNotFoundError, 404), (BackendError, 503),
]


def create_app(
    queue: BaseTaskQueue,
    *,
    token: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
    refresh: float = 10.0,
    page_size: int = 50,
    sample_interval: float = 5.0,
) -> Starlette:
    """The dashboard for ``queue`` (connected and closed by the caller) as an ASGI app.

    ``token``: when set, every page needs it (``Authorization: Bearer`` or the login form's
    cookie). ``allowed_hosts``: the ``Host`` header values served (None: any).
    ``refresh``: seconds between reloads of the queues page (0: never). Throughput is
    sampled every ``sample_interval`` seconds while the app's lifespan runs.
    """
    dashboard = Dashboard(queue, Guard(token), refresh=refresh, page_size=page_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sampler = asyncio.create_task(
            sample_forever(queue, dashboard.throughput, sample_interval)
        )
        try:
            yield
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler

    return Starlette(
        routes=dashboard.routes(),
        middleware=[Middleware(Protect, allowed_hosts=allowed_hosts)],
        # Exception is the last resort (Starlette then re-raises it, so the server logs it).
        exception_handlers={kind: dashboard.error
                            for kind in (HTTPException, OmniQError, ValueError, Exception)},
        lifespan=lifespan,
    )


class Dashboard:
    """The pages and actions over one queue."""

    def __init__(self, queue: BaseTaskQueue, guard: Guard, *, refresh: float,
                 page_size: int) -> None:
        self.queue, self.guard = queue, guard
        self.refresh = int(refresh) if refresh > 0 else None
        self.page_size = page_size
        self.throughput = Throughput()
        self.backend = repr(queue)  # queues never show a password in their repr
        self.env = Environment(
            loader=PackageLoader("omniq.dashboard"), autoescape=True, undefined=StrictUndefined
        )
        self.css = (resources.files("omniq.dashboard") / "static" / "dashboard.css").read_bytes()

    def routes(self) -> list[Route]:
        """The URL map."""
        page, action = self._page, self._action
        return [
            Route("/", page(self.overview)),
            Route("/tasks", page(self.tasks)),
            Route("/tasks/{task_id}", page(self.task)),
            Route("/tasks/{task_id}/{verb}", action(self.task_action), methods=["POST"]),
            Route("/queues/{queue_name}/purge", page(self.purge_form)),
            Route("/queues/{queue_name}/{verb}", action(self.queue_action), methods=["POST"]),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", action(self.logout), methods=["POST"]),
            Route("/static/dashboard.css", self.stylesheet),
        ]

    # -- guards -----------------------------------------------------------------------------

    def _page(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if self.guard.authenticated(request):
                return await handler(request)
            if "authorization" in request.headers:
                raise HTTPException(401, "wrong token", {"www-authenticate": "Bearer"})
            target = safe_next(_relative(request))
            return self._redirect(request, "/login?" + urlencode({"next": target}))

        return guarded

    def _action(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if not self.guard.authenticated(request):
                if "authorization" in request.headers:
                    raise HTTPException(401, "wrong token", {"www-authenticate": "Bearer"})
                return self._redirect(request, "/login")  # e.g. the session ran out
            form = await _form(request)
            # A bearer header cannot be sent by another site's form: no CSRF token needed.
            bearer = self.guard.required and self.guard.bearer_ok(request)
            if not bearer and not self.guard.csrf_ok(request, _first(form, "csrf")):
                raise HTTPException(
                    403, "This form has expired or did not come from this dashboard: "
                    "reload the page and try again.")
            request.state.form = form
            return await handler(request)

        return guarded

    # -- rendering --------------------------------------------------------------------------

    def render(self, request: Request, template: str, http_status: int = 200,
               **context: Any) -> HTMLResponse:
        """A page from ``template``, with the CSRF cookie set and any flash message shown."""
        root: str = request.scope.get("root_path", "")
        cookie = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        flash = unquote(request.cookies.get(FLASH_COOKIE, "")) or None

        def url(path: str, **query: Any) -> str:
            given = {k: v for k, v in query.items() if v not in (None, "")}
            return root + path + ("?" + urlencode(given) if given else "")

        authed = self.guard.authenticated(request)
        page = {
            "url": url, "csrf": self.guard.csrf_token(cookie), "flash": flash, "authed": authed,
            "backend": self.backend if authed else None,
            "logged_in": self.guard.required and authed,
            "here": safe_next(_relative(request)), "statuses": views.STATUSES, "refresh": None,
        }
        html = self.env.get_template(template).render({**page, **context})
        response = HTMLResponse(html, http_status)
        if request.cookies.get(CSRF_COOKIE) != cookie:
            self._cookie(request, response, CSRF_COOKIE, cookie)
        if flash:
            response.delete_cookie(FLASH_COOKIE, path=root or "/")
        return response

    def _cookie(self, request: Request, response: Response, name: str, value: str,
                max_age: int | None = None) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path=request.scope.get("root_path", "") or "/",
            httponly=True, samesite="lax", secure=request.url.scheme == "https",
        )

    def _redirect(self, request: Request, target: str, flash: str | None = None) -> Response:
        response = RedirectResponse(request.scope.get("root_path", "") + target, 303)
        if flash:
            self._cookie(request, response, FLASH_COOKIE, quote(flash), max_age=60)
        return response

    async def error(self, request: Request, exc: Exception) -> Response:
        """Errors as pages: bad input 400, unknown task 404, backend down 503."""
        status, message = 500, "Internal error: the details are in the dashboard's log."
        if isinstance(exc, HTTPException):
            status, message = exc.status_code, exc.detail
        else:
            for kind, code in _ERRORS:
                if isinstance(exc, kind):
                    status, message = code, str(exc)
                    break
            else:
                log.exception("dashboard error on %s", request.url.path, exc_info=exc)
        response = self.render(request, "error.html", status, code=status, message=message)
        if isinstance(exc, HTTPException) and exc.headers:
            response.headers.update(exc.headers)
        return response

    # -- pages ------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        """Queues with their counts, state and throughput."""
        data = await views.overview(self.queue, self.throughput)
        return self.render(request, "overview.html", refresh=self.refresh, **data)

    async def tasks(self, request: Request) -> Response:
        """Tasks newest first, filtered by queue and status, a page at a time."""
        params = request.query_params
        queue_name = check_queue_name(params["queue"]) if params.get("queue") else None
        status = TaskStatus(params["status"]) if params.get("status") else None
        page = _integer(params.get("page"), "page", 1, 1, 10**9)
        per_page = _integer(params.get("per_page"), "per_page", self.page_size, 1, MAX_PAGE_SIZE)
        data = await views.task_list(self.queue, queue_name, status, page, per_page)
        return self.render(request, "tasks.html", **data)

    async def task(self, request: Request) -> Response:
        """One task in full."""
        task_id = check_id(request.path_params["task_id"])
        task = await self.queue.get_task(task_id)
        if task is None:
            raise TaskNotFoundError(f"no task with id {task_id!r}")
        return self.render(request, "task.html", **await views.task_detail(self.queue, task))

    async def purge_form(self, request: Request) -> Response:
        """Which statuses to purge from a queue, with their counts."""
        name = check_queue_name(request.path_params["queue_name"])
        stats = await self.queue.stats(name)
        return self.render(request, "purge.html", queue_name=name,
                           choices=views.purge_choices(stats))

    async def stylesheet(self, request: Request) -> Response:
        """The one stylesheet (no scripts anywhere)."""
        return Response(self.css, media_type="text/css",
                        headers={"cache-control": "max-age=3600"})

    # -- actions ----------------------------------------------------------------------------

    async def task_action(self, request: Request) -> Response:
        """Cancel, requeue, pause or resume a task."""
        task_id = check_id(request.path_params["task_id"])
        verb = request.path_params["verb"]
        if verb not in _TASK_VERBS:
            raise HTTPException(404, f"no such action {verb!r}")
        if await self.queue.get_task(task_id) is None:
            raise TaskNotFoundError(f"no task with id {task_id!r}")
        method, done, refused = _TASK_VERBS[verb]
        changed = await getattr(self.queue, method)(task_id)
        target = safe_next(_first(request.state.form, "next"), f"/tasks/{task_id}")
        return self._redirect(request, target, (done if changed else refused).format(task_id))

    async def queue_action(self, request: Request) -> Response:
        """Pause, resume or purge a queue."""
        name = check_queue_name(request.path_params["queue_name"])
        verb = request.path_params["verb"]
        form = request.state.form
        target = safe_next(_first(form, "next"), "/")
        if verb == "pause":
            await self.queue.pause(name)
            return self._redirect(request, target, f"Queue {name} paused: running tasks finish, "
                                                   "no new ones start.")
        if verb == "resume":
            await self.queue.resume(name)
            return self._redirect(request, target, f"Queue {name} resumed.")
        if verb != "purge":
            raise HTTPException(404, f"no such action {verb!r}")
        statuses = [TaskStatus(value) for key, value in form if key == "status"]
        if not statuses:
            return self._redirect(request, f"/queues/{name}/purge",
                                  "Choose at least one status to purge.")
        deleted = await self.queue.purge(name, statuses)
        return self._redirect(request, "/", f"Purged {deleted} task(s) from queue {name}.")

    async def login(self, request: Request) -> Response:
        """The login form (GET) and its check (POST)."""
        if not self.guard.required:
            return self._redirect(request, "/")
        target = safe_next(request.query_params.get("next"))
        if request.method == "GET":
            return self.render(request, "login.html", next=target, failed=False)
        form = await _form(request)
        target = safe_next(_first(form, "next"))
        if not self.guard.csrf_ok(request, _first(form, "csrf")):
            raise HTTPException(403, "This form has expired: reload the page and try again.")
        if not self.guard.token_matches(_first(form, "token") or ""):
            return self.render(request, "login.html", 401, next=target, failed=True)
        response = self._redirect(request, target)
        self._cookie(request, response, SESSION_COOKIE, self.guard.new_session(),
                     max_age=SESSION_SECONDS)
        return response

    async def logout(self, request: Request) -> Response:
        """Forget the session cookie."""
        response = self._redirect(request, "/login", "Logged out.")
        response.delete_cookie(SESSION_COOKIE, path=request.scope.get("root_path", "") or "/")
        return response


# verb: (queue method, message when it changed something, message when it did not)
_TASK_VERBS = {
    "cancel": ("cancel", "Task {} cancelled.", "Task {} had already ended: nothing to cancel."),
    "requeue": ("requeue", "Task {} requeued.",
                "Task {} has not ended: only ended tasks can be requeued."),
    "pause": ("pause_task", "Task {} paused.", "Task {} was not paused (ended or already paused)."),
    "resume": ("resume_task", "Task {} resumed.", "Task {} was not paused."),
}


def _relative(request: Request) -> str:
    """The request's path and query inside the dashboard (without a mount prefix)."""
    root = request.scope.get("root_path", "")
    path = request.url.path
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path + (f"?{request.url.query}" if request.url.query else "")


async def _form(request: Request) -> list[tuple[str, str]]:
    """The url-encoded form fields of a POST (the dashboard's forms carry nothing else)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise HTTPException(413, "form too large")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "expected an application/x-www-form-urlencoded form")
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


def _first(form: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in form if k == name), None)


def _integer(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {text!r}")
    return int(text)
