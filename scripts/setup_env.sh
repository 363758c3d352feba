#!/usr/bin/env bash
# Idempotent set-up for `make demo` / `make test`: apt packages for Xvfb (when root and apt exist),
# a venv in .venv, and the pinned requirements. A stamp file makes re-runs instant.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

APT_PKGS="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0 \
libxcb-xkb1 libxkbcommon-x11-0 libxcb-randr0 libxcb-shape0 libxcb-cursor0 libegl1 libgl1 libglx-mesa0 \
libgl1-mesa-dri libdbus-1-3 libfontconfig1 fontconfig libllvm15"
missing=""
if command -v dpkg >/dev/null 2>&1; then
  for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing apt packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "[setup] missing system packages (install them for GUI tests):$missing" >&2
  fi
fi

if ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
fi

STAMP="$VENV/.stamp"
HASH=$(cat pyproject.toml requirements/constraints.txt scripts/setup_env.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
export PIP_CONSTRAINT="$PWD/requirements/constraints.txt"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[all,test,pyqt]"
echo "$HASH" > "$STAMP"
echo "[setup] environment ready in $VENV"
