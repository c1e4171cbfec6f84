"""docs/configuration.md is generated from the code and must be current."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "configuration.md"


def test_committed_configuration_md_is_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-config-docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_configurable_trait_is_documented() -> None:
    from jupyter_claude_pods.credentials import SessionCredentials
    from jupyter_claude_pods.sandbox.kubernetes.backend import KubernetesBackend
    from jupyter_claude_pods.terminals import SandboxTerminalManager

    text = DOC.read_text()
    for cls in (KubernetesBackend, SandboxTerminalManager, SessionCredentials):
        for name in cls.class_own_traits(config=True):
            assert f"`{cls.__name__}.{name}`" in text, f"{cls.__name__}.{name}"


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    """Any CLAUDE_PODS_* name in the package, the launcher or the proxy appears in the doc."""
    sources = [
        *(ROOT / "jupyter_claude_pods").rglob("*.py"),
        ROOT / "jupyter_claude_pods" / "policy" / "claude-pods-launch",
        *(ROOT / "proxy" / "claude_pods_proxy").rglob("*.py"),
    ]
    names = set()
    for path in sources:
        names |= set(re.findall(r"\bCLAUDE_PODS_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    assert "CLAUDE_PODS_BACKEND" in names  # the scan works
    text = DOC.read_text()
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"undocumented environment variables: {missing}"
