"""What a process in a local sandbox can and cannot see or do.

Each test runs commands in a real sandbox through the stock terminal websocket and
checks the answers, so every one of them would fail if the isolation it names broke.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from .conftest import KEY_PIECE, SECRET_KEY, run

TOKEN = re.compile(r"token=(cpp1\.[\w.-]+)")


async def shell(open_terminal: Any) -> Any:
    _name, term = await open_terminal()
    await term.expect("$ ")
    return term


async def test_unprivileged_user_without_capabilities(open_terminal: Any) -> None:
    term = await shell(open_terminal)
    out = await run(
        term, "id -u; id -g; whoami; grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status"
    )
    lines = out.split()
    assert lines[:3] == ["1000", "1000", "claude"], out
    for cap in ("CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"):
        assert lines[lines.index(cap) + 1] == "0000000000000000", out
    out = await run(term, "grep NoNewPrivs /proc/self/status; unshare -U true 2>&1; echo rc=$?")
    assert "NoNewPrivs:\t1" in out
    assert "rc=0" not in out  # no nested user namespaces (a way back to capabilities)


async def test_system_is_read_only_home_and_tmp_are_writable(open_terminal: Any) -> None:
    term = await shell(open_terminal)
    for path in ("/usr/x", "/etc/x", "/x", "/etc/claude-code/x", "/run/claude-pods/x", "/var/x"):
        out = await run(term, f"touch {path} 2>&1; echo rc=$?")
        assert "rc=1" in out, (path, out)
    out = await run(
        term,
        "touch ~/ok /tmp/ok /var/tmp/ok && echo writable; pwd; echo $HOME; ls -d /course 2>&1",
    )
    assert "writable" in out
    assert "/home/claude\r\n/home/claude" in out
    assert "No such file" in out  # no course configured: nothing bound there


async def test_policy_is_mounted_and_host_secrets_are_not(open_terminal: Any) -> None:
    term = await shell(open_terminal)
    out = await run(term, "cat /etc/claude-code/managed-settings.json | head -c 200; echo")
    assert '"permissions"' in out
    out = await run(
        term, "ls /etc/shadow /etc/gshadow 2>&1; cat /run/host/etc/shadow 2>&1; cat /etc/passwd"
    )
    assert "'/etc/shadow': No such file" in out
    assert "Permission denied" in out  # the host's file, unreadable for the sandbox user
    assert "claude:x:1000:1000" in out
    assert "cloudsdk" not in out


async def test_only_the_sandbox_processes_are_visible(open_terminal: Any) -> None:
    term = await shell(open_terminal)
    out = await run(term, "ps -e -o pid=,comm=")
    processes = [line.split() for line in out.strip().splitlines() if line.strip()]
    commands = sorted(p[1] for p in processes)
    # bwrap's init (pid 1), the shell, the proxy relay (python3), and ps itself.
    assert commands == sorted(["bwrap", "bash", "python3", "ps"]), out
    assert ["1", "bwrap"] in processes
    out = await run(term, "ls /proc | grep -cE '^[0-9]+$'")
    assert int(out.strip()) <= 5, out


async def test_network_is_only_loopback(open_terminal: Any) -> None:
    term = await shell(open_terminal)
    out = await run(
        term, "cat /proc/net/dev | tail -n +3 | cut -d: -f1; ip -o link 2>&1 | cut -d: -f2"
    )
    names = {word for word in out.split() if word}
    assert names == {"lo"}, out
    out = await run(term, "cat /etc/hostname; hostname")
    assert out.split() == ["sandbox", "sandbox"]


async def test_host_loopback_ports_are_unreachable(open_terminal: Any) -> None:
    connections = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        # The test's own listener is reachable from the host…
        probe = socket.create_connection(("127.0.0.1", port), timeout=5)
        probe.close()
        await asyncio.wait_for(_until(lambda: connections == 1), 5)
        term = await shell(open_terminal)
        out = await run(
            term,
            f"(echo > /dev/tcp/127.0.0.1/{port}) 2>&1; echo bash-rc=$?; "
            f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 3)' "
            "2>&1 | tail -1",
        )
        assert "Connection refused" in out, out
        assert "bash-rc=1" in out, out
        assert "ConnectionRefusedError" in out, out
        assert connections == 1  # …but nothing from the sandbox ever arrived
    finally:
        listener.close()
        await listener.wait_closed()


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


RAW_HEAD = (
    "import socket; s = socket.create_connection(('127.0.0.1', 8787), 5); "
    "s.sendall(b'HEAD / HTTP/1.1\\\\r\\\\nHost: x\\\\r\\\\nConnection: close\\\\r\\\\n\\\\r\\\\n'); "
    "print(s.recv(200).split(b'\\\\r\\\\n')[0].decode())"
)

ASK = """
import http.client, json, os
c = http.client.HTTPConnection('127.0.0.1', 8787, timeout=10)
body = json.dumps({'model': 'claude-x', 'max_tokens': 8,
                   'messages': [{'role': 'user', 'content': 'hi'}]})
c.request('POST', '/v1/messages', body, {
    'Authorization': 'Bearer ' + os.environ['ANTHROPIC_AUTH_TOKEN'],
    'anthropic-version': '2023-06-01', 'content-type': 'application/json'})
r = c.getresponse()
print('status', r.status, json.loads(r.read())['type'])
"""


async def test_the_proxy_is_reachable_only_through_the_relay(
    open_terminal: Any, fake_upstream: Any, backend: Any, manager: Any, jp_fetch: Any
) -> None:
    name, term = await open_terminal()
    await term.expect("$ ")
    out = await run(term, 'echo "base=$ANTHROPIC_BASE_URL"; echo "token=$ANTHROPIC_AUTH_TOKEN"')
    assert "base=http://127.0.0.1:8787" in out
    token = TOKEN.search(out).group(1)  # type: ignore[union-attr]

    # The relay answers on the sandbox's loopback with the proxy's own local reply…
    out = await run(term, f'python3 -c "{RAW_HEAD}"')
    assert "HTTP/1.1 200 OK" in out, out
    assert fake_upstream.requests == []  # HEAD / is answered by the proxy itself

    # …and a Messages request goes through to the upstream with the real key.
    term.stdin("python3 - <<'EOF'\r" + ASK.replace("\n", "\r") + "\rEOF\r")
    await term.expect("status 200 message")
    seen = {k.lower(): v for k, v in fake_upstream.requests[-1].headers}
    assert seen["x-api-key"] == SECRET_KEY
    assert token not in json.dumps(seen)

    # The token alone is worthless at the upstream: only the proxy holds the key.
    for headers in ({"x-api-key": token}, {"Authorization": f"Bearer {token}"}):
        with pytest.raises(HTTPClientError) as refused:
            await AsyncHTTPClient().fetch(
                f"{fake_upstream.url}/v1/messages",
                method="POST",
                body=json.dumps({"model": "claude-x", "max_tokens": 8, "messages": []}),
                headers={**headers, "anthropic-version": "2023-06-01"},
            )
        assert refused.value.code == 401

    # Closing the terminal revokes the token at the proxy.
    await jp_fetch("api", "terminals", name, method="DELETE")
    await manager.wait_reaped()
    with pytest.raises(HTTPClientError) as revoked:
        await AsyncHTTPClient().fetch(
            f"{backend.proxy.admin_url}/v1/messages",
            method="POST",
            body=json.dumps({"model": "claude-x", "max_tokens": 8, "messages": []}),
            headers={"Authorization": f"Bearer {token}", "anthropic-version": "2023-06-01"},
        )
    assert revoked.value.code == 401


@pytest.mark.parametrize(
    "extra_config",
    [
        {
            "LocalBackend": {
                "extra_env": {
                    "PS1": "$ ",
                    "ANTHROPIC_API_KEY": SECRET_KEY,
                    "SNEAKY_COPY": SECRET_KEY,
                    "SNEAKY_PART": f"prefix-{SECRET_KEY}-suffix",
                    "HARMLESS": "visible",
                }
            }
        }
    ],
)
async def test_real_key_is_nowhere_in_the_sandbox(
    open_terminal: Any, manager: Any, server_log: Any
) -> None:
    name, term = await open_terminal()
    await term.expect("$ ")
    out = await run(term, "env | sort")
    assert "HARMLESS=visible" in out
    assert "ANTHROPIC_API_KEY" not in out
    assert "SNEAKY" not in out
    assert "ANTHROPIC_AUTH_TOKEN=cpp1." in out  # the session token instead
    # Not in any process's environment (all of them are readable in there)…
    out = await run(
        term,
        f"cat /proc/[0-9]*/environ | tr '\\\\0' '\\\\n' | grep -c {KEY_PIECE}; "
        "cat /proc/[0-9]*/environ | tr '\\\\0' '\\\\n' | grep -c ANTHROPIC_AUTH_TOKEN",
    )
    key_hits, token_hits = (int(n) for n in out.split())
    assert key_hits == 0, out
    assert token_hits >= 2, out  # the search does read the environments
    # …nor in any readable file (the Claude Code binary included) under these trees.
    trees = "/etc/ /run /home /tmp /var/tmp/"
    out = await run(
        term,
        f"timeout 60 grep -r -l -s -F {KEY_PIECE} {trees}; echo grep-rc=$?; "
        f"timeout 60 grep -r -l -s -F requiredMinimumVersion {trees}",
        timeout=130,
    )
    found, _, control = out.partition("grep-rc=")
    assert found.strip() == "", out
    assert control.split()[0] in ("1", "2"), out  # 2: some host files are unreadable
    assert "/etc/claude-code/managed-settings.json" in control  # the search does work
    # The server side: not on bwrap's command line or environment, not in the logs.
    sandbox = manager.terminals[name].sandbox
    pid = sandbox.extra["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert "--args" in cmdline
    assert "cpp1." not in cmdline
    assert SECRET_KEY not in cmdline
    assert Path(f"/proc/{pid}/environ").read_bytes() == b""
    assert SECRET_KEY not in term.output
    assert SECRET_KEY not in "\n".join(server_log.lines)
