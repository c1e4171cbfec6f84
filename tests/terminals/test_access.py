"""Authentication, authorization, per-user isolation and bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.auth.identity import IdentityProvider, User
from tornado.httpclient import HTTPClientError

from .conftest import NAMESPACE, attach


class HeaderIdentityProvider(IdentityProvider):
    """``Authorization: token <alice|bob|carol>`` logs in as that user."""

    users = ("alice", "bob", "carol")

    def get_user(self, handler: Any) -> User | None:  # type: ignore[override]
        token = handler.request.headers.get("Authorization", "").removeprefix("token ").strip()
        return User(token) if token in self.users else None


class NoTerminalsAuthorizer(Authorizer):
    """Everyone may do everything except use terminals."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "terminals"


MULTI_USER = {
    "ServerApp": {"identity_provider_class": HeaderIdentityProvider, "disable_check_xsrf": True},
    "SandboxTerminalManager": {"max_sandboxes_per_user": 1, "max_sandboxes": 2},
}


def as_user(name: str) -> dict[str, str]:
    return {"Authorization": f"token {name}"}


@pytest.mark.parametrize("extra_config", [MULTI_USER])
async def test_users_see_and_attach_only_their_own_terminals(
    jp_fetch: Any, jp_ws_fetch: Any, fake_kube: Any
) -> None:
    resp = await jp_fetch("api", "terminals", method="POST", body="{}", headers=as_user("alice"))
    name = json.loads(resp.body)["name"]
    alice = await attach(jp_ws_fetch, name, **as_user("alice"))
    await alice.expect("$ ")

    listed = await jp_fetch("api", "terminals", headers=as_user("bob"))
    assert json.loads(listed.body) == []
    for method in ("GET", "DELETE"):
        with pytest.raises(HTTPClientError) as e:
            await jp_fetch("api", "terminals", name, method=method, headers=as_user("bob"))
        assert e.value.code == 404
    with pytest.raises(HTTPClientError) as e:
        await attach(jp_ws_fetch, name, **as_user("bob"))
    assert e.value.code == 404
    # Bob asking for Alice's name gets an error, not her terminal.
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch(
            "api",
            "terminals",
            method="POST",
            body=json.dumps({"name": name}),
            headers=as_user("bob"),
        )
    assert e.value.code == 409

    # Per-user caps are per user: Alice is at her cap, Bob is not; then the total cap.
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("api", "terminals", method="POST", body="{}", headers=as_user("alice"))
    assert e.value.code == 429
    await jp_fetch("api", "terminals", method="POST", body="{}", headers=as_user("bob"))
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("api", "terminals", method="POST", body="{}", headers=as_user("carol"))
    assert e.value.code == 429
    assert "maximum of 2" in json.loads(e.value.response.body)["message"]

    await fake_kube.wait_for(lambda api: len(api.created_bodies) == 2)
    labels = [body["metadata"]["labels"] for body in fake_kube.created_bodies]
    assert sorted(label["claude-pods.jupyter.org/user"] for label in labels) == ["alice", "bob"]
    alice.stdin("echo alice-still-works\r")
    await alice.expect("alice-still-works")


@pytest.mark.parametrize("extra_config", [MULTI_USER])
async def test_unauthenticated_requests_are_refused(jp_fetch: Any, jp_ws_fetch: Any) -> None:
    for method, body in (("GET", None), ("POST", "{}")):
        with pytest.raises(HTTPClientError) as e:
            await jp_fetch("api", "terminals", method=method, body=body, headers=as_user("mallory"))
        assert e.value.code == 403
    with pytest.raises(HTTPClientError) as e:
        await attach(jp_ws_fetch, "1", **as_user("mallory"))
    assert e.value.code == 403


@pytest.mark.parametrize(
    "extra_config", [{"ServerApp": {"authorizer_class": NoTerminalsAuthorizer}}]
)
async def test_unauthorized_requests_are_refused(
    jp_fetch: Any, jp_ws_fetch: Any, fake_kube: Any
) -> None:
    for method, body in (("GET", None), ("POST", "{}")):
        with pytest.raises(HTTPClientError) as e:
            await jp_fetch("api", "terminals", method=method, body=body)
        assert e.value.code == 403
    with pytest.raises(HTTPClientError) as e:
        await attach(jp_ws_fetch, "1")
    assert e.value.code == 403
    assert fake_kube.created_bodies == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "Invalid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"nmae": "x"}', "unknown field(s): nmae"),
        ('{"name": "../etc"}', "letters, digits"),
        ('{"name": 7}', "must be a string"),
    ],
)
async def test_bad_create_requests_get_json_errors(
    jp_fetch: Any, fake_kube: Any, body: str, message: str
) -> None:
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("api", "terminals", method="POST", body=body)
    assert e.value.code == 400
    assert message in json.loads(e.value.response.body)["message"]
    assert json.loads((await jp_fetch("api", "terminals")).body) == []
    assert fake_kube.created_bodies == []


async def test_unknown_terminal_is_404(jp_fetch: Any, jp_ws_fetch: Any) -> None:
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("api", "terminals", "nope")
    assert e.value.code == 404
    with pytest.raises(HTTPClientError) as e:
        await attach(jp_ws_fetch, "nope")
    assert e.value.code == 404


async def test_malformed_frames_are_ignored(fake_kube: Any, open_terminal: Any) -> None:
    _name, term = await open_terminal()
    await term.expect("$ ")
    for frame in (
        "not json",
        "[]",
        '["set_size", "a", "b"]',
        '["stdin"]',
        "{}",
        '["set_size", 0, 5]',
    ):
        term.ws.write_message(frame)
    term.stdin("echo survived\r")
    await term.expect("survived")
    assert [k for k in fake_kube.pods if k.startswith(f"{NAMESPACE}/")]
