#!/usr/bin/env bash
# Install jupyter-claude-pods into ./.venv and start JupyterLab with it.
# Usage: scripts/run.sh [jupyter lab args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored" || true; }
.venv/bin/python -m pip install -q -e . jupyterlab 2>&1 | { grep -v "is ignored" || true; }
exec .venv/bin/jupyter lab "$@"
