"""Drive the real Claude Code CLI through the stock terminal websocket, as a person does.

Two pieces:

* :class:`ClaudeScreen` renders the terminal's output stream with a VT emulator (pyte)
  and waits for text to appear on it. The raw stream cannot be searched for text: the
  CLI redraws its screen by diffing cells, so it moves the cursor instead of writing
  spaces and skips every character that is already on screen at the same place (a line
  "! for shell mode" may arrive as "! for shell m", a cursor move, "de"). The emulated
  screen is what a person reads.
* :class:`ScriptedModel` is a :attr:`FakeAnthropicAPI.responder`: it answers each
  request by what the conversation asks for, because the interactive CLI interleaves
  side requests (a session title) with the conversation, and the order in which they
  reach the fake is not fixed.

Typing follows a person's rhythm, synchronised on the screen, never on time: keys are
sent, the screen is read until it shows them, then Enter is sent (text and Enter in one
burst could be taken for a paste).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import pyte

from tests.fakes.anthropic_api import Reply
from tests.terminals.client import TermClient

#: The input box's prompt sign, which also marks each prompt sent.
PROMPT = "\N{HEAVY RIGHT-POINTING ANGLE QUOTATION MARK ORNAMENT}"
#: The footer of the CLI's prompt: the managed ``dontAsk`` mode is in force and the
#: input box is up.
READY = "don't ask on"
#: In the footer while a turn runs.
BUSY = "esc to interrupt"
#: Shown in place of the footer once ``!`` switched the input box to shell mode.
SHELL_MODE = "! for shell mode"
#: What the model answers to a conversation it has no script for.
DEFAULT_ANSWER = "FAKE-MODEL-ANSWER"
#: What the model answers after a ``!`` command (the CLI hands its output to the
#: model): ``SHELL_DONE.format(n)`` for the command numbered *n*, so that the test can
#: wait until the CLI is idle again.
SHELL_DONE = "SHELL-DONE-{}"

_numbers = itertools.count(1)
_SHELL_NUMBER = re.compile(r"'<<'\$\(\((\d+)\)\)'>>'")


def squeeze(text: str) -> str:
    """*text* without any whitespace (wrapped lines and the CLI's indentation vanish)."""
    return "".join(text.split())


class ClaudeScreen:
    """The terminal of a :class:`TermClient` as a 24-row, 80-column screen shows it.

    The sandbox's PTY keeps the default size because the client never resizes it, so
    the emulator and the CLI agree on where lines wrap.
    """

    def __init__(self, term: TermClient, rows: int = 24, cols: int = 80) -> None:
        self.term = term
        self._screen = pyte.HistoryScreen(cols, rows, history=100_000)
        self._stream = pyte.Stream(self._screen)
        self._fed = 0

    def _feed(self) -> None:
        output = self.term.output
        if len(output) > self._fed:
            self._stream.feed(output[self._fed :])
            self._fed = len(output)

    def text(self) -> str:
        """Everything shown so far: the lines scrolled off the top, then the screen."""
        self._feed()
        columns = range(self._screen.columns)
        history = [
            "".join(line[x].data for x in columns).rstrip() for line in self._screen.history.top
        ]
        return "\n".join([*history, *(line.rstrip() for line in self._screen.display)])

    def display(self) -> str:
        """The screen as it is now (no scrollback)."""
        self._feed()
        return "\n".join(line.rstrip() for line in self._screen.display)

    async def wait(
        self, check: Callable[[], bool] | str, timeout: float = 30, what: str = ""
    ) -> str:
        """Read the terminal until *check* holds (or the text is on the screen)."""
        if isinstance(check, str):
            needle = check
            what = what or repr(needle)

            def test() -> bool:
                return needle in self.text()

        else:
            test = check
        try:
            await self.term.expect(lambda _plain: test(), timeout)
        except AssertionError:
            raise AssertionError(
                f"the terminal never showed {what or 'what was expected'}; the screen was:\n"
                f"{self.text()[-4000:]}"
            ) from None
        return self.text()

    def idle(self) -> bool:
        """The CLI waits for input: its prompt's footer is up, and no turn is running."""
        shown = self.display()
        return READY in shown and BUSY not in shown

    async def type(self, text: str) -> None:
        """Type *text* into the input box (no Enter) and wait until it shows there."""
        wanted = squeeze(text)
        before = squeeze(self.display()).count(wanted)
        self.term.stdin(text)
        await self.wait(
            lambda: squeeze(self.display()).count(wanted) > before, what=f"the typed {text!r}"
        )

    async def ready(self, timeout: float = 60) -> None:
        """Until the CLI's prompt is up (on a busy machine its start takes seconds)."""
        await self.wait(self.idle, timeout, what=f"the prompt (footer {READY!r})")

    async def ask(self, prompt: str, answer: str, timeout: float = 30) -> str:
        """Type *prompt*, press Enter, wait until *answer* is shown and the turn is over."""
        await self.type(prompt)
        self.term.stdin("\r")
        await self.wait(answer, timeout)
        return await self.wait(self.idle, timeout, what="the end of the turn")

    async def shell(self, command: str, timeout: float = 30) -> str:
        """Run *command* through the CLI's ``!`` shell escape; return what it printed.

        The output is framed by markers the shell computes (``$((n))``), so the command
        line shown on the screen never matches them. Returns the lines between the
        markers without the CLI's ``⎿`` gutter; long lines stay wrapped at 80 columns.
        The CLI hands the output to the model, whose answer ends the turn.
        """
        n = next(_numbers)
        start, end = f"<<{n}>>", f"<</{n}>>"
        self.term.stdin("!")
        await self.wait(lambda: SHELL_MODE in self.display(), what=repr(SHELL_MODE))
        await self.type(f"echo '<<'$(({n}))'>>'; {command}; echo '<</'$(({n}))'>>'")
        self.term.stdin("\r")
        await self.wait(SHELL_DONE.format(n), timeout)
        text = await self.wait(self.idle, timeout, what="the end of the turn")
        body = text.split(start, 1)[1].split(end, 1)[0]
        return "\n".join(line.replace("⎿", "").strip() for line in body.splitlines()).strip()


def user_text(message: dict[str, Any]) -> str:
    """The text of one message (a string, or its text blocks joined)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(
        block.get("text", "") for block in content or [] if block.get("type") == "text"
    )


def _is_tool_results(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)


class ScriptedModel:
    """A model for :attr:`FakeAnthropicAPI.responder`, scripted per prompt.

    ``model.on("WORD", reply1, reply2)``: a prompt containing WORD is answered with
    *reply1*; the CLI's next request in that turn (with the tool result) with *reply2*,
    and so on; then with the text ``WORD-DONE``. A turn's step is the number of
    assistant messages after the prompt, so it does not matter which requests came in
    between. Side requests (no tools, e.g. the session title) get a valid structured
    answer; the output of a ``!`` command gets :data:`SHELL_DONE`.
    """

    def __init__(self) -> None:
        self.scripts: dict[str, tuple[Reply, ...]] = {}

    def on(self, word: str, *replies: Reply) -> None:
        self.scripts[word] = replies

    def __call__(self, body: dict[str, Any]) -> Reply:
        if not body.get("tools"):
            if body.get("output_config", {}).get("format"):
                return Reply(text=json.dumps({"title": "Fake session title"}))
            return Reply(text="side answer")
        messages = body.get("messages") or []
        prompt_at = max(
            (
                i
                for i, m in enumerate(messages)
                if m.get("role") == "user" and not _is_tool_results(m)
            ),
            default=None,
        )
        if prompt_at is None:
            return Reply(text=DEFAULT_ANSWER)
        prompt = user_text(messages[prompt_at])
        number = _SHELL_NUMBER.search(prompt) if "<bash-input>" in prompt else None
        if number:
            return Reply(text=SHELL_DONE.format(number.group(1)))
        step = sum(1 for m in messages[prompt_at + 1 :] if m.get("role") == "assistant")
        for word, replies in self.scripts.items():
            if word in prompt:
                return replies[step] if step < len(replies) else Reply(text=f"{word}-DONE")
        return Reply(text=DEFAULT_ANSWER)
