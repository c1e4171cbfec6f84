"""Course terminals on Kubernetes: ``POST /api/terminals`` with ``{"course", "stage"}``.

Through the stock endpoints, the real Kubernetes client and the fake API server. The fake
runs a pod's programs as local processes and does not emulate volumes, so what the
sandbox *mounts* (the material's ``subPath``, read-only, the hidden seed ``CLAUDE.md``) is
checked on the pod the API server received and validated; what the program *sees* (its
environment, the tutor text) and what its output does to progress (tutor markers) go
through the terminal websocket and the course REST API.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import textwrap
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from tornado.httpclient import HTTPClientError

from jupyter_claude_pods.sandbox.kubernetes.options import COURSE_LABEL
from jupyter_claude_pods.sandbox.kubernetes.pss import hardening_violations, restricted_violations
from jupyter_claude_pods.sandbox.spec import safe_slug

from .client import TermClient, plain
from .conftest import attach

#: Quiz answers: they live in manifests (and a seed CLAUDE.md's JSON block) and must
#: never reach a sandbox: not its files, not its environment, not the pod spec.
ANSWERS = {
    "intro": "SECRET-ANSWER-intro-0xA7",
    "plain": "SECRET-ANSWER-plain-0xB8",
    "seed": "SECRET-ANSWER-seed-0xC9",
}
#: Tutor text with shell syntax and printf directives: it must arrive byte for byte.
INTRO_TUTOR = (
    "# Tutor for Intro\n\nTeach $(touch /tmp/PWNED) and `id`; print %s and \\n as is.\n"
    "When stage N is understood, print [STAGE_COMPLETE:N].\n"
)
SEED_BEFORE = "# Seed Course\n\nYou are the tutor of the seed course.\n"
SEED_AFTER = "Teach one concept at a time.\n"
PVC = {"persistentVolumeClaim": {"claimName": "claude-pods-courses", "readOnly": True}}


def manifest(title: str, answer: str, trust: bool) -> str:
    return textwrap.dedent(
        f"""\
        title: {title}
        trust_tutor_markers: {"true" if trust else "false"}
        stages:
          - number: 1
            title: Queries and keys
            quiz:
              question: What is compared with the keys?
              type: free-response
              answer: "{answer}"
          - number: 2
            title: Softmax
        """
    )


def seed_claude_md() -> str:
    stages = {
        "stages": [
            {
                "stageNumber": 1,
                "title": "One",
                "concepts": [{"id": "c1", "title": "A", "content": "a", "position": {}}],
                "quiz": {
                    "id": "q1",
                    "question": "Say it",
                    "type": "free-response",
                    "correctAnswer": ANSWERS["seed"],
                },
            },
            {"stageNumber": 2, "title": "Two"},
        ]
    }
    return f"{SEED_BEFORE}\n```json\n{json.dumps(stages, indent=2)}\n```\n\n{SEED_AFTER}"


def write_courses(root: Path) -> Path:
    """Three courses: ``intro`` (trusts markers), ``plain`` (does not), ``seed`` (the seed
    format, whose material is the whole course directory). World-readable, as a sandbox
    running as another user must read the material."""
    for name, trust in (("intro", True), ("plain", False)):
        course = root / name
        (course / "material").mkdir(parents=True)
        (course / "course.yaml").write_text(manifest(name.title(), ANSWERS[name], trust))
        (course / "material" / "notes.md").write_text(f"NOTES-OF-{name}\n")
    (root / "intro" / "CLAUDE.md").write_text(INTRO_TUTOR)
    seed = root / "seed"
    seed.mkdir()
    (seed / "CLAUDE.md").write_text(seed_claude_md())
    (seed / "notes.md").write_text("NOTES-OF-seed\n")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def course_config(root: Path, db: Path) -> dict[str, Any]:
    return {"CoursesConfig": {"courses_dir": str(root), "progress_db": str(db)}}


@pytest.fixture
def courses(tmp_path: Path) -> Path:
    return write_courses(tmp_path / "courses")


@pytest.fixture
def extra_config(courses: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.delenv("CLAUDE_PODS_COURSES_DIR", raising=False)
    return {
        **course_config(courses, tmp_path / "progress.sqlite3"),
        "KubernetesBackend": {"courses_volume": PVC},
    }


_frames = itertools.count(1)


async def run(term: TermClient, command: str, timeout: float = 20) -> str:
    """Type *command* at the shell prompt; return its output (framed by computed markers)."""
    n = next(_frames)
    start, end = f"<<{n}>>", f"<</{n}>>"
    term.stdin(f"echo '<<'$(({n}))'>>'; {command}; echo '<</'$(({n}))'>>'\r")
    out = await term.expect(lambda o: start in o and end in o.split(start)[-1], timeout)
    return out.split(start)[-1].split(end)[0]


async def open_course(
    jp_fetch: Any, jp_ws_fetch: Any, **body: Any
) -> tuple[dict[str, Any], TermClient]:
    resp = await jp_fetch("api", "terminals", method="POST", body=json.dumps(body))
    model = json.loads(resp.body)
    return model, await attach(jp_ws_fetch, model["name"])


async def progress(jp_fetch: Any, course: str) -> dict[str, Any]:
    resp = await jp_fetch("claude-pods", "api", "progress", course)
    data = json.loads(resp.body)
    assert isinstance(data, dict)
    return data


def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    # Values are $-escaped for the kubelet ($$ -> $).
    return {e["name"]: e["value"].replace("$$", "$") for e in container(pod)["env"]}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_course_pod_mounts_only_the_material_read_only(
    jp_fetch: Any, jp_ws_fetch: Any, fake_kube: Any
) -> None:
    model, term = await open_course(jp_fetch, jp_ws_fetch, course="intro")
    assert model["claude_pods"]["course"] == "intro"
    assert model["claude_pods"]["stage"] == 1  # nothing done yet: the first stage
    await term.expect("$ ")
    (pod,) = fake_kube.created_bodies
    kubernetes_validate.validate(pod, "1.34.0", strict=True)
    assert restricted_violations(pod) == []
    assert hardening_violations(pod) == []
    assert pod["metadata"]["labels"][COURSE_LABEL] == safe_slug("intro")
    mounts = [m for m in container(pod)["volumeMounts"] if m["name"] not in ("home", "tmp")]
    assert mounts == [
        {"name": "courses", "mountPath": "/course", "subPath": "intro/material", "readOnly": True}
    ]
    assert {"name": "courses", **PVC} in pod["spec"]["volumes"]
    assert container(pod)["workingDir"] == "/course"
    env = env_of(pod)
    assert env["CLAUDE_PODS_COURSE_DIR"] == "/course"
    assert env["CLAUDE_PODS_STAGE"] == "1"
    assert env["CLAUDE_PODS_COURSE_TITLE"] == "Intro"
    assert env["CLAUDE_PODS_TUTOR"] == INTRO_TUTOR
    assert all(answer not in json.dumps(pod) for answer in ANSWERS.values())

    # The program sees the same, exactly ($ and backticks stay literal).
    out = await run(term, 'printf %s "$CLAUDE_PODS_TUTOR" | sha256sum; echo "$CLAUDE_PODS_STAGE"')
    assert sha256(INTRO_TUTOR) in out
    assert out.split()[-1] == "1"
    assert not Path("/tmp/PWNED").exists()
    listed = json.loads((await jp_fetch("api", "terminals")).body)
    assert [(m["claude_pods"]["course"], m["claude_pods"]["stage"]) for m in listed] == [
        ("intro", 1)
    ]


async def test_seed_course_hides_its_claude_md(
    jp_fetch: Any, jp_ws_fetch: Any, fake_kube: Any
) -> None:
    _model, term = await open_course(jp_fetch, jp_ws_fetch, course="seed")
    await term.expect("$ ")
    (pod,) = fake_kube.created_bodies
    kubernetes_validate.validate(pod, "1.34.0", strict=True)
    assert restricted_violations(pod) == []
    assert hardening_violations(pod) == []
    mounts = [m for m in container(pod)["volumeMounts"] if m["name"] not in ("home", "tmp")]
    # The material is the whole course directory: its CLAUDE.md (with the answers in its
    # JSON block) is covered by an empty file; there is no manifest to cover.
    assert mounts == [
        {"name": "courses", "mountPath": "/course", "subPath": "seed", "readOnly": True},
        {
            "name": "course-mask",
            "mountPath": "/course/CLAUDE.md",
            "subPath": "empty",
            "readOnly": True,
        },
    ]
    tutor = env_of(pod)["CLAUDE_PODS_TUTOR"]
    assert SEED_BEFORE.strip() in tutor
    assert SEED_AFTER.strip() in tutor
    assert "```json" not in tutor
    assert "stageNumber" not in tutor
    assert ANSWERS["seed"] not in json.dumps(pod)


async def test_stage_defaults_to_the_next_unfinished_one(
    jp_fetch: Any, jp_ws_fetch: Any, fake_kube: Any
) -> None:
    body = json.dumps({"answer": ANSWERS["intro"]})
    resp = await jp_fetch(
        "claude-pods", "api", "courses", "intro", "stages", "1", "answer", method="POST", body=body
    )
    assert json.loads(resp.body)["correct"] is True
    model, term = await open_course(jp_fetch, jp_ws_fetch, course="intro")
    assert model["claude_pods"]["stage"] == 2
    await term.expect("$ ")
    assert env_of(fake_kube.created_bodies[-1])["CLAUDE_PODS_STAGE"] == "2"
    assert (await run(term, 'echo "stage=$CLAUDE_PODS_STAGE"')).split()[-1] == "stage=2"
    # An explicit, unlocked stage wins over the resume stage.
    model, _ = await open_course(jp_fetch, jp_ws_fetch, course="intro", stage=1)
    assert model["claude_pods"]["stage"] == 1


#: Prints the marker in three writes with bold on and off inside it, then whole again
#: (a redraw). The typed command line (echoed to the terminal too) never holds the
#: marker itself.
SPLIT_MARKER = (
    "printf '[STAGE_COM'; sleep 0.2; printf '\\033[1mPLETE\\033[0m:'; sleep 0.2; "
    "printf '1]\\r\\n'; m=STAGE_COMPLETE; printf '[%s:1]\\r\\n' \"$m\""
)


@pytest.mark.parametrize(("course", "recorded"), [("intro", [1]), ("plain", [])])
async def test_tutor_markers_count_only_where_trusted(
    jp_fetch: Any, jp_ws_fetch: Any, manager: Any, course: str, recorded: list[int]
) -> None:
    model, term = await open_course(jp_fetch, jp_ws_fetch, course=course)
    await term.expect("$ ")
    await run(term, SPLIT_MARKER)
    assert plain(term.output).count("[STAGE_COMPLETE:1]") == 2
    await manager.wait_markers_recorded()
    state = await progress(jp_fetch, course)
    assert [c["stage"] for c in state["completed"]] == recorded
    assert all(c["source"] == "tutor" for c in state["completed"])
    assert state["course_completed"] is False
    assert manager.terminals[model["name"]].state == "running"  # the terminal is unharmed


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"course": "../intro"}, 400, "course id"),
        ({"course": "intro;id"}, 400, "course id"),
        ({"course": "$(id)"}, 400, "course id"),
        ({"course": "x" * 65}, 400, "course id"),
        ({"course": ""}, 400, "course id"),
        ({"course": 7}, 400, "course id"),
        ({"course": "intro", "stage": 0}, 400, "stage"),
        ({"course": "intro", "stage": "1"}, 400, "stage"),
        ({"course": "intro", "stage": True}, 400, "stage"),
        ({"course": "intro", "stage": 1.5}, 400, "stage"),
        ({"stage": 1}, 400, "stage needs a course"),
        ({"course": "nope"}, 404, "no such course: nope"),
        ({"course": "intro", "stage": 3}, 404, "has no stage 3"),
        ({"course": "intro", "stage": 2}, 409, "not unlocked"),
    ],
)
async def test_bad_course_requests_create_nothing(
    jp_fetch: Any, fake_kube: Any, body: dict[str, Any], code: int, message: str
) -> None:
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("api", "terminals", method="POST", body=json.dumps(body))
    assert e.value.code == code
    assert message in json.loads(e.value.response.body)["message"]
    assert json.loads((await jp_fetch("api", "terminals")).body) == []
    assert fake_kube.created_bodies == []


class TestNoCourses:
    """The server offers no courses (no courses directory configured)."""

    @pytest.fixture
    def extra_config(self, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        monkeypatch.delenv("CLAUDE_PODS_COURSES_DIR", raising=False)
        return {}

    async def test_a_course_terminal_is_a_clear_404(self, jp_fetch: Any, fake_kube: Any) -> None:
        body = json.dumps({"course": "intro"})
        with pytest.raises(HTTPClientError) as e:
            await jp_fetch("api", "terminals", method="POST", body=body)
        assert e.value.code == 404
        assert "no courses are configured" in json.loads(e.value.response.body)["message"]
        assert fake_kube.created_bodies == []
        # Plain terminals still work.
        resp = await jp_fetch("api", "terminals", method="POST", body="{}")
        assert json.loads(resp.body)["claude_pods"]["course"] is None


@pytest.fixture
def no_volume_config(
    courses: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.delenv("CLAUDE_PODS_COURSES_DIR", raising=False)
    return course_config(courses, tmp_path / "progress.sqlite3")


class TestWithoutCoursesVolume:
    """Courses are offered, but the administrator gave sandbox pods no volume for them."""

    @pytest.fixture
    def extra_config(self, no_volume_config: dict[str, Any]) -> dict[str, Any]:
        return no_volume_config

    async def test_course_terminal_explains_and_creates_no_pod(
        self, jp_fetch: Any, jp_ws_fetch: Any, fake_kube: Any, manager: Any
    ) -> None:
        model, term = await open_course(jp_fetch, jp_ws_fetch, course="intro")
        out = await term.expect("open a new one to retry")
        assert "no courses volume" in out
        assert "KubernetesBackend.courses_volume" in out
        assert manager.terminals[model["name"]].state == "failed"
        assert fake_kube.created_bodies == []
