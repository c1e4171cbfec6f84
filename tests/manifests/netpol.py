"""A small evaluator of Kubernetes NetworkPolicy semantics, for offline checks.

Why: reading the YAML cannot tell whether a policy *selects* the pods it is meant for
(a label typo silently selects nothing) or whether two policies together open more than
either alone. Evaluating "may A connect to B on port P" over all rendered policies, with
the pods' real labels, answers what the cluster would do.

Semantics follow the NetworkPolicy API (k8s docs: "Network Policies"):

* a pod is isolated for a direction when at least one policy selecting it has that
  direction in its ``policyTypes`` (default: Ingress, plus Egress when it has egress
  rules); an isolated pod allows what the union of those policies' rules allows;
* a connection between two pods needs the source's egress *and* the destination's
  ingress to allow it;
* a peer with only ``podSelector`` means pods in the policy's own namespace, with
  ``namespaceSelector`` pods in matching namespaces, both means both must match;
* ``ipBlock`` is matched against any address, pod IPs included, which is what
  kube-router (k3s) does and the stricter reading for "denied" checks;
* no ``ports`` means every port; a port without protocol is TCP; ``endPort`` is a range.

Not modelled: traffic from the pod's own node (kube-router always allows it, for probes)
and hostNetwork pods.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """One side of a connection: a pod (``namespace`` set) or an outside address."""

    name: str
    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Named container ports of a pod, for policies that use port names.
    named_ports: Mapping[str, int] = field(default_factory=dict)


def selector_matches(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions); ``{}`` matches everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {op!r}")
    return True


def policy_types(policy: Obj) -> list[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _selecting(policies: Iterable[Obj], pod: Endpoint, direction: str) -> list[Obj]:
    return [
        p
        for p in policies
        if p["metadata"].get("namespace") == pod.namespace
        and selector_matches((p.get("spec") or {}).get("podSelector", {}), pod.labels)
        and direction in policy_types(p)
    ]


def _in_block(block: Obj, ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    net = ipaddress.ip_network(block["cidr"], strict=False)
    if addr.version != net.version or addr not in net:
        return False
    return not any(addr in ipaddress.ip_network(e, strict=False) for e in block.get("except") or [])


def _peer_matches(
    peer: Obj, policy_ns: str, other: Endpoint, namespaces: Mapping[str, Mapping[str, str]]
) -> bool:
    if "ipBlock" in peer:
        return _in_block(peer["ipBlock"], other.ip)
    if other.namespace is None:
        return False  # outside the cluster: only ipBlock peers can match
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        ns_ok = other.namespace == policy_ns
    else:
        ns_ok = selector_matches(ns_selector, namespaces.get(other.namespace, {}))
    pod_selector = peer.get("podSelector")
    pod_ok = pod_selector is None or selector_matches(pod_selector, other.labels)
    return ns_ok and pod_ok


def _port_matches(ports: Sequence[Obj] | None, dst: Endpoint, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, str):
            if dst.named_ports.get(want) == port:
                return True
            continue
        if want == port or (p.get("endPort") is not None and want <= port <= p["endPort"]):
            return True
    return False


def _rules_allow(
    rules: Sequence[Obj] | None,
    peers_key: str,
    policy_ns: str,
    other: Endpoint,
    dst: Endpoint,
    port: int,
    protocol: str,
    namespaces: Mapping[str, Mapping[str, str]],
) -> bool:
    for rule in rules or []:
        peers = rule.get(peers_key)
        peer_ok = not peers or any(_peer_matches(p, policy_ns, other, namespaces) for p in peers)
        if peer_ok and _port_matches(rule.get("ports"), dst, port, protocol):
            return True
    return False


def allowed(
    policies: Sequence[Obj],
    namespaces: Mapping[str, Mapping[str, str]],
    src: Endpoint,
    dst: Endpoint,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether ``src`` may open a connection to ``dst`` on ``port``/``protocol``."""
    if src.namespace is not None:
        selecting = _selecting(policies, src, "Egress")
        if selecting and not any(
            _rules_allow(
                (p.get("spec") or {}).get("egress"),
                "to",
                p["metadata"]["namespace"],
                dst,
                dst,
                port,
                protocol,
                namespaces,
            )
            for p in selecting
        ):
            return False
    if dst.namespace is not None:
        selecting = _selecting(policies, dst, "Ingress")
        if selecting and not any(
            _rules_allow(
                (p.get("spec") or {}).get("ingress"),
                "from",
                p["metadata"]["namespace"],
                src,
                dst,
                port,
                protocol,
                namespaces,
            )
            for p in selecting
        ):
            return False
    return True
