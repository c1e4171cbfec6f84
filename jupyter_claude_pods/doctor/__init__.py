"""``jupyter claude-pods doctor``: verify a Kubernetes installation from the server's view.

Replaces the seed system's ``verify-node.sh`` and ``setup-kubeconfig.sh``: instead of
shell scripts that print what to look at, each question (configuration, API, RBAC,
Pod Security labels, image, proxy, sandbox egress) is an async check returning a
:class:`Check`, collected into a :class:`Report` (text or ``--json``).
"""

from __future__ import annotations

from .model import CHECK_NAMES, Check, Report
from .runner import DoctorOptions, run_doctor

__all__ = ["CHECK_NAMES", "Check", "DoctorOptions", "Report", "run_doctor"]
