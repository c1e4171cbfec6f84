"""``jupyter claude-pods doctor`` against the fake Kubernetes API (real HTTP, exec WebSockets).

The fake runs pods as local processes without network isolation, so a correct doctor
must find that the sandbox reaches its forbidden targets and fail: that is asserted
exactly, with loopback listeners as the "proxy" and the forbidden target.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from jupyter_claude_pods.doctor import CHECK_NAMES
from jupyter_claude_pods.doctor.model import Report
from jupyter_claude_pods.sandbox.kubernetes.pss import restricted_violations

from .conftest import IMAGE, NAMESPACE, PSA_LABELS, Env, closed_port

SCHEMA = json.loads(
    (
        Path(__file__).parents[2] / "jupyter_claude_pods" / "doctor" / "report.schema.json"
    ).read_text()
)
Run = Callable[..., None]


def statuses(report: Report | dict[str, Any]) -> dict[str, str]:
    checks = report["checks"] if isinstance(report, dict) else [c.to_json() for c in report.checks]
    return {c["name"]: c["status"] for c in checks}


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["name"] == name)


def test_all_good_except_egress_which_the_fake_cannot_block(cluster: Run) -> None:
    """Through the console entry point and the Jupyter config file, as an operator runs it."""

    async def body(env: Env) -> None:
        config = {
            "KubernetesBackend": {
                "kubeconfig": str(env.kubeconfig),
                "namespace": NAMESPACE,
                "image": IMAGE,
                "proxy_url": env.proxy_url,
                "request_timeout": 5.0,
                "start_timeout": 20.0,
            }
        }
        code, out, err = await env.cli(
            "--json",
            "--forbidden",
            f"127.0.0.1:{env.forbidden_port}",
            "--egress-wait",
            "1",
            "--connect-timeout",
            "1",
            config=config,
        )
        assert code == 1, err
        report = json.loads(out)
        jsonschema.validate(report, SCHEMA)
        assert statuses(report) == {
            "config": "ok",
            "api": "ok",
            "rbac": "ok",
            "namespace": "ok",
            "image": "ok",
            "proxy": "ok",
            "sandbox": "ok",
            "egress-proxy": "ok",
            "egress-blocked": "fail",
            "cleanup": "ok",
        }
        blocked = check(report, "egress-blocked")
        targets = {t["target"]: t for t in blocked["data"]["targets"]}
        forbidden = f"127.0.0.1:{env.forbidden_port}"
        assert set(targets) == {"@kubernetes", forbidden}
        for target in targets.values():
            assert target["result"] == "connected"
            assert target["blocked"] is False
        # The kubelet's KUBERNETES_SERVICE_* point at the API server (here: the fake).
        assert targets["@kubernetes"]["address"] == f"127.0.0.1:{env.api.port}"
        assert blocked["detail"].startswith("NOT blocked:")
        assert "NetworkPolicy" in blocked["hint"]
        assert env.forbidden_hits, "the probe never connected to the forbidden listener"
        assert check(report, "egress-proxy")["data"]["targets"][0]["address"] == (
            f"127.0.0.1:{env.proxy_port}"
        )
        assert report["settings"]["namespace"] == NAMESPACE
        assert report["ok"] is False
        # The throw-away pod was the real, restricted sandbox pod of our own instance.
        (pod,) = [
            b for b in env.api.created_bodies if "claude-pods-doctor" in b["metadata"]["name"]
        ]
        assert restricted_violations(pod) == []
        assert pod["metadata"]["labels"]["app.kubernetes.io/instance"].startswith(
            "claude-pods-doctor-"
        )
        assert pod["spec"]["activeDeadlineSeconds"] <= 600
        assert check(report, "cleanup")["data"]["pod"] == pod["metadata"]["name"]

    cluster(body)


def test_forbidden_target_that_refuses_counts_as_blocked(cluster: Run) -> None:
    """The pass path: a target the sandbox cannot connect to is reported blocked."""

    async def body(env: Env) -> None:
        port = closed_port()
        report = await env.doctor(forbidden=(f"127.0.0.1:{port}",), probe_kubernetes=False)
        assert statuses(report)["egress-blocked"] == "ok", report.get("egress-blocked")
        assert statuses(report)["egress-proxy"] == "ok"
        (target,) = report.get("egress-blocked").data["targets"]
        assert target["result"] == "refused"
        assert target["blocked"] is True
        # "Stays blocked": more than one probe before it counts.
        assert target["attempts"] >= 2
        assert report.ok

    cluster(body)


def test_rbac_denial_is_named_and_the_pod_is_still_deleted(cluster: Run) -> None:
    async def body(env: Env) -> None:
        env.api.faults.forbid("create", "pods/exec")
        report = await env.doctor()
        rbac = report.get("rbac")
        assert rbac.status == "fail"
        assert "pods/exec create" in rbac.detail
        assert rbac.data["denied"] == ["pods/exec create"]
        assert "Role" in rbac.hint
        # The sandbox started, the exec was refused: reported, and cleaned up.
        assert statuses(report)["sandbox"] == "ok"
        assert statuses(report)["egress-proxy"] == "fail"
        assert "not allowed to exec" in report.get("egress-proxy").detail
        assert statuses(report)["cleanup"] == "ok"
        assert not report.ok

    cluster(body)


def test_optional_permissions_only_warn(cluster: Run) -> None:
    async def body(env: Env) -> None:
        env.api.faults.forbid("create", "pods/attach")
        env.api.faults.forbid("watch", "events")
        rbac = (await env.doctor(skip_egress=True)).get("rbac")
        assert rbac.status == "warn"
        assert "pods/attach create (not used in exec mode)" in rbac.detail
        assert "events watch (not read by the server yet)" in rbac.detail

    cluster(body)


def test_missing_psa_label_fails_with_a_hint(cluster: Run) -> None:
    async def body(env: Env) -> None:
        report = await env.doctor(skip_egress=True)
        namespace = report.get("namespace")
        assert namespace.status == "fail"
        assert "does not enforce the restricted" in namespace.detail
        assert "kubectl label --overwrite namespace claude-pods-sandboxes" in namespace.hint
        assert "pod-security.kubernetes.io/enforce=restricted" in namespace.hint
        assert statuses(report)["sandbox"] == "skip"

    cluster(body, labels={})


def test_audit_and_warn_labels_missing_only_warn(cluster: Run) -> None:
    async def body(env: Env) -> None:
        namespace = (await env.doctor(skip_egress=True)).get("namespace")
        assert namespace.status == "warn"
        assert "pod-security.kubernetes.io/audit" in namespace.detail

    labels = {k: v for k, v in PSA_LABELS.items() if "enforce" in k}
    cluster(body, labels=labels)


def test_missing_namespace_fails_and_skips_the_sandbox(cluster: Run) -> None:
    async def body(env: Env) -> None:
        report = await env.doctor(backend=env.backend(namespace="nowhere"))
        assert report.get("namespace").status == "fail"
        assert "does not exist" in report.get("namespace").detail
        assert statuses(report)["sandbox"] == "skip"
        assert not env.api.created_bodies

    cluster(body)


def test_image_not_listed_is_a_warning(cluster: Run) -> None:
    async def body(env: Env) -> None:
        image = (await env.doctor(skip_egress=True)).get("image")
        assert image.status == "warn"
        assert "scripts/build-images.sh" in image.hint

    cluster(body, node_images=[["docker.io/library/busybox:1.36"]])


def test_image_pull_failure_fails_the_sandbox_and_deletes_it(cluster: Run) -> None:
    async def body(env: Env) -> None:
        env.api.faults.image_pull_error("claude-pods-sandbox")
        report = await env.doctor()
        sandbox = report.get("sandbox")
        assert sandbox.status == "fail"
        assert "did not start" in sandbox.detail
        assert "build-images.sh" in sandbox.hint
        assert statuses(report)["egress-proxy"] == "skip"
        assert statuses(report)["cleanup"] == "ok"
        assert env.api.created_bodies  # it was created, then deleted (checked by the harness)

    cluster(body)


def test_proxy_not_answering_fails(cluster: Run) -> None:
    async def body(env: Env) -> None:
        backend = env.backend(proxy_url=f"http://127.0.0.1:{closed_port()}")
        report = await env.doctor(backend=backend, skip_egress=True)
        proxy = report.get("proxy")
        assert proxy.status == "fail"
        assert "did not answer" in proxy.detail

    cluster(body)


def test_api_down_is_a_clear_failure(cluster: Run) -> None:
    async def body(env: Env) -> None:
        env.api.go_down()
        code, out, err = await env.cli(
            f"--kubeconfig={env.kubeconfig}",
            f"--namespace={NAMESPACE}",
            f"--proxy-url={env.proxy_url}",
        )
        assert code == 1, err
        lines = out.splitlines()
        api_line = next(line for line in lines if line.startswith("FAIL  api"))
        assert f"cannot reach the Kubernetes API server at {env.api.url}" in api_line
        assert any("hint: Is k3s running" in line for line in lines)
        for name in ("rbac", "namespace", "image", "sandbox", "egress-blocked", "cleanup"):
            assert any(line.startswith(f"SKIP  {name} ") for line in lines), name
        assert any(line.startswith("OK    proxy ") for line in lines)
        assert lines[-1].startswith("FAILED: 2 ok, 0 warning(s), 1 failed, 7 skipped")

    cluster(body)


@pytest.mark.parametrize("scenario", ["no-config", "api-down", "skip-egress"])
def test_json_output_is_schema_stable(cluster: Run, scenario: str) -> None:
    async def body(env: Env) -> None:
        args = ["--json", f"--proxy-url={env.proxy_url}", f"--namespace={NAMESPACE}"]
        if scenario == "no-config":
            args.append(f"--kubeconfig={env.tmp_path / 'missing-kubeconfig'}")
        else:
            args.append(f"--kubeconfig={env.kubeconfig}")
        if scenario == "api-down":
            env.api.go_down()
        if scenario == "skip-egress":
            args.append("--skip-egress")
        code, out, err = await env.cli(*args)
        report = json.loads(out)
        jsonschema.validate(report, SCHEMA)
        assert [c["name"] for c in report["checks"]] == list(CHECK_NAMES)
        assert code == (0 if report["ok"] else 1), err
        assert sum(report["counts"].values()) == len(CHECK_NAMES)
        if scenario == "skip-egress":
            assert report["ok"] is True
            assert check(report, "sandbox")["detail"] == "skipped (--skip-egress)"
        else:
            assert report["ok"] is False

    cluster(body)


def test_bad_forbidden_target_is_a_usage_error(cluster: Run) -> None:
    async def body(env: Env) -> None:
        code, out, err = await env.cli("--forbidden", "no-port-here")
        assert code == 2
        assert "must be host:port" in err
        assert out == ""

    cluster(body)
