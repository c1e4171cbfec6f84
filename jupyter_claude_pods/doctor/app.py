"""``jupyter claude-pods doctor``: the command-line entry point.

A ``JupyterApp`` so that it reads the same configuration files as the Jupyter server
(``jupyter_server_config.{py,json}`` on the Jupyter config path, e.g. the ConfigMap
mounted under /etc/jupyter) and accepts any trait on the command line
(``--KubernetesBackend.image=...``). ``jupyter claude-pods`` finds the console script
``jupyter-claude-pods``; its one subcommand today is ``doctor``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from jupyter_core.application import JupyterApp, base_aliases, base_flags
from traitlets import Bool, Float, List, Unicode

from .. import __version__
from ..sandbox.kubernetes.backend import KubernetesBackend
from .report import to_json, to_text
from .runner import DoctorOptions, run_doctor

EXAMPLES = """
jupyter claude-pods doctor
jupyter claude-pods doctor --json
jupyter claude-pods doctor --kubeconfig ~/.kube/k3s.yaml --namespace claude-pods-sandboxes
jupyter claude-pods doctor --forbidden example.com:443 --forbidden 192.168.1.10:6443
kubectl -n claude-pods exec deploy/claude-pods-jupyter -- jupyter claude-pods doctor
"""


class DoctorApp(JupyterApp):
    """Check that this server's Kubernetes setup works, end to end."""

    name = "jupyter-claude-pods-doctor"
    version = __version__
    description = """Check the Kubernetes setup of jupyter-claude-pods: the kubeconfig or
    in-cluster configuration, the API server, the RBAC permissions the server needs, the
    sandbox namespace's Pod Security labels, the sandbox image on the nodes, the key proxy,
    and, with a throw-away sandbox pod, that sandboxes reach the proxy and nothing else.
    Reads the Jupyter server's configuration (KubernetesBackend.*). Exit status 1 when a
    check fails."""
    examples = EXAMPLES

    # The server's configuration files, not a doctor-specific one.
    config_file_name = Unicode(
        "jupyter_server_config",
        config=True,
        help="Base name of the configuration files to read (the Jupyter server's).",
    )
    json_output = Bool(
        False,
        config=True,
        help="Print the report as JSON (see jupyter_claude_pods/doctor/report.schema.json).",
    )
    skip_egress = Bool(
        False,
        config=True,
        help="Do not start the throw-away sandbox (no sandbox, egress and cleanup checks).",
    )
    forbidden = List(
        Unicode(),
        default_value=[],
        config=True,
        help="""More host:port targets the sandbox must NOT reach, besides the Kubernetes API
        service (e.g. an outside address, the node's own IP on 6443). Pick ones that accept
        connections, so that "blocked" can only mean the network policy.""",
    )
    egress_wait = Float(
        10.0,
        config=True,
        help="""Seconds to keep probing a forbidden target the sandbox can still reach: k3s
        programs a new pod's network policy a few seconds after it starts.""",
    )
    connect_timeout = Float(
        3.0, config=True, help="Seconds one TCP connect of the probe may take in the sandbox."
    )
    probe_kubernetes = Bool(
        True,
        config=True,
        help="Also check that the sandbox cannot reach the Kubernetes API service.",
    )

    classes = [KubernetesBackend]
    aliases = {
        **base_aliases,
        "kubeconfig": "KubernetesBackend.kubeconfig",
        "context": "KubernetesBackend.context",
        "namespace": "KubernetesBackend.namespace",
        "image": "KubernetesBackend.image",
        "proxy-url": "KubernetesBackend.proxy_url",
        "forbidden": "DoctorApp.forbidden",
        "egress-wait": "DoctorApp.egress_wait",
        "connect-timeout": "DoctorApp.connect_timeout",
    }
    flags = {
        # Not --generate-config: it would write a jupyter_server_config.py of doctor options.
        **{k: v for k, v in base_flags.items() if k not in ("generate-config", "y")},
        "json": ({"DoctorApp": {"json_output": True}}, "Print the report as JSON."),
        "skip-egress": (
            {"DoctorApp": {"skip_egress": True}},
            "Do not start the throw-away sandbox pod.",
        ),
    }

    def start(self) -> None:
        try:
            options = DoctorOptions(
                skip_egress=self.skip_egress,
                forbidden=tuple(self.forbidden),
                egress_wait=self.egress_wait,
                connect_timeout=self.connect_timeout,
                probe_kubernetes=self.probe_kubernetes,
            )
        except ValueError as e:
            self.log.error("%s", e)
            self.exit(2)
        backend = KubernetesBackend(parent=self)
        report = asyncio.run(run_doctor(backend, options))
        sys.stdout.write((to_json(report) if self.json_output else to_text(report)) + "\n")
        sys.stdout.flush()
        self.exit(0 if report.ok else 1)


class ClaudePodsCommand(JupyterApp):
    """``jupyter claude-pods <subcommand>``."""

    name = "jupyter-claude-pods"
    version = __version__
    description = "Command-line tools of jupyter-claude-pods."
    subcommands = {
        "doctor": (
            DoctorApp,
            "Check the Kubernetes setup (config, API, RBAC, namespace, image, proxy, egress).",
        ),
    }

    def start(self) -> None:
        super().start()  # runs the subcommand (and never returns) when one was given
        self.print_subcommands()
        self.exit(1)

    @classmethod
    def main(cls, argv: Any = None) -> None:
        cls.launch_instance(argv)


def main(argv: Any = None) -> None:
    """Console script ``jupyter-claude-pods``."""
    ClaudePodsCommand.launch_instance(argv)
