"""Spot the tutor's progress markers in a terminal's output stream.

The tutor (Claude, following the course's CLAUDE.md) prints ``[STAGE_COMPLETE:N]`` when
the learner has shown understanding of stage N and ``[COURSE_COMPLETE]`` at the end; the
seed system's ``[DUNGEON_COMPLETE]`` means the same as the latter.

Why a scanner with state: terminal output arrives in arbitrary chunks, a marker can be
split between two of them, Claude Code's full-screen renderer wraps text in colour codes,
moves the cursor in the middle of a line and redraws the same line many times. So escape
sequences are removed first (including one cut off at a chunk's end, which is held until
the next chunk), a short tail of clean text is carried over, and each distinct marker is
reported once per scanner. Memory stays bounded whatever the stream.

These markers are *forgeable*: the learner's own keystrokes are echoed in the same stream
(``!echo [STAGE_COMPLETE:3]``). Courses opt in with ``trust_tutor_markers``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["MAX_STAGE", "Marker", "MarkerScanner"]

#: Stage numbers above this are ignored (and keep the "seen" set small).
MAX_STAGE = 9999
#: Clean text carried over between chunks: longer than any marker, well under 256.
_TAIL = 64
#: An escape sequence still open after this many characters is dropped, not held.
_MAX_PENDING = 1024

# One escape sequence. Each alternative also matches a sequence cut off at the end of the
# text; the named group of its final character is then None (see _clean).
_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*(?P<csi>[@-~])?"  # CSI: colours, cursor moves, erase
    r"|\x9b[0-?]*[ -/]*(?P<c1>[@-~])?"  # the same with the 8-bit introducer
    # OSC/DCS/SOS/PM/APC strings end at BEL or ST (ESC \\); any other ESC also ends them
    # (xterm does the same), which keeps the scan linear on hostile output.
    r"|\x1b[\]PX^_][^\x07\x1b]*(?P<st>\x07|\x1b\\)?"
    r"|\x1b[ -/]*(?P<fin>[0-~])?",  # two-character and charset sequences
)
_FINALS = ("csi", "c1", "st", "fin")
# Control characters that are not line structure; they never belong inside a marker.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MARKER = re.compile(
    r"\[(?:STAGE_COMPLETE:(?P<stage>[1-9][0-9]{0,3})|(?:COURSE|DUNGEON)_COMPLETE)\]"
)


@dataclass(frozen=True)
class Marker:
    """A progress claim: stage N complete (``kind="stage"``) or the whole course."""

    kind: Literal["stage", "course"]
    stage: int | None


def _clean(raw: str) -> tuple[str, str]:
    """``(clean text, pending)``: escape sequences and stray controls removed; *pending* is a
    sequence cut off at the very end of *raw*, to be completed by the next chunk."""
    parts: list[str] = []
    pos = 0
    for match in _ESCAPE.finditer(raw):
        parts.append(raw[pos : match.start()])
        pos = match.end()
        if pos == len(raw) and all(match.group(g) is None for g in _FINALS):
            return _CONTROLS.sub("", "".join(parts)), raw[match.start() :]
    parts.append(raw[pos:])
    return _CONTROLS.sub("", "".join(parts)), ""


def strip_escapes(text: str) -> str:
    """*text* without escape sequences and without non-line control characters."""
    return _CONTROLS.sub("", _ESCAPE.sub("", text))


class MarkerScanner:
    """Feed terminal output text chunks; returns NEW markers only."""

    def __init__(self) -> None:
        self._pending = ""  # an escape sequence begun but not finished
        self._tail = ""  # the last clean characters, for markers split across chunks
        self._seen: set[Marker] = set()

    @property
    def buffered(self) -> int:
        """Characters held between chunks (bounded; for tests and metrics)."""
        return len(self._pending) + len(self._tail)

    def feed(self, text: str) -> list[Marker]:
        """Scan one chunk; return markers not reported before by this scanner, in order."""
        cleaned, pending = _clean(self._pending + text)
        self._pending = pending if len(pending) <= _MAX_PENDING else ""
        clean = self._tail + cleaned
        found: list[Marker] = []
        if "[" in clean:
            for match in _MARKER.finditer(clean):
                stage = match.group("stage")
                marker = Marker("stage", int(stage)) if stage else Marker("course", None)
                if marker not in self._seen:
                    self._seen.add(marker)
                    found.append(marker)
        self._tail = clean[-_TAIL:]
        return found
