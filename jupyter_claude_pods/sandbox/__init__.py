"""Sandbox backends: where a terminal's program actually runs.

Nothing here knows about websockets or Jupyter; ``terminals/`` knows nothing about pods.
"""
