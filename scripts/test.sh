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
command -v busybox >/dev/null || missing+=(busybox)  # the launcher is checked under a minimal POSIX sh
# Browser tests (tests/browser): Debian's Chromium, driven by playwright-core (Playwright's
# own browser downloads cannot work here); Node.js also builds the JupyterLab extension.
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs npm)
# Image tests (tests/images): rootful podman with runc (tests/images/containers.conf, used
# through CONTAINERS_CONF, says why) and debootstrap for the Debian base (no registry here).
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
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

# The JupyterLab extension (built by the editable install above through hatch-jupyter-builder)
# and its unit tests; playwright-core for the browser tests (npm registry only).
JLPM() { (root=$PWD && cd labextension && PATH="$root/.venv/bin:$PATH" jlpm "$@"); }
[ -d labextension/node_modules ] || JLPM install
[ -d tests/browser/node_modules/playwright-core ] ||
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
echo "== labextension unit tests"; JLPM test

echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/pytest "$@"
