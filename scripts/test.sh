#!/usr/bin/env bash
# Install OmniQ with every backend and the test tools into .venv, then run the whole suite
# (lint, types, tests), installing Debian's chromium for the dashboard's browser test if it is
# missing. Extra arguments go to pytest. Needs PostgreSQL, Redis and NATS on loopback for the
# server backends: ../shared/services.sh (or your own) starts them; the chaos suite also runs
# private redis-server, nats-server and PostgreSQL (initdb/pg_ctl) instances.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[all,test]'
# The dashboard's browser test drives Debian's chromium (Playwright never downloads a browser).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
.venv/bin/ruff check omniq benchmarks tests
.venv/bin/mypy --strict omniq
exec .venv/bin/python -m pytest "$@"
