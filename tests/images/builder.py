"""Build the images with podman from a Debian base made by debootstrap, for the smoke tests.

No container registry is reachable in CI, so the digest-pinned bases of the Containerfiles
cannot be pulled. Instead:

* a Debian 12 minbase (plus what the images install anyway) is made with debootstrap from
  the Debian mirror, kept as a tarball under ``.cache/images/`` keyed by a hash of its
  recipe (the second run skips debootstrap), and ``podman import``-ed;
* the Node.js build stage gets that base plus Debian's ``nodejs`` and ``npm`` (the CLI's
  postinstall needs Node >= 18; Debian 12 has 18.20);
* ``scripts/build-images.sh`` builds the images with those as ``BASE_IMAGE`` and
  ``NODE_IMAGE``, handing the host's CA bundle to npm and pip as the ``build_ca`` secret (a
  TLS-intercepting egress proxy signs the registries' certificates here).

Everything lives in a podman storage of its own under ``.cache/images/storage`` (layers stay
cached between runs; the user's images are never touched). ``CONTAINERS_CONF`` points at
``containers.conf`` next to this file unless the caller set one: the CI VM needs runc and
lower ulimits (see that file). The tests skip only when podman cannot run containers at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jupyter_claude_pods import __version__

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CLAUDE_PODS_IMAGE_CACHE", ROOT / ".cache" / "images"))
CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
MIRROR = os.environ.get("CLAUDE_PODS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get(
    "CLAUDE_PODS_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
SUITE = "bookworm"
#: Preinstalled because every image's final stage installs it anyway (python3 is not: the
#: sandbox has no Python, and the base must not add what its Containerfile leaves out).
BASE_PACKAGES = ("ca-certificates",)
#: The Node.js build stage (the official node image in production).
NODE_PACKAGES = ("nodejs", "npm")
#: Bump when the way the base is made changes (the cache key includes it).
RECIPE = 1

SOURCES = f"""\
Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {SECURITY_MIRROR}
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _ca_bundle() -> str | None:
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@dataclass
class Timing:
    """How long each preparation step took (printed at the end, for the CI budget)."""

    steps: dict[str, float]

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = time.monotonic() - start


class Podman:
    """``podman`` with this suite's configuration and storage."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
        storage = CACHE / "storage"
        conf = CACHE / "storage.conf"
        CACHE.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{storage}"\n'
            f'runroot = "/run/claude-pods-images-{_key(str(storage))}"\n'
        )
        self.env["CONTAINERS_STORAGE_CONF"] = str(conf)

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def exists(self, image: str) -> bool:
        return self.run("image", "exists", image, check=False).returncode == 0


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise base and image builds between concurrent test runs on one machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _debootstrap(tarball: Path, timing: Timing) -> None:
    """Make the Debian minbase tarball (as root: debootstrap chroots and makes devices)."""
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is missing: apt-get install debootstrap (scripts/test.sh does)")
    work = CACHE / "rootfs.tmp"
    shutil.rmtree(work, ignore_errors=True)
    try:
        with timing.step("debootstrap"):
            result = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    SUITE,
                    str(work),
                    MIRROR,
                ],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
        assert result.returncode == 0, f"debootstrap failed:\n{result.stdout[-3000:]}"
        # What docker.io/library/debian:12-slim has: deb822 sources with updates and
        # security, no package lists or downloaded packages.
        (work / "etc/apt/sources.list").unlink(missing_ok=True)
        (work / "etc/apt/sources.list.d/debian.sources").write_text(SOURCES)
        for leftover in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for entry in (work / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(work), "-cf", str(partial), "."],
            check=True,
            timeout=300,
        )
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Bases:
    debian: str
    node: str


def prepare_bases(podman: Podman, timing: Timing) -> Bases:
    """The local stand-ins for the Containerfiles' BASE_IMAGE and NODE_IMAGE."""
    base_key = _key(RECIPE, SUITE, MIRROR, SECURITY_MIRROR, sorted(BASE_PACKAGES))
    debian = f"localhost/claude-pods-ci-debian:{SUITE}-{base_key}"
    node = f"localhost/claude-pods-ci-node:{SUITE}-{_key(base_key, sorted(NODE_PACKAGES))}"
    tarball = CACHE / f"debian-{SUITE}-{base_key}.tar"
    with _locked(CACHE / "build.lock"):
        if not podman.exists(debian):
            if not tarball.is_file():
                _debootstrap(tarball, timing)
            with timing.step("import base"):
                podman.run(
                    "import", "--change", 'CMD ["/bin/bash"]', str(tarball), debian, timeout=300
                )
        probe = podman.run("run", "--rm", "--network=none", debian, "true", check=False)
        if probe.returncode != 0:
            pytest.skip(f"podman cannot run containers here: {probe.stderr.strip()[-500:]}")
        if not podman.exists(node):
            containerfile = CACHE / "node-base.Containerfile"
            containerfile.write_text(
                f"FROM {debian}\n"
                "RUN apt-get update && apt-get install -y --no-install-recommends "
                f"{' '.join(sorted(NODE_PACKAGES))} && rm -rf /var/lib/apt/lists/*\n"
            )
            with timing.step("node base"):
                podman.run(
                    "build",
                    "--pull=never",
                    "-f",
                    str(containerfile),
                    "-t",
                    node,
                    str(CACHE),
                    timeout=900,
                )
    return Bases(debian=debian, node=node)


def build_image(podman: Podman, bases: Bases, timing: Timing, name: str) -> str:
    """Build ``name`` with scripts/build-images.sh on the local bases; its tag."""
    command = [
        str(ROOT / "scripts" / "build-images.sh"),
        "--engine",
        "podman",
        "--base",
        bases.debian,
        "--node-image",
        bases.node,
        name,
    ]
    ca = _ca_bundle()
    if ca:
        command[1:1] = ["--ca-file", ca]
    env = {**podman.env, "BUILD_ARGS": "--pull=never"}
    with _locked(CACHE / "build.lock"), timing.step(f"build {name}"):
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=1200, check=False
        )
    assert result.returncode == 0, (
        f"building {name} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return f"localhost/claude-pods-{name}:{__version__}"
