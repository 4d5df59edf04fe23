"""The ``omniq`` command: run workers, enqueue, inspect and control tasks from a shell.

Exit codes: 0 success; 2 bad usage (unknown options, invalid JSON, cron, queue name or id);
1 any other error (unknown task, unreachable backend, a failed task for ``result``). Errors are
one line on stderr, ``omniq: error: ...``; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from omniq import tasklog
from omniq.exceptions import InvalidTaskError, OmniQError
from omniq.formatting import func_name as _func
from omniq.formatting import schedule_text as _schedule
from omniq.formatting import short as _short
from omniq.formatting import utc_text as _time
from omniq.formatting import when as _when
from omniq.models.schedule import Schedule, as_utc
from omniq.models.task import Task, TaskStatus, check_id, check_queue_name
from omniq.queue.base import BaseTaskQueue, QueueStats
from omniq.queue.url import connect, redact
from omniq.registry import check_reference
from omniq.serialization import encode, encode_json

if TYPE_CHECKING:
    from omniq.worker import WorkerPool

T = TypeVar("T")
Command = Callable[[argparse.Namespace, BaseTaskQueue], Awaitable[int]]

DEFAULT_BACKEND = "sqlite:///omniq.db"
log = logging.getLogger("omniq.cli")
_PROGRESS_EVERY = 0.5


class CommandError(Exception):
    """An error the CLI reports as one line on stderr, with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    # argparse prints usage plus a message on errors; we want one line and exit code 2.
    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{message} (see '{self.prog} --help')", 2)


@contextlib.contextmanager
def _user_input() -> Iterator[None]:
    """Inside, ValueError/TypeError come from what the user typed: bad usage, exit 2."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise CommandError(str(exc), 2) from exc


# -- argument types -------------------------------------------------------------------------


def _checked(convert: Callable[[str], T]) -> Callable[[str], T]:
    def parse(text: str) -> T:
        try:
            return convert(text)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc) or f"invalid value {text!r}") from None

    parse.__name__ = convert.__name__
    return parse


def _json(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not valid JSON ({exc}): {text!r}") from None
        if not isinstance(value, kind):
            raise ValueError(f"expected a JSON {'array' if kind is list else 'object'}: {text!r}")
        return value

    return _checked(parse)


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a non-negative number of seconds, not {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise ValueError("expected a positive number of seconds, not 0")
    return value


def _count(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise ValueError(f"expected an integer >= {low}, not {text!r}")
        return value

    return _checked(parse)


def _moment(text: str) -> datetime:
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(f"expected an ISO time like 2030-01-31T09:00Z, not {text!r}") from None


def _cron(text: str) -> str:
    Schedule(cron=text)
    return text


def _status(text: str) -> TaskStatus:
    try:
        return TaskStatus(text.lower())
    except ValueError:
        choices = ", ".join(s.value for s in TaskStatus)
        raise ValueError(f"unknown status {text!r} (choose from {choices})") from None


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"expected a port number 0-65535, not {text!r}")
    return value


def _level(text: str) -> str:
    if text.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"unknown log level {text!r} (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    return text.upper()


queue_name = _checked(check_queue_name)
task_id = _checked(check_id)


# -- the parser -----------------------------------------------------------------------------


def _common() -> _Parser:
    # SUPPRESS defaults let the options go before or after the subcommand without the
    # subcommand's defaults overwriting what was given before it.
    common = _Parser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument("--backend", metavar="URL", default=argparse.SUPPRESS,
                       help=f"queue URL (default: $OMNIQ_BACKEND, else {DEFAULT_BACKEND})")
    group.add_argument("--namespace", default=argparse.SUPPRESS,
                       help="namespace within the backend (overrides ?namespace= in the URL)")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show full tracebacks on errors")
    group.add_argument("--log-level", metavar="LEVEL", type=_checked(_level),
                       default=argparse.SUPPRESS,
                       help="DEBUG, INFO, WARNING, ERROR (default: INFO for worker, else WARNING)")
    group.add_argument("--log-format", choices=("text", "json"), default=argparse.SUPPRESS,
                       help="log lines as text (default) or one JSON object per line")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``omniq`` argument parser (every subcommand)."""
    from omniq import __version__

    common = _common()
    parser = _Parser(
        prog="omniq", parents=[common],
        description="OmniQ task queue: run workers, enqueue and inspect tasks.",
        epilog="Exit codes: 0 success, 1 error, 2 bad usage. See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"omniq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Command, summary: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, parents=[common], help=summary, description=summary)
        command.set_defaults(handler=handler)
        return command

    worker = add("worker", _worker, "run a worker until stopped (or drained, with --burst)")
    worker.add_argument("--queue", dest="queues", action="append", type=queue_name,
                        metavar="NAME", help="queue to serve, in order (repeatable; default: "
                                             "default)")
    worker.add_argument("--concurrency", type=_count(1), default=10, metavar="N",
                        help="tasks run at once (default: 10)")
    worker.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="module whose functions may run (repeatable; the current directory "
                             "is importable)")
    worker.add_argument("--burst", action="store_true",
                        help="exit once the queues are drained, showing progress on stderr")
    worker.add_argument("--grace-period", type=_checked(_seconds), default=10.0, metavar="S",
                        help="on shutdown, seconds running tasks get to finish (default: 10)")
    worker.add_argument("--metrics-port", type=_checked(_port), metavar="N",
                        help="serve Prometheus metrics on this port (needs omniq[metrics])")
    worker.add_argument("--metrics-host", default="0.0.0.0", metavar="HOST",
                        help="address the metrics server binds (default: 0.0.0.0)")
    worker.add_argument("--tracing", action="store_true",
                        help="run each task in an OpenTelemetry span, child of its enqueue "
                             "(needs omniq[otel] and a configured tracer provider)")

    enqueue = add("enqueue", _enqueue, "enqueue a call of REF and print the task id")
    enqueue.add_argument("ref", type=_checked(check_reference), metavar="REF",
                         help="the function, as 'package.module:qualname' (never imported here)")
    enqueue.add_argument("--args", type=_json(list), default=[], metavar="JSON",
                         help="positional arguments, a JSON array")
    enqueue.add_argument("--kwargs", type=_json(dict), default={}, metavar="JSON",
                         help="keyword arguments, a JSON object")
    enqueue.add_argument("--queue", type=queue_name, default="default", metavar="NAME")
    enqueue.add_argument("--priority", type=int, default=0, help="higher runs first (default: 0)")
    enqueue.add_argument("--id", type=task_id, help="task id (an existing id is left unchanged)")
    enqueue.add_argument("--max-retries", type=_count(0), default=0, metavar="N")
    enqueue.add_argument("--retry-delay", type=_checked(_seconds), default=1.0, metavar="S")
    enqueue.add_argument("--timeout", type=_checked(_positive_seconds), metavar="S",
                         help="limit on one attempt's run time")
    enqueue.add_argument("--ttl", type=_checked(_positive_seconds), metavar="S",
                         help="expire if not started within S seconds of becoming due")
    enqueue.add_argument("--depends-on", dest="depends_on", action="append", default=[],
                         type=task_id, metavar="ID", help="run after this task completes")
    when = enqueue.add_mutually_exclusive_group()
    when.add_argument("--delay", type=_checked(_seconds), metavar="S", help="run in S seconds")
    when.add_argument("--at", type=_checked(_moment), metavar="ISO",
                      help="run at this time (naive means UTC)")
    when.add_argument("--cron", type=_checked(_cron), metavar="EXPR",
                      help="recur on a 5-field cron expression")
    when.add_argument("--every", type=_checked(_positive_seconds), metavar="S",
                      help="recur every S seconds")
    enqueue.add_argument("--tz", help="time zone of --cron (default: UTC)")

    status = add("status", _status_cmd, "show a task")
    status.add_argument("id", type=task_id, metavar="ID")
    status.add_argument("--json", action="store_true", help="print the whole task as JSON")

    result = add("result", _result, "wait for a task to end and print its result as JSON")
    result.add_argument("id", type=task_id, metavar="ID")
    result.add_argument("--timeout", type=_checked(_seconds), metavar="S",
                        help="give up after S seconds (default: wait)")

    stats = add("stats", _stats, "task counts per queue and status")
    stats.add_argument("--queue", dest="queues", action="append", type=queue_name,
                       metavar="NAME", help="only this queue (repeatable)")

    listing = add("list", _list, "list tasks in enqueue order")
    listing.add_argument("--queue", type=queue_name, metavar="NAME")
    listing.add_argument("--status", type=_checked(_status), metavar="STATUS")
    listing.add_argument("--limit", type=_count(1), default=100, metavar="N",
                         help="at most N tasks (default: 100)")

    cancel = add("cancel", _cancel, "cancel a task that has not ended")
    cancel.add_argument("id", type=task_id, metavar="ID")
    for name, handler, summary in (
        ("pause", _pause, "stop handing out tasks of a queue"),
        ("resume", _resume, "hand out tasks of a paused queue again"),
    ):
        add(name, handler, summary).add_argument("queue", type=queue_name, metavar="QUEUE")
    purge = add("purge", _purge, "delete a queue's tasks (default: the ended ones)")
    purge.add_argument("queue", type=queue_name, metavar="QUEUE")
    purge.add_argument("--status", dest="statuses", action="append", type=_checked(_status),
                       metavar="STATUS", help="delete tasks in this status (repeatable)")

    dashboard = add("dashboard", _dashboard, "serve the web dashboard (needs omniq[dashboard])")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default: 127.0.0.1, this machine only)")
    dashboard.add_argument("--port", type=_count(0), default=8080, help="(default: 8080)")
    dashboard.add_argument("--token", default=argparse.SUPPRESS,
                           help="require this token on every page (default: "
                                "$OMNIQ_DASHBOARD_TOKEN; none: no login)")
    dashboard.add_argument("--allowed-host", dest="allowed_hosts", action="append",
                           metavar="NAME", help="Host header to accept, e.g. behind a proxy "
                                                "(repeatable; default: loopback names when "
                                                "listening on loopback, else any)")
    dashboard.add_argument("--refresh", type=_checked(_seconds), default=10.0, metavar="S",
                           help="reload the queues page every S seconds (0: never; default: 10)")
    return parser


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the ``omniq`` command; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except CommandError as exc:
        return _report(exc, None, debug=False)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    if args.command == "worker":
        # Until the pool takes over the signals, a SIGTERM (a supervisor stopping a worker
        # that is still starting) asks it to stop instead of killing the process.
        signal.signal(signal.SIGTERM, _EARLY_STOP.request)
    url = getattr(args, "backend", None) or os.environ.get("OMNIQ_BACKEND") or DEFAULT_BACKEND
    debug = getattr(args, "debug", False)
    _setup_logging(getattr(args, "log_level", "INFO" if args.command == "worker" else "WARNING"),
                   getattr(args, "log_format", "text"))
    try:
        with _user_input():
            if args.command == "enqueue":
                args.task = _build_task(args)
            options = {"namespace": args.namespace} if hasattr(args, "namespace") else {}
            queue = connect(url, **options)
        return asyncio.run(_run(args.handler, args, queue, url))
    except KeyboardInterrupt:
        print("omniq: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return _report(exc, url, debug=debug)


async def _run(handler: Command, args: argparse.Namespace, queue: BaseTaskQueue, url: str) -> int:
    args.url = url
    async with queue:
        return await handler(args, queue)


def _report(exc: BaseException, url: str | None, *, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = str(exc)
    if not isinstance(exc, OmniQError | CommandError | TimeoutError) or not message:
        message = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if url is not None:
        message = message.replace(url, _redact(url))
        with contextlib.suppress(ValueError):
            password = urlsplit(url).password
            if password:
                message = message.replace(password, "***")
    print(f"omniq: error: {' '.join(message.split())}", file=sys.stderr)
    if isinstance(exc, CommandError):
        return exc.code
    return 2 if isinstance(exc, InvalidTaskError) else 1


def _redact(url: str) -> str:
    try:
        return redact(url)
    except ValueError:  # unparsable netloc: show no part of it that might be secret
        return url.split("://", 1)[0] + "://***"


def _setup_logging(level: str, fmt: str) -> None:
    logging.basicConfig(handlers=[tasklog.handler(fmt)],
                        level=max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("omniq").setLevel(level)


# -- enqueue and inspection -----------------------------------------------------------------


def _build_task(args: argparse.Namespace) -> Task:
    if args.tz is not None and args.cron is None:
        raise CommandError("--tz applies to --cron only", 2)
    schedule = None
    if args.delay:
        schedule = Schedule(run_at=datetime.now(UTC) + timedelta(seconds=args.delay))
    elif args.at is not None:
        schedule = Schedule(run_at=args.at)
    elif args.cron is not None:
        schedule = Schedule(cron=args.cron, tz=args.tz or "UTC")
    elif args.every is not None:
        schedule = Schedule(interval=args.every)
    extra = {"id": args.id} if args.id else {}
    task = Task(
        func=args.ref, args=tuple(args.args), kwargs=args.kwargs, queue_name=args.queue,
        priority=args.priority, max_retries=args.max_retries, retry_delay=args.retry_delay,
        timeout=args.timeout, ttl=args.ttl, depends_on=args.depends_on, schedule=schedule,
        **extra,
    )
    encode((task.args, task.kwargs), what="--args/--kwargs")
    return task


async def _enqueue(args: argparse.Namespace, queue: BaseTaskQueue) -> int:
    print(await queue.enqueue(args.task))
    return 0


async def _status_cmd(args: argparse.Namespace, queue: BaseTaskQueue) -> int:
    task = await _require(queue, args.id)
    if args.json:
        print(encode_json(task).decode())
        return 0
    retries = f"{task.retries} of {task.max_retries} retries"
    fields = [
        ("id", task.id), ("status", task.status.value), ("func", _func(task)),
        ("queue", task.queue_name), ("priority", str(task.priority)),
        ("attempts", f"{task.attempts} ({retries})"), ("schedule", _schedule(task.schedule)),
        ("depends_on", ", ".join(task.depends_on) or "-"), ("created", _time(task.created_at)),
        ("run_at", _time(task.run_at)), ("started", _time(task.started_at)),
        ("finished", _time(task.finished_at)), ("worker", task.worker_id or "-"),
        ("error", task.error or "-"),
        ("result", encode_json(task.result).decode()
                   if task.status is TaskStatus.COMPLETED or task.result is not None else "-"),
    ]
    for name, value in fields:
        print(f"{name + ':':<12}{value}")
    return 0


async def _result(args: argparse.Namespace, queue: BaseTaskQueue) -> int:
    value = await queue.get_result(args.id, timeout=args.timeout)
    print(encode_json(value).decode())
    return 0


async def _stats(args: argparse.Namespace, queue: BaseTaskQueue) -> int:
    names = dict.fromkeys(args.queues) if args.queues else await queue.queue_names()
    rows = {name: await queue.stats(name) for name in names}
    total = _sum(rows.values()) if args.queues else await queue.stats()
    headers = ["QUEUE", *(s.value.upper() for s in TaskStatus), "PAUSED"]
    table = [_stats_row(name, stats) for name, stats in rows.items()]
    table.append(_stats_row("TOTAL", total))
    print(_table(headers, table, right=range(1, len(TaskStatus) + 1)))
    return 0


async def _list(args: argparse.Namespace, queue: BaseTaskQueue) -> int:
    tasks = await queue.list_tasks(args.queue, args.status, args.limit)
    rows = [
        [t.id, t.queue_name, t.status.value, str(t.priority), _short(_func(t), 48),
         str(t.attempts), _time(_when(t)), _short(t.error or "", 50)]
        for t in tasks
    ]
    headers = ["ID", "QUEUE", "STATUS", "PRIORITY", "FUNC", "ATTEMPTS", "WHEN (UTC)", "ERROR"]
    print(_table(headers, rows, right=(3, 5)))
    if len(tasks) == args.limit:
        print(f"(first {args.limit} tasks; use --limit to see more)", file=sys.stderr)
    return 0


async def _cancel(args: argparse.Namespace, queue: BaseTaskQueue) -> int:
    if await queue.cancel(args.id):
        print(f"cancelled {args.id}")
        return 0
    task = await _require(queue, args.id)
    raise CommandError(f"task {args.id} has already ended ({task.status.value}); nothing to cancel")


async def _pause(args: argparse.Namespace, queue: BaseTaskQueue) -> int:
    await queue.pause(args.queue)
    print(f"paused queue {args.queue}")
    return 0


async def _resume(args: argparse.Namespace, queue: BaseTaskQueue) -> int:
    await queue.resume(args.queue)
    print(f"resumed queue {args.queue}")
    return 0


async def _purge(args: argparse.Namespace, queue: BaseTaskQueue) -> int:
    deleted = await queue.purge(args.queue, args.statuses)
    print(f"purged {deleted} task(s) from queue {args.queue}")
    return 0


async def _dashboard(args: argparse.Namespace, queue: BaseTaskQueue) -> int:
    try:
        from omniq.dashboard import serve
    except ImportError as exc:
        raise CommandError(str(exc)) from exc
    if hasattr(args, "token") and not args.token.strip():
        raise CommandError("--token must not be empty", 2)
    token = getattr(args, "token", None) or os.environ.get("OMNIQ_DASHBOARD_TOKEN") or None
    await serve(queue, args.host, args.port, token=token, allowed_hosts=args.allowed_hosts,
                refresh=args.refresh)
    return 0


async def _require(queue: BaseTaskQueue, task_id: str) -> Task:
    task = await queue.get_task(task_id)
    if task is None:
        raise CommandError(f"no task with id {task_id!r}")
    return task


# -- worker ---------------------------------------------------------------------------------


async def _worker(args: argparse.Namespace, queue: BaseTaskQueue) -> int:
    from omniq.worker import WorkerPool

    # Like celery and arq: modules next to where the worker starts can be named in --import.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in args.imports:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise CommandError(f"cannot import {module!r}: {type(exc).__name__}: {exc}") from exc
    pool = WorkerPool(queue, queues=args.queues or ("default",), concurrency=args.concurrency,
                      imports=args.imports, grace_period=args.grace_period)
    # A burst run shows a progress line instead of a line per task (unless --log-level DEBUG).
    tasklog.log_transitions(pool, levels=dict.fromkeys(tasklog.LEVELS, logging.DEBUG)
                            if args.burst else None)
    log.info("backend %s (namespace %s), queues %s, concurrency %d%s%s", _redact(args.url),
             queue.namespace, ", ".join(pool.queues), pool.concurrency,
             f", imports {', '.join(args.imports)}" if args.imports else "",
             ", burst" if args.burst else "")
    _EARLY_STOP.attach(pool)
    async with contextlib.AsyncExitStack() as stack:
        await _observe(args, pool, stack)
        await _run_pool(args, pool, queue)
    return 0


class _EarlyStop:
    """A SIGTERM that arrives before the pool handles signals itself: remembered, and passed
    on to the pool once there is one (it then returns without claiming)."""

    def __init__(self) -> None:
        self.requested = False
        self.pool: WorkerPool | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def request(self, signum: int, frame: object) -> None:
        self.requested = True
        if self.pool is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self._stop)

    def attach(self, pool: WorkerPool) -> None:
        self.pool, self.loop = pool, asyncio.get_running_loop()
        if self.requested:
            self._stop()

    def _stop(self) -> None:
        if self.pool is not None:
            log.info("stop requested while starting")
            self._task = asyncio.ensure_future(self.pool.stop())


_EARLY_STOP = _EarlyStop()


async def _observe(args: argparse.Namespace, pool: WorkerPool,
                   stack: contextlib.AsyncExitStack) -> None:
    """Tracing and the metrics server, as the worker's flags ask."""
    if args.tracing:
        from omniq import tracing

        tracing.instrument(pool)
        tracing.instrument(pool.queue)  # tasks that enqueue through it carry the trace on
    if args.metrics_port is not None:
        from omniq.metrics import Metrics

        metrics = Metrics()
        metrics.instrument(pool)
        metrics.instrument(pool.queue)
        port = await stack.enter_async_context(metrics.serve(args.metrics_port,
                                                             args.metrics_host))
        log.info("metrics on http://%s:%d/metrics", args.metrics_host, port)


async def _run_pool(args: argparse.Namespace, pool: WorkerPool, queue: BaseTaskQueue) -> None:
    if not args.burst:
        await pool.run()
        return
    # JSON logs stay pure JSON: no progress line, and the summary is a log record.
    json_logs = getattr(args, "log_format", "text") == "json"
    progress = _Progress(pool, queue, show=log.isEnabledFor(logging.INFO) and not json_logs)
    ticker = asyncio.create_task(progress.tick())
    try:
        await pool.run(burst=True)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    line = await progress.summary()
    if json_logs:
        log.info("%s", line)
    elif progress.show:
        print(line, file=sys.stderr)


class _Progress(logging.Filter):
    """The burst worker's progress line on stderr, refreshed at most every 0.5 s. On a
    terminal the line is redrawn in place, and cleared before any log line is written."""

    def __init__(self, pool: WorkerPool, queue: BaseTaskQueue, *, show: bool) -> None:
        super().__init__()
        self.pool, self.queue, self.show = pool, queue, show
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last = ""
        self.drawn = False

    async def left(self) -> int | None:
        """Tasks of the pool's queues still to run: pending, due, retrying or waiting."""
        left = 0
        try:
            for name in self.pool.queues:
                stats = await self.queue.stats(name)
                if not stats.paused:
                    left += stats.pending + stats.retrying + stats.waiting
                    left += await self._due_scheduled(name, stats.scheduled)
        except Exception:  # progress is best effort; the pool reports backend trouble
            return None
        return left

    async def _due_scheduled(self, name: str, scheduled: int) -> int:
        if not 0 < scheduled <= 1000:  # counting needs a listing: skip it when large
            return 0
        now = datetime.now(UTC)
        tasks = await self.queue.list_tasks(name, TaskStatus.SCHEDULED, scheduled)
        return sum(1 for t in tasks if t.run_at is not None and t.run_at <= now and not t.paused)

    def filter(self, record: logging.LogRecord) -> bool:
        """Clear the progress line before a log line takes its place."""
        self._clear()
        return True

    def _clear(self) -> None:
        if self.drawn:
            sys.stderr.write("\r\x1b[K")
            self.drawn, self.last = False, ""

    async def tick(self) -> None:
        """Print the line whenever it changed, until cancelled."""
        if not self.show:
            return
        handlers = logging.getLogger().handlers if self.tty else []
        for handler in handlers:
            handler.addFilter(self)
        try:
            while True:
                await asyncio.sleep(_PROGRESS_EVERY)
                left = await self.left()
                c = self.pool.counts
                line = (f"[ {c['completed']} done | {c['failed']} failed | {c['retried']} "
                        f"retried | {self.pool.active} running | "
                        f"{'?' if left is None else left} left ]")
                if line != self.last:
                    self._clear()
                    sys.stderr.write(line if self.tty else line + "\n")
                    sys.stderr.flush()
                    self.last, self.drawn = line, self.tty
        finally:
            for handler in handlers:
                handler.removeFilter(self)

    async def summary(self) -> str:
        """The final line: drained (or stopped with tasks left), counts and rate."""
        elapsed = time.monotonic() - self.started
        left = await self.left()
        c = self.pool.counts
        ended = sum(c[e] for e in ("completed", "failed", "cancelled", "expired"))
        verb = {0: "drained", None: "finished"}.get(left, f"stopped with {left} left")
        self._clear()
        return (f"{verb} in {elapsed:.2f}s: {c['completed']} done, {c['failed']} failed, "
                f"{c['retried']} retried, {c['cancelled']} cancelled, {c['expired']} expired "
                f"({ended / max(elapsed, 1e-9):.1f} tasks/s)")


# -- formatting -----------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    aligned = set(right)

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in aligned else c.ljust(w)
                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def _stats_row(name: str, stats: QueueStats) -> list[str]:
    return [name, *(str(getattr(stats, s.value)) for s in TaskStatus),
            "yes" if stats.paused else "no"]


def _sum(items: Iterable[QueueStats]) -> QueueStats:
    items = list(items)
    counts = {s.value: sum(getattr(x, s.value) for x in items) for s in TaskStatus}
    return QueueStats(**counts, paused=any(x.paused for x in items))
