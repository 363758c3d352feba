#!/usr/bin/env bash
# The whole suite, GUI tests included. Without a display it runs under Xvfb.
# pytest exits 5 when no test ran; that fails here like any other failure.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
export PYTHONFAULTHANDLER=1
# Test files run in parallel (pytest-xdist, a whole file per worker so module fixtures are built
# once): one worker per core, at most 4, since each worker holds torch and napari (~1.5 GB).
# 605 tests: 164 s with 2 workers on 2 cores, 226 s in one process (2026-11-30, AMD EPYC).
WORKERS=$(.venv/bin/python -c "import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))")
set -- -n "$WORKERS" --dist loadfile "$@"
if [ -n "${DISPLAY:-}" ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest "$@"
