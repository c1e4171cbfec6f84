"""Jupyter Server extension: each JupyterLab terminal runs in its own hardened sandbox."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension lives (``jupyter labextension develop``)."""
    return [{"src": "labextension", "dest": "jupyter-claude-pods"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import ClaudePodsApp

    return [{"module": "jupyter_claude_pods.app", "app": ClaudePodsApp}]
