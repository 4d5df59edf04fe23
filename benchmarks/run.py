"""Runs the whole benchmark: every system on every backend, side by side, several times.

    bash benchmarks/run.sh [--quick] [--reps N] [--jobs N] [--only NAMES] [--markdown]
    bash benchmarks/run.sh --scale      # 1,000,000 queued vs 10,000; memory per queued task
    bash benchmarks/run.sh --profile    # where OmniQ's worker spends its time

Each cell is a separate ``benchmarks.driver`` process in the system's own environment, so
peers and OmniQ never share an interpreter. Repetitions go round all systems in turn, so slow
drifts of a shared machine hit every system alike. Prints the table; writes JSON (and the
table) to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks import report, services
from benchmarks.common import ROOT, median
from benchmarks.raw import PUBLISH_WAYS
from benchmarks.systems import SYSTEMS, Entry

RESULTS = ROOT / "benchmarks" / "results"
PACKAGES = {
    "project": ["omniq", "asyncpg", "redis", "nats-py", "aiosqlite", "fsspec", "msgspec"],
    "peers": ["arq", "saq", "procrastinate", "pgqueuer", "psycopg", "asyncpg", "redis", "hiredis"],
    "taskiq": ["taskiq", "taskiq-redis", "taskiq-nats", "redis", "nats-py"],
}


@dataclass
class Plan:
    """How much each measurement does."""

    mode: str
    reps: int
    jobs: int
    single: int
    batch: int
    samples: int
    raw_size: int


QUICK = Plan("quick", reps=1, jobs=2_000, single=500, batch=5_000, samples=50, raw_size=20_000)
FULL = Plan("full", reps=3, jobs=10_000, single=2_000, batch=20_000, samples=200,
            raw_size=50_000)


def python_for(venv: str) -> str:
    """The interpreter of an environment made by run.sh."""
    if venv == "project":
        return str(ROOT / ".venv" / "bin" / "python")
    return str(ROOT / "benchmarks" / f".venv-{venv}" / "bin" / "python")


class Runner:
    """Hands out fresh namespaces and runs one measurement process at a time."""

    def __init__(self) -> None:
        self.prefix = "b" + secrets.token_hex(3)
        self.count = 0

    def ns(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count:03d}"

    def call(self, venv: str, module: str, args: list[str], timeout: float) -> dict[str, Any]:
        """Run ``python -m module args``; its RESULT, or {"error": ...}."""
        cmd = [python_for(venv), "-m", module, *args, "--ns", self.ns()]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"no result within {timeout:.0f}s"}
        for line in reversed(done.stdout.splitlines()):
            if line.startswith("RESULT "):
                found: dict[str, Any] = json.loads(line[len("RESULT "):])
                return found
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit code {done.returncode}: {tail}"}


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def versions(venv: str) -> dict[str, str]:
    """Installed versions of the packages that matter, in one environment."""
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for p in sys.argv[1:]:\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    done = subprocess.run([python_for(venv), "-c", code, *PACKAGES[venv]], capture_output=True,
                          text=True, check=True)
    found: dict[str, str] = json.loads(done.stdout)
    return found


def cells(plan: Plan) -> list[tuple[str, list[str]]]:
    """The measurements of the table, as driver arguments."""
    return [
        ("enqueue", ["enqueue", "--single", str(plan.single), "--batch", str(plan.batch)]),
        ("process_c10", ["process", "--jobs", str(plan.jobs), "--concurrency", "10"]),
        ("process_c100", ["process", "--jobs", str(plan.jobs), "--concurrency", "100"]),
        ("latency", ["latency", "--samples", str(plan.samples)]),
    ]


def measure_cell(runner: Runner, entry: Entry, cell: str, args: list[str], plan: Plan,
                 rep: int, record: dict[str, Any]) -> None:
    """One repetition of one measurement of one system."""
    timeout = 300 + plan.jobs / 20
    started = time.monotonic()
    out = runner.call(entry.venv, "benchmarks.driver", [entry.name, *args], timeout)
    took = time.monotonic() - started
    if "error" in out:
        record["errors"].append(f"{cell} (rep {rep}): {out['error']}")
        progress(f"  {entry.name:24} {cell:13} FAILED: {out['error']}")
    else:
        record["samples"][cell].append(out)
        shown = (f"{out['rate']:,.0f} jobs/s" if "rate" in out else
                 f"p50 {out['p50_ms']:.2f} ms, p99 {out['p99_ms']:.2f} ms" if "p50_ms" in out
                 else f"single {out['enqueue_single']:,.0f}/s, batch "
                      f"{report.number(out['enqueue_batch'])}/s")
        progress(f"  {entry.name:24} {cell:13} {shown}  ({took:.0f}s)")


#: Raw measurements that give several figures: their parts, each a row of the raw table.
RAW_PARTS = {"nats-publish": (*PUBLISH_WAYS, "ratio")}


def raw_rows(server: str) -> list[tuple[str, str]]:
    """The raw table's rows that one raw measurement fills: (row key, field of its result)."""
    parts = RAW_PARTS.get(server)
    return [(f"{server}-{part}", part) for part in parts] if parts else [(server, "rate")]


def measure_raw(runner: Runner, servers: list[str], plan: Plan, into: dict[str, Any]) -> None:
    """One sample of each server's raw limit."""
    for server in servers:
        out = runner.call("project", "benchmarks.raw", [server, "--size", str(plan.raw_size)],
                          600)
        for key, field in raw_rows(server):
            if "error" in out:
                into[key]["errors"].append(out["error"])
            else:
                into[key]["samples"].append(out[field])
        shown = ", ".join(f"{k} {report.number(v, k)}" for k, v in out.items() if k != "error")
        progress(f"  raw {server:20} {shown or out.get('error')}")


def medians(record: dict[str, Any]) -> dict[str, float | None]:
    """Each figure's median over the repetitions."""
    s = record["samples"]

    def m(cell: str, key: str) -> float | None:
        return median([x[key] for x in s[cell] if x.get(key) is not None])

    return {"enqueue_single": m("enqueue", "enqueue_single"),
            "enqueue_batch": m("enqueue", "enqueue_batch"),
            "process_c10": m("process_c10", "rate"), "process_c100": m("process_c100", "rate"),
            "latency_p50": m("latency", "p50_ms"), "latency_p99": m("latency", "p99_ms"),
            "cpu_us_c100": m("process_c100", "worker_cpu_us_per_job")}


def benchmark(plan: Plan, only: set[str] | None) -> dict[str, Any]:
    """The main table: every system, every measurement, ``plan.reps`` times."""
    runner = Runner()
    chosen = [e for e in SYSTEMS if not only or e.name in only or e.backend in only]
    raws = [b for b in ("redis", "postgres", "nats") if any(e.backend == b for e in chosen)]
    if "nats" in raws:  # the floor of a single enqueue, for Taskiq's way and OmniQ's
        raws.append("nats-publish")
    results: dict[str, Any] = {
        "raw": {k: {"samples": [], "errors": []} for r in raws for k, _ in raw_rows(r)},
        "systems": {e.name: {"label": e.label, "backend": e.backend, "omniq": e.is_omniq,
                             "samples": {c: [] for c in ("enqueue", "process_c10",
                                                         "process_c100", "latency")},
                             "errors": []} for e in chosen},
    }
    try:
        for rep in range(1, plan.reps + 1):
            progress(f"repetition {rep}/{plan.reps}")
            # The servers' limits before and after the systems, so drifts show in both.
            measure_raw(runner, raws, plan, results["raw"])
            # Measurement by measurement, each through every system: the systems compared
            # in a cell run close together, so the machine's drifts touch them alike.
            for cell, args in cells(plan):
                for entry in chosen:
                    measure_cell(runner, entry, cell, args, plan, rep,
                                 results["systems"][entry.name])
            measure_raw(runner, raws, plan, results["raw"])
    finally:
        left = asyncio.run(services.sweep(runner.prefix))
        if left:
            progress("removed leftovers: " + ", ".join(left))
    for raw in results["raw"].values():
        raw["median"] = median(raw["samples"])
    for record in results["systems"].values():
        record["median"] = medians(record)
        ceiling = results["raw"].get(record["backend"], {}).get("median")
        rate = record["median"]["process_c100"]
        record["median"]["raw_pct_c100"] = 100 * rate / ceiling if rate and ceiling else None
    results["ratios"] = report.ratios(results)
    return results


def save(results: dict[str, Any], name: str, text: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for path in (RESULTS / f"{name}-{stamp}.json", RESULTS / f"{name}-latest.json"):
        path.write_text(json.dumps(results, indent=1))
    (RESULTS / f"{name}-latest.txt").write_text(text + "\n")
    progress(f"wrote {RESULTS / f'{name}-{stamp}.json'} (and {name}-latest.json/.txt)")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bash benchmarks/run.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="one repetition of smaller runs (a few minutes)")
    p.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    p.add_argument("--jobs", type=int, help="jobs per processing run (default 10,000)")
    p.add_argument("--only", help="comma-separated system names or backends")
    p.add_argument("--markdown", action="store_true", help="also print the Markdown tables")
    p.add_argument("--scale", action="store_true",
                   help="backlog scaling and memory per queued task (OmniQ only; slow)")
    p.add_argument("--backlog", type=int, default=1_000_000, help="--scale's large backlog")
    p.add_argument("--profile", action="store_true",
                   help="profile OmniQ's worker (py-spy) and count round trips per job")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    plan = QUICK if args.quick else FULL
    plan = Plan(**{**asdict(plan), **{k: v for k, v in (("reps", args.reps),
                                                          ("jobs", args.jobs)) if v}})
    only = set(args.only.split(",")) if args.only else None
    command = "bash benchmarks/run.sh " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = time.time()
    load_before = os.getloadavg()
    if args.scale or args.profile:
        from benchmarks import hotspots, scale

        if args.scale:
            found = scale.run(plan, args.backlog, only)
            found["run"] = {"command": command.strip(), "seconds": time.time() - started}
            text = scale.render(found)
            print(text + ("\n\n" + scale.render(found, markdown=True) if args.markdown else ""))
            save(found, "scale", text)
        if args.profile:
            found = hotspots.run(plan, only)
            found["run"] = {"command": command.strip(), "seconds": time.time() - started}
            text = hotspots.render(found)
            print(text + ("\n\n" + hotspots.render(found, markdown=True) if args.markdown else ""))
            save(found, "profile", text)
        return
    results = benchmark(plan, only)
    results["run"] = {
        "id": dt.datetime.now().isoformat(timespec="seconds"), "command": command.strip(),
        "seconds": time.time() - started, "cpus": os.cpu_count(), "reps": plan.reps,
        "mode": plan.mode, "jobs": plan.jobs, "latency_samples": plan.samples,
        "plan": asdict(plan), "load_average": {"start": load_before, "end": os.getloadavg()},
        "versions": {v: versions(v) for v in PACKAGES},
    }
    text = report.render(results)
    print(text)
    if args.markdown:
        print("\n" + report.render(results, markdown=True))
    save(results, "bench", text)


if __name__ == "__main__":
    main()
