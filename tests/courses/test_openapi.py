"""docs/openapi.yaml is valid OpenAPI 3.1, matches the routes the server registers, and
describes the responses the running server really sends."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from jupyter_claude_pods.courses import handlers as course_handlers

from ._server import *  # the server fixtures

SPEC_PATH = Path(__file__).parents[2] / "docs" / "openapi.yaml"
SPEC_URI = "urn:claude-pods:openapi"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return loaded


def test_spec_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    validate(spec, cls=OpenAPIV31SpecValidator)


def test_validator_rejects_a_broken_spec(spec: dict[str, Any]) -> None:
    """The validation above can fail (a dangling $ref is caught)."""
    broken = yaml.safe_load(yaml.safe_dump(spec))
    broken["paths"]["/claude-pods/api/status"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"] = {"$ref": "#/components/schemas/Nope"}
    with pytest.raises(Exception, match="Nope"):
        validate(broken, cls=OpenAPIV31SpecValidator)


def _spec_routes(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """(method, path with parameters as ``*``) for every documented operation."""
    return {
        (method.upper(), re.sub(r"\{[^}]+\}", "*", path))
        for path, item in spec["paths"].items()
        for method in METHODS
        if method in item
    }


def _handler_methods(handler: type[Any]) -> set[str]:
    """The HTTP verbs our handler class implements (not Tornado's or Jupyter's, such as
    the CORS ``OPTIONS`` every APIHandler answers)."""
    verbs = set()
    for method in METHODS:
        owner = next((c for c in handler.__mro__ if method in vars(c)), None)
        if owner is not None and owner.__module__ == course_handlers.__name__:
            verbs.add(method.upper())
    return verbs


def _registered(jp_serverapp: Any, base_url: str) -> set[tuple[str, str]]:
    """(method, path with groups as ``*``) for each of our handlers the server routes to."""
    routes: set[tuple[str, str]] = set()
    pending = list(jp_serverapp.web_app.default_router.rules)
    while pending:
        rule = pending.pop()
        target = rule.target
        if hasattr(target, "rules"):
            pending.extend(target.rules)
            continue
        if getattr(target, "__module__", "") != course_handlers.__name__:
            continue
        pattern = rule.matcher.regex.pattern.rstrip("$")
        assert pattern.startswith(base_url.rstrip("/")), pattern
        path = pattern[len(base_url.rstrip("/")) :].replace("([^/]+)", "*")
        routes |= {(method, path) for method in _handler_methods(target)}
    return routes


async def test_every_route_is_documented_and_vice_versa(
    spec: dict[str, Any], jp_serverapp: Any, jp_base_url: str
) -> None:
    registered = _registered(jp_serverapp, jp_base_url)
    assert registered, "the course handlers are registered"
    documented = _spec_routes(spec)
    assert registered - documented == set(), "undocumented routes"
    assert documented - registered == set(), "documented routes the server does not serve"
    # and default_handlers is what got registered
    from_module = {
        (method, pattern.replace("([^/]+)", "*"))
        for pattern, handler in course_handlers.default_handlers
        for method in _handler_methods(handler)
    }
    assert from_module == registered


# ------------------------------------------------------------------ real responses


class ResponseChecker:
    """Validates a response against the schema documented for its operation and status."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        self.seen: set[tuple[str, str, str]] = set()

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        """The documented path template and operation matching a concrete request path."""
        bare = path.split("?", 1)[0]
        for template, item in self.spec["paths"].items():
            regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(regex, "/claude-pods/api/" + bare) and method.lower() in item:
                return template, item[method.lower()]
        raise AssertionError(f"{method} {path} is not documented")

    def check(self, method: str, path: str, reply: Any) -> None:
        template, operation = self.operation(method, path)
        status = str(reply.code)
        assert status in operation["responses"], (
            f"{method} {template} answered undocumented {status}"
        )
        assert reply.headers["Content-Type"].startswith("application/json")
        schema = {"$ref": self._schema_uri(template, method.lower(), status)}
        Draft202012Validator(schema, registry=self.registry).validate(reply.body)
        self.seen.add((method.upper(), template, status))

    def _schema_uri(self, template: str, method: str, status: str) -> str:
        """URI of the JSON body schema of one documented response (through a
        ``components/responses`` ``$ref`` if there is one), for the registry to resolve."""
        pointer = "/".join(
            part.replace("~", "~0").replace("/", "~1")
            for part in ("paths", template, method, "responses", status)
        )
        uri = f"{SPEC_URI}#/{pointer}"
        response = self.registry.resolver().lookup(uri).contents
        if "$ref" in response:
            uri = response["$ref"].replace("#/", f"{SPEC_URI}#/", 1)
        return uri + "/content/application~1json/schema"


async def test_real_responses_match_the_documented_schemas(spec: dict[str, Any], api: Any) -> None:
    checker = ResponseChecker(spec)

    async def call(method: str, path: str, user: str | None = "alice", **kw: Any) -> Any:
        reply = await api(method, path, user=user, **kw)
        checker.check(method, path, reply)
        return reply

    await call("GET", "status")
    await call("GET", "status", user="teacher1")
    await call("GET", "courses")
    await call("GET", "courses/intro")
    await call("GET", "courses/free")
    await call("POST", "courses/intro/stages/1/answer", body={"answer": "3"})
    await call("POST", "courses/intro/stages/1/answer", body={"answer": "4"})
    await call("POST", "courses/intro/stages/2/answer", body={"answer": "softmax"})
    await call("POST", "courses/intro/stages/3/answer", body={"answer": "x"})  # 404 no quiz
    await call("POST", "courses/solo/stages/1/answer", body={"answer": "yes"})
    await call("POST", "courses/free/stages/2/answer", user="bob", body={"answer": "b"})
    await call("POST", "courses/intro/stages/2/answer", user="bob", body={"answer": "x"})  # 409
    await call("POST", "courses/intro/stages/1/answer", body=b"{")  # 400
    await call("POST", "courses/intro/stages/1/answer", body={"answer": "x" * 70_000})  # 413
    await call("GET", "progress")
    await call("GET", "progress/intro")
    await call("GET", "progress/a;b")  # 400
    await call("GET", "progress/nope")  # 404
    await call("DELETE", "progress/free", user="bob")
    await call("GET", "instructor/progress", user="teacher1")
    await call("GET", "instructor/progress?course=intro", user="teacher1")
    await call("GET", "instructor/progress", user="alice")  # 403
    await call("PUT", "instructor/progress/bob/intro/1", user="teacher1")
    await call("PUT", "instructor/progress/bob/intro/9", user="teacher1")  # 404
    await call("GET", "courses", user=None)  # 403

    statuses = {status for _, _, status in checker.seen}
    assert statuses == {"200", "400", "403", "404", "409", "413"}
    operations = {(m, p) for m, p, _ in checker.seen}
    assert len(operations) == len(_spec_routes(spec)), "every operation was exercised"


async def test_checker_catches_an_undocumented_field(spec: dict[str, Any], api: Any) -> None:
    """The response validation can fail: a field the schema does not allow is caught."""
    checker = ResponseChecker(spec)
    reply = await api("GET", "status")
    reply.body["surprise"] = 1
    with pytest.raises(Exception, match="surprise"):
        checker.check("GET", "status", reply)
