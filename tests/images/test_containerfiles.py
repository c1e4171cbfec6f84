"""Static checks of the three Containerfiles, their build contexts and pins (no podman).

The sandbox and proxy images are also built and run by the smoke tests; the Jupyter image
is too heavy for CI (it builds the JupyterLab extension), so these checks are what guards
it: every COPY source exists and survives the ignore file, bases are digest-pinned, the
final stage runs as uid 1000, versions agree with the package.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from jupyter_claude_pods import __version__

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the CI runs 3.11
    tomllib = pytest.importorskip("tomli")
from jupyter_claude_pods.policy import CLAUDE_CODE_VERSION, sandbox_env

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("sandbox", "proxy", "jupyter")
LABELS = ("title", "version", "revision", "source", "licenses", "description")
DIGEST = re.compile(r"^[\w.\-/]+:[\w.\-]+@sha256:[0-9a-f]{64}$")


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int


def parse(path: Path) -> tuple[list[Instruction], dict[str, str]]:
    """The instructions of a Containerfile (continuations joined) and its global ARGs."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    instructions: list[Instruction] = []
    global_args: dict[str, str] = {}
    stage = -1
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        elif keyword == "ARG" and stage == -1:
            name, _, default = args.partition("=")
            global_args[name] = default
        instructions.append(Instruction(keyword, args.strip(), stage))
    return instructions, global_args


def containerfile(name: str) -> Path:
    return ROOT / "images" / name / "Containerfile"


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def arg_default(instructions: list[Instruction], name: str) -> set[str]:
    return {
        i.args.partition("=")[2]
        for i in instructions
        if i.keyword == "ARG" and i.args.partition("=")[0] == name
    }


def ignored(name: str, path: str) -> bool:
    """Whether the image's ignore file keeps *path* out of the build context.

    Docker's rule, simplified: the last pattern matching the path or one of its parent
    directories wins; ``!`` re-includes.
    """
    patterns = [
        line.strip()
        for line in (ROOT / "images" / name / "Containerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(c, glob) for c in candidates):
            result = not negated
    return result


@pytest.mark.parametrize("name", IMAGES)
def test_bases_are_pinned_by_digest_and_never_latest(name: str) -> None:
    text = containerfile(name).read_text()
    assert ":latest" not in text
    instructions, global_args = parse(containerfile(name))
    stages = {i.args.split()[-1] for i in instructions if i.keyword == "FROM" and " AS " in i.args}
    for i in instructions:
        if i.keyword != "FROM":
            continue
        image = i.args.split()[0]
        if image in stages:
            continue
        match = re.fullmatch(r"\$\{(\w+)\}", image)
        assert match, f"{name}: FROM {image} must be a pinned build argument"
        default = global_args[match.group(1)]
        assert DIGEST.match(default), f"{name}: {match.group(1)}={default} is not digest-pinned"
        assert default.startswith(("docker.io/library/debian:12.", "docker.io/library/node:22."))


@pytest.mark.parametrize("name", IMAGES)
def test_final_stage_runs_as_uid_1000_with_labels(name: str) -> None:
    instructions, _ = parse(containerfile(name))
    final = final_stage(instructions)
    users = [i.args for i in final if i.keyword == "USER"]
    assert users == ["1000:1000"], users
    labels = " ".join(i.args for i in final if i.keyword == "LABEL")
    for label in LABELS:
        assert f"org.opencontainers.image.{label}=" in labels, label
    assert f'org.opencontainers.image.title="claude-pods-{name}"' in labels
    assert arg_default(final, "VERSION") == {__version__}
    healthchecks = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    if name == "sandbox":
        assert healthchecks == []  # it only idles; nothing to check
    else:
        assert len(healthchecks) == 1
        assert "urllib.request" in healthchecks[0]
        assert ("/healthz" if name == "proxy" else "8888/api'") in healthchecks[0]


@pytest.mark.parametrize("name", IMAGES)
def test_every_copy_source_exists_and_is_in_the_build_context(name: str) -> None:
    instructions, _ = parse(containerfile(name))
    stages = {i.args.split()[-1] for i in instructions if i.keyword == "FROM" and " AS " in i.args}
    copied = 0
    for i in instructions:
        if i.keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(i.args)
        options = [w for w in words if w.startswith("--")]
        sources = [w for w in words if not w.startswith("--")][:-1]
        source_stage = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
        if source_stage is not None:
            assert source_stage in stages, f"{name}: COPY --from={source_stage}: no such stage"
            continue
        assert i.keyword == "COPY", f"{name}: use COPY, not ADD"
        for source in sources:
            assert (ROOT / source).exists(), f"{name}: COPY source {source} does not exist"
            assert not ignored(name, source), f"{name}: {source} is excluded from the context"
            copied += 1
    assert copied


def test_jupyter_context_has_the_extension_sources_not_its_build_outputs() -> None:
    for kept in ("labextension/package.json", "labextension/yarn.lock", "labextension/src"):
        assert not ignored("jupyter", kept), kept
    for dropped in (
        "labextension/node_modules",
        "labextension/lib",
        "jupyter_claude_pods/labextension",
        "jupyter_claude_pods/__pycache__",
        ".venv",
        ".cache",
        "tests",
    ):
        assert ignored("jupyter", dropped), dropped


def test_sandbox_context_holds_only_the_policy_and_the_cli_lock() -> None:
    assert ignored("sandbox", "jupyter_claude_pods/app.py")
    assert ignored("sandbox", ".cache/npm")
    assert not ignored("sandbox", "jupyter_claude_pods/policy/claude-pods-launch")


def test_sandbox_copies_policy_and_launcher_from_the_package() -> None:
    text = containerfile("sandbox").read_text()
    assert (
        "COPY jupyter_claude_pods/policy/managed-settings.json "
        "jupyter_claude_pods/policy/managed-mcp.json /etc/claude-code/"
    ) in text
    assert (
        "COPY jupyter_claude_pods/policy/claude-pods-launch /usr/local/bin/claude-pods-launch"
    ) in text
    assert (
        "chmod 0644 /etc/claude-code/managed-settings.json /etc/claude-code/managed-mcp.json"
        in (text)
    )


def test_cli_version_is_the_policys_everywhere() -> None:
    instructions, _ = parse(containerfile("sandbox"))
    assert arg_default(instructions, "CLAUDE_CODE_VERSION") == {CLAUDE_CODE_VERSION}
    package = json.loads((ROOT / "images/sandbox/claude-code/package.json").read_text())
    assert package["dependencies"] == {"@anthropic-ai/claude-code": CLAUDE_CODE_VERSION}
    lock = json.loads((ROOT / "images/sandbox/claude-code/package-lock.json").read_text())
    packages = lock["packages"]
    assert packages[""]["dependencies"] == package["dependencies"]
    main = packages["node_modules/@anthropic-ai/claude-code"]
    assert main["version"] == CLAUDE_CODE_VERSION
    for platform in ("linux-x64", "linux-arm64"):
        entry = packages[f"node_modules/@anthropic-ai/claude-code-{platform}"]
        assert entry["version"] == CLAUDE_CODE_VERSION
        assert entry["integrity"].startswith("sha512-")
    assert main["integrity"].startswith("sha512-")


def test_sandbox_environment_is_the_policys() -> None:
    instructions, _ = parse(containerfile("sandbox"))
    env_line = " ".join(i.args for i in final_stage(instructions) if i.keyword == "ENV")
    env = dict(word.split("=", 1) for word in shlex.split(env_line))
    assert {k: env[k] for k in sandbox_env()} == sandbox_env()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line} is not pinned with =="
            pins[name.lower().replace("_", "-")] = version
    return pins


def _dependencies() -> list[Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(d) for d in pyproject["project"]["dependencies"]]


def test_jupyter_requirements_pin_every_package_dependency_compatibly() -> None:
    pins = _pins(ROOT / "images/jupyter/requirements.txt")
    assert "jupyterlab" in pins
    for requirement in _dependencies():
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{requirement} is not pinned for the Jupyter image"
        assert requirement.specifier.contains(pins[name]), (requirement, pins[name])


def test_proxy_requirements_are_what_the_proxy_imports() -> None:
    pins = _pins(ROOT / "images/proxy/requirements.txt")
    assert set(pins) == {"tornado", "prometheus-client"}
    wanted = {r.name.lower().replace("_", "-"): r for r in _dependencies()}
    for name, version in pins.items():
        assert wanted[name].specifier.contains(version), (name, version)
    imported = set()
    for module in (ROOT / "proxy" / "claude_pods_proxy").glob("*.py"):
        for match in re.finditer(r"^\s*(?:from|import) (\w+)", module.read_text(), re.MULTILINE):
            imported.add(match.group(1))
    third_party = {m for m in imported if m in {"tornado", "prometheus_client", "jupyter_server"}}
    assert third_party == {"tornado", "prometheus_client"}


def test_build_tools_are_pinned() -> None:
    pins = _pins(ROOT / "images/python/build-constraints.txt")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for requirement in map(Requirement, pyproject["build-system"]["requires"]):
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, requirement
        assert requirement.specifier.contains(pins[name]), (requirement, pins[name])


def test_build_script_tags_and_k3s_import() -> None:
    result = subprocess.run(
        [
            str(ROOT / "scripts/build-images.sh"),
            "--dry-run",
            "--engine",
            "podman",
            "--import-k3s",
            "--base",
            "localhost/base:1",
            "--ca-file",
            str(ROOT / "pyproject.toml"),  # any non-empty file will do for a dry run
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    lines = result.stdout.splitlines()
    builds = [shlex.split(line) for line in lines if line.startswith("podman build")]
    assert [b[b.index("-t") + 1] for b in builds] == [
        f"localhost/claude-pods-{name}:{__version__}" for name in IMAGES
    ]
    for name, argv in zip(IMAGES, builds, strict=True):
        assert argv[-1] == "."  # the repository root is the context
        assert argv[argv.index("-f") + 1] == f"images/{name}/Containerfile"
        assert argv[argv.index("--ignorefile") + 1] == f"images/{name}/Containerfile.dockerignore"
        assert argv[argv.index("--format") + 1] == "docker"  # OCI configs drop HEALTHCHECK
        assert "BASE_IMAGE=localhost/base:1" in argv
        assert f"id=build_ca,src={ROOT / 'pyproject.toml'}" in argv
    imports = [line for line in lines if "k3s ctr" in line]
    sudo = "" if os.geteuid() == 0 else "sudo "
    assert imports == [
        f"podman save localhost/claude-pods-{name}:{__version__} | "
        f"{sudo}k3s ctr --namespace k8s.io images import -"
        for name in IMAGES
    ]
    refused = subprocess.run(
        [str(ROOT / "scripts/build-images.sh"), "--dry-run", "--version", "latest"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "refusing to tag images :latest" in refused.stderr


def test_make_images_calls_the_build_script() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\nimages:\n\tscripts/build-images.sh " in makefile
    if shutil.which("make") is None:
        return  # the text above is the check then
    result = subprocess.run(
        ["make", "-n", "images", "IMAGES=sandbox"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert result.stdout.split() == ["scripts/build-images.sh", "sandbox"]
