#!/usr/bin/env bash
# Install jupyter-claude-pods (and what its embedded sandbox needs) into ./.venv, then
# start JupyterLab with it. Usage: scripts/run.sh [jupyter lab args...]
# With no cluster configured, terminals run in local bubblewrap sandboxes; export
# ANTHROPIC_API_KEY first so Claude Code in them can reach the model (through the
# server's embedded key proxy: the sandboxes never see the key).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"
fi

CLAUDE_CODE_VERSION=2.1.197
if ! .cache/npm/node_modules/.bin/claude --version 2>/dev/null | grep -q "^$CLAUDE_CODE_VERSION "; then
  npm install --no-save --no-audit --no-fund --loglevel=error --prefix .cache/npm \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"
fi
export CLAUDE_PODS_CLAUDE_BIN="${CLAUDE_PODS_CLAUDE_BIN:-$PWD/.cache/npm/node_modules/.bin/claude}"
# The example course, unless you name your own courses directory.
export CLAUDE_PODS_COURSES_DIR="${CLAUDE_PODS_COURSES_DIR:-$PWD/docs/example-courses}"

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored" || true; }
.venv/bin/python -m pip install -q -e . jupyterlab 2>&1 | { grep -v "is ignored" || true; }
# Jupyter refuses to run as root without --allow-root (containers, CI machines); the
# sandboxes themselves never run as root (the local backend drops to nobody).
args=(); [ "$(id -u)" != 0 ] || args+=(--allow-root)
exec .venv/bin/jupyter lab "${args[@]}" "$@"
