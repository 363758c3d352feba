#!/usr/bin/env bash
# The whole suite, GUI tests included. Without a display it runs under Xvfb.
# pytest exits 5 when no test ran; that fails here like any other failure.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
export PYTHONFAULTHANDLER=1
if [ -n "${DISPLAY:-}" ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest "$@"
