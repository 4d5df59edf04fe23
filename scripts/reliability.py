"""Run the chaos suite (tests/chaos) and print its figures as the markdown table of
docs/reliability.md.

    python scripts/reliability.py [pytest options]

Needs what the suite needs: PostgreSQL, Redis and NATS on loopback (../shared/services.sh or
your own) for the shared-service checks, and the redis-server, nats-server and PostgreSQL
binaries for the private servers the restart checks start. Exits with pytest's status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["file", "sqlite", "postgres", "redis", "nats"]
Figures = dict[str, dict[str, dict[str, Any]]]  # check -> backend -> figures


def run_suite(args: list[str]) -> tuple[int, Figures]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "figures.jsonl"
        env = {**os.environ, "OMNIQ_RELIABILITY_OUT": str(out)}
        code = subprocess.call([sys.executable, "-m", "pytest", "tests/chaos", "-q",
                                "-p", "no:cacheprovider", *args], cwd=ROOT, env=env)
        figures: Figures = defaultdict(dict)
        if out.exists():
            for line in out.read_text().splitlines():
                row = json.loads(line)
                figures[row.pop("check")][row.pop("backend")] = row
    return code, figures


def cell(figures: Figures, check: str, backend: str, show: Any) -> str:
    row = figures.get(check, {}).get(backend)
    return "—" if row is None else str(show(row))


def table(figures: Figures) -> str:
    columns: list[tuple[str, str, Any]] = [
        ("lost (kills / restarts / concurrency)", "", lambda b: " / ".join(
            cell(figures, c, b, lambda r: r["lost"])
            for c in ("worker_kill", "server_restart", "concurrency"))),
        ("re-runs after kills (tasks in flight)", "worker_kill",
         lambda r: f"{r['duplicates']} ({r['in_flight']})"),
        ("duplicates (restarts / concurrency)", "", lambda b: " / ".join(
            cell(figures, c, b, lambda r: r["duplicates"])
            for c in ("server_restart", "concurrency"))),
        ("overlapping runs", "", lambda b: sum(
            figures.get(c, {}).get(b, {}).get("overlaps", 0)
            for c in ("worker_kill", "server_restart", "concurrency"))),
        ("kill → orphan runs again (max / mean)", "worker_kill",
         lambda r: f"{r['wait_max']} s / {r['wait_mean']} s"),
        ("server back → work resumes (max / mean)", "server_restart",
         lambda r: f"{r['wait_max']} s / {r['wait_mean']} s"),
        ("stale completion fenced", "fencing", lambda r: "yes" if r["fenced"] else "NO"),
        ("corrupt records FAILED, good done", "bad_input_raw",
         lambda r: f"{r['failed']}/{r['corrupt']}, {r['good_done']}"),
        ("malformed tasks refused (written)", "bad_input_api",
         lambda r: f"{r['refused']} ({r['written']})"),
        ("recurring: runs / occurrences", "recurring",
         lambda r: f"{r['runs']} / {r['occurrences']}"),
        ("password leaks", "secrets", lambda r: r["leaks"]),
    ]
    lines = ["| backend | " + " | ".join(name for name, _, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for backend in BACKENDS:
        cells = [show(backend) if not check else cell(figures, check, backend, show)
                 for _, check, show in columns]
        lines.append(f"| {backend} | " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def workloads(figures: Figures) -> str:
    lines = []
    for check, label in (("worker_kill", "worker kills"), ("server_restart", "server restarts"),
                         ("concurrency", "concurrency")):
        rows = figures.get(check, {})
        parts = [f"{b} {rows[b]['tasks']}" for b in BACKENDS if b in rows]
        if parts:
            lines.append(f"- {label}: tasks per run: {', '.join(parts)}")
    return "\n".join(lines)


def main() -> int:
    code, figures = run_suite(sys.argv[1:])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    print(f"\nMeasured {stamp} by `python scripts/reliability.py` on {os.cpu_count()} cores "
          f"(pytest exit status {code}).\n")
    print(table(figures))
    print()
    print(workloads(figures))
    return code


if __name__ == "__main__":
    sys.exit(main())
