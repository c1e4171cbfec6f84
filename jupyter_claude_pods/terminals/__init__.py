"""The terminal layer: JupyterLab's stock terminal protocol on top of a sandbox stream."""

from .manager import SandboxTerminalManager

__all__ = ["SandboxTerminalManager"]
