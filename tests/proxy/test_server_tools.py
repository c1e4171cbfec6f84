"""Server-side tools, the MCP connector and containers are refused unless an operator allows
them: Anthropic's servers would run them on the open Internet, and a sandbox's only egress is
this proxy. Every refusal is checked against the fake upstream: nothing may reach it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from claude_pods_proxy.app import ProxyServer
from claude_pods_proxy.bodypolicy import tool_family
from claude_pods_proxy.cli import _parser
from claude_pods_proxy.config import ConfigError, config_from_args

from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply

from .helpers import MESSAGE, REAL_KEY, SECRET, RawResponse, raw_request, request_bytes, token
from .test_claude_cli import claude_bin

ROUTES = ["/v1/messages", "/v1/messages/count_tokens"]
CLIENT_TOOL = {
    "name": "Read",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
}
#: Server tools as their docs show them (plus types that do not exist yet: refused too).
SERVER_TOOLS = [
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    {"type": "web_search_20260209", "name": "web_search"},
    {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 10},
    {"type": "code_execution_20250522", "name": "code_execution"},
    {"type": "code_execution_20250825", "name": "code_execution"},
    {"type": "mcp_toolset", "mcp_server_name": "evil"},
    {"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"},
    {"type": "some_future_tool_20300101", "name": "future"},
    {"type": "bash_20250124", "name": "bash"},
]
#: The start of a raw body, for bodies json.dumps cannot write (duplicate keys, escapes).
HEAD = b'{"model":"m","max_tokens":1,"messages":[],'
MCP_SERVERS = [
    {
        "type": "url",
        "url": "https://attacker.example/sse",
        "name": "evil",
        "authorization_token": "x",
    }
]


def payload(**fields: Any) -> bytes:
    return json.dumps({**MESSAGE, **fields}).encode()


async def send(proxy: ProxyServer, data: bytes, path: str = "/v1/messages") -> RawResponse:
    return await raw_request(proxy.port, request_bytes(path, body=data, auth=token()))


def assert_refused(resp: RawResponse, *words: str) -> str:
    assert resp.status == 400
    assert resp.header("x-should-retry") == "false"
    assert resp.header("content-type") == "application/json"
    doc = resp.json
    assert doc["type"] == "error"
    assert doc["error"]["type"] == "invalid_request_error"
    assert doc["request_id"] == resp.header("request-id")
    message: str = doc["error"]["message"]
    for word in words:
        assert word in message, message
    return message


def assert_refused_quietly(
    proxy: ProxyServer,
    fake_api: FakeAnthropicAPI,
    access_lines: list[str],
    all_log_lines: list[str],
    outcome: str,
    is_refusal_line: Callable[[str], bool],
) -> None:
    """After a refusal of session ``sess-1`` (user alice): nothing reached the upstream,
    nothing was charged, the metric, access log and log line name it, and no log line
    holds the key, the token or the body."""
    assert fake_api.requests == []
    assert "sess-1" not in proxy.store.sessions  # no usage charged
    assert proxy.store.session_cost("sess-1") == 0
    assert rejections(outcome, proxy) == 1
    entry = json.loads(access_lines[-1])
    assert (entry["status"], entry["outcome"], entry["session"]) == (400, outcome, "sess-1")
    refusals = [line for line in all_log_lines if is_refusal_line(line)]
    assert refusals, all_log_lines
    assert "sess-1" in refusals[0]
    assert "alice" in refusals[0]
    text = "\n".join(all_log_lines)
    assert REAL_KEY not in text
    assert token() not in text
    assert "PROMPT-MARKER" not in text  # the body is never logged


def rejections(reason: str, proxy: ProxyServer) -> float:
    value = proxy.metrics.registry.get_sample_value(
        "claude_pods_proxy_rejections_total", {"reason": reason}
    )
    return value or 0.0


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("tool", SERVER_TOOLS, ids=lambda t: t["type"])
async def test_each_server_tool_is_refused_and_nothing_is_forwarded(
    proxy: ProxyServer,
    fake_api: FakeAnthropicAPI,
    all_log_lines: list[str],
    access_lines: list[str],
    path: str,
    tool: dict[str, Any],
) -> None:
    # Alongside ordinary client tools, as a real client would send it.
    data = payload(tools=[CLIENT_TOOL, tool, {**CLIENT_TOOL, "name": "Grep"}], stream=True)
    family = tool_family(tool["type"])
    message = assert_refused(
        await send(proxy, data, path),
        repr(tool["type"]),
        f"--allow-server-tool {family}",
        f"CLAUDE_PODS_ALLOWED_SERVER_TOOLS={family}",
    )
    assert "PROMPT-MARKER" not in message
    assert_refused_quietly(
        proxy,
        fake_api,
        access_lines,
        all_log_lines,
        "server_tool_refused",
        lambda line: "refused" in line and tool["type"] in line,
    )


@pytest.mark.parametrize("path", ROUTES)
async def test_client_tools_pass_untouched(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, path: str
) -> None:
    tools = [
        CLIENT_TOOL,
        {**CLIENT_TOOL, "name": "Custom", "type": "custom"},
        {**CLIENT_TOOL, "name": "Null", "type": None},
        # "type" inside a client tool's schema is not the tool's type
        {"name": "T", "input_schema": {"type": "web_search_20250305"}},
    ]
    data = payload(tools=tools, mcp_servers=[], container=None)
    resp = await send(proxy, data, path)
    assert resp.status == 200, resp.body
    assert len(fake_api.requests) == 1
    assert fake_api.requests[0].body == data  # forwarded byte for byte
    assert (await send(proxy, payload(), path)).status == 200  # no tools at all


@pytest.mark.parametrize("proxy_options", [{"allowed_server_tools": frozenset({"web_search"})}])
@pytest.mark.parametrize("path", ROUTES)
async def test_an_allowed_family_passes_others_do_not(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, path: str
) -> None:
    for version in ("web_search_20250305", "web_search_20260209"):
        tools = [CLIENT_TOOL, {"type": version, "name": "web_search"}]
        assert (await send(proxy, payload(tools=tools), path)).status == 200
    assert len(fake_api.requests) == 2
    fetch = payload(tools=[{"type": "web_fetch_20250910", "name": "web_fetch"}])
    assert_refused(await send(proxy, fetch, path), "'web_fetch_20250910'")
    # a name that merely starts with an allowed one is another tool
    longer = payload(tools=[{"type": "web_search_extra_20250305", "name": "x"}])
    assert_refused(await send(proxy, longer, path), "web_search_extra")
    assert len(fake_api.requests) == 2


@pytest.mark.parametrize(
    "proxy_options", [{"allowed_server_tools": frozenset({"web_fetch_20250910"})}]
)
async def test_a_full_type_pins_one_version(proxy: ProxyServer, fake_api: FakeAnthropicAPI) -> None:
    ok = payload(tools=[{"type": "web_fetch_20250910", "name": "web_fetch"}])
    assert (await send(proxy, ok)).status == 200
    newer = payload(tools=[{"type": "web_fetch_20260101", "name": "web_fetch"}])
    assert_refused(await send(proxy, newer), "'web_fetch_20260101'")
    assert len(fake_api.requests) == 1


@pytest.mark.parametrize(
    "proxy_options",
    [{"allowed_server_tools": frozenset({"mcp_toolset", "web_search", "code_execution"})}],
)
@pytest.mark.parametrize("path", ROUTES)
async def test_mcp_servers_are_refused_even_when_tools_are_allowed(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, all_log_lines: list[str], path: str
) -> None:
    tools = [{"type": "mcp_toolset", "mcp_server_name": "evil"}]
    message = assert_refused(
        await send(proxy, payload(mcp_servers=MCP_SERVERS, tools=tools), path), "mcp_servers"
    )
    assert "attacker.example" not in message
    # without any tool too, and in any non-empty shape
    assert_refused(await send(proxy, payload(mcp_servers=MCP_SERVERS), path), "mcp_servers")
    assert_refused(await send(proxy, payload(mcp_servers={"evil": {}}), path), "mcp_servers")
    assert_refused(await send(proxy, payload(mcp_servers="x"), path), "mcp_servers")
    assert fake_api.requests == []
    assert rejections("mcp_servers_refused", proxy) == 4
    assert any("refused mcp_servers" in line for line in all_log_lines)
    assert "attacker.example" not in "\n".join(all_log_lines)
    # the allowed tools themselves still pass
    allowed = payload(tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert (await send(proxy, allowed, path)).status == 200


async def test_container_needs_code_execution(make_proxy: Any, fake_api: FakeAnthropicAPI) -> None:
    closed = await make_proxy()
    for container in ("container_011CQUBQ", {"id": "c", "skills": [{"type": "anthropic"}]}):
        assert_refused(
            await send(closed, payload(container=container)),
            "container",
            "--allow-server-tool code_execution",
        )
    assert fake_api.requests == []
    opened = await make_proxy(allowed_server_tools=frozenset({"code_execution"}))
    tools = [{"type": "code_execution_20250825", "name": "code_execution"}]
    assert (await send(opened, payload(container="container_011CQUBQ", tools=tools))).status == 200
    assert len(fake_api.requests) == 1


@pytest.mark.parametrize(
    "raw",
    [
        # Duplicate keys: a parser that keeps the first value would run the server tool.
        HEAD + b'"tools":[{"type":"web_search_20250305","name":"web_search"}],"tools":[]}',
        HEAD + b'"tools":[{"type":"web_search_20250305","type":"custom","name":"web_search"}]}',
        HEAD + b'"mcp_servers":[{"url":"https://x"}],"mcp_servers":[]}',
    ],
    ids=["top-level", "in-a-tool", "mcp_servers"],
)
async def test_duplicate_keys_are_refused(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, raw: bytes
) -> None:
    assert_refused(await send(proxy, raw), "Duplicate keys")
    assert fake_api.requests == []


@pytest.mark.parametrize(
    "raw",
    [
        # Escaped key and type: what the upstream decodes is what the proxy checks.
        HEAD + b'"\\u0074ools":[{"type":"web_\\u0073earch_20250305","name":"web_search"}]}',
        HEAD + b'"tools":[{"type":7,"name":"x"}]}',
        HEAD + b'"tools":[{"type":{"a":1},"name":"x"}]}',
        HEAD + b'"tools":{"0":{"type":"web_fetch_20250910"}}}',
        HEAD + b'"tools":["web_fetch_20250910"]}',
        b"not json at all",
        b'["an", "array"]',
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=[
        "escaped",
        "int-type",
        "object-type",
        "tools-object",
        "tools-string",
        "not-json",
        "array",
        "deep",
    ],
)
async def test_odd_bodies_are_refused(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, raw: bytes
) -> None:
    assert_refused(await send(proxy, raw))
    assert fake_api.requests == []


def parse(argv: list[str], environ: dict[str, str]) -> Any:
    env = {"CLAUDE_PODS_TOKEN_SECRET": SECRET.decode(), "ANTHROPIC_API_KEY": "placeholder"}
    return config_from_args(_parser().parse_args(["serve", *argv]), {**env, **environ})


def test_options_flag_repeatable_environment_comma_separated() -> None:
    assert parse([], {}).allowed_server_tools == frozenset()
    env = {"CLAUDE_PODS_ALLOWED_SERVER_TOOLS": " web_search, code_execution ,"}
    assert parse([], env).allowed_server_tools == frozenset({"web_search", "code_execution"})
    flags = ["--allow-server-tool", "web_fetch", "--allow-server-tool", "web_search_20250305"]
    cfg = parse(flags, env)  # the flags win over the variable
    assert cfg.allowed_server_tools == frozenset({"web_fetch", "web_search_20250305"})
    assert "allowed_server_tools=frozenset({" in repr(cfg)


@pytest.mark.parametrize("bad", ["Web_Search", "web-search", "web search", "*", "web_search/x"])
def test_bad_tool_names_stop_the_proxy(bad: str) -> None:
    with pytest.raises(ConfigError, match="server tool names"):
        parse(["--allow-server-tool", bad], {})


def test_help_documents_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--allow-server-tool" in text
    assert "$CLAUDE_PODS_ALLOWED_SERVER_TOOLS]" in text
    assert "frozenset" not in text


async def cli(binary: str, base_url: str, auth: str, root: Path, *args: str) -> tuple[int, str]:
    """Run the real CLI as a sandbox would (see test_claude_cli.py), with any arguments."""
    home = root / "home"
    home.mkdir(exist_ok=True)
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_AUTH_TOKEN": auth,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        binary,
        *args,
        cwd=root,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail("claude did not finish within 60 s")
    return proc.returncode or 0, out.decode()


async def test_real_cli_web_search_is_refused_at_the_proxy(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, tmp_path: Path, access_lines: list[str]
) -> None:
    """Claude Code's WebSearch tool asks the API to search (a ``web_search_*`` server tool):
    the proxy refuses that request, the CLI reports the failed tool and carries on."""
    binary = claude_bin()
    seen: list[dict[str, Any]] = []

    def respond(body: dict[str, Any]) -> Reply | None:
        seen.append(body)
        names = {t.get("name") for t in body.get("tools") or []}
        last = body["messages"][-1]["content"]
        if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
            return Reply(text="SEARCH-DONE")
        if "WebSearch" in names:
            return Reply(kind="tool_use", tool_name="WebSearch", tool_input={"query": "weather"})
        return None

    fake_api.responder = respond
    run = await cli(
        binary,
        proxy.url,
        token(session="cli-ws"),
        tmp_path,
        "-p",
        "search the web for the weather",
        "--allowedTools",
        "WebSearch",
    )
    code, output = run
    assert code == 0, output
    assert "SEARCH-DONE" in output
    # The refused search came back to the model as the tool's result, with the reason.
    result = seen[-1]["messages"][-1]["content"]
    assert "does not forward the server tool 'web_search_20250305'" in json.dumps(result)
    for rec in fake_api.requests:  # no server tool ever reached the upstream
        tools = json.loads(rec.body).get("tools") or []
        assert {t.get("type") for t in tools} <= {None, "custom"}, rec.body[:300]
    outcomes = [json.loads(line).get("outcome") for line in access_lines]
    assert outcomes.count("server_tool_refused") == 1, outcomes
