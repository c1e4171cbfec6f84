"""``python -m jupyter_claude_pods.doctor doctor ...`` (same as ``jupyter claude-pods``)."""

from .app import main

main()
