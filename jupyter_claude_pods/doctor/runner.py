"""Run every check in order and collect a :class:`Report`.

The settings come from a :class:`KubernetesBackend` configured exactly as the Jupyter
server's (same config files, same traits), so the doctor checks what the server will
use rather than a second description of it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..sandbox.kubernetes.backend import KubernetesBackend
from .checks import check_api, check_image, check_namespace, check_proxy, check_rbac
from .egress import EgressSettings, check_egress, parse_target
from .kube import load_cluster
from .model import CHECK_NAMES, Check, Report, skipped


@dataclass(frozen=True)
class DoctorOptions:
    """What the command line adds to the server's configuration."""

    skip_egress: bool = False
    #: Extra ``host:port`` targets the sandbox must not reach.
    forbidden: tuple[str, ...] = ()
    #: Seconds to keep probing forbidden targets that still connect.
    egress_wait: float = 10.0
    connect_timeout: float = 3.0
    #: Probe the API server's Service from the sandbox too.
    probe_kubernetes: bool = True

    def __post_init__(self) -> None:
        for target in self.forbidden:
            parse_target(target)  # ValueError for the command line to show
        if self.egress_wait < 0 or self.connect_timeout <= 0:
            raise ValueError("egress_wait must be >= 0 and connect_timeout > 0")


def _settings(
    backend: KubernetesBackend, namespace: str, options: DoctorOptions
) -> dict[str, object]:
    return {
        "kubeconfig": backend.kubeconfig,
        "context": backend.context,
        "namespace": namespace,
        "image": backend.image,
        "image_pull_policy": backend.image_pull_policy,
        "proxy_url": backend.proxy_url,
        "connect_mode": backend.connect_mode,
        "skip_egress": options.skip_egress,
        "forbidden": list(options.forbidden),
        "egress_wait": options.egress_wait,
    }


async def run_doctor(backend: KubernetesBackend, options: DoctorOptions) -> Report:
    """Every check of :data:`CHECK_NAMES`; the throw-away sandbox is always deleted."""
    found: dict[str, Check] = {}
    proxy = asyncio.ensure_future(check_proxy(backend.proxy_url, backend.request_timeout))
    cluster, found["config"] = await load_cluster(
        backend.kubeconfig, backend.context, backend.namespace, backend.request_timeout
    )
    namespace = backend.namespace
    why = ""
    try:
        if cluster is not None:
            namespace = cluster.namespace
            found["api"] = await check_api(cluster)
            if found["api"].status != "fail":
                found["rbac"], found["namespace"], found["image"] = await asyncio.gather(
                    check_rbac(cluster, backend.connect_mode),
                    check_namespace(cluster),
                    check_image(cluster, backend.image, backend.image_pull_policy),
                )
        found["proxy"] = await proxy
        if options.skip_egress:
            why = "skipped (--skip-egress)"
        elif cluster is None:
            why = "no Kubernetes configuration"
        elif found["api"].status == "fail":
            why = "the API server is not usable (see api)"
        elif found["namespace"].status == "fail" and "does not exist" in found["namespace"].detail:
            why = "the sandbox namespace does not exist (see namespace)"
        else:
            why = ""
            egress = EgressSettings(
                proxy_url=backend.proxy_url,
                forbidden=options.forbidden,
                wait=options.egress_wait,
                connect_timeout=options.connect_timeout,
                probe_kubernetes=options.probe_kubernetes,
            )
            for check in await check_egress(cluster, backend, egress):
                found[check.name] = check
    finally:
        if not proxy.done():
            proxy.cancel()
        if cluster is not None:
            await cluster.close()
    if cluster is None:
        why_api = "no Kubernetes configuration (see config)"
    else:
        why_api = "the API server is not usable (see api)"
    checks = []
    for name in CHECK_NAMES:
        if name in found:
            checks.append(found[name])
        elif name in ("sandbox", "egress-proxy", "egress-blocked", "cleanup"):
            checks.append(skipped(name, why or why_api))
        else:
            checks.append(skipped(name, why_api))
    return Report(tuple(checks), _settings(backend, namespace, options))
