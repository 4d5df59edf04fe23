"""Tables from a benchmark result file: plain text for the terminal, Markdown for the docs.

    python -m benchmarks.report benchmarks/results/latest.json [--markdown]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

# (column title, key in a system's medians, higher is better)
COLUMNS: list[tuple[str, str, bool]] = [
    ("enqueue 1-by-1 /s", "enqueue_single", True),
    ("enqueue batch /s", "enqueue_batch", True),
    ("process c10 jobs/s", "process_c10", True),
    ("process c100 jobs/s", "process_c100", True),
    ("c100 % of raw", "raw_pct_c100", True),
    ("latency p50 ms", "latency_p50", False),
    ("latency p99 ms", "latency_p99", False),
    ("worker CPU µs/job c100", "cpu_us_c100", False),
]
RATIO_KEYS = ("enqueue_single", "enqueue_batch", "process_c10", "process_c100", "latency_p50",
              "latency_p99")
BACKEND_NAMES = {"memory": "Memory", "sqlite": "SQLite", "file": "File (local)",
                 "redis": "Redis", "postgres": "PostgreSQL", "nats": "NATS JetStream"}
RAW_NAMES = {"redis": "Redis: pipelined commands/s (redis-py)",
             "postgres": "PostgreSQL: jobs claimed+completed/s, 100 at a time, SKIP LOCKED "
                         "(asyncpg)",
             "nats": "NATS: JetStream msgs fetched+acked/s, pull consumer (nats-py)",
             "nats-publish-stream": "NATS: acknowledged publishes 1-by-1 to a stream subject "
                                    "(nats-py)",
             "nats-publish-kv": "NATS: acknowledged publishes 1-by-1, each to a new key of "
                                "a bucket (nats-py)",
             "nats-publish-kv-create": "NATS: the same, create-only (expected last sequence "
                                       "0, as an OmniQ enqueue; nats-py)",
             "nats-publish-ratio": "NATS: create-only to a new key ÷ to a stream subject, "
                                   "taken in turns (ratio, not per second)"}


def number(value: float | None, key: str = "") -> str:
    """A figure as the tables show it."""
    if value is None:
        return "-"
    if key.startswith("latency") or key.endswith("ratio"):
        return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"
    if key == "raw_pct_c100":
        return f"{value:.1f}%"
    return f"{value:,.0f}"


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per shared backend: OmniQ's figure over the best peer's (latency: the best peer's over
    OmniQ's), so above 1 means OmniQ is ahead."""
    out: dict[str, dict[str, float | None]] = {}
    systems = results["systems"]
    for backend in BACKEND_NAMES:
        ours = [s for s in systems.values() if s["backend"] == backend and s["omniq"]]
        peers = [s for s in systems.values() if s["backend"] == backend and not s["omniq"]]
        if not ours or not peers:
            continue
        row: dict[str, float | None] = {}
        for key in RATIO_KEYS:
            higher = next(h for _, k, h in COLUMNS if k == key)
            mine = ours[0]["median"].get(key)
            theirs = [p["median"].get(key) for p in peers if p["median"].get(key)]
            if not mine or not theirs:
                row[key] = None
            elif higher:
                row[key] = mine / max(theirs)
            else:
                row[key] = min(theirs) / mine
        out[backend] = row
    return out


def grid(header: Sequence[str], rows: list[list[str]], markdown: bool, left: int = 2) -> str:
    """A table; the first ``left`` columns are text, the rest right-aligned figures."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def main_table(results: dict[str, Any], markdown: bool = False) -> str:
    """Every system, grouped by backend, then OmniQ's ratio to the best peer."""
    header = ["backend", "system", *(title for title, _, _ in COLUMNS)]
    rows = []
    for backend, name in BACKEND_NAMES.items():
        for s in (s for s in results["systems"].values() if s["backend"] == backend):
            label = f"**{s['label']}**" if markdown and s["omniq"] else s["label"]
            if s.get("errors"):
                label += " (!)"
            cells = [number(s["median"].get(key), key) for _, key, _ in COLUMNS]
            rows.append([name, label, *cells])
    for backend, row in ratios(results).items():
        cells = [number(row.get(key), "ratio") + "x" if row.get(key) else "-" if key in row
                 else "" for _, key, _ in COLUMNS]
        rows.append([BACKEND_NAMES[backend], "OmniQ ÷ best peer", *cells])
    return grid(header, rows, markdown)


def raw_table(results: dict[str, Any], markdown: bool = False) -> str:
    """The raw server ceilings."""
    rows = [[RAW_NAMES[k], number(v.get("median"), k)] for k, v in results["raw"].items()]
    return grid(["server limit (same run)", "per second"], rows, markdown, left=1)


def errors(results: dict[str, Any]) -> list[str]:
    """Every measurement that failed, one line each."""
    return [f"{name}: {err}" for name, s in results["systems"].items() for err in s["errors"]] + [
        f"raw {name}: {err}" for name, r in results["raw"].items() for err in r["errors"]]


def render(results: dict[str, Any], markdown: bool = False) -> str:
    """The whole report."""
    run = results["run"]
    head = (f"{run['mode']} run {run['id']}: {run['reps']} repetition(s), medians; "
            f"{run['jobs']:,} jobs per processing run; {run['latency_samples']} latency samples; "
            f"took {run['seconds'] / 60:.1f} min; command: {run['command']}")
    parts = [head, main_table(results, markdown), raw_table(results, markdown)]
    problems = errors(results)
    if problems:
        parts.append("failed measurements (!):\n" + "\n".join(f"- {p}" for p in problems))
    return "\n\n".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report")
    p.add_argument("results", help="a JSON file written by benchmarks/run.py")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    with open(args.results) as f:
        print(render(json.load(f), args.markdown))


if __name__ == "__main__":
    main()
