"""Every overlay under manifests/ renders with the real kubectl and follows our rules.

The rules themselves are in checks.py; test_checks_catch.py shows each one fails on a
deliberately broken variant.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from claude_pods_proxy.keys import KeySource, KeyUnavailable
from claude_pods_proxy.tokens import check_secret

from . import checks
from .conftest import INGRESS_OVERLAYS, OVERLAYS, Rendered
from .kustomize import MANIFESTS, example_files, kustomize


def test_the_contract_overlays_exist() -> None:
    assert {"k3s", "dev", "gpu", *INGRESS_OVERLAYS} <= set(OVERLAYS)


def test_base_renders_on_its_own_without_secrets() -> None:
    objs = kustomize(MANIFESTS / "base")
    assert checks.find(objs, "Secret") == []
    assert checks.check_schema(objs) == []


def test_schema_1_34_strict(overlay: Rendered) -> None:
    assert len(overlay.objs) > 20
    assert checks.check_schema(overlay.objs) == []


def test_part_of_label_everywhere(overlay: Rendered) -> None:
    assert checks.check_labels(overlay.objs) == []


def test_namespaces_enforce_restricted(overlay: Rendered) -> None:
    assert checks.check_namespaces(overlay.objs) == []


def test_rbac_is_exactly_the_contract(overlay: Rendered) -> None:
    assert checks.check_rbac(overlay.objs) == []


def test_key_only_in_the_proxy(overlay: Rendered) -> None:
    assert checks.check_secrets(overlay.objs) == []


def test_images_are_ours_and_pinned(overlay: Rendered) -> None:
    b = overlay.settings.backend
    assert checks.check_images(overlay.objs, b.image, b.image_pull_policy) == []


def test_server_and_proxy_pods_are_restricted_and_hardened(overlay: Rendered) -> None:
    assert checks.check_pod_security(overlay.objs) == []


def test_services(overlay: Rendered) -> None:
    assert checks.check_services(overlay.objs, overlay.ingress) == []


def test_jupyter_configuration(overlay: Rendered) -> None:
    assert checks.check_config(overlay.objs, overlay.settings) == []


def test_storage(overlay: Rendered) -> None:
    assert checks.check_storage(overlay.objs, overlay.settings) == []


def test_sandbox_pod_from_this_configuration(overlay: Rendered) -> None:
    assert overlay.pod["spec"]["containers"][0]["image"] == checks.IMAGES["sandbox"]
    assert checks.check_sandbox_pod(overlay.objs, overlay.pod) == []


def test_network_policies(overlay: Rendered) -> None:
    assert checks.check_network(overlay.objs, overlay.pod, overlay.ingress) == []


def test_quota_and_limit_range_fit_the_server_cap(overlay: Rendered) -> None:
    cap = overlay.settings.manager.max_sandboxes
    assert checks.check_quota(overlay.objs, overlay.pod, cap) == []


# ------------------------------------------------------------------ overlay specifics
def _hard(objs: list[dict], key: str) -> Decimal:
    quota = checks.get(objs, "ResourceQuota", "sandboxes", checks.SANDBOX_NS)
    assert quota is not None
    return checks.q(quota["spec"]["hard"][key])


def test_gpu_sandboxes_get_a_gpu_through_the_nvidia_runtime(
    rendered: dict[str, Rendered],
) -> None:
    gpu, k3s = rendered["gpu"], rendered["k3s"]
    assert gpu.pod["spec"]["runtimeClassName"] == "nvidia"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu.pod[
        "spec"
    ]["tolerations"]
    [(_, requests, limits)] = checks.effective_resources(gpu.pod, gpu.objs)
    assert requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"] == "1"
    assert _hard(gpu.objs, "requests.nvidia.com/gpu") >= gpu.settings.manager.max_sandboxes + 1
    # Without the overlay: no GPU, no runtime class.
    assert "runtimeClassName" not in k3s.pod["spec"]
    [(_, requests, limits)] = checks.effective_resources(k3s.pod, k3s.objs)
    assert "nvidia.com/gpu" not in requests
    assert "nvidia.com/gpu" not in limits


def test_dev_is_smaller_than_k3s(rendered: dict[str, Rendered]) -> None:
    dev, k3s = rendered["dev"], rendered["k3s"]
    quota = checks.get(k3s.objs, "ResourceQuota", "sandboxes", checks.SANDBOX_NS)
    assert quota is not None
    for key in quota["spec"]["hard"]:
        assert _hard(dev.objs, key) < _hard(k3s.objs, key), key
    assert dev.settings.manager.max_sandboxes < k3s.settings.manager.max_sandboxes
    [(_, _, dev_limits)] = checks.effective_resources(dev.pod, dev.objs)
    [(_, _, k3s_limits)] = checks.effective_resources(k3s.pod, k3s.objs)
    for key in ("cpu", "memory", "ephemeral-storage"):
        assert checks.q(dev_limits[key]) < checks.q(k3s_limits[key]), key
    for name in (checks.JUPYTER, checks.PROXY):
        dev_w, k3s_w = checks.workload(dev.objs, name), checks.workload(k3s.objs, name)
        assert dev_w is not None
        assert k3s_w is not None
        dev_c, k3s_c = checks.main_container(dev_w[2]), checks.main_container(k3s_w[2])
        for key in ("cpu", "memory"):
            assert checks.q(dev_c["resources"]["limits"][key]) < checks.q(
                k3s_c["resources"]["limits"][key]
            )


def test_config_overlay_wins_setting_by_setting(rendered: dict[str, Rendered]) -> None:
    """The overlay file changes only what it names; the base's other settings stay."""
    dev = rendered["dev"].settings
    assert dev.manager.max_sandboxes == 5
    assert dev.backend.memory_limit == "1Gi"
    assert dev.backend.namespace == checks.SANDBOX_NS  # from the base file


# ------------------------------------------------------------------ secrets from files
def test_placeholders_are_refused_by_the_proxy() -> None:
    """Copying an example instead of a real value must fail loudly, not run with a
    well-known token secret or a fake key."""
    examples = example_files()
    assert {p.name for p in examples} >= {"anthropic-api-key.example", "token-secret.example"}
    for example in examples:
        value = example.read_bytes()
        assert b"REPLACE" in value
        if example.name.startswith("token-secret"):
            with pytest.raises(ValueError, match="at least"):
                check_secret(value.strip())
        else:
            with pytest.raises(KeyUnavailable):
                KeySource(value=value.decode())


def test_rendered_secrets_come_from_the_files(rendered: dict[str, Rendered]) -> None:
    for name in ("k3s", "dev"):
        secret = checks.get(rendered[name].objs, "Secret", checks.ANTHROPIC_SECRET, checks.NS)
        assert secret is not None
        example = MANIFESTS / "overlays" / name / "secrets" / "anthropic-api-key.example"
        assert base64.b64decode(secret["data"]["api-key"]) == example.read_bytes()


def test_every_secret_file_an_overlay_reads_has_an_example() -> None:
    """So a fresh checkout renders (with placeholders) and shows what to create."""
    for kustomization in (MANIFESTS / "overlays").glob("*/kustomization.yaml"):
        doc = yaml.safe_load(kustomization.read_text())
        for generator in doc.get("secretGenerator") or []:
            for entry in generator.get("files") or []:
                path = entry.split("=", 1)[-1]
                assert (kustomization.parent / f"{path}.example").is_file(), (kustomization, path)


def test_real_secret_files_are_git_ignored(tmp_path: Path) -> None:
    git = shutil.which("git")
    repo = MANIFESTS.parent
    if git is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(relative: str) -> bool:
        rc = subprocess.run(
            [git, "-C", str(repo), "check-ignore", "-q", "--no-index", relative],
            check=False,
        ).returncode
        assert rc in (0, 1), rc
        return rc == 0

    for overlay in ("k3s", "dev", "some-new-overlay"):
        assert ignored(f"manifests/overlays/{overlay}/secrets/anthropic-api-key")
        assert ignored(f"manifests/overlays/{overlay}/secrets/token-secret")
        assert not ignored(f"manifests/overlays/{overlay}/secrets/token-secret.example")
