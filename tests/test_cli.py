"""The ``omniq`` command, run as a real subprocess against a SQLite file in tmp_path."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class CLI:
    """Runs ``python -m omniq ...`` in tmp_path with ``--backend`` pointing at tmp_path/q.db."""

    def __init__(self, tmp_path: Path) -> None:
        self.cwd = tmp_path
        self.url = f"sqlite:///{tmp_path}/q.db"

    def __call__(
        self,
        *args: str,
        backend: str | None = "default",
        env: dict[str, str] | None = None,
        flags: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, *flags, "-m", "omniq", *args]
        if backend is not None:
            command += ["--backend", self.url if backend == "default" else backend]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
        environment.update(PYTHONPATH=str(ROOT), **(env or {}))
        return subprocess.run(
            command, cwd=self.cwd, env=environment, capture_output=True, text=True, timeout=60
        )

    def ok(self, *args: str, **options: object) -> str:
        """stdout of a command that must succeed."""
        result = self(*args, **options)  # type: ignore[arg-type]
        assert result.returncode == 0, (result.stdout, result.stderr)
        return result.stdout

    def enqueue(self, *args: str) -> str:
        task_id = self.ok("enqueue", *args).strip()
        assert UUID.match(task_id), task_id
        return task_id

    def run_many(
        self, *commands: Sequence[str], backend: str | None = "default"
    ) -> list[subprocess.CompletedProcess[str]]:
        """Several independent commands at once."""
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda args: self(*args, backend=backend), commands))

    def burst(self, *queues: str) -> str:
        """Drain with a burst worker allowed to run tests.cli_tasks; its stderr."""
        options = [a for q in queues for a in ("--queue", q)]
        result = self("worker", "--burst", "--import", "tests.cli_tasks", *options)
        assert result.returncode == 0, result.stderr
        return result.stderr


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


def error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single ``omniq: error:`` line of a failed command."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("omniq: error: ")
    return lines[0]


def table(stdout: str) -> list[dict[str, str]]:
    """Rows of a printed table, keyed by header (columns are two or more spaces apart)."""
    header, *rows = stdout.strip("\n").splitlines()
    names = re.split(r"\s{2,}", header.strip())
    return [dict(zip(names, re.split(r"\s{2,}", row.strip()), strict=False)) for row in rows]


def stats(cli: CLI, *args: str) -> dict[str, dict[str, str]]:
    return {row["QUEUE"]: row for row in table(cli.ok("stats", *args))}


def status_of(cli: CLI, task_id: str) -> dict[str, str]:
    """The ``name: value`` lines ``omniq status`` prints."""
    lines = cli.ok("status", task_id).splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def test_help(cli: CLI) -> None:
    top = cli("--help", backend=None)
    assert top.returncode == 0 and "worker" in top.stdout and "purge" in top.stdout
    worker = cli("worker", "--help", backend=None)
    assert worker.returncode == 0 and "--burst" in worker.stdout and "--import" in worker.stdout


def test_enqueue_run_and_fetch_results(cli: CLI, tmp_path: Path) -> None:
    victim = tmp_path / "keep"
    victim.mkdir()
    enqueued = cli.run_many(
        ["enqueue", "tests.cli_tasks:add", "--args", "[2, 3]"],
        ["enqueue", "tests.cli_tasks:greet", "--kwargs", '{"name": "bob"}', "--queue", "emails"],
        ["enqueue", "tests.cli_tasks:boom", "--args", '["kaput"]'],
        ["enqueue", "shutil:rmtree", "--args", f'["{victim}"]'],
    )
    assert all(r.returncode == 0 and UUID.match(r.stdout.strip()) for r in enqueued), enqueued
    added, greeted, failing, refused = (r.stdout.strip() for r in enqueued)
    assert status_of(cli, added)["status"] == "pending"

    log = cli.burst("default", "emails")
    assert "drained" in log and "2 done, 2 failed" in log

    results = cli.run_many(["result", added], ["result", greeted], ["result", failing],
                           ["result", refused], ["status", refused])
    assert [r.stdout.strip() for r in results[:2]] == ["5", '"hello bob!"']
    assert "ValueError: kaput" in error_line(results[2], 1)
    assert "TaskNotAllowedError" in error_line(results[3], 1)
    assert "status:     failed" in results[4].stdout and "TaskNotAllowedError" in results[4].stdout
    assert victim.exists()  # nothing is imported or run on a payload's say-so


def test_stats_and_list_tables(cli: CLI) -> None:
    first = cli.enqueue("tests.cli_tasks:add", "--args", "[1, 1]")
    second = cli.enqueue("tests.cli_tasks:add", "--args", "[1, 2]")
    urgent = cli.enqueue("tests.cli_tasks:greet", "--args", '["x"]', "--queue", "emails",
                         "--priority", "5")
    later = cli.enqueue("tests.cli_tasks:add", "--args", "[0, 0]", "--delay", "3600")
    recurring = cli.enqueue("tests.cli_tasks:add", "--args", "[0, 0]", "--cron", "0 9 * * 1-5",
                            "--queue", "emails")

    counts = stats(cli)
    assert (counts["default"]["PENDING"], counts["default"]["SCHEDULED"]) == ("2", "1")
    assert (counts["emails"]["PENDING"], counts["emails"]["SCHEDULED"]) == ("1", "1")
    assert (counts["TOTAL"]["PENDING"], counts["TOTAL"]["SCHEDULED"]) == ("3", "2")
    assert counts["TOTAL"]["PAUSED"] == "no"

    rows = table(cli.ok("list"))
    assert [r["ID"] for r in rows] == [first, second, urgent, later, recurring]
    assert rows[2]["QUEUE"] == "emails" and rows[2]["PRIORITY"] == "5"
    assert rows[0]["FUNC"] == "tests.cli_tasks:add" and rows[0]["STATUS"] == "pending"
    scheduled = table(cli.ok("list", "--status", "scheduled", "--queue", "emails"))
    assert [r["ID"] for r in scheduled] == [recurring]


def test_pause_resume_cancel_and_purge(cli: CLI) -> None:
    done = cli.enqueue("tests.cli_tasks:add", "--args", "[1, 1]")
    held = cli.enqueue("tests.cli_tasks:add", "--args", "[2, 2]", "--queue", "emails")
    assert cli.ok("pause", "emails").strip() == "paused queue emails"
    assert stats(cli)["emails"]["PAUSED"] == "yes"

    cli.burst("default", "emails")  # drains default; the paused queue keeps its task
    counts = stats(cli)
    assert counts["default"]["COMPLETED"] == "1" and counts["emails"]["PENDING"] == "1"
    cli.ok("resume", "emails")
    assert stats(cli, "--queue", "emails")["emails"]["PAUSED"] == "no"

    assert cli.ok("cancel", held).strip() == f"cancelled {held}"
    assert status_of(cli, held)["status"] == "cancelled"
    assert "already ended" in error_line(cli("cancel", done), 1)

    assert cli.ok("purge", "emails").strip() == "purged 1 task(s) from queue emails"
    assert cli.ok("purge", "default", "--status", "completed").strip().startswith("purged 1")
    assert stats(cli)["TOTAL"]["COMPLETED"] == "0"
    # Rows are the queues with tasks, or paused: the emptied queue is gone, a paused one shows.
    cli.ok("pause", "idle")
    assert set(stats(cli)) == {"idle", "TOTAL"} and stats(cli)["idle"]["PAUSED"] == "yes"


def test_bad_usage_exits_2_and_unknown_ids_exit_1_with_one_line(cli: CLI) -> None:
    add = "tests.cli_tasks:add"
    usage = [
        ["bogus"],
        [],
        ["enqueue", add, "--args", "not json"],
        ["enqueue", add, "--cron", "bad"],
        ["enqueue", add, "--queue", "a b"],
        ["enqueue", "no reference"],
        ["enqueue", add, "--delay", "1", "--every", "2"],
        ["worker", "--concurrency", "0"],
        ["list", "--status", "nope"],
        ["stats", "--backend", "bogus://x"],
    ]
    unknown = [[command, "missing", "--backend", cli.url] for command in ("status", "result",
                                                                           "cancel")]
    results = cli.run_many(*usage, *unknown, backend=None)
    for args, result in zip(usage, results, strict=False):
        assert "Traceback" not in error_line(result, 2), args
    for result in results[len(usage):]:
        assert "no task with id 'missing'" in error_line(result, 1)


def test_result_timeout_and_debug_traceback(cli: CLI) -> None:
    task_id = cli.enqueue("tests.cli_tasks:add", "--args", "[1, 1]")
    assert "did not finish within 0.2s" in error_line(cli("result", task_id, "--timeout", "0.2"), 1)
    debug = cli("status", "missing", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("omniq: error: ")


def test_backend_from_environment_and_namespace(cli: CLI) -> None:
    env = {"OMNIQ_BACKEND": f"{cli.url}?namespace=billing"}
    task_id = cli.ok("enqueue", "tests.cli_tasks:add", backend=None, env=env).strip()
    assert stats(cli)["TOTAL"]["PENDING"] == "0"  # the default namespace is another world
    assert stats(cli, "--namespace", "billing")["TOTAL"]["PENDING"] == "1"
    assert cli.ok("status", task_id, backend=f"{cli.url}?namespace=billing").count("pending") == 1


def test_worker_imports_modules_from_the_current_directory(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "jobs_here.py").write_text("def double(x):\n    return 2 * x\n")
    task_id = cli.enqueue("jobs_here:double", "--args", "[21]")
    # -P keeps Python from putting the current directory on sys.path: the CLI must do it.
    worker = cli("worker", "--burst", "--import", "jobs_here", flags=["-P"])
    assert worker.returncode == 0, worker.stderr
    assert cli.ok("result", task_id).strip() == "42"
    missing = cli("worker", "--burst", "--import", "no_such_module")
    assert "no_such_module" in error_line(missing, 1)


def test_unreachable_backend_exits_1_without_the_password(cli: CLI) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli("stats", backend=f"postgresql://user:s3cret@127.0.0.1:{port}/db")
    line = error_line(result, 1)
    assert "s3cret" not in result.stderr and "***" in line


def test_sigterm_while_the_worker_starts_stops_it_cleanly(cli: CLI) -> None:
    # A supervisor may stop a worker during its start-up: it exits 0 having claimed nothing,
    # rather than dying of the signal. The signal is sent on the worker's first log line,
    # which comes before the pool handles signals itself.
    task_id = cli.enqueue("tests.cli_tasks:add", "--args", "[1, 2]")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    environment["PYTHONPATH"] = str(ROOT)
    for _ in range(3):
        worker = subprocess.Popen(
            [sys.executable, "-m", "omniq", "worker", "--backend", cli.url,
             "--import", "tests.cli_tasks", "--queue", "elsewhere"],
            cwd=cli.cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        assert worker.stderr is not None
        first = worker.stderr.readline()
        worker.send_signal(signal.SIGTERM)
        _, rest = worker.communicate(timeout=30)
        assert worker.returncode == 0, (first, rest)
        assert "backend" in first
    assert status_of(cli, task_id)["status"] == "pending"
