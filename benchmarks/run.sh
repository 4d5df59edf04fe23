#!/usr/bin/env bash
# Benchmark OmniQ against its peers: `bash benchmarks/run.sh [--quick] [--scale] [--profile] …`
# Installs OmniQ with every backend into .venv and the peers into their own environments
# (benchmarks/.venv-peers, benchmarks/.venv-taskiq: never OmniQ dependencies), then runs
# benchmarks/run.py, which prints the table and writes JSON to benchmarks/results/.
# Needs PostgreSQL, Redis and NATS (JetStream) on loopback, or OMNIQ_BENCH_POSTGRES (a DSN
# allowed to create databases), OMNIQ_BENCH_REDIS and OMNIQ_BENCH_NATS.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q -e '.[all]'
for env in peers taskiq; do
  dir=benchmarks/.venv-$env
  reqs=benchmarks/requirements-$env.txt
  if [ ! -f "$dir/.installed" ] || [ "$reqs" -nt "$dir/.installed" ]; then
    [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip
    "$dir/bin/python" -m pip install -q -r "$reqs"
    touch "$dir/.installed"
  fi
done
exec .venv/bin/python -m benchmarks.run "$@"
