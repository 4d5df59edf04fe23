"""``omniq dashboard`` as a real process: serves the backend's queues, needs its token, stops
cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.test_cli import CLI, ROOT, error_line

TOKEN = "cli-token-9876543210"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dashboard_command_serves_the_backend_with_a_token(tmp_path: Path) -> None:
    cli = CLI(tmp_path)
    task_id = cli.enqueue("tests.cli_tasks:add", "--args", "[1, 2]", "--queue", "emails")
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    environment.update(PYTHONPATH=str(ROOT), OMNIQ_DASHBOARD_TOKEN=TOKEN)
    process = subprocess.Popen(
        [sys.executable, "-m", "omniq", "dashboard", "--backend", cli.url, "--port", str(port)],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                anonymous = httpx.get(base + "/", timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the dashboard did not start within 30 s"
                time.sleep(0.1)
        assert anonymous.status_code == 303  # to the login form: the token came from the env
        page = httpx.get(f"{base}/tasks/{task_id}", headers={"authorization": f"Bearer {TOKEN}"})
        assert page.status_code == 200 and "tests.cli_tasks:add" in page.text
        assert "emails" in httpx.get(base + "/", headers={"authorization": f"Bearer {TOKEN}"}).text
        # DNS rebinding: a page on another name that resolves here is refused.
        rebound = httpx.get(base + "/", headers={"host": f"attacker.example:{port}"})
        assert rebound.status_code == 400
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in stderr and "(token required)" in stderr
    assert "Traceback" not in stderr


def test_dashboard_command_refuses_an_empty_token(tmp_path: Path) -> None:
    result = CLI(tmp_path)("dashboard", "--token", " ")
    assert "--token must not be empty" in error_line(result, 2)
