"""Unit tests of the pure pod builders: schema-valid, restricted, secret-free, pure."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from jupyter_claude_pods.sandbox.kubernetes.objects import (
    instance_selector,
    label_selector,
    make_labels,
    make_owner_reference,
    make_pod,
    pod_name,
)
from jupyter_claude_pods.sandbox.kubernetes.options import (
    COURSE_LABEL,
    EMPTY_ANNOTATION,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SESSION_LABEL,
    TERMINAL_LABEL,
    TERMINAL_NAME_ANNOTATION,
    USER_LABEL,
    USERNAME_ANNOTATION,
    PodOptions,
)
from jupyter_claude_pods.sandbox.kubernetes.pss import (
    hardening_violations,
    restricted_violations,
)
from jupyter_claude_pods.sandbox.spec import CourseMount, SandboxSpec, safe_slug, scrub_env

K8S_VERSION = "1.34.0"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# k8s docs: "Labels and Selectors" > "Syntax and character set".
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
SESSION = "3f9c2a7b5d1e4c60"
FAKE_KEY = "sk-ant-api03-REAL-KEY-must-never-leak"

NASTY_USERS = [
    "Álvaro@Example.COM",
    "x" * 200,
    "É" * 200,
    "..",
    "",
    " ",
    "-",
    "---a---",
    "user name with spaces",
    "日本語",
    "a" * 40,
    "a" * 41,
]


def make_spec(**kwargs: Any) -> SandboxSpec:
    values: dict[str, Any] = {"session_id": SESSION, "user": "alice", "terminal": "1"}
    values.update(kwargs)
    return SandboxSpec(**values)


def make_options(**kwargs: Any) -> PodOptions:
    values: dict[str, Any] = {
        "namespace": "claude-sandboxes",
        "image": "ghcr.io/example/claude-sandbox:1.0",
        "instance": "jupyter-alice",
    }
    values.update(kwargs)
    return PodOptions(**values)


def full_options() -> PodOptions:
    """Every field set, including extra labels that try to take over ours."""
    return make_options(
        image_pull_policy="Always",
        container_name="claude",
        container_command=("claude", "--read-only"),
        tty=True,
        working_dir="/home/claude/work",
        home_dir="/home/claude",
        env={"CLAUDE_CONFIG_DIR": "/home/claude/.claude", "TERM": "xterm"},
        proxy_url="http://claude-pods-proxy.claude-proxy.svc:8080",
        cpu_request="500m",
        cpu_limit="1",
        memory_request="1Gi",
        memory_limit="2Gi",
        ephemeral_storage_request="1Gi",
        ephemeral_storage_limit="5Gi",
        home_size_limit="2Gi",
        tmp_size_limit="1Gi",
        active_deadline_seconds=24 * 3600,
        node_selector={"kubernetes.io/os": "linux", "gpu": "false"},
        tolerations=(
            {"key": "dedicated", "operator": "Equal", "value": "sandbox", "effect": "NoSchedule"},
        ),
        runtime_class_name="gvisor",
        extra_labels={
            "team": "ml",
            USER_LABEL: "mallory",
            SESSION_LABEL: "other",
            MANAGED_BY_LABEL: "someone-else",
            INSTANCE_LABEL: "other-instance",
            "app.kubernetes.io/name": "not-a-sandbox",
        },
        extra_annotations={"example.com/owner": "ml-team", USERNAME_ANNOTATION: "mallory"},
        run_as_user=1001,
        run_as_group=1002,
        fs_group=1003,
        owner_reference=make_owner_reference(
            "jupyter-alice", "0b7c6a3e-1d2f-4c5b-9a8e-7f6d5c4b3a21"
        ),
    )


def no_resources_options() -> PodOptions:
    return make_options(
        cpu_request=None,
        cpu_limit=None,
        memory_request=None,
        memory_limit=None,
        ephemeral_storage_request=None,
        ephemeral_storage_limit=None,
    )


def limits_only_options() -> PodOptions:
    return make_options(cpu_request=None, memory_request=None, ephemeral_storage_request=None)


OPTION_CASES = {
    "default": make_options,
    "full": full_options,
    "no-resources": no_resources_options,
    "limits-only": limits_only_options,
}


def env_of(pod: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["name"], e["value"]) for e in pod["spec"]["containers"][0]["env"]]


# --- schema and policy ---------------------------------------------------------------


@pytest.mark.parametrize("case", OPTION_CASES)
def test_manifest_validates_against_the_1_34_schema(case: str) -> None:
    pod = make_pod(make_spec(), OPTION_CASES[case]())
    # Strict: an unknown or misspelt field (e.g. "readonlyRootFilesystem") fails.
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


@pytest.mark.parametrize("case", OPTION_CASES)
def test_manifest_passes_pss_restricted(case: str) -> None:
    assert restricted_violations(make_pod(make_spec(), OPTION_CASES[case]())) == []


@pytest.mark.parametrize("case", ["default", "full", "limits-only"])
def test_manifest_passes_our_hardening(case: str) -> None:
    assert hardening_violations(make_pod(make_spec(), OPTION_CASES[case]())) == []


def test_hardening_flags_missing_limits_when_resources_are_none() -> None:
    pod = make_pod(make_spec(), no_resources_options())
    assert "resources" not in pod["spec"]["containers"][0]
    assert hardening_violations(pod) == [
        'container "sandbox": resources.limits.cpu must be set',
        'container "sandbox": resources.limits.memory must be set',
    ]


# --- content ---------------------------------------------------------------------


def test_default_manifest_content() -> None:
    pod = make_pod(make_spec(), make_options())
    assert pod["apiVersion"] == "v1"
    assert pod["kind"] == "Pod"
    meta = pod["metadata"]
    assert meta["name"] == f"sbx-alice-{SESSION}"
    assert meta["namespace"] == "claude-sandboxes"
    assert "ownerReferences" not in meta
    assert meta["annotations"] == {USERNAME_ANNOTATION: "alice", TERMINAL_NAME_ANNOTATION: "1"}
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["terminationGracePeriodSeconds"] == 5
    assert spec["activeDeadlineSeconds"] == 8 * 3600
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert spec[field] is False
    for field in ("nodeSelector", "tolerations", "runtimeClassName", "initContainers"):
        assert field not in spec
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = spec["containers"]
    assert container["name"] == "sandbox"
    assert container["image"] == "ghcr.io/example/claude-sandbox:1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["sleep", "infinity"]
    assert "stdin" not in container
    assert "tty" not in container
    assert "workingDir" not in container
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "256Mi"},
        "limits": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "2Gi"},
    }
    assert container["volumeMounts"] == [
        {"name": "home", "mountPath": "/home/claude"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    assert spec["volumes"] == [
        {"name": "home", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}},
    ]
    assert env_of(pod) == [("HOME", "/home/claude"), ("TERM", "xterm-256color")]


def test_full_manifest_content() -> None:
    options = full_options()
    pod = make_pod(make_spec(), options)
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "jupyter-alice",
            "uid": "0b7c6a3e-1d2f-4c5b-9a8e-7f6d5c4b3a21",
            "blockOwnerDeletion": False,
            "controller": False,
        }
    ]
    assert spec["activeDeadlineSeconds"] == 24 * 3600
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux", "gpu": "false"}
    assert spec["tolerations"] == list(options.tolerations)
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["securityContext"]["runAsUser"] == 1001
    assert spec["securityContext"]["runAsGroup"] == 1002
    assert spec["securityContext"]["fsGroup"] == 1003
    (container,) = spec["containers"]
    assert container["name"] == "claude"
    assert container["imagePullPolicy"] == "Always"
    assert container["command"] == ["claude", "--read-only"]
    assert container["stdin"] is True
    assert container["tty"] is True
    assert container["workingDir"] == "/home/claude/work"
    assert container["resources"]["limits"]["ephemeral-storage"] == "5Gi"
    assert spec["volumes"][0]["emptyDir"] == {"sizeLimit": "2Gi"}
    assert spec["volumes"][1]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert dict(env_of(pod))["ANTHROPIC_BASE_URL"] == options.proxy_url


def test_limits_only_omits_empty_requests() -> None:
    pod = make_pod(make_spec(), limits_only_options())
    assert pod["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "2Gi"}
    }


def test_no_active_deadline_when_unset() -> None:
    pod = make_pod(make_spec(), make_options(active_deadline_seconds=None))
    assert "activeDeadlineSeconds" not in pod["spec"]


def test_extra_labels_and_annotations_cannot_override_ours() -> None:
    pod = make_pod(make_spec(user="Alice"), full_options())
    labels = pod["metadata"]["labels"]
    assert labels == {
        "team": "ml",
        "app.kubernetes.io/name": "claude-sandbox",
        "app.kubernetes.io/component": "sandbox",
        "app.kubernetes.io/part-of": "jupyter-claude-pods",
        MANAGED_BY_LABEL: MANAGED_BY,
        INSTANCE_LABEL: "jupyter-alice",
        USER_LABEL: safe_slug("Alice"),
        TERMINAL_LABEL: "1",
        SESSION_LABEL: SESSION,
    }
    annotations = pod["metadata"]["annotations"]
    assert annotations[USERNAME_ANNOTATION] == "Alice"
    assert annotations["example.com/owner"] == "ml-team"


def test_make_labels_matches_the_pod() -> None:
    spec, options = make_spec(), full_options()
    assert make_labels(spec, options) == make_pod(spec, options)["metadata"]["labels"]


def test_raw_names_are_kept_in_annotations() -> None:
    pod = make_pod(make_spec(user="Álvaro@Example.COM", terminal="Term_2"), make_options())
    assert pod["metadata"]["annotations"][USERNAME_ANNOTATION] == "Álvaro@Example.COM"
    assert pod["metadata"]["annotations"][TERMINAL_NAME_ANNOTATION] == "Term_2"
    assert pod["metadata"]["labels"][TERMINAL_LABEL] == safe_slug("Term_2")


def test_home_dir_must_be_absolute_and_not_tmp() -> None:
    for home in ("home/claude", "/tmp", "/tmp/"):
        with pytest.raises(ValueError, match="home_dir"):
            make_pod(make_spec(), make_options(home_dir=home))


def test_make_owner_reference() -> None:
    assert make_owner_reference("jupyter-0", "uid-1") == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "jupyter-0",
        "uid": "uid-1",
    }


# --- names and label values ------------------------------------------------------


@pytest.mark.parametrize("session", [SESSION, "0b7c6a3e-1d2f-4c5b-9a8e-7f6d5c4b3a21"])
@pytest.mark.parametrize("user", NASTY_USERS)
def test_pod_name_is_a_dns_label_that_keeps_the_session_id(user: str, session: str) -> None:
    name = pod_name(make_spec(user=user, session_id=session))
    assert DNS_LABEL.fullmatch(name), name
    assert len(name) <= 63
    assert name.startswith("sbx-")
    assert name.endswith(f"-{session}")


def test_longest_session_id_still_fits() -> None:
    session = "a" * 57
    name = pod_name(make_spec(user="x" * 200, session_id=session))
    assert name == f"sbx-x-{session}"
    assert len(name) == 63


@pytest.mark.parametrize("session", ["", "ABC", "a_b", "-abc", "abc-", "a" * 58, "abc\n"])
def test_pod_name_rejects_a_bad_session_id(session: str) -> None:
    with pytest.raises(ValueError, match="session id"):
        pod_name(make_spec(session_id=session))


@pytest.mark.parametrize("user", NASTY_USERS)
def test_label_values_are_valid_for_nasty_users(user: str) -> None:
    labels = make_pod(make_spec(user=user, terminal="T_1"), make_options())["metadata"]["labels"]
    for key, value in labels.items():
        assert LABEL_VALUE.fullmatch(value), (key, value)
        assert len(value) <= 63, (key, value)


@pytest.mark.parametrize("instance", ["JupyterHub Server #1", "x" * 100, "ns/pod.name", ""])
def test_instance_label_is_label_safe_and_selectable(instance: str) -> None:
    options = make_options(instance=instance)
    value = make_pod(make_spec(), options)["metadata"]["labels"][INSTANCE_LABEL]
    assert LABEL_VALUE.fullmatch(value)
    assert 0 < len(value) <= 63
    assert f"{INSTANCE_LABEL}={value}" in instance_selector(options).split(",")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("alice", "Alice"),
        ("Alice", "ALICE"),
        ("a.b", "a-b"),
        ("a.b", "a_b"),
        ("bob@example.org", "bob.example.org"),
        ("Álvaro", "álvaro"),
    ],
)
def test_users_differing_in_case_or_punctuation_get_different_slugs(a: str, b: str) -> None:
    assert make_spec(user=a).user_slug != make_spec(user=b).user_slug


def test_trailing_newline_user_gives_a_valid_label() -> None:
    assert LABEL_VALUE.fullmatch(make_spec(user="alice\n").user_slug)


def test_a_name_shaped_like_a_hashed_slug_does_not_collide() -> None:
    hashed = safe_slug("Alice")  # "alice---<8 hex>"
    assert make_spec(user=hashed).user_slug != make_spec(user="Alice").user_slug


def test_pod_name_of_a_newline_user_is_a_dns_label() -> None:
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", pod_name(make_spec(user="alice\n")))


def test_label_selector_is_sorted() -> None:
    assert label_selector({"b": "2", "a": "1"}) == "a=1,b=2"
    assert label_selector({}) == ""


def test_instance_selector_selects_managed_by_and_instance() -> None:
    options = make_options(instance="jupyter-alice")
    assert instance_selector(options) == (
        f"{INSTANCE_LABEL}=jupyter-alice,{MANAGED_BY_LABEL}={MANAGED_BY}"
    )
    labels = make_pod(make_spec(), full_options())["metadata"]["labels"]
    for term in instance_selector(options).split(","):
        key, value = term.split("=")
        assert labels[key] == value


# --- environment ------------------------------------------------------------------


def test_api_key_never_reaches_the_pod_by_name() -> None:
    options = make_options(env={"ANTHROPIC_API_KEY": FAKE_KEY, "KEEP": "1"})
    spec = make_spec(env={"ANTHROPIC_API_KEY": FAKE_KEY, "ANTHROPIC_AUTH_TOKEN": "session"})
    dumped = json.dumps(make_pod(spec, options))
    assert "ANTHROPIC_API_KEY" not in dumped
    assert FAKE_KEY not in dumped
    assert ("KEEP", "1") in env_of(make_pod(spec, options))
    assert ("ANTHROPIC_AUTH_TOKEN", "session") in env_of(make_pod(spec, options))


def test_a_value_equal_to_a_secret_is_scrubbed() -> None:
    operator_env = {"SOME_TOKEN": FAKE_KEY, "KEEP": "1"}
    options = make_options(env=scrub_env(operator_env, secrets=(FAKE_KEY,)))
    spec = make_spec(env=scrub_env({"OTHER": FAKE_KEY}, secrets=(FAKE_KEY,)))
    pod = make_pod(spec, options)
    assert FAKE_KEY not in json.dumps(pod)
    names = [name for name, _ in env_of(pod)]
    assert "KEEP" in names
    assert "SOME_TOKEN" not in names
    assert "OTHER" not in names


def test_env_order_and_later_sources_win() -> None:
    options = make_options(
        proxy_url="http://proxy:8080",
        env={"TERM": "xterm", "A": "options", "B": "options", "ANTHROPIC_BASE_URL": "http://evil"},
    )
    spec = make_spec(env={"B": "spec", "C": "spec", "HOME": "/elsewhere"})
    assert env_of(make_pod(spec, options)) == [
        ("HOME", "/elsewhere"),
        ("TERM", "xterm"),
        ("ANTHROPIC_BASE_URL", "http://evil"),
        ("A", "options"),
        ("B", "spec"),
        ("C", "spec"),
    ]


def test_no_proxy_url_means_no_base_url() -> None:
    names = [name for name, _ in env_of(make_pod(make_spec(), make_options()))]
    assert "ANTHROPIC_BASE_URL" not in names


def test_env_values_are_strings() -> None:
    # Traitlets/JSON config can hand over numbers despite the annotations.
    options = make_options(env={"PORT": 8080, "DEBUG": True})
    env = env_of(make_pod(make_spec(), options))
    assert ("PORT", "8080") in env
    assert ("DEBUG", "True") in env
    assert all(isinstance(v, str) for _, v in env)


def test_env_values_are_literal_not_expanded_by_the_kubelet() -> None:
    # The kubelet expands $(VAR) and turns $$ into $; escaping keeps values literal.
    options = make_options(env={"PS": "$(HOME) costs $$5 and $x"})
    assert ("PS", "$$(HOME) costs $$$$5 and $$x") in env_of(make_pod(make_spec(), options))


# --- purity -------------------------------------------------------------------------


def test_make_pod_is_pure() -> None:
    spec = make_spec(env={"ANTHROPIC_AUTH_TOKEN": "t"})
    options = full_options()
    spec_before, options_before = copy.deepcopy(spec), copy.deepcopy(options)
    first = make_pod(spec, options)
    second = make_pod(spec, options)
    assert first == second
    assert first is not second
    assert spec == spec_before
    assert options == options_before


def test_make_pod_output_shares_nothing_with_options() -> None:
    options = full_options()
    before = copy.deepcopy(options)
    pod = make_pod(make_spec(), options)
    pod["spec"]["tolerations"][0]["value"] = "changed"
    pod["spec"]["nodeSelector"]["gpu"] = "true"
    pod["metadata"]["labels"]["team"] = "changed"
    pod["metadata"]["annotations"]["example.com/owner"] = "changed"
    pod["metadata"]["ownerReferences"][0]["name"] = "changed"
    pod["spec"]["containers"][0]["command"].append("--changed")
    pod["spec"]["securityContext"]["seccompProfile"]["type"] = "Unconfined"
    assert options == before
    assert make_pod(make_spec(), options) != pod
    assert make_pod(make_spec(), options)["spec"]["containers"][0]["securityContext"][
        "seccompProfile"
    ] == {"type": "RuntimeDefault"}


# --- course sessions ----------------------------------------------------------------

PVC = {"persistentVolumeClaim": {"claimName": "claude-pods-courses", "readOnly": True}}
CONFIG_MAP = {"configMap": {"name": "intro-course"}}
MATERIAL = CourseMount(
    id="Intro_1", subpath="Intro_1/material", host_path="/srv/c/Intro_1/material"
)
SEED = CourseMount(
    id="seed-course",
    subpath="seed-course",
    host_path="/srv/c/seed-course",
    hidden=("course.yaml", "CLAUDE.md"),
)
COURSE_CASES = {
    "pvc-material": (MATERIAL, PVC),
    "pvc-seed": (SEED, PVC),
    "configmap": (MATERIAL, CONFIG_MAP),
}


def course_pod(course: CourseMount, volume: dict[str, Any], **options: Any) -> dict[str, Any]:
    return make_pod(make_spec(course=course), make_options(courses_volume=volume, **options))


def mounts_of(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod["spec"]["containers"][0]["volumeMounts"])


@pytest.mark.parametrize("case", COURSE_CASES)
def test_course_pod_is_valid_restricted_and_hardened(case: str) -> None:
    course, volume = COURSE_CASES[case]
    for options in ({}, {"working_dir": "/home/claude"}):
        pod = course_pod(course, volume, **options)
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        assert restricted_violations(pod) == []
        assert hardening_violations(pod) == []


def test_course_material_is_mounted_read_only_by_subpath() -> None:
    pod = course_pod(MATERIAL, PVC)
    course_mounts = [m for m in mounts_of(pod) if m["name"] == "courses"]
    # Only the material's subPath, never the volume's root (the manifests lie beside it).
    assert course_mounts == [
        {"name": "courses", "mountPath": "/course", "subPath": "Intro_1/material", "readOnly": True}
    ]
    assert {"name": "courses", **PVC} in pod["spec"]["volumes"]
    assert pod["spec"]["containers"][0]["workingDir"] == "/course"
    assert pod["metadata"]["labels"][COURSE_LABEL] == safe_slug("Intro_1")
    assert LABEL_VALUE.fullmatch(pod["metadata"]["labels"][COURSE_LABEL])
    # Nothing hidden, so no mask volume and no empty annotation.
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["home", "tmp", "courses"]
    assert EMPTY_ANNOTATION not in pod["metadata"]["annotations"]


def test_hidden_course_files_are_covered_by_an_empty_file() -> None:
    pod = course_pod(SEED, PVC)
    mounts = mounts_of(pod)
    assert mounts[2] == {
        "name": "courses",
        "mountPath": "/course",
        "subPath": "seed-course",
        "readOnly": True,
    }
    assert mounts[3:] == [
        {
            "name": "course-mask",
            "mountPath": f"/course/{name}",
            "subPath": "empty",
            "readOnly": True,
        }
        for name in ("course.yaml", "CLAUDE.md")
    ]
    (mask,) = [v for v in pod["spec"]["volumes"] if v["name"] == "course-mask"]
    (item,) = mask["downwardAPI"]["items"]
    assert item["path"] == "empty"
    # The file's content is an annotation that is always empty.
    assert item["fieldRef"]["fieldPath"] == f"metadata.annotations['{EMPTY_ANNOTATION}']"
    assert pod["metadata"]["annotations"][EMPTY_ANNOTATION] == ""


def test_no_course_no_course_volume_or_label() -> None:
    pod = make_pod(make_spec(), make_options(courses_volume=PVC))
    assert COURSE_LABEL not in pod["metadata"]["labels"]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["home", "tmp"]
    assert "workingDir" not in pod["spec"]["containers"][0]


def test_a_course_without_a_courses_volume_is_refused() -> None:
    with pytest.raises(ValueError, match="no courses volume"):
        make_pod(make_spec(course=MATERIAL), make_options())


def test_extra_labels_cannot_fake_the_course_label() -> None:
    options = make_options(courses_volume=PVC, extra_labels={COURSE_LABEL: "other"})
    assert make_pod(make_spec(), options)["metadata"]["labels"][COURSE_LABEL] == "other"
    labels = make_pod(make_spec(course=MATERIAL), options)["metadata"]["labels"]
    assert labels[COURSE_LABEL] == safe_slug("Intro_1")


def test_course_pod_is_pure_and_shares_nothing_with_options() -> None:
    spec = make_spec(course=SEED)
    options = make_options(courses_volume=copy.deepcopy(PVC))
    before = copy.deepcopy(options)
    pod = make_pod(spec, options)
    assert make_pod(spec, options) == pod
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "courses")
    volume["persistentVolumeClaim"]["claimName"] = "changed"
    assert options == before


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "../etc"},
        {"id": "a b"},
        {"id": "x$(id)"},
        {"id": "a\n"},
        {"subpath": "../other/material"},
        {"subpath": "/srv/c/intro"},
        {"subpath": "intro/../../etc"},
        {"subpath": ""},
        {"subpath": "intro//material"},
        {"subpath": "intro/./material"},
        {"host_path": "relative/material"},
        {"hidden": ("../course.yaml",)},
        {"hidden": ("a/b",)},
        {"hidden": ("..",)},
        {"hidden": ("",)},
        {"hidden": ("x\x00",)},
    ],
)
def test_course_mount_refuses_paths_that_could_escape(fields: dict[str, Any]) -> None:
    values: dict[str, Any] = {
        "id": "intro",
        "subpath": "intro/material",
        "host_path": "/srv/c/intro/material",
    }
    with pytest.raises(ValueError):
        CourseMount(**{**values, **fields})


def test_extra_resource_limits_reach_only_the_limits_and_keep_the_pod_restricted() -> None:
    """A GPU (or any extended resource) is asked for as a limit; the API server sets the
    equal request. The pod stays restricted and schema-valid."""
    pod = make_pod(make_spec(), make_options(extra_limits={"nvidia.com/gpu": "1"}))
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in resources.get("requests", {})
    assert restricted_violations(pod) == []
    kubernetes_validate.validate(pod, "1.34", strict=True)
