"""The doctor's data: one :class:`Check` per question, a :class:`Report` of all of them.

Plain frozen data so that checks stay easy to test and the ``--json`` output is a
direct, stable rendering of it (see ``report.schema.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warn", "fail", "skip"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "fail", "skip")

#: Every check the doctor reports, in report order. A check that could not run is
#: reported as ``skip`` rather than left out, so the JSON always has the same shape.
CHECK_NAMES: tuple[str, ...] = (
    "config",
    "api",
    "rbac",
    "namespace",
    "image",
    "proxy",
    "sandbox",
    "egress-proxy",
    "egress-blocked",
    "cleanup",
)

#: Version of the ``--json`` document; bumped only on incompatible changes.
SCHEMA = "jupyter-claude-pods/doctor/v1"


@dataclass(frozen=True)
class Check:
    """The answer to one question about the installation."""

    name: str
    status: Status
    #: What was found, for a person (one line or a few).
    detail: str
    #: What to do about a ``warn`` or ``fail``; empty when nothing is to be done.
    hint: str = ""
    #: Machine-readable facts behind ``detail`` (JSON-serialisable), e.g. denied verbs.
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "hint": self.hint,
            "data": self.data,
        }


def skipped(name: str, why: str) -> Check:
    """A check that did not run, saying why."""
    return Check(name, "skip", why)


@dataclass(frozen=True)
class Report:
    """All checks in :data:`CHECK_NAMES` order, plus the settings they ran with."""

    checks: tuple[Check, ...]
    #: The effective settings (namespace, image, proxy URL...): never secrets.
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No check failed (warnings and skips do not fail the run)."""
        return all(c.status != "fail" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}

    def get(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "ok": self.ok,
            "counts": self.counts(),
            "settings": self.settings,
            "checks": [c.to_json() for c in self.checks],
        }
