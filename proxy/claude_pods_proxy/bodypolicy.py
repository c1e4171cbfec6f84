"""What a forwarded request body may ask for: checked once, before anything is forwarded.

Four kinds of rules, on the top level of the JSON body except the last one:

* the operator's limits: the model allowlist and the ``max_tokens`` cap;
* **no server-side tools** unless the operator allows them by name. Tools whose
  ``type`` is absent or ``"custom"`` are the client's own (Claude Code runs them in the
  sandbox); any other type (``web_search_*``, ``web_fetch_*``, ``code_execution_*``,
  ``mcp_toolset``, types that do not exist yet) may be run by Anthropic's servers, on
  the open Internet, on behalf of whoever holds a session token. A sandbox has no
  network egress except this proxy, so forwarding them would make the proxy an egress
  channel to arbitrary URLs. Unknown types are refused too: the list of server tools
  grows, and a filter that names the bad ones would silently let the next one through;
* **no MCP connector** (``mcp_servers``): it makes Anthropic's servers connect to any
  URL the request names, with any credentials it carries. There is no option to allow
  it: an allowlist of servers would have to parse and pin URLs, and nothing in this
  project needs it. A ``container`` (reusing a code-execution container, with its
  files) is refused unless code execution is allowed;
* **no URL sources** unless the operator allows them: an image or document block whose
  ``source`` is ``{"type": "url", "url": ...}`` makes Anthropic's servers GET that URL, so
  a sandbox could send data out in its query string. The content blocks are walked (in
  ``system``, ``messages[*].content``, ``tool_result`` content and a document's
  ``"content"`` source), iteratively, touching only the ``content`` and ``source`` keys of
  each block: a ``tool_use`` block's ``input`` is the client's own data and is not read,
  and ``search_result`` blocks (whose ``source`` is a string) and base64, ``file`` or
  ``text`` sources pass. The walk costs about 0.35 ms on a 600 kB Claude Code-like body
  (870 messages; the JSON parse itself takes about 2 ms).

Objects are decoded as tuples of ``(key, value)`` pairs (``object_pairs_hook=tuple``
costs the same as decoding into dicts, measured on a 600 kB Claude Code-like body) so
that a duplicate key is seen: ``{"tools": [...server tool...], "tools": []}`` would
otherwise pass this check as the last value while a parser that keeps the first one
runs the server tool. Duplicate keys at the top level or in a tool are refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CODE_EXECUTION",
    "BodyCheck",
    "BodyPolicy",
    "BodyRefusal",
    "parse_object",
    "tool_family",
    "valid_tool_name",
]

#: The family whose permission also permits ``container`` (code-execution reuse).
CODE_EXECUTION = "code_execution"
#: ``web_search_20250305`` -> ``web_search``: versions end in ``_YYYYMMDD``.
_DATE_SUFFIX = re.compile(r"_[0-9]{8}\Z")
_TOOL_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
#: Longest client-chosen string repeated in a message or log line.
_SHOWN = 100

Pairs = tuple[tuple[str, Any], ...]


def tool_family(tool_type: str) -> str:
    """The tool type's name before its date suffix (``web_fetch_20250910`` -> ``web_fetch``)."""
    match = _DATE_SUFFIX.search(tool_type)
    return tool_type[: match.start()] if match else tool_type


def valid_tool_name(name: str) -> bool:
    """An ``--allow-server-tool`` value: a family (``web_search``) or a full type."""
    return _TOOL_NAME.match(name) is not None


def parse_object(body: bytes) -> Pairs | None:
    """The body's top-level JSON object as pairs (nested objects too), else ``None``."""
    try:
        obj = json.loads(body, object_pairs_hook=tuple)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, tuple) else None


def _shown(value: Any) -> str:
    """A client-chosen value for a message or log line: quoted, short, one line."""
    if isinstance(value, str):
        return repr(value[:_SHOWN])
    if isinstance(value, tuple):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return json.dumps(value)  # null, true, false or a number


@dataclass(frozen=True, slots=True)
class BodyRefusal:
    """Why a body is refused. ``code`` is the access-log outcome and metric label;
    ``message`` goes to the client (it names what to change, never the body);
    ``detail`` is for the operator's log line (the refused type, shortened)."""

    code: str
    message: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BodyCheck:
    """The outcome of :meth:`BodyPolicy.check`: the model asked for (for the access log,
    whatever its type) and the refusal, if any."""

    model: Any = None
    refusal: BodyRefusal | None = None


_HOW_TO_ALLOW_URLS = (
    "; send the content itself instead (a base64 source or a file_id), or an operator can "
    "allow URL sources with `claude-pods-proxy serve --allow-url-sources` "
    "(or CLAUDE_PODS_ALLOW_URL_SOURCES=1)."
)

_HOW_TO_ALLOW = (
    "; an operator can allow it with `claude-pods-proxy serve --allow-server-tool {family}` "
    "(or CLAUDE_PODS_ALLOWED_SERVER_TOOLS={family})."
)


@dataclass(frozen=True, slots=True)
class BodyPolicy:
    """The rules of one proxy configuration (built once, applied to every request)."""

    allowed_models: frozenset[str] | None = None
    max_tokens_cap: int | None = None
    allowed_server_tools: frozenset[str] = frozenset()
    allow_url_sources: bool = False

    @property
    def container_allowed(self) -> bool:
        return any(tool_family(t) == CODE_EXECUTION for t in self.allowed_server_tools)

    def check(self, body: bytes, route: str) -> BodyCheck:
        """Parse *body* once and apply every rule; ``route`` is ``messages`` or ``count_tokens``."""
        pairs = parse_object(body)
        if pairs is None:
            return BodyCheck(
                refusal=BodyRefusal("bad_body", "The request body must be a JSON object.")
            )
        obj = dict(pairs)
        model = obj.get("model")
        if len(obj) != len(pairs):
            return BodyCheck(model, _duplicate_keys("the request body", pairs))
        refusal = self._check_egress(obj)
        if refusal is None:
            refusal = self._check_limits(obj, model, route)
        return BodyCheck(model, refusal)

    def _check_limits(self, obj: dict[str, Any], model: Any, route: str) -> BodyRefusal | None:
        allowed = self.allowed_models
        if allowed is not None and not (isinstance(model, str) and model in allowed):
            return BodyRefusal(
                "model_not_allowed",
                f"model {_shown(model)} is not allowed by this proxy; allowed: "
                + ", ".join(sorted(allowed)),
            )
        cap = self.max_tokens_cap if route == "messages" else None
        max_tokens = obj.get("max_tokens")
        if cap is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens > cap
        ):
            return BodyRefusal(
                "max_tokens_cap", f"max_tokens must be an integer of at most {cap} on this proxy."
            )
        return None

    def _check_egress(self, obj: dict[str, Any]) -> BodyRefusal | None:
        """Server-side tools, the MCP connector and containers: what would reach past us."""
        if obj.get("mcp_servers") not in (None, [], ()):
            return BodyRefusal(
                "mcp_servers_refused",
                "This proxy does not forward requests with `mcp_servers` (the MCP connector): "
                "Anthropic's servers would connect to the servers they name, which sandboxes "
                "must not reach. No proxy setting allows it.",
                "mcp_servers",
            )
        tools = obj.get("tools")
        if tools is not None:
            if not isinstance(tools, list):
                return BodyRefusal("bad_body", "`tools` must be an array.")
            for tool in tools:
                refusal = self._check_tool(tool)
                if refusal is not None:
                    return refusal
        if obj.get("container") is not None and not self.container_allowed:
            return BodyRefusal(
                "container_refused",
                "This proxy does not forward `container` (code execution containers), because "
                "server-side code execution is not allowed here"
                + _HOW_TO_ALLOW.format(family=CODE_EXECUTION),
                "container",
            )
        if not self.allow_url_sources:
            return _check_url_sources(obj)
        return None

    def _check_tool(self, tool: Any) -> BodyRefusal | None:
        if not isinstance(tool, tuple):
            return BodyRefusal("bad_body", "Every entry of `tools` must be an object.")
        fields = dict(tool)
        if len(fields) != len(tool):
            return _duplicate_keys("a tool", tool)
        tool_type = fields.get("type")
        if tool_type is None or tool_type == "custom":
            return None  # a client tool: the client runs it, not Anthropic's servers
        how = "."
        if isinstance(tool_type, str):
            family = tool_family(tool_type)
            if family in self.allowed_server_tools or tool_type in self.allowed_server_tools:
                return None
            if valid_tool_name(family):
                how = _HOW_TO_ALLOW.format(family=family)
        return BodyRefusal(
            "server_tool_refused",
            f"This proxy does not forward the server tool {_shown(tool_type)}: Anthropic's "
            "servers would run it, reaching hosts that sandboxes must not reach (only client "
            'tools, without a `type` or with type "custom", are forwarded)' + how,
            _shown(tool_type),
        )


def _duplicate_keys(where: str, pairs: Pairs) -> BodyRefusal:
    seen: set[str] = set()
    dupes: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            dupes.add(key)
        seen.add(key)
    shown = ", ".join(_shown(k) for k in sorted(dupes)[:5])
    return BodyRefusal(
        "duplicate_key",
        f"Duplicate keys in {where} ({shown}): this proxy refuses ambiguous JSON.",
        f"duplicate keys {shown} in {where}",
    )


#: Source types whose data is in the request or already with the API (an uploaded file).
#: Anything else is refused like ``url``: an allowlist, so that a future source type that
#: fetches from somewhere is not forwarded before someone has looked at it.
LOCAL_SOURCE_TYPES = frozenset({"base64", "file", "text", "content"})


def _check_url_sources(obj: dict[str, Any]) -> BodyRefusal | None:
    """A refusal if any content block has a source other than :data:`LOCAL_SOURCE_TYPES`
    (``{"type": "url"}`` above all).

    Iterative (a list of pending values), so nesting depth costs memory, not stack. Every
    pair of an object is looked at, not a dict of it: with a key given twice (``source``
    in a block, ``type`` in a source) either value may be the one the API keeps, so a URL
    in any of them is refused. Values of the wrong shape are skipped: the API rejects them.
    """
    pending: list[Any] = [obj.get("system"), obj.get("messages")]
    pop, push, extend = pending.pop, pending.append, pending.extend
    while pending:
        value = pop()
        if isinstance(value, list):  # messages, or blocks
            extend(value)
        elif isinstance(value, tuple):  # a message or a block
            for key, item in value:
                if key == "content":
                    push(item)
                elif key == "source" and isinstance(item, tuple):
                    for source_key, source_item in item:
                        if source_key == "type" and not (
                            isinstance(source_item, str) and source_item in LOCAL_SOURCE_TYPES
                        ):
                            return _url_source_refusal(value)
                        if source_key == "content":  # a document made of blocks
                            push(source_item)
    return None


def _url_source_refusal(block: Pairs) -> BodyRefusal:
    kind = _shown(next((v for k, v in block if k == "type"), None))
    return BodyRefusal(
        "url_source_refused",
        "This proxy does not forward content blocks whose source is a URL or any type "
        "other than base64, file, text or content "
        f'("source": {{"type": "url"}}, in a block of type {kind}): Anthropic\'s servers '
        "would fetch the URL, which sandboxes must not reach" + _HOW_TO_ALLOW_URLS,
        f"a URL source (block type {kind})",
    )
