#!/usr/bin/env bash
# Install OmniQ with its embedded SQLite backend into .venv and run the demo: a batch of
# example tasks (including a delayed, a recurring and a dependent one) enqueued into
# sqlite:///omniq.db and drained by a worker, printing progress.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[sqlite]'
exec .venv/bin/python examples/demo.py
