"""Private Redis, PostgreSQL and NATS servers on spare loopback ports, for tests that stop and
restart a server (the shared services on 5432/6379/4222 are never touched).

Each server keeps its data in its own temporary directory and is restarted on the same port
and directory, so what it persisted is what a client finds when it comes back:

- Redis: AOF with ``appendfsync always`` (every acknowledged write is on disk);
- PostgreSQL: a fresh cluster (``initdb``), run as the ``postgres`` OS user when we are root,
  stopped with ``pg_ctl stop -m immediate`` (a crash: restart runs WAL recovery);
- NATS: JetStream with a store directory, stopped with SIGKILL.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SECRET_USER, SECRET = "omniq", "S3cret-Pa55w0rd"  # a Redis ACL user, for password tests


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int, probe: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            if probe:
                sock.sendall(probe)
            return sock.recv(256).startswith(expect)
    except OSError:
        return False


class PrivateServer:
    """A server process this test session owns: ``start``, ``stop`` (a kill), ``restart``."""

    kind = ""
    binaries: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"omniq-{self.kind}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def missing(cls) -> str | None:
        """What is missing to run this server here (a binary), or None."""
        for name in cls.binaries:
            if _binary(name) is None:
                return f"{name} not found (install the {cls.kind} server package)"
        return None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> float:
        """Start on the same port and directory; return ``time.monotonic()`` once it answers."""
        log = open(self.dir / "server.log", "ab")
        try:
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=log,
                                         start_new_session=True)
        finally:
            log.close()
        return self._await_ready(timeout)

    def _await_ready(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} server not ready in {timeout}s: {self.log_tail()}")
            time.sleep(0.02)
        return time.monotonic()

    def stop(self) -> None:
        """Kill the server (no clean shutdown) and wait until its port is free."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)
            self.proc = None

    def restart(self, down: float = 0.0) -> tuple[float, float]:
        """Kill, stay down ``down`` seconds, start again: (killed at, answering again at),
        both ``time.monotonic()``."""
        self.stop()
        killed = time.monotonic()
        time.sleep(down)
        return killed, self.start()

    def close(self) -> None:
        """Stop for good and remove the data directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, size: int = 2000) -> str:
        try:
            return (self.dir / "server.log").read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""


class RedisServer(PrivateServer):
    """redis-server with AOF fsynced on every write, plus an ACL user with a password."""

    kind = "redis"
    binaries = ("redis-server",)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def secret_url(self) -> str:
        """A URL that logs in as the password-protected ACL user."""
        return f"redis://{SECRET_USER}:{SECRET}@127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            str(_binary("redis-server")), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--daemonize", "no",
            "--user", *"default on nopass ~* &* +@all".split(),
            "--user", *f"{SECRET_USER} on >{SECRET} ~* &* +@all".split(),
        ]

    def _ready(self) -> bool:
        # LOADING replies while the AOF is replayed: ready means it answers PING.
        return _answers(self.port, b"PING\r\n", b"+PONG")


class NatsServer(PrivateServer):
    """nats-server with JetStream storing under the server's directory."""

    kind = "nats"
    binaries = ("nats-server",)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [str(_binary("nats-server")), "-js", "-sd", str(self.dir / "js"),
                "-p", str(self.port), "-a", "127.0.0.1"]

    def _ready(self) -> bool:
        # Ready once it greets clients. JetStream may need a moment more to load its streams;
        # clients meet that as errors and retry, and it counts in the measured resume time.
        return _answers(self.port, b"", b"INFO ")


class PostgresServer(PrivateServer):
    """A PostgreSQL cluster of its own (trust auth on loopback), database ``postgres``."""

    kind = "postgres"
    binaries = ("initdb", "pg_ctl")

    def __init__(self) -> None:
        super().__init__()
        self.data = self.dir / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run(str(_binary("initdb")), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self._as_user, *command], capture_output=True, timeout=120,
                              cwd=self.dir)
        if done.returncode:
            raise RuntimeError(f"{command[0]} failed: {done.stderr.decode()[-2000:]}")

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(_binary("pg_ctl")), "-D", str(self.data), "-l",
                  str(self.dir / "server.log"), *args)

    def start(self, timeout: float = 60.0) -> float:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.dir} -c shared_buffers=16MB "
                   "-c max_connections=200")
        self._pg_ctl("-w", "-t", str(int(timeout)), "-o", options, "start")
        return self._await_ready(timeout)

    def stop(self) -> None:
        """An immediate stop: no checkpoint, like a crash; restart replays the WAL."""
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("-w", "-m", "immediate", "stop")

    def _ready(self) -> bool:
        # Protocol-level: an SSLRequest is answered 'N' (or 'S') once the postmaster listens.
        return _answers(self.port, b"\x00\x00\x00\x08\x04\xd2\x16\x2f", b"N")


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and name in ("initdb", "pg_ctl"):
        versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        found = versions[-1] if versions else None
    if found is None and name == "nats-server" and os.access("/usr/sbin/nats-server", os.X_OK):
        found = "/usr/sbin/nats-server"
    return found


SERVERS: dict[str, type[PrivateServer]] = {
    "redis": RedisServer, "postgres": PostgresServer, "nats": NatsServer,
}

