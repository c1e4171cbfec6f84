#!/usr/bin/env python3
"""Generate docs/configuration.md from the traitlets help of every configurable class.

Why generated: option names, defaults and help live in the code (``help=`` strings); a
hand-written list drifts. tests/doctor/test_config_docs.py fails when the committed file
differs from what this script writes, so a change to a trait must come with a re-run:

    .venv/bin/python scripts/gen-config-docs.py          # rewrite docs/configuration.md
    .venv/bin/python scripts/gen-config-docs.py --check  # exit 1 if it is out of date

Only static facts go in (no dynamic defaults such as the host name), so the output is
the same on every machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"
sys.path[:0] = [str(ROOT), str(ROOT / "proxy")]

#: (module, class, inherited trait owners worth documenting, one-line role).
CLASSES: list[tuple[str, str, tuple[str, ...], str]] = [
    (
        "jupyter_claude_pods.terminals.manager",
        "SandboxTerminalManager",
        ("TerminalManager",),
        "The terminal manager: which backend runs sandboxes, caps, replay, culling.",
    ),
    (
        "jupyter_claude_pods.sandbox.kubernetes.backend",
        "KubernetesBackend",
        (),
        "Sandboxes as pods: cluster access, image, resources, hardening, courses volume.",
    ),
    (
        "jupyter_claude_pods.sandbox.local",
        "LocalBackend",
        (),
        "Sandboxes as bubblewrap process trees on the server (no cluster).",
    ),
    (
        "jupyter_claude_pods.credentials",
        "SessionCredentials",
        (),
        "Per-session proxy tokens: the signing secret, lifetime, revocation.",
    ),
    (
        "jupyter_claude_pods.courses.config",
        "CoursesConfig",
        (),
        "Courses and learner progress.",
    ),
    (
        "jupyter_claude_pods.app",
        "ClaudePodsApp",
        (),
        "The Jupyter Server extension itself.",
    ),
    (
        "jupyter_claude_pods.doctor.app",
        "DoctorApp",
        (),
        "`jupyter claude-pods doctor` (command line only; it also reads every class above).",
    ),
]

#: Environment variables of the Jupyter server process: (names, what they do).
SERVER_ENV: list[tuple[str, str]] = [
    (
        "CLAUDE_PODS_BACKEND",
        "`auto`, `kubernetes` or `local`: overrides `SandboxTerminalManager.backend`.",
    ),
    (
        "KUBECONFIG",
        (
            "kubeconfig file(s) when `KubernetesBackend.kubeconfig` is empty and the server does "
            "not run in a pod (in-cluster credentials win there)."
        ),
    ),
    (
        "CLAUDE_PODS_TOKEN_SECRET_FILE",
        (
            "File holding the token-signing secret shared with the key proxy (default of "
            "`SessionCredentials.token_secret_file`; the manifests mount it from the Secret "
            "`claude-pods-token-secret`)."
        ),
    ),
    (
        "CLAUDE_PODS_TOKEN_SECRET",
        (
            "The token-signing secret itself, when no file is given (prefer the file: it can "
            "be rotated without a restart)."
        ),
    ),
    (
        "CLAUDE_PODS_PROXY_ADMIN_URL",
        (
            "Where the server reaches the proxy's admin API to revoke tokens (default of "
            "`SessionCredentials.proxy_admin_url`; else `KubernetesBackend.proxy_url`)."
        ),
    ),
    (
        "CLAUDE_PODS_SERVER_POD_NAME",
        (
            "Name of the server's own pod (downward API); sandboxes in the same namespace get an "
            "ownerReference to it."
        ),
    ),
    ("CLAUDE_PODS_SERVER_POD_UID", "UID of the server's own pod (downward API)."),
    ("CLAUDE_PODS_SERVER_POD_NAMESPACE", "Namespace of the server's own pod (downward API)."),
    ("CLAUDE_PODS_COURSES_DIR", "Default of `CoursesConfig.courses_dir`."),
    ("CLAUDE_PODS_PROGRESS_DB", "Default of `CoursesConfig.progress_db`."),
    (
        "JUPYTERHUB_USER, JUPYTERHUB_SERVER_NAME",
        (
            "Under JupyterHub: the default owner of terminals and part of "
            "`KubernetesBackend.instance`."
        ),
    ),
    (
        "ANTHROPIC_API_KEY, CLAUDE_PODS_KEY_FILE",
        (
            "Local backend only: the real key (or a file holding it) for the key proxy the server "
            "embeds. With the Kubernetes backend the server must NOT have the key: only the proxy "
            "Deployment mounts it (the server still strips any value equal to it from sandbox "
            "environments)."
        ),
    ),
    (
        "CLAUDE_PODS_UPSTREAM_URL",
        (
            "Local backend only: with the other key-proxy variables below, settings of the "
            "proxy the server embeds (same meaning as for the standalone proxy)."
        ),
    ),
    (
        "CLAUDE_PODS_CLAUDE_BIN",
        (
            "Local backend only: path of the Claude Code CLI to bind into sandboxes (default: "
            "`claude` on `PATH`)."
        ),
    ),
    (
        "XDG_RUNTIME_DIR",
        "Local backend only: parent of its private state directory (see `LocalBackend`).",
    ),
]

#: Environment the server gives each sandbox, read by the launcher in the image.
SANDBOX_ENV: list[tuple[str, str]] = [
    ("ANTHROPIC_BASE_URL", "The key proxy (`KubernetesBackend.proxy_url`)."),
    (
        "ANTHROPIC_AUTH_TOKEN",
        (
            "This session's proxy token (signed, bound to user and session, revoked when the "
            "terminal ends). Never the real key."
        ),
    ),
    ("CLAUDE_PODS_COURSE_DIR", "Where the course material is mounted (`/course`)."),
    ("CLAUDE_PODS_STAGE", "The stage the learner starts at."),
    ("CLAUDE_PODS_COURSE_TITLE", "The course title, for the tutor's greeting."),
    ("CLAUDE_PODS_TUTOR", "The course's tutor instructions, when it has any."),
]


def _md(text: str) -> str:
    """Trait help (reStructuredText-ish) as Markdown."""
    text = inspect.cleandoc(text).replace("``", "`")
    return re.sub(r":[a-z]+:`", "`", text)  # Sphinx roles (:mod:`x`) -> `x`


def _type(trait: Any) -> str:
    name = type(trait).__name__
    values = getattr(trait, "values", None)
    if name in ("Enum", "CaselessStrEnum") and values:
        return f"{name}: " + " \\| ".join(f"`{v}`" for v in values)
    return name


def _owner(cls: type, name: str) -> type:
    return next(c for c in cls.__mro__ if name in vars(c))


def _default(cls: type, name: str, trait: Any) -> str:
    dynamic = any(name in getattr(c, "_trait_default_generators", {}) for c in cls.__mro__)
    if dynamic:
        return "computed at start-up (see the help)"
    return f"`{trait.default_value_repr()}`"


def _class_section(module: str, name: str, inherited: tuple[str, ...], role: str) -> list[str]:
    cls = getattr(importlib.import_module(module), name)
    out = [f"## {name}", "", f"{role}", ""]
    doc = inspect.getdoc(cls)
    if doc:
        out += [f"*{_md(doc.splitlines()[0])}* (`{module}.{name}`)", ""]
    traits = cls.class_traits(config=True)
    others: list[str] = []
    for trait_name in sorted(traits):
        trait = traits[trait_name]
        owner = _owner(cls, trait_name)
        own = owner.__module__.startswith("jupyter_claude_pods")
        if not own and owner.__name__ not in inherited:
            others.append(trait_name)
            continue
        origin = "" if own else f" (inherited from `{owner.__name__}`)"
        out += [
            f"### `{name}.{trait_name}`{origin}",
            "",
            f"{_type(trait)} · default {_default(cls, trait_name, trait)}",
            "",
            _md(trait.help or "(no help)"),
            "",
        ]
    if others:
        base = ", ".join(sorted({_owner(cls, n).__name__ for n in others}))
        out += [
            f"Also configurable, inherited from {base} (see their own documentation): "
            + ", ".join(f"`{n}`" for n in others)
            + ".",
            "",
        ]
    return out


def _doctor_flags() -> list[str]:
    from jupyter_claude_pods.doctor.app import DoctorApp

    out = ["| Option | Sets |", "|---|---|"]
    for alias, target in DoctorApp.aliases.items():
        if isinstance(alias, str) and target.startswith(("DoctorApp.", "KubernetesBackend.")):
            out.append(f"| `--{alias}=…` | `{target}` |")
    for flag, (config, _help) in DoctorApp.flags.items():
        if "DoctorApp" in config:
            settings = ", ".join(f"`DoctorApp.{k}={v}`" for k, v in config["DoctorApp"].items())
            out.append(f"| `--{flag}` | {settings} |")
    return out


def _proxy_section() -> list[str]:
    from claude_pods_proxy.config import OPTIONS, ProxyConfig

    defaults = {}
    for f in dataclasses.fields(ProxyConfig):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
    defaults["db_path"] = "$XDG_STATE_HOME/claude-pods-proxy/usage.sqlite3"
    out = [
        "## Key proxy (`claude-pods-proxy serve`)",
        "",
        (
            "The proxy is configured by flags or environment variables (the flag wins); the "
            "manifests use the variables. Budgets and limits set to 0 are off."
        ),
        "",
        "| Variable | Flag | Default | Meaning |",
        "|---|---|---|---|",
        (
            "| `ANTHROPIC_API_KEY` | — | — | The real key, when not given as a file "
            "(prefer `CLAUDE_PODS_KEY_FILE`). |"
        ),
        (
            "| `CLAUDE_PODS_TOKEN_SECRET` | — | — | The token-signing secret, when not given as a "
            "file. |"
        ),
    ]
    for opt in OPTIONS:
        default = defaults.get(opt.dest)
        shown = "—" if default in (None, dataclasses.MISSING, frozenset()) else f"`{default}`"
        out.append(f"| `{opt.env}` | `{opt.flag}` | {shown} | {opt.help} |")
    out.append("")
    return out


def _env_table(rows: list[tuple[str, str]]) -> list[str]:
    out = ["| Variable | Meaning |", "|---|---|"]
    for names, meaning in rows:
        shown = ", ".join(f"`{n.strip()}`" for n in names.split(","))
        out.append(f"| {shown} | {meaning} |")
    out.append("")
    return out


def render() -> str:
    lines = [
        "<!-- GENERATED by scripts/gen-config-docs.py from the traitlets help; do not edit. -->",
        "",
        "# Configuration",
        "",
        (
            "Every option of jupyter-claude-pods, generated from the code's own help. The Jupyter "
            "server reads them from `jupyter_server_config.py` or `.json` on the Jupyter config "
            "path (on Kubernetes: the ConfigMap `claude-pods-jupyter-config`, mounted under "
            "`/etc/jupyter`, with the overlay's settings in `/etc/jupyter/overlay`, first on "
            "`JUPYTER_CONFIG_PATH`), or from the command line (`--KubernetesBackend.image=…`). "
            "`jupyter claude-pods doctor` reads the same files."
        ),
        "",
        "```python",
        "# jupyter_server_config.py",
        'c.SandboxTerminalManager.backend = "kubernetes"',
        'c.KubernetesBackend.namespace = "claude-pods-sandboxes"',
        'c.KubernetesBackend.proxy_url = "http://claude-pods-proxy.claude-pods.svc.cluster.local:8787"',
        "```",
        "",
        "```json",
        '{"KubernetesBackend": {"image": "localhost/claude-pods-sandbox:0.1.0"}}',
        "```",
        "",
        "Contents: "
        + ", ".join(f"[{name}](#{name.lower()})" for _, name, _, _ in CLASSES)
        + ", [environment variables](#environment-variables), "
        "[key proxy](#key-proxy-claude-pods-proxy-serve).",
        "",
    ]
    for module, name, inherited, role in CLASSES:
        lines += _class_section(module, name, inherited, role)
        if name == "DoctorApp":
            lines += ["Command-line shortcuts:", "", *_doctor_flags(), ""]
    lines += [
        "## Environment variables",
        "",
        "### Jupyter server",
        "",
        *_env_table(SERVER_ENV),
        "### Inside each sandbox (set by the server, read by the launcher)",
        "",
        *_env_table(SANDBOX_ENV),
        *_proxy_section(),
    ]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), "committed", "generated", lineterm=""
            )
            sys.stderr.write("\n".join(list(diff)[:60]) + "\n")
            sys.stderr.write(
                f"{args.output} is out of date: run .venv/bin/python scripts/gen-config-docs.py\n"
            )
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
