"""Tutor markers in a terminal stream: split, coloured, redrawn, forged garbage, endless."""

from __future__ import annotations

import random

import pytest

from jupyter_claude_pods.courses import Marker, MarkerScanner

S2 = Marker("stage", 2)
DONE = Marker("course", None)


def feed_all(chunks: list[str]) -> list[Marker]:
    scanner = MarkerScanner()
    found: list[Marker] = []
    for chunk in chunks:
        found += scanner.feed(chunk)
    return found


def test_plain_markers_in_order() -> None:
    text = "Well done!\r\n[STAGE_COMPLETE:1]\r\nNext: stage 2\r\n[STAGE_COMPLETE:2]\r\n"
    assert feed_all([text]) == [Marker("stage", 1), S2]


COLOURED = (
    "\x1b[?25l\x1b[2K\x1b[1G\x1b[38;5;174m⏺\x1b[39m \x1b[1m[STAGE_"  # colour, bold, hide cursor
    "\x1b[3C\x1b[3D"  # cursor right then left inside the marker
    "COMPLETE:\x1b[0m\x1b[32m2\x1b[39m]\x1b[22m"  # colour change before the digit
    "\x1b]0;claude\x07"  # window title (OSC ... BEL)
    "\x1b]8;;https://example.invalid\x1b\\link\x1b]8;;\x1b\\"  # hyperlink (OSC ... ST)
    "\x1bP+q544e\x1b\\"  # DCS query
    "\x1b(B\x1b7\x1b8\x9b0m"  # charset, save/restore cursor, 8-bit CSI
    " and finally [DUNGEON_COMPLETE]\x1b[?25h"
)


@pytest.mark.parametrize(
    "text",
    [
        "before [STAGE_COMPLETE:2] middle [COURSE_COMPLETE] after",
        COLOURED,
    ],
    ids=["plain", "escapes"],
)
def test_split_at_every_position(text: str) -> None:
    assert feed_all([text]) == [S2, DONE]
    for cut in range(len(text) + 1):
        assert feed_all([text[:cut], text[cut:]]) == [S2, DONE], cut
    for a in range(0, len(text), 7):
        for b in range(a, len(text), 11):
            assert feed_all([text[:a], text[a:b], text[b:]]) == [S2, DONE], (a, b)


def test_one_character_at_a_time() -> None:
    assert feed_all(list(COLOURED)) == [S2, DONE]


def test_redraws_report_once() -> None:
    # Claude Code's renderer erases and redraws the same lines many times.
    frame = "\x1b[2K\x1b[1A\x1b[2K\x1b[G  [STAGE_COMPLETE:2]\r\n  thinking…"
    scanner = MarkerScanner()
    assert scanner.feed(frame) == [S2]
    for _ in range(50):
        assert scanner.feed(frame) == []
    assert scanner.feed("[STAGE_COMPLETE:3]") == [Marker("stage", 3)]
    # A new scanner (a new terminal) reports again.
    assert MarkerScanner().feed(frame) == [S2]


@pytest.mark.parametrize("text", ["[DUNGEON_COMPLETE]", "[COURSE_COMPLETE]"])
def test_course_markers(text: str) -> None:
    scanner = MarkerScanner()
    assert scanner.feed(f"yay {text}!") == [DONE]
    assert scanner.feed("[COURSE_COMPLETE][DUNGEON_COMPLETE]") == []  # the same claim


@pytest.mark.parametrize(
    "garbage",
    [
        "[STAGE_COMPLETE:abc]",
        "[STAGE_COMPLETE:0]",
        "[STAGE_COMPLETE:]",
        "[STAGE_COMPLETE:-1]",
        "[STAGE_COMPLETE:1.5]",
        "[STAGE_COMPLETE:01]",
        "[STAGE_COMPLETE:10000]",
        "[STAGE_COMPLETE: 1]",
        "[STAGE_COMPLETE:1 ]",
        "[stage_complete:1]",
        "STAGE_COMPLETE:1",
        "[STAGE_COMPLETE:1",
        "[STAGE_COMPLETE 1]",
        "[STAGE_COMPLETE:\n1]",
        "[COURSE_COMPLETE:1]",
        "[DUNGEON_COMPLETED]",
        "[STAGE_COMPLETE:１]",  # a full-width digit  # noqa: RUF001
    ],
)
def test_garbage_is_ignored(garbage: str) -> None:
    assert feed_all([garbage, "\r\n"]) == []


def test_largest_stage_number() -> None:
    assert feed_all(["[STAGE_COMPLETE:9999]"]) == [Marker("stage", 9999)]


def test_memory_stays_bounded_on_a_long_stream() -> None:
    rng = random.Random(5)
    alphabet = "abc [](){}:_\x1b\r\n0123456789STAGECOMPLET" + "\x1b[31m" + "\x1b]0;t\x07"
    scanner = MarkerScanner()
    for _ in range(600):
        chunk = "".join(rng.choice(alphabet) for _ in range(4096))
        chunk = chunk.replace("[STAGE_COMPLETE:", "[STAGE-COMPLETE:")  # never a real marker
        assert scanner.feed(chunk) == []
        assert scanner.buffered <= 256 + 1024


def test_unterminated_escape_sequence_is_dropped_not_hoarded() -> None:
    scanner = MarkerScanner()
    scanner.feed("\x1b]0;")  # a window title that never ends
    for _ in range(200):
        scanner.feed("x" * 1000)
        assert scanner.buffered <= 256 + 1024
    assert scanner.feed("\x07\r\n[STAGE_COMPLETE:4]\r\n") == [Marker("stage", 4)]


def test_huge_single_chunk_is_linear() -> None:
    # Hostile output: many string-sequence openers with no terminator. A scanner with
    # backtracking would take minutes; this must finish within the test timeout.
    scanner = MarkerScanner()
    assert scanner.feed("\x1b]" * 200_000 + "[STAGE_COMPLETE:7]") == []  # inside a title
    assert scanner.feed("\x07[STAGE_COMPLETE:7]") == [Marker("stage", 7)]
    assert scanner.buffered <= 256 + 1024
