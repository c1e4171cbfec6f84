"""Operations: key rotation without restart, /healthz, /metrics, and the access log (one JSON
line per request, never a key, token or body)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from claude_pods_proxy.app import ProxyServer
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.anthropic_api import FakeAnthropicAPI

from .conftest import MakeProxy
from .helpers import REAL_KEY, body, raw_request, request_bytes, token

KEY_1 = "sk-ant-api03-ROTATION-ONE-aaaaaaaaaaaaaaaa"
KEY_2 = "sk-ant-api03-ROTATION-TWO-bbbbbbbbbbbbbbbb"


def mount_secret(root: Path, key: str, version: str) -> Path:
    """Lay out a key the way the kubelet mounts a Secret: key -> ..data/key -> ..<version>/key."""
    target = root / f"..{version}"
    target.mkdir()
    (target / "key").write_text(key + "\n")
    tmp_link = root / "..data_tmp"
    tmp_link.symlink_to(target.name)
    os.replace(tmp_link, root / "..data")  # the atomic swap the kubelet does
    if not (root / "key").is_symlink():
        (root / "key").symlink_to("..data/key")
    return root / "key"


async def send(proxy: ProxyServer, **kw: Any) -> Any:
    return await raw_request(
        proxy.port, request_bytes("/v1/messages", body=body(), auth=token(), **kw)
    )


async def test_key_file_rotation_without_restart(
    make_proxy: MakeProxy, fake_api: FakeAnthropicAPI, tmp_path: Path, all_log_lines: list[str]
) -> None:
    fake_api.api_keys = {KEY_1, KEY_2}
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    key_file = mount_secret(secret_dir, KEY_1, "v1")
    proxy = await make_proxy(key_file=str(key_file))
    assert (await send(proxy)).status == 200
    mount_secret(secret_dir, KEY_2, "v2")
    assert (await send(proxy)).status == 200
    # A broken rotation (empty file) keeps the last good key in service.
    mount_secret(secret_dir, "", "v3")
    assert (await send(proxy)).status == 200
    assert [r.header("x-api-key") for r in fake_api.requests] == [KEY_1, KEY_2, KEY_2]
    assert proxy.metrics.key_reloads._value.get() == 1
    assert any("empty or malformed" in line for line in all_log_lines)
    text = "\n".join(all_log_lines)
    assert KEY_1 not in text
    assert KEY_2 not in text


async def test_healthz(proxy: ProxyServer) -> None:
    resp = await raw_request(proxy.port, request_bytes("/healthz", method="GET"), "GET")
    assert resp.status == 200
    assert resp.json == {"status": "ok", "in_flight": 0}


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def test_metrics(proxy: ProxyServer, fake_api: FakeAnthropicAPI) -> None:
    assert (await send(proxy)).status == 200
    assert (await raw_request(proxy.port, request_bytes("/v1/messages", body=body()))).status == 401
    assert (
        await raw_request(proxy.port, request_bytes("/nope", method="GET"), "GET")
    ).status == 404
    resp = await raw_request(proxy.port, request_bytes("/metrics", method="GET"), "GET")
    assert resp.status == 200
    assert (resp.header("content-type") or "").startswith("text/plain")
    m = scrape(resp.body.decode())
    assert m[("claude_pods_proxy_requests_total", (("route", "messages"), ("status", "200")))] == 1
    assert m[("claude_pods_proxy_requests_total", (("route", "messages"), ("status", "401")))] == 1
    assert m[("claude_pods_proxy_rejections_total", (("reason", "auth_missing"),))] == 1
    assert m[("claude_pods_proxy_rejections_total", (("reason", "not_found"),))] == 1
    assert m[("claude_pods_proxy_tokens_total", (("kind", "input"),))] == 25
    assert m[("claude_pods_proxy_tokens_total", (("kind", "output"),))] == 12
    assert m[("claude_pods_proxy_cost_usd_total", ())] > 0
    assert m[("claude_pods_proxy_in_flight", ())] == 0
    assert m[("claude_pods_proxy_request_duration_seconds_count", (("route", "messages"),))] == 1
    assert not any("alice" in str(labels) or "sess" in str(labels) for _, labels in m)


async def test_access_log_one_json_line_per_request_without_secrets(
    proxy: ProxyServer,
    fake_api: FakeAnthropicAPI,
    all_log_lines: list[str],
    access_lines: list[str],
) -> None:
    session_token = token()
    await send(proxy)
    await raw_request(
        proxy.port,
        request_bytes("/v1/messages?beta=true", body=body(stream=True), auth=session_token),
    )
    await raw_request(proxy.port, request_bytes("/v1/messages", body=body(), auth="cpp1.bogus.sig"))
    await raw_request(proxy.port, request_bytes("/x", method="GET"), "GET")
    await raw_request(proxy.port, request_bytes("/", method="HEAD"), "HEAD")
    entries = [json.loads(line) for line in access_lines]
    assert [(e["route"], e["status"]) for e in entries] == [
        ("messages", 200),
        ("messages", 200),
        ("messages", 401),
        ("local", 404),
        ("local", 200),
    ]
    ok, streamed = entries[0], entries[1]
    assert ok["request_id"] == "req_fake_000001"
    assert (ok["user"], ok["session"]) == ("alice", "sess-1")
    assert ok["model"] == "claude-sonnet-4-5"
    assert (ok["input_tokens"], ok["output_tokens"]) == (25, 12)
    assert ok["latency_ms"] > 0
    assert ok["outcome"] == "ok"
    assert (streamed["stream"], streamed["beta"]) == (True, True)
    assert streamed["ttfb_ms"] <= streamed["latency_ms"]
    assert entries[2]["outcome"] == "auth_bad_signature"
    assert entries[2]["request_id"].startswith("req_proxy_")
    text = "\n".join(all_log_lines)
    for secret in (session_token, REAL_KEY, "PROMPT-MARKER", "FAKE Anthropic API speaking"):
        assert secret not in text
