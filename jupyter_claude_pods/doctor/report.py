"""Rendering a :class:`Report`: a short text for people, or JSON for scripts."""

from __future__ import annotations

import json
import textwrap

from .model import Report

LABELS = {"ok": "OK", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}
WIDTH = 100


def _wrap(text: str, first: str, rest: str) -> list[str]:
    # Never split URLs, paths or commands: only wrap at spaces.
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


def to_json(report: Report) -> str:
    """The ``--json`` document (schema: ``report.schema.json``)."""
    return json.dumps(report.to_json(), indent=2, sort_keys=False)


def to_text(report: Report) -> str:
    """One line per check, wrapped details and hints under problems, then a summary."""
    settings = report.settings
    title = (
        "jupyter claude-pods doctor: sandbox namespace "
        f"{settings.get('namespace') or '(from the context)'}, image {settings.get('image')}, "
        f"proxy {settings.get('proxy_url') or '(not set)'}"
    )
    lines = [title, ""]
    name_width = max(len(c.name) for c in report.checks)
    indent = " " * (6 + name_width + 2)
    for check in report.checks:
        head = f"{LABELS[check.status]:<6}{check.name:<{name_width}}  "
        lines += _wrap(check.detail, head, indent) or [head.rstrip()]
        if check.hint and check.status in ("warn", "fail"):
            lines += _wrap(check.hint, indent + "hint: ", indent + "      ")
    counts = report.counts()
    lines += [
        "",
        ("FAILED" if not report.ok else "PASSED")
        + f": {counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failed, "
        f"{counts['skip']} skipped",
    ]
    return "\n".join(lines)
