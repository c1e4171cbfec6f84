"""Reading a pod's status: readiness, failures and start progress (pure functions)."""

from __future__ import annotations

from typing import Any

Pod = dict[str, Any]

#: Container waiting reasons that will not fix themselves within a start timeout.
FATAL_WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)
_IMAGE_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)


def _statuses(pod: Pod) -> list[dict[str, Any]]:
    return list((pod.get("status") or {}).get("containerStatuses") or [])


def _condition(pod: Pod, kind: str) -> dict[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def is_ready(pod: Pod) -> bool:
    """Running, has an IP, not being deleted, and every container ready (as KubeSpawner)."""
    status = pod.get("status") or {}
    statuses = _statuses(pod)
    return (
        status.get("phase") == "Running"
        and bool(status.get("podIP"))
        and not pod.get("metadata", {}).get("deletionTimestamp")
        and bool(statuses)
        and all(s.get("ready") for s in statuses)
    )


def failure(pod: Pod) -> str | None:
    """Why this pod can no longer serve a session, in words for the person; else None."""
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return "the sandbox pod is being deleted"
    for cs in _statuses(pod):
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason in FATAL_WAITING_REASONS:
            what = (
                "could not pull the sandbox image"
                if reason in _IMAGE_REASONS
                else "could not start the sandbox container"
            )
            detail = waiting.get("message") or cs.get("image") or ""
            return f"{what} ({reason}): {detail}".rstrip(": ")
        terminated = state.get("terminated")
        if terminated:
            return _terminated(terminated)
    phase = status.get("phase")
    if phase in ("Failed", "Succeeded"):
        reason = status.get("reason") or phase
        message = status.get("message") or ""
        if reason == "DeadlineExceeded":
            return "the sandbox reached its maximum lifetime (activeDeadlineSeconds)"
        return f"the sandbox pod stopped ({reason}) {message}".strip()
    return None


def _terminated(terminated: dict[str, Any]) -> str:
    reason = terminated.get("reason") or "Terminated"
    code = terminated.get("exitCode")
    if reason == "OOMKilled":
        return f"the sandbox ran out of memory and was killed (OOMKilled, exit code {code})"
    return f"the sandbox container stopped ({reason}, exit code {code})"


def progress(pod: Pod) -> str | None:
    """A short progress line for the pod's current start phase, or None."""
    status = pod.get("status") or {}
    if is_ready(pod):
        return "starting…"
    for cs in _statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "ContainerCreating":
            return f"pulling image {cs.get('image') or ''} and creating the container…".replace(
                "  ", " "
            )
        if (cs.get("state") or {}).get("running"):
            return "starting…"
    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "True":
        node = (pod.get("spec") or {}).get("nodeName") or "a node"
        return f"scheduled on node {node}…"
    if scheduled and scheduled.get("reason") == "Unschedulable":
        return f"waiting for a node: {scheduled.get('message') or 'unschedulable'}"
    if status.get("phase") == "Pending":
        return "waiting to be scheduled…"
    return None
