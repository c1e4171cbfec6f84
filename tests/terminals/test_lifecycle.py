"""A terminal is a hardened pod: create → echo → resize → reconnect → delete, through the
stock ``/api/terminals`` and ``/terminals/websocket/<name>`` endpoints and the real
Kubernetes client talking to the fake API server."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
from jupyter_server_terminals.terminalmanager import TerminalManager

from jupyter_claude_pods.sandbox.kubernetes.pss import hardening_violations, restricted_violations
from jupyter_claude_pods.terminals import SandboxTerminalManager

from .conftest import NAMESPACE, SECRET_KEY, attach


def live_pods(fake_kube: Any) -> list[str]:
    return [key for key, pod in fake_kube.pods.items() if key.startswith(f"{NAMESPACE}/")]


async def test_manager_is_swapped_in_programmatically(jp_serverapp: Any) -> None:
    terminals = jp_serverapp.extension_manager.extension_points["jupyter_server_terminals"].app
    assert terminals.terminal_manager_class is SandboxTerminalManager
    assert isinstance(jp_serverapp.web_app.settings["terminal_manager"], SandboxTerminalManager)


@pytest.mark.parametrize(
    "extra_config",
    [
        {
            "TerminalsExtensionApp": {
                "terminal_manager_class": "jupyter_claude_pods.terminals.SandboxTerminalManager"
            },
            "ClaudePodsApp": {"replace_terminal_manager": False},
        }
    ],
)
async def test_manager_configured_the_documented_way(jp_serverapp: Any) -> None:
    assert isinstance(jp_serverapp.web_app.settings["terminal_manager"], SandboxTerminalManager)


@pytest.mark.parametrize("extra_config", [{"ClaudePodsApp": {"replace_terminal_manager": False}}])
async def test_opting_out_keeps_local_terminals(jp_serverapp: Any) -> None:
    manager = jp_serverapp.web_app.settings["terminal_manager"]
    assert type(manager) is TerminalManager


async def test_terminal_is_a_hardened_pod_with_working_io(
    jp_fetch: Any, jp_ws_fetch: Any, fake_kube: Any, open_terminal: Any, server_log: Any
) -> None:
    name, term = await open_terminal()
    # The stock frontend needs the terminal listed from the moment POST returns.
    listed = json.loads((await jp_fetch("api", "terminals")).body)
    assert [m["name"] for m in listed] == [name]

    out = await term.expect("$ ")
    for line in ("creating sandbox pod", "scheduled on node", "attached"):
        assert line in out, out
    # exactly one pod, in the configured namespace, valid and restricted
    assert len(fake_kube.created_bodies) == 1
    pod = fake_kube.created_bodies[0]
    assert pod["metadata"]["namespace"] == NAMESPACE
    kubernetes_validate.validate(pod, "1.34.0", strict=True)
    assert restricted_violations(pod) == []
    assert hardening_violations(pod) == []
    assert pod["spec"]["automountServiceAccountToken"] is False

    term.stdin("echo $((6 * 7))\r")
    await term.expect("42")

    term.set_size(30, 100)
    term.stdin("stty size\r")
    await term.expect("30 100")

    # Reconnect: a new socket replays recent output, on the same pod.
    term.close()
    again = await attach(jp_ws_fetch, name)
    replay = await again.expect("30 100")
    assert "42" in replay
    again.stdin("echo still-$HOSTNAME-here\r")
    await again.expect("still-")
    assert len(fake_kube.created_bodies) == 1

    resp = await jp_fetch("api", "terminals", name, method="DELETE")
    assert resp.code == 204
    assert json.loads((await jp_fetch("api", "terminals")).body) == []
    await again.expect_closed()
    assert again.disconnected
    await fake_kube.wait_for(lambda api: not live_pods(api))

    text = "\n".join(server_log.lines)
    assert SECRET_KEY not in text
    assert SECRET_KEY not in json.dumps(fake_kube.created_bodies)


@pytest.mark.parametrize(
    "extra_config",
    [
        {
            "KubernetesBackend": {
                "extra_env": {
                    "PS1": "$ ",
                    "ANTHROPIC_API_KEY": SECRET_KEY,
                    "SNEAKY_COPY": SECRET_KEY,
                    "HARMLESS": "visible",
                }
            }
        }
    ],
)
async def test_real_key_never_reaches_the_pod(
    jp_serverapp: Any, fake_kube: Any, open_terminal: Any, server_log: Any
) -> None:
    _name, term = await open_terminal()
    await term.expect("$ ")
    term.stdin("env | sort; echo END-OF-$((1 + 1))\r")
    out = await term.expect("END-OF-2")
    assert "HARMLESS=visible" in out
    assert SECRET_KEY not in term.output
    assert "ANTHROPIC_API_KEY" not in out
    everything = json.dumps([fake_kube.created_bodies, fake_kube.pods])
    assert SECRET_KEY not in everything
    for method, path, query, headers in fake_kube.requests:
        assert SECRET_KEY not in f"{method} {path} {query} {headers}"
    assert SECRET_KEY not in "\n".join(server_log.lines)


async def test_program_exit_ends_terminal_and_deletes_pod(
    jp_fetch: Any, fake_kube: Any, open_terminal: Any
) -> None:
    _name, term = await open_terminal()
    await term.expect("$ ")
    term.stdin("exit 3\r")
    await term.expect_closed()
    assert term.disconnected
    assert json.loads((await jp_fetch("api", "terminals")).body) == []
    await fake_kube.wait_for(lambda api: not live_pods(api))


async def test_multibyte_output_is_never_split(fake_kube: Any, open_terminal: Any) -> None:
    _name, term = await open_terminal()
    await term.expect("$ ")
    # 3000 four-byte and three-byte characters: PTY reads and frames split them anywhere.
    term.stdin("for i in $(seq 1 1000); do printf 'é€😀'; done; echo; echo DONE\r")
    out = await term.expect(lambda o: "DONE\r\n" in o.split("echo DONE", 1)[-1])
    assert "\ufffd" not in term.output
    assert out.count("é€😀") >= 1000


async def test_large_output_is_complete_ordered_and_coalesced(
    fake_kube: Any, open_terminal: Any
) -> None:
    _name, term = await open_terminal()
    await term.expect("$ ")
    before = len(term.messages)
    term.stdin("seq 1 50000; echo SEQ-DONE\r")
    out = await term.expect(lambda o: "SEQ-DONE\r\n" in o.split("echo SEQ-DONE", 1)[-1])
    numbers = [line.strip("\r") for line in out.split("\n") if line.strip("\r").isdigit()]
    assert numbers == [str(i) for i in range(1, 50001)]
    # ~290 KB of output: far fewer websocket messages than 4 KiB PTY reads would give.
    sent = len(term.messages) - before
    assert sent < 290_000 // 4096, sent


async def test_terminal_model_reports_sandbox_state(jp_fetch: Any, open_terminal: Any) -> None:
    name, term = await open_terminal()
    await term.expect("$ ")
    model = json.loads((await jp_fetch("api", "terminals", name)).body)
    assert model["claude_pods"]["state"] == "running"
    assert model["claude_pods"]["sandbox"].startswith("sbx-")
    assert model["last_activity"].endswith("Z")


@pytest.mark.parametrize("extra_config", [{"KubernetesBackend": {"connect_mode": "attach"}}])
async def test_attach_mode(fake_kube: Any, open_terminal: Any) -> None:
    _name, term = await open_terminal()
    term.stdin("\r")  # the prompt may have been drawn before we attached
    await term.expect("$ ")
    term.stdin("echo attached-$((1 + 1))\r")
    await term.expect("attached-2")
    pod = fake_kube.created_bodies[0]
    container = pod["spec"]["containers"][0]
    assert container["stdin"] is True
    assert container["tty"] is True
    assert not [r for r in fake_kube.requests if r[1].endswith("/exec")]


@pytest.mark.parametrize("kube_options", [{"protocols": ("v4.channel.k8s.io",)}])
async def test_falls_back_to_v4_channel_protocol(fake_kube: Any, open_terminal: Any) -> None:
    _name, term = await open_terminal()
    await term.expect("$ ")
    term.set_size(40, 120)
    term.stdin("stty size\r")
    await term.expect("40 120")


async def test_exec_streams_are_not_capped_by_the_client_pool(manager: Any) -> None:
    # Each terminal holds one exec WebSocket for its whole life; kubernetes_asyncio's
    # default pool of 100 connections would make terminal 101 time out.
    await manager.ensure_started()
    clients = manager.sandbox_backend._clients
    assert clients.ws.rest_client.pool_manager.connector.limit == 0
    assert clients.api.rest_client.pool_manager.connector.limit == 100
