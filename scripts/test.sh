#!/usr/bin/env bash
# Install everything the test suite needs, then run lint, type checks and the tests.
# Usage: scripts/test.sh [pytest args...]      (CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use, installed only when missing (root or sudo needed).
missing=()
command -v stty >/dev/null || missing+=(coreutils)
command -v bash >/dev/null || missing+=(bash)
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}"
fi

# The real Claude Code CLI, pinned, for the end-to-end tests (npm registry only).
CLAUDE_CODE_VERSION=2.1.197
if ! .cache/npm/node_modules/.bin/claude --version 2>/dev/null | grep -q "^$CLAUDE_CODE_VERSION "; then
  if ! command -v npm >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nodejs npm
  fi
  npm install --no-save --no-audit --no-fund --loglevel=error --prefix .cache/npm \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored" || true; }
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | { grep -v "is ignored" || true; }
.venv/bin/python -c "import jupyter_claude_pods, kubernetes_validate, pytest_jupyter" # fail loudly if the install failed

echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/pytest "$@"
